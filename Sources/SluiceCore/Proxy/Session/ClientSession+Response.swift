/// The response path: reading the upstream, parsing heads, framing the body, writing to the client, ending the
/// exchange, and the responses sluice generates itself.
extension ClientSession {
    // MARK: - Upstream input

    /// Reads from the upstream and hands the bytes on at once; returns true if it read.
    func readFromUpstream() -> Bool {
        guard let connection = upstream, connection.connected, connection.readable else { return false }
        switch response {
        case .awaitingHead: guard !waitingForHeadRoom else { return false }
        case .body: guard upstreamReadPause.isEmpty else { return false }
        case .complete, .aborted: return false
        }
        if (clientOut?.readableCount ?? 0) == 0 && responseSendEnd == 0 { lastClientWriteProgress = loop.now }
        let buffer = takeBuffer(&upstreamIn)
        if buffer.writableCount == 0 { buffer.compact() }
        guard buffer.writableCount > 0 else {
            if response == .awaitingHead {
                upstreamFailed(.badResponse("upstream response head is too large"))
            }
            return false
        }
        let space = buffer.writableCount
        let result: IOResult<Int>
        do { result = try connection.transport.read(into: buffer) } catch {
            releaseIfEmpty(&upstreamIn)
            switch error {
            case .socket(let error): upstreamEndOfStream(error: error)
            case .tls(let reason): upstreamTLSFailed(reason)
            }
            return false
        }
        // A TLS handshake may have finished: the request waiting for it can go now.
        if connection.tls != nil { connection.writable = true }
        switch result {
        case .wouldBlock:
            connection.readable = false
            releaseIfEmpty(&upstreamIn)
            return false
        case .processed(0):
            connection.readable = false
            releaseIfEmpty(&upstreamIn)
            upstreamEndOfStream(error: nil)
            return false
        case .processed(let count):
            if count < space && !connection.hangup && connection.transport.shortReadDrainsSocket { connection.readable = false }
            lastUpstreamRead = loop.now
            loop.metrics.addUpstreamBytesReceived(count)
            processResponseBytes()
            return true
        }
    }

    /// Parses response heads and frames body bytes now in `upstreamIn`.
    func processResponseBytes() {
        guard let buffer = upstreamIn else { return }
        while phase == .exchange {
            switch response {
            case .awaitingHead:
                let parsers = takeParsers()
                let result = buffer.withReadableSpan { parsers.response.parse($0, requestMethod: requestMethod) }
                switch result {
                case .needMore:
                    return
                case .failed(let error, _):
                    return upstreamFailed(.badResponse("invalid response from upstream \(upstreamDisplay): \(error.message)",
                                                       client: "invalid response from upstream \(upstreamName): \(error.message)"))
                case .complete(let headLength):
                    guard acceptResponseHead(headLength: headLength, buffer: buffer, parsers: parsers) else { return }
                }
            case .body(.filtered(let input, let rechunk)):
                guard relayFiltered(buffer, input: input, rechunk: rechunk) else { return updateUpstreamPause() }
            case .body(let body):
                let available = buffer.readableCount - responseSendEnd
                guard available > 0 else { return updateUpstreamPause() }
                switch body {
                case .contentLength(let remaining):
                    let take = Int(min(Int64(available), remaining))
                    observeResponse(buffer, responseSendEnd..<(responseSendEnd + take))
                    responseSendEnd += take
                    if Int64(take) == remaining { responseFinished() } else { response = .body(.contentLength(remaining: remaining - Int64(take))) }
                case .chunked:
                    // Chunk boundaries are tracked to find the end and to hand the payload to the tap;
                    // the bytes themselves go out unchanged.
                    guard let observer = responseObserver else { return }
                    let step = buffer.withReadableSpan(from: responseSendEnd) { observer.chunks.next($0) }
                    switch step {
                    case .framing(let count):
                        responseSendEnd += count
                    case .data(let count):
                        observeResponse(buffer, responseSendEnd..<(responseSendEnd + count))
                        responseSendEnd += count
                    case .end(let count):
                        responseSendEnd += count
                        responseFinished()
                    case .failed(let error, _):
                        return endTruncated(reason: "invalid chunked framing from upstream: \(error.message)", end: .upstreamAbort)
                    }
                case .dechunked:
                    guard dechunk(buffer) else { return updateUpstreamPause() }
                case .untilClose:
                    observeResponse(buffer, responseSendEnd..<buffer.readableCount)
                    responseSendEnd = buffer.readableCount
                case .filtered:
                    preconditionFailure("filtered bodies are relayed above")
                }
            case .complete, .aborted:
                // Bytes after the end of a response: the server broke framing, so the connection is not reused.
                if buffer.readableCount > responseSendEnd {
                    upstreamReusable = false
                    buffer.truncate(toReadable: responseSendEnd)
                }
                return
            }
        }
    }

