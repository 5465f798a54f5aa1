/// The shell's half of every transition: `ExchangeStateMachine` decides, these functions do the IO it names (sockets,
/// buffers, the pool, the record). Nothing here chooses between outcomes.
extension ClientSession {
    /// Carries out `action`. `extraFields` and `body` go into a generated response (a 429's rate-limit fields, a
    /// 503's Retry-After).
    func carryOut(_ action: ExchangeStateMachine.Action, extraFields: [UInt8] = [], body: [UInt8]? = nil) {
        switch action {
        case .none, .forward, .forwardInterim:
            // Head relaying is done where the head is parsed (`acceptResponseHead`), which asked for the action.
            break
        case .connect(_, let poolAllowed):
            openUpstream(poolAllowed: poolAllowed)
        case .retry(_, let failure, let reason):
            retryOnAnotherServer(after: failure, reason: reason)
        case .replay:
            closeUpstream()
            upstreamHeadSent = 0
            loop.metrics.countUpstreamReplay()
            openUpstream(poolAllowed: false)
        case .respond(let error, let close, let dropUnsent):
            if error.source == .upstream {
                OpLog.warn("upstream error", ["upstream": .string(settings.upstreams[upstreamIndex].name),
                                              "servers": .string(settings.upstreams[upstreamIndex].display), "server": .string(server?.label ?? ""),
                                              "status": .int(error.status), "error": .string(error.message)])
            }
            if dropUnsent { dropUnsentRequest() }
            respond(error, closeAfter: close, extraFields: extraFields, body: body)
        case .stopSendingRequest:
            dropUnsentRequest()
            releaseRetryState()
            upstream?.readable = true
            upstream?.writable = false
        case .pauseSendingRequest:
            upstream?.readable = true
            upstream?.writable = false
        case .endResponseAtClose:
            if case .body(.filtered(_, let rechunk)) = response { filteredUpstreamClosed(rechunk: rechunk) } else { responseFinished() }
        case .reuseUpstream:
            guard let connection = upstream else { return }
            upstream = nil
            loop.poolUpstream(connection)
        case .closeUpstream:
            closeUpstream()
        case .truncate(let reason, let end):
            endTruncated(reason: reason, end: end)
        case .abort(let reason, let end):
            abort(reason: reason, end: end)
        case .nextRequest(let discarding):
            endExchange()
            startNextRequest(discardingBodyBytes: discarding)
        case .finish:
            endExchange()
            lingerAndClose()
        case .close:
            close()
        case .serve:
            clientReadable = true
            loop.post(self)
        case .openTunnel:
            // The 101 is relayed where the head is parsed (`openTunnel`), which asked for the action.
            break
        case .tunnelClientClosed:
            tunnelClientClosed()
        case .tunnelUpstreamClosed:
            tunnelUpstreamClosed()
        case .closeTunnel(let reason, let end):
            closeTunnelGoingAway(reason: reason, end: end)
        }
    }

    /// Sends a response sluice generated (an error), then closes or keeps the connection as the machine decided.
    func respond(_ error: ProxyError, closeAfter: Bool, extraFields: [UInt8] = [], body: [UInt8]? = nil) {
        closeUpstream()
        dropUpstreamHead()
        releaseParsers()
        if !record.pending { beginRecord(head: nil, source: nil) }
        record.end = error.end
        record.error = error.message
        record.status = error.status
        record.generatedSource = error.source
        record.generatedType = error.type
        loop.metrics.countGeneratedResponse(error.source)
        if requestID.isEmpty { mintRequestID() }
        responseSendEnd = 0
        upstreamIn.map { $0.clear() }
        releaseIfEmpty(&upstreamIn)
        let out = takeBuffer(&clientOut)
        out.clear()
        ErrorResponse.write(into: out, error, requestID: requestID, close: closeAfter, extraFields: extraFields, body: body)
        times.lastClientWriteProgress = loop.now
        finishIfFlushed()
    }

    /// Ends an exchange at once because the client is gone or stuck: the upstream is closed in this loop turn
    /// (stopping a paid generation) and queued bytes are dropped.
    func abort(reason: String, end: CompletionRecord.End) {
        OpLog.debug("exchange aborted", ["reason": .string(reason)])
        if record.end == nil {
            record.end = end
            record.error = reason
        }
        closeUpstream()
        close()
    }

    /// The upstream failed after the response began: what was received still goes out, then the client is closed
    /// without the body's clean end (no last chunk, or short of Content-Length), so it can tell the response was
    /// truncated.
    func endTruncated(reason: String, end: CompletionRecord.End) {
        OpLog.warn("upstream response truncated", ["upstream": .string(upstreamDisplay), "error": .string(reason)])
        record.end = end
        record.error = reason
        closeUpstream()
        finishIfFlushed()
    }

    /// Ends the exchange once its response is complete and fully written (or closes an aborted one).
    func finishIfFlushed() {
        guard phase == .exchange || phase == .tunnel, !clientOutputPending else { return }
        carryOut(machine.outputFlushed(unsentBodyBytes: requestSendEnd, draining: loop.isDraining))
    }

    /// What every finished exchange gives back before the connection moves on: its upstream, parsers and record.
    func endExchange() {
        closeUpstream()
        releaseServer()
        releaseRetryState()
        releaseSplice()
        releaseParsers()
        concludeExchange()
    }

    /// The connection stays for another request: body bytes framed for an upstream that answered without taking
    /// them end here, never parsed; pipelined bytes already read start the next request now.
    func startNextRequest(discardingBodyBytes unsentBody: Int) {
        if unsentBody > 0, let buffer = clientIn {
            buffer.consume(unsentBody)
            requestSendEnd = 0
        }
        timeouts = settings.timeouts
        times.idleSince = loop.now
        times.requestSentAt = 0
        releaseIfEmpty(&upstreamIn)
        // An exchange's upstream head never outlives it: one its upstream never took (a failed connect answered
        // 502) would otherwise be sent ahead of the next request's head on this connection.
        dropUpstreamHead()
        usageHeld?.clear()
        releaseIfEmpty(&usageHeld)
        if let buffer = clientIn, buffer.readableCount > 0 {
            machine.requestBegan()
            times.headStartedAt = loop.now
            parseRequestHead()
        } else {
            releaseIfEmpty(&clientIn)
            loop.sessionBecameIdle(self)  // kept alive with nothing pending: may make room at max_connections
        }
    }

    /// A request sluice refuses: answered and the connection closed, never forwarded.
    func rejectRequest(_ error: ProxyError) {
        OpLog.debug("request rejected", ["client": .string(String(decoding: clientIP, as: UTF8.self)), "status": .int(error.status),
                                         "error": .string(error.message)])
        carryOut(machine.requestRejected(error))
    }

    /// The request body went bad after forwarding began (framing, size, a stall).
    func failRequestBody(_ error: ProxyError) {
        carryOut(machine.requestBodyFailed(error))
    }

    /// An upstream failure: answered (and logged with its address) or truncated, as the machine decides.
    func upstreamFailed(_ error: ProxyError) {
        carryOut(machine.upstreamFailed(error))
    }

    /// A connect was refused, failed or timed out: the server's health hears of it, and the request goes to another
    /// server when `retry_on connect_error` and the budget allow.
    func connectFailed(_ error: ProxyError) {
        server?.failed(now: loop.now, upstream: settings.upstreams[upstreamIndex].name, what: "connect")
        carryOut(machine.upstreamConnectFailed(error, retry: mayRetry(.connectError)))
    }
}
