/// Affinity keys taken from the request body (`affinity json PATH`, `affinity prompt SIZE`): the connect waits
/// until the key is read, the body ends, `AffinityKey.bodyReadLimit` bytes were read, or the client queue is full,
/// whichever comes first. The body is not touched: the bytes wait in `clientIn` and go out as they came.
extension ClientSession {
    /// Starts reading the body for the key when the upstream takes it from there and the request has a body.
    func beginBodyAffinity() {
        guard !requestIsComplete, let key = settings.upstreams[upstreamIndex].pool.config.affinity, key.readsBody else { return }
        affinityScanner = AffinityBodyKey(key)
        affinityBytesRead = 0
        awaitingAffinityKey = true
        connectHeldForAffinity = false
    }

    /// Body payload bytes `range` of `buffer` were framed: the key is looked for in them.
    func readBodyAffinity(_ buffer: ByteBuffer, _ range: Range<Int>) {
        guard awaitingAffinityKey, affinityScanner != nil else { return }
        let room = AffinityKey.bodyReadLimit - affinityBytesRead
        let end = range.lowerBound + min(range.count, room)
        let result = buffer.withReadableSpan(from: range.lowerBound, to: end) { affinityScanner!.feed($0) }
        affinityBytesRead += end - range.lowerBound
        if result != .needMore { settleBodyAffinity(result) }
    }

    /// After framing: the body ended, the read limit was reached, or the client queue filled up (its reads pause,
    /// so no more bytes would come before the connect): the key is what was found so far.
    func settleBodyAffinityIfStalled() {
        guard awaitingAffinityKey else { return }
        let full = (clientIn?.readableCount ?? 0) >= watermarks.high || (clientIn?.writableCount ?? 1) == 0
        guard requestIsComplete || affinityBytesRead >= AffinityKey.bodyReadLimit || full, affinityScanner != nil else { return }
        settleBodyAffinity(affinityScanner!.finish())
    }

    private func settleBodyAffinity(_ result: AffinityBodyKey.Result) {
        awaitingAffinityKey = false
        if case .found(let hash) = result { affinityKey = hash }
        // The machine asked for the connect when the request was accepted and it was held for the key (a key found
        // while the exchange starts is simply there when the connect is asked for).
        guard connectHeldForAffinity else { return }
        connectHeldForAffinity = false
        if machine.mayRetry && upstream == nil && server == nil { openUpstream(poolAllowed: true) }
    }
}