    /// Copies payload bytes into `clientOut`, dropping chunk framing; returns false when `clientOut` is full.
    func dechunk(_ buffer: ByteBuffer) -> Bool {
        let out = takeBuffer(&clientOut)
        while buffer.readableCount > 0 {
            let room = out.writableCount
            guard room > 0 else { return false }
            guard let observer = responseObserver else { return false }
            let step = buffer.withReadableSpan(from: 0, to: min(buffer.readableCount, room)) { observer.chunks.next($0) }
            switch step {
            case .framing(let count):
                buffer.consume(count)
            case .data(let count):
                observeResponse(buffer, 0..<count)
                out.append(from: buffer, 0..<count)
                buffer.consume(count)
            case .end(let count):
                buffer.consume(count)
                responseFinished()
                return true
            case .failed(let error, _):
                endTruncated(reason: "invalid chunked framing from upstream: \(error.message)", end: .upstreamAbort)
                return false
            }
        }
        return true
    }

    /// Handles a complete response head: interim ones are relayed and parsing continues, a final one
    /// decides the body framing. Returns false when the exchange ended.
    func acceptResponseHead(headLength: Int, buffer: ByteBuffer, parsers: HeadParsers) -> Bool {
        let out = takeBuffer(&clientOut)
        let queuedBefore = out.readableCount
        if parsers.response.head.isInformational {
            guard parsers.response.head.status != 101 else {
                upstreamFailed(.badResponse("upstream switched protocols, which was not requested"))
                return false
            }
            // RFC 9110 §15.2: a 1xx is not sent to an HTTP/1.0 client.
            if !clientIsHTTP10 {
                let written = buffer.withReadableSpan {
                    HeadRewriter.writeResponseHead(into: out, source: $0, head: parsers.response.head, requestID: nil, close: false)
                }
                guard written != nil else { return headDidNotFit(out, queuedBefore: queuedBefore) }
            }
            buffer.consume(headLength)
            parsers.response.reset()
            return true
        }
        dropUpstreamHead()
        let head = parsers.response.head
        if !head.keepAlive { upstreamReusable = false }
        var body: ResponseBody?
        switch head.framing {
        case .none: body = nil
        case .contentLength(let length): body = length == 0 ? nil : .contentLength(remaining: length)
        case .chunked:
            body = clientIsHTTP10 ? .dechunked : .chunked
        case .untilClose:
            upstreamReusable = false
            body = .untilClose
        }
        if usageInjection == .injected, let unfiltered = body, buffer.withReadableSpan({ Self.isEventStream(head, $0) }) {
            body = .filtered(input: unfiltered.filteredInput, rechunk: !clientIsHTTP10)
        }
        let reframe: HeadRewriter.Reframe
        switch body {
        case .dechunked, .filtered(_, rechunk: false):
            reframe = .untilClose
            closeAfterResponse = true
        case .filtered(_, rechunk: true):
            reframe = .chunked
        case .untilClose:
            reframe = .asReceived
            closeAfterResponse = true
        case .contentLength, .chunked, nil:
            reframe = .asReceived
        }
        if !requestIsComplete { closeAfterResponse = true }
        let facts = buffer.withReadableSpan {
            HeadRewriter.writeResponseHead(into: out, source: $0, head: head, requestID: requestID,
                                           close: closeAfterResponse, reframe: reframe, rateLimitFields: rateLimitFields)
        }
        guard let facts else { return headDidNotFit(out, queuedBefore: queuedBefore) }
        if let upstreamID = facts.upstreamRequestID, loop.completions != nil {
            let sent = buffer.withReadableSpan { source in upstreamID.count == requestID.count && (0..<upstreamID.count).allSatisfy { source[upstreamID.lowerBound + $0] == requestID[$0] } }
            if !sent { upstreamRequestIDText = buffer.withReadableSpan { source in String(decoding: upstreamID.map { source[$0] }, as: UTF8.self) } }
        }
        responseStarted = true
        responseStatus = head.status
        responseHeadAt = loop.nowMicroseconds
        if body != nil {
            // Event streams and JSON bodies are always read, log or no log: the first content event is the TTFT the
            // histogram observes, and usage and model feed the token counters (sluice_*_tokens_total by model).
            responseObserver = loop.takeResponseObserver(kind: facts.eventStream ? .eventStream : facts.json ? .json : .other,
                                                         readsUsage: true, capture: captureResponseBytes)
            countedAsStream = true
            loop.metrics.addActiveStreams(1)
        }
        buffer.consume(headLength)
        releaseParsers()
        if let body { response = .body(body) } else { responseFinished() }
        return true
    }

