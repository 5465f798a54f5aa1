/// The upstream attempt: connecting (and moving to the next address), writing the request, replaying it.
extension ClientSession {
    // MARK: - Upstream

    /// The upstream's address, for the operator log and the record.
    var upstreamDisplay: String { server?.label ?? settings.upstreams[upstreamIndex].display }
    /// The upstream's configured name, quoted: what a client is told about it.
    var upstreamName: String { "'\(settings.upstreams[upstreamIndex].name)'" }

    /// Connects the exchange to a server: the one it has (a replay on a fresh connection), or one the pool
    /// chooses; through an idle pooled connection to it when `poolAllowed`, else a new one.
    func openUpstream(poolAllowed: Bool) {
        let pool = settings.upstreams[upstreamIndex].pool
        // A pool whose names have not resolved yet has no server to try (the resolver thread keeps looking): a 502
        // now, with no connect attempt, no upstream address in the record and no tokens charged.
        guard pool.isResolved else {  // one atomic load once resolved
            return upstreamFailed(.unresolved("upstream \(upstreamName) (\(upstreamDisplay)) does not resolve yet: \(pool.unresolvedReason ?? "")",
                                              client: "upstream \(upstreamName) does not resolve yet"))
        }
        if server == nil {
            guard !awaitingAffinityKey else {
                connectHeldForAffinity = true  // the key is still in the body: `settleBodyAffinity` connects
                return
            }
            switch pool.choose(key: affinityKey, tried: triedServers, now: loop.now, random: &loop.randomState) {
            case .server(let chosen, let affinity, let panic):
                chosen.streamStarted()
                server = chosen
                triedServers.insert(chosen.slot)
                tries += 1
                if tries == 1 {
                    self.affinity = affinity
                    pool.requestStarted()
                    if pool.config.affinity != nil { pool.counters.countAffinity(affinityKey == nil ? nil : affinity) }
                }
                if panic { pool.counters.countPanic() }
                record.server = chosen.label
            case .busy:
                let error = ProxyError.upstreamBusy("every server of upstream \(upstreamName) is at its max_streams",
                                                    client: "every server of upstream \(upstreamName) is busy")
                return carryOut(machine.upstreamFailed(error), extraFields: Array("Retry-After: 1\r\n".utf8))
            case .exhausted:
                return upstreamFailed(.unreachable("no server of upstream \(upstreamName) is left to try",
                                                   client: "no server of upstream \(upstreamName) is available"))
            }
        }
        guard let server else { return }
        record.upstreamContacted = true
        attemptStartedAt = loop.nowMicroseconds
        if poolAllowed, let pooled = loop.takePooledUpstream(to: server, upstreamIndex, of: settings) {
            pooled.session = self
            upstream = pooled
            times.requestSentAt = requestIsComplete ? loop.now : 0
            return
        }
        times.connectStartedAt = loop.now
        do {
            let connection = try loop.openUpstream(to: server, upstreamIndex, of: settings)
            connection.session = self
            upstream = connection
            if connection.connected { times.requestSentAt = requestIsComplete ? loop.now : 0 }
        } catch {
            connectFailed(.unreachable("cannot connect to upstream \(upstreamDisplay): \(error.description)",
                                       client: "cannot connect to upstream \(upstreamName)"))
        }
    }

    /// The exchange is done with its server (it ended, or moves to another): its stream stops counting there.
    func releaseServer() {
        guard let server else { return }
        server.streamEnded()
        self.server = nil
    }

    /// Writes the request head and framed body bytes to the upstream; returns true if it wrote.
    func flushToUpstream() -> Bool {
        // A head waiting for its held body's Content-Length (`inject_usage`) is not complete yet.
        guard let connection = upstream, connection.connected, connection.writable, usageInjection != .holdingBody,
              !machine.requestSendingStopped else { return false }
        let headRemaining = (upstreamOut?.readableCount ?? 0) - upstreamHeadSent
        // A body byte never goes out ahead of (or without) its head; after a retry, the body bytes kept from the
        // last try go before the ones still in `clientIn`.
        let resending = machine.requestHeadWritten ? keptBodyPending : 0
        let bodyReady = machine.requestHeadWritten && resending <= 0 ? requestSendEnd : 0
        let bodySource = resending > 0 ? keptBody : clientIn
        let bodyRange = resending > 0 ? keptBodyResent..<(keptBodyResent + resending) : 0..<bodyReady
        guard headRemaining > 0 || !bodyRange.isEmpty || connection.transport.hasPendingOutput else { return false }
        let result: IOResult<Int>
        do {
            result = try connection.transport.write(upstreamOut, upstreamHeadSent..<(upstreamHeadSent + headRemaining), bodySource, bodyRange)
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
        if phase == .tunnel { countTunnelBytes(bodyWritten, toUpstream: true) }
        if resending > 0 {
            keptBodyResent += bodyWritten
            // A retry's resend that outlived the chance of another retry lets go of the kept bytes once they are out.
            if !keepsBodyForRetry && keptBodyPending == 0 { releaseRetryState() }
        } else if bodyWritten > 0, let buffer = clientIn {
            if keepsBodyForRetry { keepSentBody(buffer, 0..<bodyWritten) }
            buffer.consume(bodyWritten)
            requestSendEnd -= bodyWritten
            releaseIfEmpty(&clientIn)
            updateClientPause()
        }
        if written < headRemaining + bodyRange.count || connection.transport.hasPendingOutput { connection.writable = false }
        // Only a request on a reused connection (see `replay`), or one a retry may send again, needs its head again.
        if !connection.reused, !keepsRequestForRetry, let head = upstreamOut, upstreamHeadSent == head.readableCount {
            loop.bufferPool.give(head)
            upstreamOut = nil
            upstreamHeadSent = 0
        }
        if requestIsComplete && requestSendEnd == 0 && keptBodyPending == 0 && upstreamHeadSent == (upstreamOut?.readableCount ?? 0) && times.requestSentAt == 0 {
            times.requestSentAt = loop.now
        }
        return written > 0
    }

    /// The TLS session with the upstream failed: a certificate that did not verify, a handshake or record error.
    /// The client gets a 502 naming the reason (or, mid-response, a truncated stream).
    func upstreamTLSFailed(_ reason: String) {
        if phase == .tunnel { return carryOut(machine.tunnelUpstreamEnded(failure: "TLS with upstream \(upstreamDisplay) failed: \(reason)")) }
        upstreamFailed(.upstreamTLS("TLS with upstream \(upstreamDisplay) failed: \(reason)", client: "TLS with upstream \(upstreamName) failed: \(reason)"))
    }

    /// The server stopped taking the request. It may have answered early (e.g. 413) before closing, so
    /// the read path decides: it relays that response, or sees the close and reports it.
    func upstreamWriteFailed(_ error: SystemError) {
        OpLog.debug("writing to upstream failed", ["upstream": .string(upstreamDisplay), "error": .string(error.description)])
        if phase == .tunnel { return carryOut(machine.tunnelUpstreamEnded(failure: "writing to upstream failed: \(error.description)")) }
        carryOut(machine.upstreamWriteFailed(retryPossible: keepsRequestForRetry && !bodyNotKept))
    }

    /// What the replay decision needs to know about an upstream that closed before its response head.
    var replayFacts: ExchangeStateMachine.ReplayFacts {
        ExchangeStateMachine.ReplayFacts(connectionReused: upstream?.reused == true, bodyBytesSent: requestBodyBytes,
                                         responseBytesRead: (upstreamIn?.readableCount ?? 0) > 0, headKept: upstreamOut != nil)
    }
}
