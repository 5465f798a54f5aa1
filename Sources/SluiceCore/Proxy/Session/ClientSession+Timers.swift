/// Timeouts: the session reads its facts, ExchangeDeadlines decides, the session acts.
extension ClientSession {
    // MARK: - Timers

    /// The facts the timeouts depend on, read from the session's state (ExchangeDeadlines decides).
    var deadlineFacts: ExchangeDeadlines.Facts {
        var facts = ExchangeDeadlines.Facts(phase: phase, requestsServed: requestsServed)
        facts.handshakePending = clientTransport.tls.map { !$0.isEstablished } ?? false
        if let connection = upstream {
            facts.connecting = !connection.isEstablished
            facts.awaitingResponseHead = connection.connected && response == .awaitingHead
        }
        if case .body = response, upstreamReadPause.isEmpty { facts.relayingBody = true }
        facts.readingRequestBody = !requestIsComplete && clientReadPause.isEmpty
        facts.clientOutputPending = clientOutputPending
        return facts
    }

    var deadlineTimes: ExchangeDeadlines.Times {
        ExchangeDeadlines.Times(acceptedAt: acceptedAt, idleSince: idleSince, headStartedAt: headStartedAt, exchangeStartedAt: exchangeStartedAt,
                                connectStartedAt: connectStartedAt, requestSentAt: requestSentAt, lastUpstreamRead: lastUpstreamRead,
                                lastClientRead: lastClientRead, lastClientWriteProgress: lastClientWriteProgress, lingerStartedAt: lingerStartedAt)
    }

    var deadlineLimits: ExchangeDeadlines.Limits {
        ExchangeDeadlines.Limits(timeouts: timeouts, handshake: settings.handshakeTimeout, linger: ClientSession.lingerMilliseconds)
    }

    /// The earliest moment one of the current phase's timeouts can fire.
    func nextDeadline() -> Int64 {
        ExchangeDeadlines.next(deadlineFacts, deadlineTimes, deadlineLimits)
    }

    /// Called by the loop when the scheduled deadline passed: acts on whichever timeout expired, or reschedules.
    func timerFired() {
        let now = loop.now
        let deadline = nextDeadline()
        guard deadline <= now else {
            loop.scheduleTimer(self, at: deadline)
            return
        }
        expire(now: now)
        // The action may have queued an error response: send it now and reschedule.
        if phase != .closed { drive() }
    }

    /// Acts on the timeout that expired at `now`.
    func expire(now: Int64) {
        guard let expiry = ExchangeDeadlines.expired(deadlineFacts, deadlineTimes, deadlineLimits, now: now) else { return }
        switch expiry {
        case .idle(let tlsHandshake):
            if tlsHandshake {
                OpLog.debug("TLS handshake with a client timed out", ["client": .string(String(decoding: clientIP, as: UTF8.self))])
            }
            close()
        case .requestHead:
            respond(.requestHeadTimeout(milliseconds: timeouts.clientHeader), closeAfter: true)
        case .clientWrite:
            abort(reason: "client made no write progress for \(timeouts.clientWrite) ms", end: .clientWriteTimeout)
        case .connect:
            guard let connection = upstream else { return }
            settings.upstreams[upstreamIndex].addresses.connectFailed(to: connection.address, now: loop.now)
            connectFailed(.upstreamTimeout("connecting to upstream \(upstreamDisplay) at \(connection.address) timed out after \(timeouts.upstreamConnect) ms",
                                           client: "connecting to upstream \(upstreamName) timed out after \(timeouts.upstreamConnect) ms", end: .timeoutConnect))
        case .firstByte:
            upstreamFailed(.upstreamTimeout("upstream \(upstreamDisplay) sent no response within \(timeouts.upstreamFirstByte) ms",
                                            client: "upstream \(upstreamName) sent no response within \(timeouts.upstreamFirstByte) ms", end: .timeoutFirstByte))
        case .total:
            upstreamFailed(.upstreamTimeout("exchange exceeded the total limit of \(timeouts.total) ms", end: .timeoutTotal))
        case .upstreamIdle:
            upstreamFailed(.upstreamTimeout("upstream \(upstreamDisplay) sent nothing for \(timeouts.upstreamIdle) ms",
                                            client: "upstream \(upstreamName) sent nothing for \(timeouts.upstreamIdle) ms", end: .timeoutIdle))
        case .clientBodyIdle:
            failRequestBody(.requestBodyStalled(milliseconds: timeouts.clientBodyIdle))
        case .linger:
            close()
        }
    }
}
