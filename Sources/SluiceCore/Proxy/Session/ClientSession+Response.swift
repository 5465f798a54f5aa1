/// The response path: reading the upstream, parsing heads, framing the body, writing to the client, ending the
/// exchange, and the responses sluice generates itself.
extension ClientSession {
    // MARK: - Upstream input

    /// Reads from the upstream and hands the bytes on at once; returns true if it read.
    func readFromUpstream() -> Bool {
        guard let connection = upstream, connection.connected, connection.readable else { return false }
        switch response {
        case .awaitingHead: guard !waitingForHeadRoom else { return false }
        case .body: guard upstreamGate.isOpen else { return false }
        case .complete, .aborted: return false
        }
        if !clientOutputPending { times.lastClientWriteProgress = loop.now }
        if splicesNow { return spliceFromUpstream(connection) }
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
            times.lastUpstreamRead = loop.now
            loop.metrics.addUpstreamBytesReceived(count)
            processResponseBytes()
            // A read that held only a head (a 101, or a stream's head before its first event) leaves the buffer
            // empty: give it back, or every tunnel and head-only stream keeps a touched page of it while idle.
            releaseIfEmpty(&upstreamIn)
            return true
        }
    }

    /// Parses response heads and frames body bytes now in `upstreamIn`.
    func processResponseBytes() {
        guard let buffer = upstreamIn else { return }
        while phase == .exchange || phase == .tunnel {
            switch response {
            case .awaitingHead:
                let parsers = takeParsers()
                let result = buffer.withReadableSpan { parsers.response.parse($0, requestMethod: machine.method) }
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
            case .body(.tunnel):
                relayTunnelOutput(buffer)
                return updateUpstreamPause()
            case .body(let body):
                let available = buffer.readableCount - responseSendEnd
                guard available > 0 else { return updateUpstreamPause() }
                switch body {
                case .contentLength(let remaining):
                    let take = Int(min(Int64(available), remaining))
                    observeResponse(buffer, responseSendEnd..<(responseSendEnd + take))
                    responseSendEnd += take
                    if Int64(take) == remaining { responseFinished() } else { responseBody = .contentLength(remaining: remaining - Int64(take)) }
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
                        return carryOut(machine.responseBodyFailed("invalid chunked framing from upstream: \(error.message)"))
                    }
                case .dechunked:
                    guard dechunk(buffer) else { return updateUpstreamPause() }
                case .untilClose:
                    observeResponse(buffer, responseSendEnd..<buffer.readableCount)
                    responseSendEnd = buffer.readableCount
                case .filtered, .tunnel:
                    preconditionFailure("filtered bodies and tunnels are relayed above")
                }
            case .complete, .aborted:
                // Bytes after the end of a response: the server broke framing, so the connection is not reused.
                if buffer.readableCount > responseSendEnd {
                    machine.upstreamSentBytesAfterResponse()
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
                carryOut(machine.responseBodyFailed("invalid chunked framing from upstream: \(error.message)"))
                return false
            }
        }
        return true
    }

    /// Handles a complete response head: interim ones are relayed and parsing continues, a final one
    /// decides the body framing. Returns false when the exchange ended or the head waits for room.
    func acceptResponseHead(headLength: Int, buffer: ByteBuffer, parsers: HeadParsers) -> Bool {
        let out = takeBuffer(&clientOut)
        let queuedBefore = out.readableCount
        let head = parsers.response.head
        if head.isInformational {
            // Read before the call: the autoclosure runs while the machine is being mutated.
            let upgradeRequested = machine.tunnelRequested
            let action = machine.responseHeadParsed(head.status == 101 ? .switchingProtocols(webSocket: head.upgradesToWebSocket) : .interim,
                                                    badResponse: .badResponse(upgradeRequested
                                                        ? "upstream switched to a protocol other than the WebSocket requested"
                                                        : "upstream switched protocols, which was not requested"))
            if case .openTunnel = action {
                return openTunnel(headLength: headLength, buffer: buffer, parsers: parsers, out: out, queuedBefore: queuedBefore)
            }
            guard case .forwardInterim(let relay) = action else {
                carryOut(action)
                return false
            }
            if relay {
                let written = buffer.withReadableSpan {
                    HeadRewriter.writeResponseHead(into: out, source: $0, head: head, requestID: nil, close: false)
                }
                guard written != nil else { return headDidNotFit(out, queuedBefore: queuedBefore) }
            }
            buffer.consume(headLength)
            parsers.response.reset()
            return true
        }
        var body: ResponseBody?
        switch head.framing {
        case .none: body = nil
        case .contentLength(let length): body = length == 0 ? nil : .contentLength(remaining: length)
        case .chunked: body = machine.clientIsHTTP10 ? .dechunked : .chunked
        case .untilClose: body = .untilClose
        }
        if usageInjection == .injected, let unfiltered = body, buffer.withReadableSpan({ Self.isEventStream(head, $0) }) {
            body = .filtered(input: unfiltered.filteredInput, rechunk: !machine.clientIsHTTP10)
        }
        let reframe: HeadRewriter.Reframe
        switch body {
        case .dechunked, .filtered(_, rechunk: false): reframe = .untilClose
        case .filtered(_, rechunk: true): reframe = .chunked
        case .untilClose, .contentLength, .chunked, .tunnel, nil: reframe = .asReceived
        }
        var facts = ExchangeStateMachine.ResponseHeadFacts(kind: .final, serverKeepsAlive: head.keepAlive)
        facts.upstreamEndsAtClose = head.framing == .untilClose
        facts.clientEndsAtClose = reframe == .untilClose || body == .untilClose
        if !waitingForHeadRoom { serverAnswered(status: head.status) }
        if keepsRequestForRetry, machine.mayRetry, settings.upstreams[upstreamIndex].pool.config.retry.retryOn.contains(.status(head.status)),
           mayRetry(.status(head.status)) {
            facts.retryStatus = head.status
        }
        let close: Bool
        switch machine.responseHeadParsed(facts, badResponse: .badResponse("unreachable")) {
        case .forward(let closeAfter): close = closeAfter
        case let retry:
            carryOut(retry)
            return false
        }
        // The upstream stopped taking the request and this answer is not retried: what was kept for a retry goes.
        if machine.requestSendingStopped { dropUnsentRequest() }
        stopKeepingForRetry()
        let written = buffer.withReadableSpan {
            HeadRewriter.writeResponseHead(into: out, source: $0, head: head, requestID: requestID,
                                           close: close, reframe: reframe, rateLimitFields: rateLimitFields)
        }
        guard let written else { return headDidNotFit(out, queuedBefore: queuedBefore) }
        dropUpstreamHead()
        machine.responseHeadQueued()
        if let upstreamID = written.upstreamRequestID, loop.completions != nil {
            let sent = buffer.withReadableSpan { source in upstreamID.count == requestID.count && (0..<upstreamID.count).allSatisfy { source[upstreamID.lowerBound + $0] == requestID[$0] } }
            if !sent { record.upstreamRequestID = buffer.withReadableSpan { source in String(decoding: upstreamID.map { source[$0] }, as: UTF8.self) } }
        }
        record.status = head.status
        record.responseHeadAt = loop.nowMicroseconds
        if body != nil {
            // Event streams and JSON bodies are always read, log or no log: the first content event is the TTFT the
            // histogram observes, and usage and model feed the token counters (sluice_*_tokens_total by model).
            responseObserver = loop.takeResponseObserver(kind: written.eventStream ? .eventStream : written.json ? .json : .other,
                                                         readsUsage: true, capture: captureResponseBytes)
            countedAsStream = true
            loop.metrics.addActiveStreams(1)
            decideSplice(tapped: written.eventStream || written.json, upstreamTLS: upstream?.tls != nil)
        }
        buffer.consume(headLength)
        releaseParsers()
        if let body { responseBody = body } else { responseFinished() }
        return true
    }

    /// A response head did not fit the client queue: the part written is taken back, so no cut head is ever sent.
    /// Behind earlier queued heads (several 1xx) it waits for them to drain: the parser keeps its completed result,
    /// and `flushToClient` parses again. Returns false.
    func headDidNotFit(_ out: ByteBuffer, queuedBefore: Int) -> Bool {
        out.truncate(toReadable: queuedBefore)
        waitingForHeadRoom = queuedBefore > 0
        carryOut(machine.responseHeadDidNotFit(behindQueuedHeads: queuedBefore > 0,
                                               error: .badResponse("upstream response head is too large to forward")))
        return false
    }

    /// The response direction's gate: upstream reads pause while the client queue is full; the pauses are timed.
    func updateUpstreamPause() {
        let queued = (upstreamIn?.readableCount ?? 0) + (clientOut?.readableCount ?? 0) + (splice?.queued ?? 0)
        record.peakQueued = max(record.peakQueued, queued)
        switch upstreamGate.queueChanged(to: queued, watermarks) {
        case .paused:
            record.pausedSince = loop.nowMicroseconds
            loop.metrics.countBackpressurePause()
        case .resumed:
            record.pausedTotal += loop.nowMicroseconds - record.pausedSince
        case nil:
            break
        }
    }

    /// The response reached its framed end: the machine decides whether its upstream connection is pooled.
    func responseFinished() {
        var bytesAfterEnd = false
        if let buffer = upstreamIn, buffer.readableCount > responseSendEnd {
            bytesAfterEnd = true
            buffer.truncate(toReadable: responseSendEnd)
        }
        let requestBytesPending = requestSendEnd > 0 || keptBodyPending > 0 || (upstream?.transport.hasPendingOutput ?? true)
        carryOut(machine.responseEnded(bytesAfterEnd: bytesAfterEnd, requestBytesPending: requestBytesPending, hungUp: upstream?.hangup ?? true))
        closeUpstream()
        finishIfFlushed()
    }

    /// The upstream closed (or failed) its side.
    func upstreamEndOfStream(error: SystemError?) {
        if phase == .tunnel { return carryOut(machine.tunnelUpstreamEnded(failure: error.map { "upstream failed: \($0.description)" })) }
        let reason = error.map { $0.description } ?? "connection closed"
        if response == .awaitingHead, upstream?.reused == false {
            server?.failed(now: loop.now, upstream: settings.upstreams[upstreamIndex].name, what: "closed before the response head")
        }
        carryOut(machine.upstreamClosed(replayFacts, retry: self.mayRetry(.reset),
                                        beforeHead: .badResponse("upstream \(upstreamDisplay) closed before sending a complete response head (\(reason))",
                                                                 client: "upstream \(upstreamName) closed before sending a complete response head"),
                                        midBody: error.map { "upstream failed mid-body: \($0.description)" } ?? "upstream closed mid-body"))
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
        // A spliced body's bytes follow everything queued in the buffers (`splicesNow`), so they go once those are out.
        if headCount + bodyCount == 0, let pipe = splice, pipe.queued > 0 { return flushSplice(pipe) }
        guard headCount + bodyCount > 0 || clientTransport.hasPendingOutput else { return false }
        let result: IOResult<Int>
        do { result = try clientTransport.write(clientOut, 0..<headCount, upstreamIn, 0..<bodyCount) } catch {
            carryOut(machine.clientWriteFailed(error.description))
            return false
        }
        guard case .processed(let written) = result else {
            clientWritable = false
            return false
        }
        times.lastClientWriteProgress = loop.now
        record.responseBytes += Int64(written)
        loop.metrics.addClientBytesSent(written)
        let headWritten = min(written, headCount)
        if headWritten > 0, let out = clientOut {
            out.consume(headWritten)
            releaseIfEmpty(&clientOut)
        }
        let bodyWritten = written - headWritten
        if phase == .tunnel { countTunnelBytes(bodyWritten, toUpstream: false) }
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
        (clientOut?.readableCount ?? 0) + responseSendEnd + (splice?.queued ?? 0) > 0 || clientTransport.hasPendingOutput
    }
}
