/// What the completion record and the metrics learn from an exchange.
extension ClientSession {
    // MARK: - Observation and the completion record

    /// Starts the record of an exchange: identity fields now, while the head bytes exist.
    /// `head` is nil for a request refused before its head could be parsed.
    func beginRecord(head: RequestHead?, source: Span<UInt8>?) {
        record = ExchangeRecord(pending: true, wallClock: CompletionRecord.wallClockMicroseconds(), startedAt: loop.nowMicroseconds)
        times.exchangeStartedAt = loop.now
        rateLimitFields = []
        // Without a log sink the record only feeds the metrics, which need no strings.
        guard let head, let source, loop.completions != nil else { return }
        record.method = String(decoding: head.methodRange.map { source[$0] }, as: UTF8.self)
        record.path = String(decoding: head.target.map { source[$0] }, as: UTF8.self)
        for field in head.fields where fieldNameEquals(source, field.name, "traceparent") {
            record.traceparent = String(decoding: field.value.map { source[$0] }, as: UTF8.self)
            break
        }
    }

    /// Request body payload on its way upstream.
    func observeRequest(_ buffer: ByteBuffer, _ range: Range<Int>) {
        if awaitingAffinityKey { readBodyAffinity(buffer, range) }
        guard let observer = requestObserver, !range.isEmpty else { return }
        buffer.withReadableSpan(from: range.lowerBound, to: range.upperBound) { observer.tap.observe($0) }
    }

    /// Response body payload on its way to the client; feeds the inter-event gap histogram as events complete.
    func observeResponse(_ buffer: ByteBuffer, _ range: Range<Int>) {
        guard let observer = responseObserver, !range.isEmpty else { return }
        let eventsBefore = observer.tap.dispatchedEventCount
        let previous = observer.tap.latestEventAt
        let now = loop.nowMicroseconds
        buffer.withReadableSpan(from: range.lowerBound, to: range.upperBound) { observer.tap.observe($0, now: now) }
        let newEvents = observer.tap.dispatchedEventCount - eventsBefore
        guard newEvents > 0 else { return }
        // One gap per pair of consecutive events: events completed by the same read are 0 µs apart.
        if let previous { loop.metrics.observe(.eventGap, microseconds: Int(now - previous)) }
        for _ in 1..<newEvents { loop.metrics.observe(.eventGap, microseconds: 0) }
    }

    /// The request body is complete (or abandoned): keep what its tap learned and give the tap back.
    func finishRequestObservation() {
        guard let observer = requestObserver else { return }
        requestObserver = nil
        record.requestModel = observer.tap.model
        record.promptEstimate = observer.tap.estimatedPromptTokens
        if observer.capturing {
            record.capturedRequestText = observer.tap.withCapturedBody { ClientSession.text($0) }
            record.captureTruncated = observer.tap.captureTruncated
        }
        loop.giveRequestObserver(observer)
    }

    /// The exchange is over, whatever its end: three steps, each once. The record is completed from the taps, the
    /// admission is settled (tokens charged, the concurrency lease released), then the record is counted in the
    /// metrics and offered to the side queue.
    func concludeExchange() {
        guard record.pending else { return }
        record.pending = false
        defer {
            // A response without a first output (no body, or cut before it) is still counted by status.
            if let server = servedBy, servedStatus != 0 { server.counters.withLock { [servedStatus] in $0.count(status: servedStatus) } }
            servedBy = nil
            servedStatus = 0
        }
        var usage = ObservedUsage()
        var line = completionLine(usage: &usage)
        if let charge = settleAdmission(usage) {
            line.usageSource = charge.source.rawValue
            line.estimatedUsage = charge.estimate
        }
        if countedAsStream {
            countedAsStream = false
            loop.metrics.addActiveStreams(-1)
        }
        loop.metrics.countCompletion(line, route: record.routeMatched ? settings.routes[routeIndex].metricsSlot : nil)
        _ = loop.completions?.offer(line)
    }

    /// What the response tap learned about tokens, for the token budget.
    struct ObservedUsage {
        var reported: TokenUsage?
        var completionEstimate: Int64 = 0
    }

