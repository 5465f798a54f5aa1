/// Timeouts: the session reads its facts, ExchangeDeadlines decides, the session acts.
extension ClientSession {
    // MARK: - Timers

    /// The facts the timeouts depend on, read from the session's state (ExchangeDeadlines decides).
    var deadlineFacts: ExchangeDeadlines.Facts {
        var facts = ExchangeDeadlines.Facts(phase: phase, requestsServed: machine.requestsServed)
        facts.handshakePending = clientTransport.tls.map { !$0.isEstablished } ?? false
        if let connection = upstream {
            facts.connecting = !connection.isEstablished
            facts.awaitingResponseHead = connection.connected && response == .awaitingHead
        }
        if case .body = response, upstreamGate.isOpen { facts.relayingBody = true }
        facts.readingRequestBody = !requestIsComplete && clientGate.isOpen
        facts.clientOutputPending = clientOutputPending
        return facts
    }

    var deadlineLimits: ExchangeDeadlines.Limits {
        ExchangeDeadlines.Limits(timeouts: timeouts, handshake: settings.handshakeTimeout, linger: ClientSession.lingerMilliseconds)
    }

    /// The earliest moment one of the current phase's timeouts can fire.
    func nextDeadline() -> Int64 {
        ExchangeDeadlines.next(deadlineFacts, times, deadlineLimits)
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

    /// Acts on the timeout that expired at `now`: the machine decides, with the error that describes it.
    func expire(now: Int64) {
        guard let expiry = ExchangeDeadlines.expired(deadlineFacts, times, deadlineLimits, now: now) else { return }
        if case .idle(tlsHandshake: true) = expiry {
            OpLog.debug("TLS handshake with a client timed out", ["client": .string(String(decoding: clientIP, as: UTF8.self))])
        }
        switch expiry {
        case .connect: server?.failed(now: now, upstream: settings.upstreams[upstreamIndex].name, what: "connect timeout")
        case .firstByte: server?.failed(now: now, upstream: settings.upstreams[upstreamIndex].name, what: "first byte timeout")
        default: break
        }
        carryOut(machine.deadlineReached(expiry, error: timeoutError(expiry), retryConnect: expiry == .connect && mayRetry(.connectError)))
    }

    /// What a timeout means for the record and, when one is sent, the client's error.
    func timeoutError(_ expiry: ExchangeDeadlines.Expiry) -> ProxyError {
        switch expiry {
        case .idle, .linger:
            return .connectionTimedOut
        case .requestHead:
            return .requestHeadTimeout(milliseconds: timeouts.clientHeader)
        case .clientWrite:
            return .clientWriteStalled(milliseconds: timeouts.clientWrite)
        case .connect:
            let address = upstream.map { " at \($0.address)" } ?? ""
            return .upstreamTimeout("connecting to upstream \(upstreamDisplay)\(address) timed out after \(timeouts.upstreamConnect) ms",
                                    client: "connecting to upstream \(upstreamName) timed out after \(timeouts.upstreamConnect) ms", end: .timeoutConnect)
        case .firstByte:
            return .upstreamTimeout("upstream \(upstreamDisplay) sent no response within \(timeouts.upstreamFirstByte) ms",
                                    client: "upstream \(upstreamName) sent no response within \(timeouts.upstreamFirstByte) ms", end: .timeoutFirstByte)
        case .total:
            return .upstreamTimeout("exchange exceeded the total limit of \(timeouts.total) ms", end: .timeoutTotal)
        case .upstreamIdle:
            return .upstreamTimeout("upstream \(upstreamDisplay) sent nothing for \(timeouts.upstreamIdle) ms",
                                    client: "upstream \(upstreamName) sent nothing for \(timeouts.upstreamIdle) ms", end: .timeoutIdle)
        case .clientBodyIdle:
            return .requestBodyStalled(milliseconds: timeouts.clientBodyIdle)
        case .tunnelIdle:
            return .tunnelIdle(milliseconds: timeouts.tunnelIdle)
        }
    }
}
