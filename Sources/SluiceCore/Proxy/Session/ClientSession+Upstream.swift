/// The upstream attempt: connecting (and moving to the next address), writing the request, replaying it.
extension ClientSession {
    // MARK: - Upstream

    /// The upstream's address, for the operator log and the record.
    var upstreamDisplay: String { settings.upstreams[upstreamIndex].display }
    /// The upstream's configured name, quoted: what a client is told about it.
    var upstreamName: String { "'\(settings.upstreams[upstreamIndex].name)'" }

    /// Takes an idle pooled connection (when `poolAllowed`) or opens a new one.
    func openUpstream(poolAllowed: Bool) {
        // A name that has not resolved yet has no address to try (the resolver thread keeps looking): a 502 now,
        // with no connect attempt, no upstream address in the record and no tokens charged.
        if let reason = settings.upstreams[upstreamIndex].addresses.unresolvedReason {  // one atomic load once resolved
            return upstreamFailed(.unresolved("upstream \(upstreamName) (\(upstreamDisplay)) does not resolve yet: \(reason)",
                                              client: "upstream \(upstreamName) does not resolve yet"))
        }
        record.upstreamContacted = true
        if poolAllowed, let pooled = loop.takePooledUpstream(upstreamIndex, of: settings) {
            pooled.session = self
            upstream = pooled
            times.requestSentAt = requestIsComplete ? loop.now : 0
            return
        }
        times.connectStartedAt = loop.now
        do {
            let connection = try loop.openUpstream(upstreamIndex, of: settings)
            connection.session = self
            upstream = connection
            if connection.connected { times.requestSentAt = requestIsComplete ? loop.now : 0 }
        } catch {
            connectFailed(.unreachable("cannot connect to upstream \(upstreamDisplay): \(error.description)",
                                       client: "cannot connect to upstream \(upstreamName)"))
        }
    }

    /// Writes the request head and framed body bytes to the upstream; returns true if it wrote.
    func flushToUpstream() -> Bool {
        // A head waiting for its held body's Content-Length (`inject_usage`) is not complete yet.
        guard let connection = upstream, connection.connected, connection.writable, usageInjection != .holdingBody else { return false }
        let headRemaining = (upstreamOut?.readableCount ?? 0) - upstreamHeadSent
        // A body byte never goes out ahead of (or without) its head.
        let bodyReady = machine.requestHeadWritten ? requestSendEnd : 0
        guard headRemaining > 0 || bodyReady > 0 || connection.transport.hasPendingOutput else { return false }
        let result: IOResult<Int>
        do {
            result = try connection.transport.write(upstreamOut, upstreamHeadSent..<(upstreamHeadSent + headRemaining), clientIn, 0..<bodyReady)
        } catch {
            switch error {
            case .socket(let error): upstreamWriteFailed(error)
            case .tls(let reason): upstreamTLSFailed(reason)
            }
            return false
        }
        guard case .processed(let written) = result else {
            connection.writable = false
            return false
        }
        loop.metrics.addUpstreamBytesSent(written)
        let headWritten = min(written, headRemaining)
        upstreamHeadSent += headWritten
        if upstreamOut != nil && headWritten == headRemaining && !machine.requestHeadWritten { machine.requestHeadSent() }
        let bodyWritten = written - headWritten
        if bodyWritten > 0, let buffer = clientIn {
            buffer.consume(bodyWritten)
            requestSendEnd -= bodyWritten
            releaseIfEmpty(&clientIn)
            updateClientPause()
        }
        if written < headRemaining + bodyReady || connection.transport.hasPendingOutput { connection.writable = false }
        // Only a request on a reused connection can need its head again (see `replay`).
        if !connection.reused, let head = upstreamOut, upstreamHeadSent == head.readableCount {
            loop.bufferPool.give(head)
            upstreamOut = nil
            upstreamHeadSent = 0
        }
        if requestIsComplete && requestSendEnd == 0 && upstreamHeadSent == (upstreamOut?.readableCount ?? 0) && times.requestSentAt == 0 {
            times.requestSentAt = loop.now
        }
        return written > 0
    }

    /// The TLS session with the upstream failed: a certificate that did not verify, a handshake or record error.
    /// The client gets a 502 naming the reason (or, mid-response, a truncated stream).
    func upstreamTLSFailed(_ reason: String) {
        upstreamFailed(.upstreamTLS("TLS with upstream \(upstreamDisplay) failed: \(reason)", client: "TLS with upstream \(upstreamName) failed: \(reason)"))
    }

    /// The server stopped taking the request. It may have answered early (e.g. 413) before closing, so
    /// the read path decides: it relays that response, or sees the close and reports it.
    func upstreamWriteFailed(_ error: SystemError) {
        OpLog.debug("writing to upstream failed", ["upstream": .string(upstreamDisplay), "error": .string(error.description)])
        carryOut(machine.upstreamWriteFailed())
    }

    /// What the replay decision needs to know about an upstream that closed before its response head.
    var replayFacts: ExchangeStateMachine.ReplayFacts {
        ExchangeStateMachine.ReplayFacts(connectionReused: upstream?.reused == true, bodyBytesSent: requestBodyBytes,
                                         responseBytesRead: (upstreamIn?.readableCount ?? 0) > 0, headKept: upstreamOut != nil)
    }
}