    /// A response head did not fit the client queue: the part written is taken back, so no cut head is ever sent.
    /// Behind earlier queued heads (several 1xx) it waits for them to drain: the parser keeps its completed result,
    /// and `flushToClient` parses again. Alone in the queue it never fits: the exchange fails. Returns false.
    func headDidNotFit(_ out: ByteBuffer, queuedBefore: Int) -> Bool {
        out.truncate(toReadable: queuedBefore)
        guard queuedBefore == 0 else {
            waitingForHeadRoom = true
            return false
        }
        upstreamFailed(.badResponse("upstream response head is too large to forward"))
        return false
    }

    /// Hysteresis on the response direction.
    func updateUpstreamPause() {
        let queued = (upstreamIn?.readableCount ?? 0) + (clientOut?.readableCount ?? 0)
        peakQueued = max(peakQueued, queued)
        if queued >= highWatermark {
            if upstreamReadPause.insert(.peerQueueFull).inserted {
                pausedSince = loop.nowMicroseconds
                loop.metrics.countBackpressurePause()
            }
        } else if queued <= lowWatermark {
            if upstreamReadPause.remove(.peerQueueFull) != nil { pausedTotal += loop.nowMicroseconds - pausedSince }
        }
    }

    func responseFinished() {
        response = .complete
        var cleanEnd = true
        if let buffer = upstreamIn, buffer.readableCount > responseSendEnd {
            cleanEnd = false
            buffer.truncate(toReadable: responseSendEnd)
        }
        if let connection = upstream {
            let facts = ExchangeReuse.UpstreamFacts(requestWrittenWhole: requestWrittenWhole, responseEndedCleanly: cleanEnd,
                                                    serverKeepsAlive: upstreamReusable, hungUp: connection.hangup)
            if ExchangeReuse.mayPoolUpstream(facts) {
                upstream = nil
                loop.poolUpstream(connection)
            }
        }
        closeUpstream()
        finishIfFlushed()
    }

    /// The request's head and whole body went to the current upstream connection, nothing left in its transport.
    var requestWrittenWhole: Bool {
        requestIsComplete && requestHeadWritten && requestSendEnd == 0 && !(upstream?.transport.hasPendingOutput ?? true)
    }

