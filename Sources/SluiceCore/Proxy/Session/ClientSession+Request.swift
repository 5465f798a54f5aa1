/// The request path: reading the client, parsing heads, starting an exchange, framing the body, rate limits.
extension ClientSession {
    // MARK: - Client input

    /// Nothing more of the request is to be read for its exchange (its body arrived whole, or it was dropped).
    var requestIsComplete: Bool { !machine.requestStillArriving }

    /// Reads from the client when there is something to do with the bytes; returns true if it read.
    func readFromClient() -> Bool {
        guard clientReadable else { return false }
        switch phase {
        case .idle, .readingHead:
            break
        case .exchange:
            // A TLS handshake still under way is read on: a response sluice queued at once (a 503 at
            // max_connections) can only go out once the handshake has finished.
            let handshaking = clientTransport.tls.map { !$0.isEstablished } ?? false
            guard (!requestIsComplete && clientGate.isOpen) || handshaking else { return false }
        case .tunnel:
            guard machine.response == .body, clientGate.isOpen else { return false }
        case .lingering:
            return discardLingeringInput()
        case .closed:
            return false
        }
        let buffer = takeBuffer(&clientIn)
        if buffer.writableCount == 0 { buffer.compact() }
        guard buffer.writableCount > 0 else { return false }
        let space = buffer.writableCount
        let result: IOResult<Int>
        do { result = try clientTransport.read(into: buffer) } catch {
            if let tls = clientTransport.tls, !tls.isEstablished {
                OpLog.debug("TLS handshake with a client failed", ["client": .string(String(decoding: clientIP, as: UTF8.self)),
                                                                    "error": .string(error.description)])
                if tls.peerSentPlainHTTP {
                    answerPlainHTTPOnTLSListener()
                    return false
                }
            }
            close()
            return false
        }
        // TLS handshake progress or a key update may have unblocked output waiting for the peer.
        if clientTransport.hasPendingOutput { clientWritable = true }
        switch result {
        case .wouldBlock:
            clientReadable = false
            releaseIfEmpty(&clientIn)
            return false
        case .processed(0):
            clientReadable = false
            releaseIfEmpty(&clientIn)
            clientEndOfStream()
            return false
        case .processed(let count):
            // With a hang-up pending we keep reading so the EOF itself is seen.
            if count < space && !clientHangup && clientTransport.shortReadDrainsSocket { clientReadable = false }
            times.lastClientRead = loop.now
            loop.metrics.addClientBytesReceived(count)
            if phase == .idle {
                machine.requestBegan()
                times.headStartedAt = loop.now
                loop.sessionLeftIdle(self)  // a request began: never closed to make room at max_connections
            }
            processClientBytes()
            return true
        }
    }

    /// Parses a head or frames body bytes, whichever the phase calls for.
    func processClientBytes() {
        switch phase {
        case .readingHead: parseRequestHead()
        case .exchange: frameRequestBody()
        case .tunnel: frameTunnelInput()
        default: break
        }
        // A consumed head leaves the buffer empty: give it back, or every held stream keeps a
        // touched page of it for its whole life.
        releaseIfEmpty(&clientIn)
    }

    func clientEndOfStream() {
        carryOut(machine.clientEndOfStream())
    }

    func parseRequestHead() {
        guard let buffer = clientIn else { return }
        let parsers = takeParsers()
        let result = buffer.withReadableSpan { parsers.request.parse($0) }
        switch result {
        case .needMore:
            if buffer.writableCount == 0 && !buffer.compact() {
                // The parser's own limits fire before the buffer fills; this guards the arithmetic.
                rejectRequest(.headTooLarge("request head is larger than \(settings.httpLimits.maxHeadBytes) bytes"))
            }
        case .failed(let error, _):
            beginRecord(head: nil, source: nil)
            record.requestBytes = Int64(buffer.readableCount)
            rejectRequest(.malformedRequest(error))
        case .complete(let headLength):
            startExchange(headLength: headLength, head: parsers.request.head)
        }
        // A head still arriving keeps its parser state; anything else gives the parsers back.
        if phase != .readingHead { releaseParsers() }
    }