    /// The completion record of the exchange, from what the session gathered and what its taps observed (the taps
    /// go back to the loop here). `usage` receives what a token budget needs.
    func completionLine(usage: inout ObservedUsage) -> CompletionRecord {
        // The record's times are measured in microseconds (`recordStartedAt`, `responseHeadAt`, the pause and the
        // tap's times) and written as milliseconds with three real decimals.
        let now = loop.nowMicroseconds
        func milliseconds(_ microseconds: Int64) -> Double { Double(microseconds) / 1000 }
        let logged = loop.completions != nil
        var line = CompletionRecord(timestampMicroseconds: record.wallClock,
                                      requestID: logged ? String(decoding: requestID, as: UTF8.self) : "",
                                      clientAddress: logged ? String(decoding: clientIP, as: UTF8.self) : "",
                                      method: record.method, path: record.path, worker: loop.index)
        line.includeQuery = settings.includeQueryInLog
        line.traceparent = record.traceparent
        line.upstreamRequestID = record.upstreamRequestID
        if logged && record.routeMatched { line.route = String(decoding: settings.routes[routeIndex].prefix, as: UTF8.self) }
        if logged && record.upstreamContacted {
            line.upstreamName = settings.upstreams[upstreamIndex].name
            line.upstreamAddress = record.server
            line.tries = tries
            if settings.upstreams[upstreamIndex].pool.config.affinity != nil, record.server != nil { line.affinity = affinity.rawValue }
        }
        line.status = record.status
        line.requestBytes = record.requestBytes
        line.responseBytes = record.responseBytes
        if record.responseHeadAt > 0 { line.ttfbMilliseconds = milliseconds(record.responseHeadAt - record.startedAt) }
        line.durationMilliseconds = milliseconds(now - record.startedAt)
        let pausedNow = !upstreamGate.isOpen ? now - record.pausedSince : 0
        line.pausedMilliseconds = milliseconds(record.pausedTotal + pausedNow)
        line.peakQueuedBytes = record.peakQueued
        line.end = record.end ?? .complete
        line.error = record.error
        line.errorSource = record.generatedSource?.rawValue
        line.errorType = record.generatedType
        line.rateLimitKeyHash = record.rateLimitKeyHash
        line.rateLimitDecision = record.rateLimitDecision
        finishRequestObservation()
        line.model = record.requestModel
        line.capturedRequestBody = record.capturedRequestText
        line.captureTruncated = record.captureTruncated
        if let observer = responseObserver {
            observer.tap.finish(now: now)
            let observation = observer.tap.observation
            line.sseEvents = observation.eventCount
            line.ttfeMilliseconds = observation.firstDataEventAt.map { milliseconds($0 - record.startedAt) }
            // The first token: the first event that carried output (a role-only chunk or `message_start` is an
            // event, not a token); a body that is not an event stream delivers its output with its first byte.
            let firstTokenAt = observer.tap.kind == .eventStream ? observation.firstContentEventAt
                                                                 : observer.tap.firstBodyByteAt
            line.ttftMilliseconds = firstTokenAt.map { milliseconds($0 - record.startedAt) }
            // The server's own first-token time counts from its try, not from the request's first.
            if let firstTokenAt, let server = servedBy {
                let status = servedStatus
                server.counters.withLock { counters in
                    counters.count(status: status)
                    counters.countTTFT(microseconds: Int(firstTokenAt - attemptStartedAt))
                }
                servedStatus = 0
            }
            if let firstTokenAt, let completion = observation.usage?.completionTokens, completion > 0 {
                let generating = milliseconds(now - firstTokenAt)
                if generating > 0 { line.tokensPerSecond = Double(completion) * 1000 / generating }
                if completion > 1 { line.tpotMilliseconds = max(0, generating) / Double(completion - 1) }
            }
            line.maxGapMilliseconds = milliseconds(observation.maxGap)
            if let model = observation.model { line.model = model }
            usage = ObservedUsage(reported: observation.usage, completionEstimate: observation.estimatedCompletionTokens)
            line.usage = observation.usage
            if line.usage != nil { line.usageSource = TokenCharge.Source.reported.rawValue }
            if observer.capturing {
                line.capturedResponseText = observer.tap.withCapturedText { ClientSession.text($0) }
                line.captureTruncated = line.captureTruncated || observer.tap.captureTruncated
            }
            responseObserver = nil
            loop.giveResponseObserver(observer)
        }
        concludeTunnel(into: &line, usage: &usage)
        return line
    }

    /// Settles the exchange's rate-limit admission, once: tokens are charged after the fact (what the backend
    /// reported, else the taps' estimate, `TokenCharge`) on every end, so a stream without usage or a client gone
    /// before it is no free path; an exchange refused before it reached the upstream costs none. Then the lease goes
    /// back. Returns the charge when tokens were charged.
    func settleAdmission(_ usage: ObservedUsage) -> TokenCharge? {
        guard let grant = rateLimitGrant, let limiter = settings.rateLimiter else { return nil }
        rateLimitGrant = nil
        defer { limiter.release(grant) }
        guard settings.routes[routeIndex].chargesTokens && record.upstreamContacted else { return nil }
        let charge = TokenCharge(reported: usage.reported, promptEstimate: record.promptEstimate,
                                 completionEstimate: usage.completionEstimate)
        limiter.chargeTokens(grant, tokens: charge.tokens, nowNanoseconds: Int64(Syscall.monotonicNanoseconds()))
        return charge
    }

    static func text(_ bytes: Span<UInt8>) -> String {
        String(decoding: (0..<bytes.count).map { bytes[$0] }, as: UTF8.self)
    }
}