    /// The upstream closed (or failed) its side.
    func upstreamEndOfStream(error: SystemError?) {
        upstreamReusable = false
        switch response {
        case .awaitingHead:
            if upstream?.reused == true, !responseStarted, canReplay {
                return replay()
            }
            let reason = error.map { $0.description } ?? "connection closed"
            upstreamFailed(.badResponse("upstream \(upstreamDisplay) closed before sending a complete response head (\(reason))",
                                        client: "upstream \(upstreamName) closed before sending a complete response head"))
        case .body(.untilClose):
            responseFinished()
        case .body(.filtered(.untilClose, let rechunk)):
            filteredUpstreamClosed(rechunk: rechunk)
        case .body:
            endTruncated(reason: error.map { "upstream failed mid-body: \($0.description)" } ?? "upstream closed mid-body", end: .upstreamAbort)
        case .complete, .aborted:
            closeUpstream()
        }
    }

    /// An upstream failure before any response byte went to the client becomes a JSON error response.
    func upstreamFailed(_ error: ProxyError) {
        OpLog.warn("upstream error", ["upstream": .string(settings.upstreams[upstreamIndex].name),
                                      "address": .string(upstreamDisplay), "status": .int(error.status), "error": .string(error.message)])
        upstreamReusable = false
        closeUpstream()
        if responseStarted {
            endTruncated(reason: error.message, end: error.end)
        } else {
            respond(error, closeAfter: !requestIsComplete || closeAfterResponse)
        }
    }

    func closeUpstream() {
        guard let connection = upstream else { return }
        upstream = nil
        loop.closeUpstream(connection)
    }

    // MARK: - Client output

    /// Writes queued bytes to the client; returns true if it wrote.
    func flushToClient() -> Bool {
        guard clientWritable, phase != .closed else { return false }
        let headCount = clientOut?.readableCount ?? 0
        let bodyCount = responseSendEnd
        guard headCount + bodyCount > 0 || clientTransport.hasPendingOutput else { return false }
        let result: IOResult<Int>
        do { result = try clientTransport.write(clientOut, 0..<headCount, upstreamIn, 0..<bodyCount) } catch {
            if phase == .lingering { close() } else { abort(reason: "client write failed: \(error.description)", end: .clientAbort) }
            return false
        }
        guard case .processed(let written) = result else {
            clientWritable = false
            return false
        }
        lastClientWriteProgress = loop.now
        responseBytes += Int64(written)
        loop.metrics.addClientBytesSent(written)
        let headWritten = min(written, headCount)
        if headWritten > 0, let out = clientOut {
            out.consume(headWritten)
            releaseIfEmpty(&clientOut)
        }
        let bodyWritten = written - headWritten
        if bodyWritten > 0, let buffer = upstreamIn {
            buffer.consume(bodyWritten)
            responseSendEnd -= bodyWritten
            releaseIfEmpty(&upstreamIn)
        }
        if written < headCount + bodyCount || clientTransport.hasPendingOutput { clientWritable = false }
        updateUpstreamPause()
        // Bodies copied through `clientOut` continue once it has room; a filtered body whose upstream closed ends here.
        switch response {
        case .body(.dechunked) where upstreamIn != nil, .body(.filtered) where upstreamIn != nil:
            processResponseBytes()
        case .body(.filtered(input: .closed, _)):
            _ = takeBuffer(&upstreamIn)
            processResponseBytes()
        default:
            break
        }
        if waitingForHeadRoom && (clientOut?.readableCount ?? 0) == 0 {
            waitingForHeadRoom = false
            processResponseBytes()
        }
        finishIfFlushed()
        return written > 0
    }

    var clientOutputPending: Bool {
        (clientOut?.readableCount ?? 0) + responseSendEnd > 0 || clientTransport.hasPendingOutput
    }

    /// Ends the exchange once its response is complete and fully written.
    func finishIfFlushed() {
        guard phase == .exchange, !clientOutputPending else { return }
        switch response {
        case .complete:
            finishExchange()
        case .aborted:
            close()
        case .awaitingHead, .body:
            break
        }
    }