    /// Validates a parsed request, writes its upstream head and starts connecting.
    func startExchange(headLength: Int, head: RequestHead) {
        guard let buffer = clientIn else { return }
        settings = loop.settings
        times.exchangeStartedAt = loop.now
        requestBodyBytes = 0
        requestSendEnd = 0
        upstreamHeadSent = 0
        waitingForHeadRoom = false
        responseSendEnd = 0
        switch head.framing {
        case .contentLength(let length) where length > 0: requestBody = .contentLength(remaining: length)
        case .chunked: requestBody = .chunked
        default: requestBody = .complete
        }
        machine.requestHeadParsed(method: head.method, keepAlive: head.keepAlive, http10: head.version.minor == 0,
                                  hasBody: !Self.isComplete(requestBody), draining: loop.isDraining)
        buffer.withReadableSpan { source in
            adoptRequestID(from: source, head: head)
            beginRecord(head: head, source: source)
        }
        record.requestBytes = Int64(headLength)

        if head.method == .connect {
            return rejectRequest(.connectNotSupported)
        }
        let pathRange = HeadRewriter.pathRange(of: head, in: buffer)
        // An absolute-form target without a path (`http://host`) asks for "/" (RFC 9112 §3.2.2).
        let routed = buffer.withReadableSpan { source in
            pathRange.isEmpty ? Self.rootPath.withUnsafeBufferPointer { settings.routeIndex(forPath: $0.span) }
                : settings.routeIndex(forPath: source.extracting(pathRange))
        }
        guard let index = routed else {
            return rejectRequest(.noRoute)
        }
        routeIndex = index
        record.routeMatched = true
        let route = settings.routes[index]
        captureResponseBytes = route.captureResponseBytes
        if !route.limits.isEmpty, let limiter = settings.rateLimiter {
            guard admitRateLimited(limiter, rules: route.limits, head: head, headLength: headLength, buffer: buffer) else { return }
        }
        guard acceptWebSocketUpgrade(head) else { return }
        if !requestIsComplete { requestObserver = loop.takeRequestObserver(capture: route.captureRequestBytes) }
        upstreamIndex = route.upstreamIndex
        resetRetryState(hasBody: !requestIsComplete)
        affinityKey = nil
        awaitingAffinityKey = false
        if let name = settings.upstreams[upstreamIndex].affinityHeader {
            affinityKey = buffer.withReadableSpan { headerAffinityKey(name, head: head, source: $0) }
        }
        maxRequestBody = route.maxRequestBody
        timeouts = route.timeouts
        if case .contentLength(let length) = head.framing, maxRequestBody > 0, length > maxRequestBody {
            return rejectRequest(.bodyTooLarge("request body of \(length) bytes exceeds the limit of \(maxRequestBody) bytes"))
        }
        usageInjection = route.injectUsage && mayInjectUsage(head: head, pathRange: pathRange, buffer: buffer) ? .holdingBody : .off
        let out = takeBuffer(&upstreamOut)
        let written = buffer.withReadableSpan { source in
            HeadRewriter.writeRequestHead(into: out, source: source, head: head, pathRange: pathRange,
                                          clientIP: clientIP, requestID: requestID,
                                          host: settings.upstreams[upstreamIndex].hostHeader,
                                          fallbackHost: settings.upstreams[upstreamIndex].authority, overTLS: clientTransport.tls != nil,
                                          deferContentLength: usageInjection == .holdingBody, upgrade: machine.tunnelRequested)
        }
        guard written else {
            return rejectRequest(.headTooLarge("request head is too large to forward"))
        }
        buffer.consume(headLength)
        beginBodyAffinity()
        frameRequestBody()
        carryOut(machine.requestAccepted())
    }

    static func isComplete(_ body: RequestBody) -> Bool {
        if case .complete = body { return true }
        return false
    }

    /// Keeps the client's X-Request-Id when it is sane, otherwise mints one.
    func adoptRequestID(from source: Span<UInt8>, head: RequestHead) {
        requestID.removeAll(keepingCapacity: true)
        for field in head.fields where fieldNameEquals(source, field.name, "x-request-id") {
            if !field.value.isEmpty && field.value.count <= ClientSession.maxRequestIDLength {
                for offset in field.value { requestID.append(source[offset]) }
            }
            break
        }
        if requestID.isEmpty { mintRequestID() }
    }

    func mintRequestID() {
        let hex: StaticString = "0123456789abcdef"
        if requestID.count != 32 {
            requestID.removeAll(keepingCapacity: true)
            requestID.append(contentsOf: repeatElement(0, count: 32))
        }
        let random = (loop.nextRandom(), loop.nextRandom())
        requestID.withUnsafeMutableBufferPointer { digits in
            for half in 0..<2 {
                var bits = half == 0 ? random.0 : random.1
                for position in half * 16..<half * 16 + 16 {
                    digits[position] = hex.utf8Start[Int(bits & 0xF)]
                    bits >>= 4
                }
            }
        }
    }

