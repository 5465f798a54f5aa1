/// The upstream attempt: connecting (and moving to the next address), writing the request, replaying it.
extension ClientSession {
    // MARK: - Upstream

    /// The upstream's address, for the operator log and the record.
    var upstreamDisplay: String { settings.upstreams[upstreamIndex].display }
    /// The upstream's configured name, quoted: what a client is told about it.
    var upstreamName: String { "'\(settings.upstreams[upstreamIndex].name)'" }

    /// Takes an idle pooled connection or opens a new one.
    func connectUpstream() {
        // A name that has not resolved yet has no address to try (the resolver thread keeps looking): a 502 now,
        // with no connect attempt, no upstream address in the record and no tokens charged.
        if let reason = settings.upstreams[upstreamIndex].addresses.unresolvedReason {  // one atomic load once resolved
            return upstreamFailed(.unresolved("upstream \(upstreamName) (\(upstreamDisplay)) does not resolve yet: \(reason)",
                                              client: "upstream \(upstreamName) does not resolve yet"))
        }
        upstreamContacted = true
        if !replayed, let pooled = loop.takePooledUpstream(upstreamIndex, of: settings) {
            pooled.session = self
            upstream = pooled
            requestSentAt = requestIsComplete ? loop.now : 0
            return
        }
        connectStartedAt = loop.now
        connectAttempts += 1
        do {
            let connection = try loop.openUpstream(upstreamIndex, of: settings)
            connection.session = self
            upstream = connection
            if connection.connected { requestSentAt = requestIsComplete ? loop.now : 0 }
        } catch {
            connectFailed(.unreachable("cannot connect to upstream \(upstreamDisplay): \(error.description)",
                                       client: "cannot connect to upstream \(upstreamName)"))
        }
    }

    /// At most this many connects per exchange (nginx's proxy_next_upstream_tries, bounded by default here).
    static let maxConnectAttempts = 3

    /// A connect was refused, failed or timed out (and its address marked down). Nothing of the request has gone
    /// out, so the upstream's next address gets it (as nginx's proxy_next_upstream error timeout does), as long as
    /// there is one not yet tried for this exchange; otherwise the client gets the error.
    func connectFailed(_ error: ProxyError) {
        let addressCount = settings.upstreams[upstreamIndex].addresses.count
        guard connectAttempts < min(Self.maxConnectAttempts, addressCount), phase == .exchange else {
            return upstreamFailed(error)
        }
        OpLog.warn("upstream connect failed; trying its next address", ["upstream": .string(settings.upstreams[upstreamIndex].name),
                                                                        "error": .string(error.message)])
        upstreamReusable = false
        closeUpstream()
        upstreamReusable = true
        loop.metrics.countUpstreamConnectRetry()
        connectUpstream()
    }

    /// Writes the request head and framed body bytes to the upstream; returns true if it wrote.
    func flushToUpstream() -> Bool {
        // A head waiting for its held body's Content-Length (`inject_usage`) is not complete yet.
        guard let connection = upstream, connection.connected, connection.writable, usageInjection != .holdingBody else { return false }
        let headRemaining = (upstreamOut?.readableCount ?? 0) - upstreamHeadSent
        // A body byte never goes out ahead of (or without) its head.
        let bodyReady = requestHeadWritten ? requestSendEnd : 0
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
        if upstreamOut != nil && headWritten == headRemaining { requestHeadWritten = true }
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
        if requestIsComplete && requestSendEnd == 0 && upstreamHeadSent == (upstreamOut?.readableCount ?? 0) && requestSentAt == 0 {
            requestSentAt = loop.now
        }
        return written > 0
    }

    /// The TLS session with the upstream failed: a certificate that did not verify, a handshake or record error.
    /// The client gets a 502 naming the reason (or, mid-response, a truncated stream).
    func upstreamTLSFailed(_ reason: String) {
        upstreamReusable = false
        upstreamFailed(.upstreamTLS("TLS with upstream \(upstreamDisplay) failed: \(reason)", client: "TLS with upstream \(upstreamName) failed: \(reason)"))
    }

    /// The server stopped taking the request. It may have answered early (e.g. 413) before closing, so
    /// the read path decides: it relays that response, or sees the close and reports it.
    func upstreamWriteFailed(_ error: SystemError) {
        OpLog.debug("writing to upstream failed", ["upstream": .string(upstreamDisplay), "error": .string(error.description)])
        upstreamReusable = false
        dropUnsentRequest()
        closeAfterResponse = true
        upstream?.readable = true
        upstream?.writable = false
    }

    /// A request can go again on a fresh connection when its method is idempotent, nothing of its body was
    /// consumed and its head is still kept (it is, on reused connections, until the response head arrives).
    var canReplay: Bool {
        ExchangeReuse.mayReplay(method: requestMethod, alreadyReplayed: replayed, bodyBytesSent: requestBodyBytes,
                                responseBytesRead: (upstreamIn?.readableCount ?? 0) > 0, headKept: upstreamOut != nil)
    }

    /// The pooled connection turned out closed by the server before it answered: send the same head on a new one.
    func replay() {
        replayed = true
        closeUpstream()
        upstreamHeadSent = 0
        requestHeadWritten = false
        upstreamReusable = true
        loop.metrics.countUpstreamReplay()
        connectUpstream()
    }
}
