/// What the completion record and the metrics learn from an exchange.
extension ClientSession {
    // MARK: - Observation and the completion record

    /// Starts the record of an exchange: identity fields now, while the head bytes exist.
    /// `head` is nil for a request refused before its head could be parsed.
    func beginRecord(head: RequestHead?, source: Span<UInt8>?) {
        recordPending = true
        exchangeWallClock = CompletionRecord.wallClockMicroseconds()
        exchangeStartedAt = loop.now
        recordStartedAt = loop.nowMicroseconds
        exchangeEnd = nil
        exchangeError = nil
        routeMatched = false
        upstreamContacted = false
        responseStatus = 0
        responseHeadAt = 0
        requestBytes = 0
        responseBytes = 0
        pausedTotal = 0
        peakQueued = 0
        recordTraceparent = nil
        upstreamRequestIDText = nil
        rateLimitFields = []
        rateLimitKeyHash = nil
        rateLimitDecision = nil
        requestModel = nil
        requestPromptEstimate = 0
        capturedRequestText = nil
        requestCaptureTruncated = false
        // Without a log sink the record only feeds the metrics, which need no strings.
        guard let head, let source, loop.completions != nil else {
            recordMethod = ""
            recordPath = ""
            return
        }
        recordMethod = String(decoding: head.methodRange.map { source[$0] }, as: UTF8.self)
        recordPath = String(decoding: head.target.map { source[$0] }, as: UTF8.self)
        for field in head.fields where fieldNameEquals(source, field.name, "traceparent") {
            recordTraceparent = String(decoding: field.value.map { source[$0] }, as: UTF8.self)
            break
        }
    }

    /// Request body payload on its way upstream.
    func observeRequest(_ buffer: ByteBuffer, _ range: Range<Int>) {
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
        requestModel = observer.tap.model
        requestPromptEstimate = observer.tap.estimatedPromptTokens
        if observer.capturing {
            capturedRequestText = observer.tap.withCapturedBody { ClientSession.text($0) }
            requestCaptureTruncated = observer.tap.captureTruncated
        }
        loop.giveRequestObserver(observer)
    }

    /// Writes the exchange's record (once) to the side queue and counts it in the metrics.
    func emitRecord() {
        guard recordPending else { return }
        recordPending = false
        // The record's times are measured in microseconds (`recordStartedAt`, `responseHeadAt`, the pause and the
        // tap's times) and written as milliseconds with three real decimals.
        let now = loop.nowMicroseconds
        func milliseconds(_ microseconds: Int64) -> Double { Double(microseconds) / 1000 }
        let logged = loop.completions != nil
        var record = CompletionRecord(timestampMicroseconds: exchangeWallClock,
                                      requestID: logged ? String(decoding: requestID, as: UTF8.self) : "",
                                      clientAddress: logged ? String(decoding: clientIP, as: UTF8.self) : "",
                                      method: recordMethod, path: recordPath, worker: loop.index)
        record.includeQuery = settings.includeQueryInLog
        record.traceparent = recordTraceparent
        record.upstreamRequestID = upstreamRequestIDText
        if logged && routeMatched { record.route = String(decoding: settings.routes[routeIndex].prefix, as: UTF8.self) }
        if logged && upstreamContacted { record.upstreamAddress = upstreamDisplay }
        record.status = responseStatus
        record.requestBytes = requestBytes
        record.responseBytes = responseBytes
        if responseHeadAt > 0 { record.ttfbMilliseconds = milliseconds(responseHeadAt - recordStartedAt) }
        record.durationMilliseconds = milliseconds(now - recordStartedAt)
        let pausedNow = upstreamReadPause.contains(.peerQueueFull) ? now - pausedSince : 0
        record.pausedMilliseconds = milliseconds(pausedTotal + pausedNow)
        record.peakQueuedBytes = peakQueued
        record.end = exchangeEnd ?? .complete
        record.error = exchangeError
        record.rateLimitKeyHash = rateLimitKeyHash
        record.rateLimitDecision = rateLimitDecision
        finishRequestObservation()
        record.model = requestModel
        record.capturedRequestBody = capturedRequestText
        record.captureTruncated = requestCaptureTruncated
        var reportedUsage: TokenUsage?
        var completionEstimate: Int64 = 0
        if let observer = responseObserver {
            observer.tap.finish(now: now)
            let observation = observer.tap.observation
            record.sseEvents = observation.eventCount
            record.ttfeMilliseconds = observation.firstDataEventAt.map { milliseconds($0 - recordStartedAt) }
            // The first token: the first event that carried output (a role-only chunk or `message_start` is an
            // event, not a token); a body that is not an event stream delivers its output with its first byte.
            let firstTokenAt = observer.tap.kind == .eventStream ? observation.firstContentEventAt
                                                                 : observer.tap.firstBodyByteAt
            record.ttftMilliseconds = firstTokenAt.map { milliseconds($0 - recordStartedAt) }
            if let firstTokenAt, let completion = observation.usage?.completionTokens, completion > 0 {
                let generating = milliseconds(now - firstTokenAt)
                if generating > 0 { record.tokensPerSecond = Double(completion) * 1000 / generating }
                if completion > 1 { record.tpotMilliseconds = max(0, generating) / Double(completion - 1) }
            }
            record.maxGapMilliseconds = milliseconds(observation.maxGap)
            if let model = observation.model { record.model = model }
            reportedUsage = observation.usage
            completionEstimate = observation.estimatedCompletionTokens
            record.usage = observation.usage.map(CompletionRecord.Usage.init)
            if record.usage != nil { record.usageSource = TokenCharge.Source.reported.rawValue }
            if observer.capturing {
                record.capturedResponseText = observer.tap.withCapturedText { ClientSession.text($0) }
                record.captureTruncated = record.captureTruncated || observer.tap.captureTruncated
            }
            responseObserver = nil
            loop.giveResponseObserver(observer)
        }
        if let grant = rateLimitGrant, let limiter = settings.rateLimiter {
            // Tokens are charged after the fact: what the backend reported, else the taps' estimate (TokenCharge),
            // on every end, so a stream without usage or a client gone before it is no free path. An exchange
            // refused before it reached the upstream costs no tokens. Then the lease goes back.
            if settings.routes[routeIndex].chargesTokens && upstreamContacted {
                let charge = TokenCharge(reported: reportedUsage, promptEstimate: requestPromptEstimate,
                                         completionEstimate: completionEstimate)
                record.usageSource = charge.source.rawValue
                record.estimatedUsage = charge.estimate.map(CompletionRecord.Usage.init)
                limiter.chargeTokens(grant, tokens: charge.tokens, nowNanoseconds: Int64(Syscall.monotonicNanoseconds()))
            }
            limiter.release(grant)
            rateLimitGrant = nil
        }
        if countedAsStream {
            countedAsStream = false
            loop.metrics.addActiveStreams(-1)
        }
        loop.metrics.countCompletion(record, route: routeMatched ? settings.routes[routeIndex].metricsSlot : nil)
        _ = loop.completions?.offer(record)
    }

    static func text(_ bytes: Span<UInt8>) -> String {
        String(decoding: (0..<bytes.count).map { bytes[$0] }, as: UTF8.self)
    }
}