    func finishExchange() {
        closeUpstream()
        releaseParsers()
        emitRecord()
        requestsServed += 1
        let next = ExchangeReuse.clientNext(requestReceivedWhole: requestIsComplete, closeRequested: closeAfterResponse || loop.isDraining,
                                            unsentBodyBytes: requestSendEnd)
        guard case .nextRequest(let unsentBody) = next else { return lingerAndClose() }
        if unsentBody > 0, let buffer = clientIn {
            // Body bytes framed for an upstream that answered without taking them: they end here, never parsed.
            buffer.consume(unsentBody)
            requestSendEnd = 0
        }
        phase = .idle
        timeouts = settings.timeouts
        idleSince = loop.now
        requestSentAt = 0
        releaseIfEmpty(&upstreamIn)
        // An exchange's upstream head never outlives it: one its upstream never took (a failed connect answered
        // 502) would otherwise be sent ahead of the next request's head on this connection.
        dropUpstreamHead()
        usageHeld?.clear()
        releaseIfEmpty(&usageHeld)
        // Pipelined bytes already read start the next request now.
        if let buffer = clientIn, buffer.readableCount > 0 {
            phase = .readingHead
            headStartedAt = loop.now
            parseRequestHead()
        } else {
            releaseIfEmpty(&clientIn)
            loop.sessionBecameIdle(self)  // kept alive with nothing pending: may make room at max_connections
        }
    }

    /// Sends a response sluice generated (an error), then closes or keeps the connection.
    func respond(_ error: ProxyError, closeAfter: Bool, extraFields: [UInt8] = [], body: [UInt8]? = nil) {
        closeUpstream()
        dropUpstreamHead()
        releaseParsers()
        if !recordPending { beginRecord(head: nil, source: nil) }
        exchangeEnd = error.end
        exchangeError = error.message
        responseStatus = error.status
        if requestID.isEmpty { mintRequestID() }
        responseSendEnd = 0
        upstreamIn.map { $0.clear() }
        releaseIfEmpty(&upstreamIn)
        let out = takeBuffer(&clientOut)
        out.clear()
        ErrorResponse.write(into: out, error, requestID: requestID, close: closeAfter, extraFields: extraFields, body: body)
        closeAfterResponse = closeAfter
        lastClientWriteProgress = loop.now
        responseStarted = true
        response = .complete
        phase = .exchange
        finishIfFlushed()
    }

    /// A request sluice refuses: answered and the connection closed, never forwarded.
    func rejectRequest(_ error: ProxyError) {
        OpLog.debug("request rejected", ["client": .string(String(decoding: clientIP, as: UTF8.self)), "status": .int(error.status),
                                         "error": .string(error.message)])
        dropUnsentRequest()
        dropUpstreamHead()
        respond(error, closeAfter: true)
    }

    /// Ends an exchange at once because the client is gone or stuck: the upstream is closed in this
    /// loop turn (stopping a paid generation) and queued bytes are dropped.
    func abort(reason: String, end: CompletionRecord.End) {
        OpLog.debug("exchange aborted", ["reason": .string(reason)])
        if exchangeEnd == nil {
            exchangeEnd = end
            exchangeError = reason
        }
        upstreamReusable = false
        closeUpstream()
        response = .aborted
        close()
    }

    /// The upstream failed after the response began: what was received still goes out, then the client
    /// is closed without the body's clean end (no last chunk, or short of Content-Length), so it can
    /// tell the response was truncated.
    func endTruncated(reason: String, end: CompletionRecord.End) {
        OpLog.warn("upstream response truncated", ["upstream": .string(upstreamDisplay), "error": .string(reason)])
        exchangeEnd = end
        exchangeError = reason
        upstreamReusable = false
        closeUpstream()
        response = .aborted
        closeAfterResponse = true
        finishIfFlushed()
    }
}