    /// Marks the body bytes now in `clientIn` as ready for the upstream, up to the body's end.
    func frameRequestBody() {
        guard let buffer = clientIn else { return }
        framing: while true {
            let available = buffer.readableCount - requestSendEnd
            guard available > 0 else { break }
            switch requestBody {
            case .complete:
                // What follows the body is the next request's: it waits in `clientIn`, unframed.
                break framing
            case .contentLength(let remaining):
                let take = Int(min(Int64(available), remaining))
                observeRequest(buffer, requestSendEnd..<(requestSendEnd + take))
                requestSendEnd += take
                requestBodyBytes += Int64(take)
                record.requestBytes += Int64(take)
                requestBody = remaining == Int64(take) ? .complete : .contentLength(remaining: remaining - Int64(take))
            case .chunked:
                guard let observer = requestObserver else { return }
                let step = buffer.withReadableSpan(from: requestSendEnd) { observer.chunks.next($0) }
                switch step {
                case .framing(let count):
                    requestSendEnd += count
                    record.requestBytes += Int64(count)
                case .data(let count):
                    observeRequest(buffer, requestSendEnd..<(requestSendEnd + count))
                    requestSendEnd += count
                    requestBodyBytes += Int64(count)
                    record.requestBytes += Int64(count)
                    if maxRequestBody > 0 && requestBodyBytes > maxRequestBody {
                        return failRequestBody(.bodyTooLarge("request body exceeds the limit of \(maxRequestBody) bytes"))
                    }
                case .end(let count):
                    requestSendEnd += count
                    record.requestBytes += Int64(count)
                    requestBody = .complete
                case .failed(let error, _):
                    return failRequestBody(.malformedBody(error))
                }
            }
        }
        if machine.requestStillArriving && Self.isComplete(requestBody) { machine.requestBodyReceived() }
        settleBodyAffinityIfStalled()
        if requestIsComplete {
            if usageInjection == .holdingBody { releaseHeldRequest() }
            finishRequestObservation()
            if times.requestSentAt == 0 && upstream?.connected == true { times.requestSentAt = loop.now }
        }
        updateClientPause()
    }

    /// The request direction's gate: client reads pause while the body queued for the upstream is full.
    func updateClientPause() {
        _ = clientGate.queueChanged(to: clientIn?.readableCount ?? 0, watermarks)
    }

    // MARK: - Rate limits

    /// Takes the route's rate-limit budget for this request; a refused request is answered 429 here and
    /// never reaches the upstream. Returns false when refused.
    func admitRateLimited(_ limiter: RateLimiter, rules: [Int], head: RequestHead, headLength: Int, buffer: ByteBuffer) -> Bool {
        let keys = buffer.withReadableSpan { source in
            rules.map { rule in rateLimitKey(limiter, rule: rule, head: head, source: source) }
        }
        switch limiter.admit(rules: rules, keys: keys, nowNanoseconds: Int64(Syscall.monotonicNanoseconds())) {
        case .admitted(let grant):
            rateLimitGrant = grant
            rateLimitFields = RateLimitHeaders.fields(for: grant)
            record.rateLimitKeyHash = keys.first?.displayHash
            record.rateLimitDecision = "allowed"
            return true
        case .rejected(let rejection):
            record.rateLimitKeyHash = rejection.key.displayHash
            record.rateLimitDecision = "rejected"
            if let slot = settings.ruleMetricsSlots[rejection.rule] { loop.metrics.countRateLimitRejection(rule: slot) }
            OpLog.debug("rate limited", ["rule": .string(rejection.name), "key": .string(rejection.key.displayHash)])
            let action = machine.admission(.rejected(.rateLimited(RateLimitHeaders.message(for: rejection))))
            // Without a body, requests pipelined behind it stay (the machine keeps the connection): only the head goes.
            if case .respond(_, close: false, _) = action { buffer.consume(headLength) }
            carryOut(action, extraFields: RateLimitHeaders.serialize(RateLimitHeaders.fields(for: rejection)),
                     body: RateLimitHeaders.body(for: rejection))
            return false
        }
    }

    /// The key a rule counts this request under: the client address (from X-Forwarded-For when the
    /// peer is a trusted proxy), a request header's value (hashed, never kept), or one global key.
    func rateLimitKey(_ limiter: RateLimiter, rule: Int, head: RequestHead, source: Span<UInt8>) -> RateLimitKey {
        switch settings.rateLimitRules[rule].key {
        case .global:
            return limiter.globalKey(rule: rule)
        case .header(let name):
            guard let field = HeadRewriter.field(named: name, in: head.fields, source) else { return limiter.missingHeaderKey(rule: rule) }
            return limiter.headerKey(rule: rule, value: field.value.map { source[$0] })
        case .client:
            let peer = IPAddress(parsing: clientIP) ?? IPAddress(ipv4: 0)
            guard !settings.trustedProxies.isEmpty else { return limiter.clientKey(rule: rule, address: peer) }
            let forwarded: [[UInt8]] = head.fields.compactMap { field in
                fieldNameEquals(source, field.name, "x-forwarded-for") ? field.value.map { source[$0] } : nil
            }
            let address = ForwardedFor.clientAddress(peer: peer, forwardedFor: forwarded, trusted: settings.trustedProxies)
            return limiter.clientKey(rule: rule, address: address)
        }
    }
}
