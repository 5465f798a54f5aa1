/// Retries on another server before the first response byte: the policy check, keeping what a retry must
/// send again (the upstream head and the body bytes already sent), and moving the exchange to the next server.
extension ClientSession {
    /// Whether a failure of kind `condition` may go to another server now: the pool retries on it and has tries
    /// left and an untried server, every body byte sent so far is kept, and the retry budget pays for it (taken
    /// here, last, so a refused retry costs nothing). The machine's side (still before the response) is its own
    /// check: it asks this, through an autoclosure, only once that holds, so this never reads `machine`.
    func mayRetry(_ condition: RetryCondition) -> Bool {
        let pool = settings.upstreams[upstreamIndex].pool
        let policy = pool.config.retry
        guard policy.retries > 0, tries <= policy.retries, policy.retryOn.contains(condition), !bodyNotKept,
              pool.hasUntriedServer(triedServers, now: loop.now) else { return false }
        guard pool.takeRetry() else {
            pool.counters.countRetryRefused()
            return false
        }
        return true
    }

    /// Carries out `.retry`: the failed server's connection closes (never pooled), its stream stops counting there,
    /// whatever it answered is discarded, and the kept head and body go to the next server the pool chooses.
    func retryOnAnotherServer(after failure: String, reason: RetryCondition) {
        let pool = settings.upstreams[upstreamIndex].pool
        OpLog.warn("retrying the request on another server", ["upstream": .string(pool.name), "server": .string(server?.label ?? ""),
                                                              "reason": .string(reason.description), "error": .string(failure),
                                                              "try": .int(tries + 1)])
        pool.counters.countRetry(reason)
        closeUpstream()
        releaseServer()
        upstreamHeadSent = 0
        keptBodyResent = 0
        waitingForHeadRoom = false
        responseSendEnd = 0
        upstreamIn?.clear()
        releaseIfEmpty(&upstreamIn)
        parsers?.response.reset()
        times.requestSentAt = 0
        openUpstream(poolAllowed: true)
    }

    /// Starts an exchange's retry bookkeeping: whether its head and body are kept for a retry.
    func resetRetryState(hasBody: Bool) {
        triedServers.removeAll()
        tries = 0
        affinity = .none
        dropKeptBody()
        keptBodyResent = 0
        bodyNotKept = false
        let policy = settings.upstreams[upstreamIndex].pool.config.retry
        keepsRequestForRetry = policy.retries > 0
        keepsBodyForRetry = hasBody && policy.retries > 0 && policy.retryBodyLimit > 0
    }

    /// No retry is possible any more (a final head was accepted): nothing more is kept for one. Kept body bytes a
    /// retry is still sending to the current server stay until they are out: dropping them would leave a gap
    /// between what that server received and the body bytes still in `clientIn`.
    func stopKeepingForRetry() {
        keepsRequestForRetry = false
        keepsBodyForRetry = false
        if keptBodyPending <= 0 { dropKeptBody() }
    }

    /// The exchange ended: everything kept for a retry goes.
    func releaseRetryState() {
        keepsRequestForRetry = false
        keepsBodyForRetry = false
        dropKeptBody()
    }

    private func dropKeptBody() {
        keptBodyResent = 0
        guard let kept = keptBody else { return }
        keptBody = nil
        if kept.capacity == loop.bufferPool.bufferCapacity { loop.bufferPool.give(kept) }
    }

    /// Body bytes `range` of `buffer` were just written to the upstream: a copy is kept while a retry may need them
    /// (up to `retry_body_limit`; past it the request can no longer be retried).
    func keepSentBody(_ buffer: ByteBuffer, _ range: Range<Int>) {
        guard keepsBodyForRetry, !bodyNotKept, !range.isEmpty else { return }
        let limit = settings.upstreams[upstreamIndex].pool.config.retry.retryBodyLimit
        let kept = keptBody?.readableCount ?? 0
        guard kept + range.count <= limit else {
            bodyNotKept = true
            releaseRetryState()
            return
        }
        if keptBody == nil || keptBody!.writableCount < range.count {
            // Pooled buffers hold any body up to their size; a larger one grows by doubling up to the limit (a
            // request allocation, never a per-chunk one for bodies that fit a buffer).
            let needed = kept + range.count
            let grown = needed <= loop.bufferPool.bufferCapacity ? loop.bufferPool.take()
                : ByteBuffer(capacity: min(limit, max(needed, 2 * (keptBody?.capacity ?? 0))))
            if let old = keptBody {
                _ = grown.append(from: old, 0..<old.readableCount)
                if old.capacity == loop.bufferPool.bufferCapacity { loop.bufferPool.give(old) }
            }
            keptBody = grown
        }
        _ = keptBody!.append(from: buffer, range)
        keptBodyResent += range.count
    }

    /// Kept body bytes the current connection has not been sent yet (after a retry).
    var keptBodyPending: Int { (keptBody?.readableCount ?? 0) - keptBodyResent }

    /// A final response head arrived from the server: its health hears of it. A 5xx or a 429 is a failure (a
    /// replica that is overloaded or broken), counted now since a retry may follow; anything else a success,
    /// counted with its first-token time when the exchange ends (one lock per exchange).
    func serverAnswered(status: Int) {
        guard let server else { return }
        if status >= 500 || status == 429 {
            server.failed(now: loop.now, upstream: settings.upstreams[upstreamIndex].name, what: "status \(status)")
            server.counters.withLock { $0.count(status: status) }
        } else {
            server.succeeded(now: loop.now)
            servedStatus = status
        }
        servedBy = server
    }

    /// Reads the affinity key a request head carries (`affinity header NAME`), hashed; nil without one.
    func headerAffinityKey(_ name: [UInt8], head: RequestHead, source: Span<UInt8>) -> UInt64? {
        guard let field = HeadRewriter.field(named: name, in: head.fields, source), !field.value.isEmpty else { return nil }
        var hasher = SipHash24(k0: Self.affinityHashKey.0, k1: Self.affinityHashKey.1)
        for offset in field.value { hasher.append(byte: source[offset]) }
        return hasher.finalize()
    }

    /// Fixed, so every sluice replica maps a key to the same server; the body keys' own, so a header and a body
    /// value with the same bytes hash alike.
    static var affinityHashKey: (UInt64, UInt64) { AffinityBodyKey.hashKey }
}
