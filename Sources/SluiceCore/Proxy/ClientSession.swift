/// One client connection and, while an exchange runs, the upstream connection serving it. Both live on
/// the same loop, so forwarding takes no locks.
///
/// The session owns up to four pooled buffers, taken only while a direction has bytes in flight:
/// - `clientIn`: bytes read from the client: a request head being parsed, then body bytes that are
///   written to the upstream straight from here (`requestSendEnd` marks how far they are framed);
/// - `upstreamOut`: the rewritten request head, kept until the response head arrives so a request on a
///   reused connection the server had just closed can be replayed on a new one;
/// - `upstreamIn`: bytes read from the upstream: a response head, then body bytes written to the client
///   straight from here (`responseSendEnd`);
/// - `clientOut`: bytes sluice itself sends to the client (rewritten heads, error bodies, de-chunked
///   data), always ahead of `upstreamIn`'s bytes in the output order.
///
/// Every upstream read is written to the client before the loop waits again (`drive`), and a direction
/// whose queue reaches the high watermark stops reading its source until it drains to the low one.
final class ClientSession: TimerHeapElement {
    /// Where the client connection is in its life.
    enum Phase {
        /// Between requests (keep-alive), no byte of the next one yet.
        case idle
        /// Some bytes of a request head arrived; waiting for the rest.
        case readingHead
        /// A request was accepted; it is being forwarded and its response relayed.
        case exchange
        /// The last response is out; our write side is shut and remaining input is discarded briefly so
        /// closing does not reset the connection before the client read the response.
        case lingering
        case closed
    }

    /// How far the request body has been framed.
    enum RequestBody {
        case complete
        case contentLength(remaining: Int64)
        case chunked
    }

    /// Where the response is.
    enum ResponseState: Equatable {
        /// Waiting for the (final) response head.
        case awaitingHead
        /// Relaying the body with this framing.
        case body(ResponseBody)
        /// The last body byte is queued to the client.
        case complete
        /// The upstream failed mid-body: what was received goes out, then the client is closed without a clean end.
        case aborted
    }

    enum ResponseBody: Equatable {
        case contentLength(remaining: Int64)
        /// Chunked framing passed through verbatim to an HTTP/1.1 client.
        case chunked
        /// Chunked framing removed for an HTTP/1.0 client, the body then ends with the connection.
        case dechunked
        case untilClose
    }

    /// Why reads from one side are paused (haproxy's named blocking flags).
    struct PauseReasons: OptionSet {
        let rawValue: UInt8
        /// The queue towards the other side is above the high watermark.
        static let peerQueueFull = PauseReasons(rawValue: 1 << 0)
    }

    // MARK: loop thread only: identity and sockets
    // unowned(unsafe): the loop owns its sessions and outlives them, and a checked unowned
    // reference costs a retain and a release on every access (measured: 5 % of a small request).
    unowned(unsafe) let loop: ProxyLoop
    private var client: FileDescriptor?
    let clientFD: Int32
    /// Plain, or TLS on a `listen ... tls` connection.
    private let clientTransport: Transport
    /// The client's IP as ASCII, for X-Forwarded-For.
    private let clientIP: [UInt8]
    private var clientReadable = true
    private var clientWritable = true
    private var clientHangup = false
    private var clientReadPause: PauseReasons = []
    private var upstreamReadPause: PauseReasons = []
    private(set) var phase: Phase = .idle
    var timerIndex = -1
    var timerDeadline: Int64 = 0
    /// Set while the session is in the loop's posted list.
    var isPosted = false

    // MARK: loop thread only: buffers
    private var clientIn: ByteBuffer?
    private var clientOut: ByteBuffer?
    private var upstreamOut: ByteBuffer?
    private var upstreamIn: ByteBuffer?

    // MARK: loop thread only: the current exchange
    /// The loop's settings when the exchange began: a reload swaps the loop's, and this exchange keeps its
    /// routes, upstream and rate limiter to the end.
    private var settings: ProxySettings
    /// Borrowed from the loop only while a head is partly parsed: their field tables are the largest
    /// part of a session, and an established stream needs none.
    private var parsers: HeadParsers?
    private var upstream: UpstreamConnection?
    private var routeIndex = 0
    // Copied from the route when an exchange starts, so the per-chunk path reads plain fields.
    private var upstreamIndex = 0
    private var maxRequestBody: Int64 = 0
    private var captureResponseBytes = 0
    private var timeouts: Timeouts
    private let highWatermark: Int
    private let lowWatermark: Int
    private var requestMethod: HTTPMethod = .get
    private var requestKeepAlive = true
    private var clientIsHTTP10 = false
    private var requestBody: RequestBody = .complete
    private var requestBodyBytes: Int64 = 0
    /// Body bytes at the front of `clientIn` that are framed and may go to the upstream.
    private var requestSendEnd = 0
    /// Bytes of `upstreamOut` already written.
    private var upstreamHeadSent = 0
    /// The whole rewritten head went out on the current connection: body bytes may follow it.
    private var requestHeadWritten = false
    /// A response head waits for the client queue to drain before it is written (see `headDidNotFit`).
    private var waitingForHeadRoom = false
    private var response: ResponseState = .awaitingHead
    /// Body bytes at the front of `upstreamIn` that are framed and may go to the client.
    private var responseSendEnd = 0
    /// A response byte (or a head) has been queued to the client for this exchange.
    private var responseStarted = false
    private var closeAfterResponse = false
    private var upstreamReusable = true
    private var replayed = false
    /// Connects begun for this exchange: a refused or timed-out one moves on to the upstream's next address.
    private var connectAttempts = 0
    private var requestID: [UInt8] = []
    private var requestsServed = 0

    // MARK: loop thread only: what the completion record and metrics need
    /// Borrowed from the loop while a request body streams upstream, and while a response body
    /// streams to the client: an established stream holds only the response side.
    private var requestObserver: RequestObserver?
    private var responseObserver: ResponseObserver?
    /// What the request body said, kept after its observer went back to the loop.
    private var requestModel: String?
    /// The prompt tokens the request body's text is estimated at (`RequestTap.estimatedPromptTokens`).
    private var requestPromptEstimate: Int64 = 0
    private var capturedRequestText: String?
    private var requestCaptureTruncated = false
    /// An exchange began and its record is not written yet.
    private var recordPending = false
    private var exchangeWallClock: Int64 = 0
    private var exchangeEnd: CompletionRecord.End?
    private var exchangeError: String?
    private var recordMethod = ""
    private var recordPath = ""
    private var recordTraceparent: String?
    /// The upstream's own X-Request-Id when it differs from the one sluice sent (the client receives the upstream's).
    private var upstreamRequestIDText: String?
    private var routeMatched = false
    private var upstreamContacted = false
    private var responseStatus = 0
    private var responseHeadAt: Int64 = 0
    private var requestBytes: Int64 = 0
    private var responseBytes: Int64 = 0
    private var pausedSince: Int64 = 0
    private var pausedTotal: Int64 = 0
    private var peakQueued = 0
    /// The queued bytes last added to the loop's gauge, so the gauge moves by deltas.
    private var reportedQueued = 0
    private var countedAsStream = false
    /// The rate-limit admission of this exchange, released exactly once when its record is written.
    private var rateLimitGrant: AdmissionGrant?
    /// Rate-limit fields for the response head (remaining budget), serialized once per exchange.
    private var rateLimitFields: [RateLimitHeaderField] = []
    private var rateLimitKeyHash: String?
    private var rateLimitDecision: String?

    // MARK: loop thread only: times (loop milliseconds)
    private let acceptedAt: Int64
    private var headStartedAt: Int64 = 0
    private var idleSince: Int64
    private var lastClientRead: Int64 = 0
    private var lastClientWriteProgress: Int64 = 0
    private var exchangeStartedAt: Int64 = 0
    private var connectStartedAt: Int64 = 0
    private var requestSentAt: Int64 = 0
    private var lastUpstreamRead: Int64 = 0
    private var lingerStartedAt: Int64 = 0
    private var lingerDiscarded = 0

    /// Takes ownership of an accepted, non-blocking client socket; `tls` when the listener terminates TLS.
    init(loop: ProxyLoop, fd: consuming FileDescriptor, peer: SocketAddress, tls: TLSEngine? = nil) {
        self.loop = loop
        clientFD = fd.rawValue
        clientTransport = Transport(fd: fd.rawValue, tls: tls)
        client = .some(fd)
        clientIP = Array(peer.hostString.utf8)
        acceptedAt = loop.now
        idleSince = loop.now
        requestID.reserveCapacity(ClientSession.maxRequestIDLength)
        settings = loop.settings
        timeouts = settings.timeouts
        highWatermark = settings.highWatermark
        lowWatermark = settings.lowWatermark
    }

    static let maxRequestIDLength = 128
    private static let rootPath: [UInt8] = [UInt8(ascii: "/")]
    /// How long a closing connection keeps discarding input so its last response is not reset away.
    static let lingerMilliseconds: Int64 = 2_000
    /// How much input a closing connection discards at most: enough for a body in flight behind a
    /// refused request, not an invitation to stream gigabytes into the void.
    static let lingerMaxBytes = 1 << 20
    /// Rounds of read/write per wakeup before yielding to other connections (redis ae.c's bound).
    static let roundsPerWakeup = 16


    // MARK: - Events

    /// Readiness on the client socket.
    func clientEvent(_ event: ReadyEvent) {
        if event.readable { clientReadable = true }
        if event.writable { clientWritable = true }
        if event.hangup || event.error {
            clientHangup = true
            clientReadable = true
            clientWritable = true
        }
        drive()
    }

    /// Readiness on the upstream socket.
    func upstreamEvent(_ event: ReadyEvent, _ connection: UpstreamConnection) {
        guard connection === upstream else { return }
        if event.readable { connection.readable = true }
        if event.writable { connection.writable = true }
        if event.hangup || event.error {
            connection.hangup = true
            connection.readable = true
            connection.writable = true
        }
        if !connection.connected {
            guard connection.writable || connection.hangup else { return }
            let error = Syscall.pendingError(connection.rawFD)
            guard error == 0 else {
                settings.upstreams[upstreamIndex].addresses.connectFailed(to: connection.address, now: loop.now)
                connectFailed(.unreachable("cannot connect to upstream \(upstreamDisplay): \(SystemError(call: "connect to \(connection.address)", errno: error).description)"))
                return drive()
            }
            connection.connected = true
            if requestIsComplete { requestSentAt = loop.now }
        }
        drive()
    }

    /// Runs read and write steps until nothing moves, so each upstream read reaches the client in the
    /// same loop turn; after `roundsPerWakeup` rounds the session yields and is posted for the next turn.
    func drive() {
        var rounds = 0
        while phase != .closed {
            var progressed = readFromUpstream()
            if phase == .closed { return }
            progressed = flushToClient() || progressed
            if phase == .closed { return }
            progressed = readFromClient() || progressed
            if phase == .closed { return }
            progressed = flushToUpstream() || progressed
            if phase == .closed { return }
            if !progressed { break }
            rounds += 1
            if rounds == ClientSession.roundsPerWakeup {
                loop.post(self)
                break
            }
        }
        if phase == .closed { return }
        if clientHangup && clientGoneCheck() { return }
        reportQueuedBytes()
        loop.scheduleTimer(self, at: nextDeadline())
    }

    /// A client that hung up while we still owe it a response cancels the exchange (nginx treats EOF
    /// the same way): this is what stops a paid generation.
    private func clientGoneCheck() -> Bool {
        switch phase {
        case .exchange:
            guard !clientReadable || requestIsComplete else { return false }
            abort(reason: "client closed the connection", end: .clientAbort)
            return true
        case .idle, .readingHead:
            guard !clientReadable else { return false }
            close()
            return true
        case .lingering, .closed:
            return false
        }
    }

    // MARK: - Client input

    private var requestIsComplete: Bool {
        if case .complete = requestBody { return true }
        return false
    }

    /// Reads from the client when there is something to do with the bytes; returns true if it read.
    private func readFromClient() -> Bool {
        guard clientReadable else { return false }
        switch phase {
        case .idle, .readingHead:
            break
        case .exchange:
            guard !requestIsComplete, clientReadPause.isEmpty else { return false }
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
            lastClientRead = loop.now
            loop.metrics.addClientBytesReceived(count)
            if phase == .idle {
                phase = .readingHead
                headStartedAt = loop.now
                loop.sessionLeftIdle(self)  // a request began: never closed to make room at max_connections
            }
            processClientBytes()
            return true
        }
    }

    /// Parses a head or frames body bytes, whichever the phase calls for.
    private func processClientBytes() {
        switch phase {
        case .readingHead: parseRequestHead()
        case .exchange: frameRequestBody()
        default: break
        }
        // A consumed head leaves the buffer empty: give it back, or every held stream keeps a
        // touched page of it for its whole life.
        releaseIfEmpty(&clientIn)
    }

    private func clientEndOfStream() {
        switch phase {
        case .idle, .readingHead:
            close()
        case .exchange:
            abort(reason: "client closed the connection", end: .clientAbort)
        case .lingering:
            close()
        case .closed:
            break
        }
    }

    private func parseRequestHead() {
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
            requestBytes = Int64(buffer.readableCount)
            rejectRequest(.malformedRequest(error))
        case .complete(let headLength):
            startExchange(headLength: headLength, head: parsers.request.head)
        }
        // A head still arriving keeps its parser state; anything else gives the parsers back.
        if phase != .readingHead { releaseParsers() }
    }

    /// Validates a parsed request, writes its upstream head and starts connecting.
    private func startExchange(headLength: Int, head: RequestHead) {
        guard let buffer = clientIn else { return }
        phase = .exchange
        settings = loop.settings
        exchangeStartedAt = loop.now
        requestMethod = head.method
        requestKeepAlive = head.keepAlive
        clientIsHTTP10 = head.version.minor == 0
        response = .awaitingHead
        responseStarted = false
        closeAfterResponse = !head.keepAlive || clientIsHTTP10 || loop.isDraining
        upstreamReusable = true
        replayed = false
        connectAttempts = 0
        requestBodyBytes = 0
        requestSendEnd = 0
        upstreamHeadSent = 0
        requestHeadWritten = false
        waitingForHeadRoom = false
        responseSendEnd = 0
        switch head.framing {
        case .contentLength(let length) where length > 0: requestBody = .contentLength(remaining: length)
        case .chunked: requestBody = .chunked
        default: requestBody = .complete
        }
        buffer.withReadableSpan { source in
            adoptRequestID(from: source, head: head)
            beginRecord(head: head, source: source)
        }
        requestBytes = Int64(headLength)

        if head.method == .connect {
            return rejectRequest(.connectNotSupported)
        }
        let pathRange = HeadRewriter.pathRange(of: head, in: buffer)
        // An absolute-form target without a path (`http://host`) asks for "/" (RFC 9112 §3.2.2).
        let routed = buffer.withReadableSpan { source in
            pathRange.isEmpty ? settings.routeIndex(forPath: Self.rootPath.span) : settings.routeIndex(forPath: source.extracting(pathRange))
        }
        guard let index = routed else {
            return rejectRequest(.noRoute)
        }
        routeIndex = index
        routeMatched = true
        let route = settings.routes[index]
        captureResponseBytes = route.captureResponseBytes
        if !route.limits.isEmpty, let limiter = settings.rateLimiter {
            guard admitRateLimited(limiter, rules: route.limits, head: head, headLength: headLength, buffer: buffer) else { return }
        }
        if !requestIsComplete { requestObserver = loop.takeRequestObserver(capture: route.captureRequestBytes) }
        upstreamIndex = route.upstreamIndex
        maxRequestBody = route.maxRequestBody
        timeouts = route.timeouts
        if case .contentLength(let length) = head.framing, maxRequestBody > 0, length > maxRequestBody {
            return rejectRequest(.bodyTooLarge("request body of \(length) bytes exceeds the limit of \(maxRequestBody) bytes"))
        }
        let out = takeBuffer(&upstreamOut)
        let written = buffer.withReadableSpan { source in
            HeadRewriter.writeRequestHead(into: out, source: source, head: head, pathRange: pathRange,
                                          clientIP: clientIP, requestID: requestID,
                                          host: settings.upstreams[upstreamIndex].hostHeader,
                                          fallbackHost: settings.upstreams[upstreamIndex].authority, overTLS: clientTransport.tls != nil)
        }
        guard written else {
            return rejectRequest(.headTooLarge("request head is too large to forward"))
        }
        buffer.consume(headLength)
        frameRequestBody()
        if phase == .exchange { connectUpstream() }
    }

    /// Keeps the client's X-Request-Id when it is sane, otherwise mints one.
    private func adoptRequestID(from source: Span<UInt8>, head: RequestHead) {
        requestID.removeAll(keepingCapacity: true)
        for field in head.fields where fieldNameEquals(source, field.name, "x-request-id") {
            if !field.value.isEmpty && field.value.count <= ClientSession.maxRequestIDLength {
                for offset in field.value { requestID.append(source[offset]) }
            }
            break
        }
        if requestID.isEmpty { mintRequestID() }
    }

    private func mintRequestID() {
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
    private func frameRequestBody() {
        guard let buffer = clientIn else { return }
        while true {
            let available = buffer.readableCount - requestSendEnd
            guard available > 0 else { break }
            switch requestBody {
            case .complete:
                updateClientPause()
                return
            case .contentLength(let remaining):
                let take = Int(min(Int64(available), remaining))
                observeRequest(buffer, requestSendEnd..<(requestSendEnd + take))
                requestSendEnd += take
                requestBodyBytes += Int64(take)
                requestBytes += Int64(take)
                requestBody = remaining == Int64(take) ? .complete : .contentLength(remaining: remaining - Int64(take))
            case .chunked:
                guard let observer = requestObserver else { return }
                let step = buffer.withReadableSpan(from: requestSendEnd) { observer.chunks.next($0) }
                switch step {
                case .framing(let count):
                    requestSendEnd += count
                    requestBytes += Int64(count)
                case .data(let count):
                    observeRequest(buffer, requestSendEnd..<(requestSendEnd + count))
                    requestSendEnd += count
                    requestBodyBytes += Int64(count)
                    requestBytes += Int64(count)
                    if maxRequestBody > 0 && requestBodyBytes > maxRequestBody {
                        return failRequestBody(.bodyTooLarge("request body exceeds the limit of \(maxRequestBody) bytes"))
                    }
                case .end(let count):
                    requestSendEnd += count
                    requestBytes += Int64(count)
                    requestBody = .complete
                case .failed(let error, _):
                    return failRequestBody(.malformedBody(error))
                }
            }
        }
        if requestIsComplete {
            finishRequestObservation()
            if requestSentAt == 0 && upstream?.connected == true { requestSentAt = loop.now }
        }
        updateClientPause()
    }

    /// The body turned out bad after forwarding began: the upstream gets nothing more.
    private func failRequestBody(_ error: ProxyError) {
        upstreamReusable = false
        closeUpstream()
        if responseStarted {
            abort(reason: error.message, end: error.end)
        } else {
            rejectRequest(error)
        }
    }

    /// Hysteresis on the request direction: stop reading the client at the high watermark, resume at the low one.
    private func updateClientPause() {
        let queued = clientIn?.readableCount ?? 0
        if queued >= highWatermark {
            clientReadPause.insert(.peerQueueFull)
        } else if queued <= lowWatermark {
            clientReadPause.remove(.peerQueueFull)
        }
    }

    // MARK: - Upstream

    private var upstreamDisplay: String { settings.upstreams[upstreamIndex].display }

    /// Takes an idle pooled connection or opens a new one.
    private func connectUpstream() {
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
            connectFailed(.unreachable("cannot connect to upstream \(upstreamDisplay): \(error.description)"))
        }
    }

    /// At most this many connects per exchange (nginx's proxy_next_upstream_tries, bounded by default here).
    static let maxConnectAttempts = 3

    /// A connect was refused, failed or timed out (and its address marked down). Nothing of the request has gone
    /// out, so the upstream's next address gets it (as nginx's proxy_next_upstream error timeout does), as long as
    /// there is one not yet tried for this exchange; otherwise the client gets the error.
    private func connectFailed(_ error: ProxyError) {
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
    private func flushToUpstream() -> Bool {
        guard let connection = upstream, connection.connected, connection.writable else { return false }
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
    private func upstreamTLSFailed(_ reason: String) {
        upstreamReusable = false
        upstreamFailed(.upstreamTLS("TLS with upstream \(upstreamDisplay) failed: \(reason)"))
    }

    /// The server stopped taking the request. It may have answered early (e.g. 413) before closing, so
    /// the read path decides: it relays that response, or sees the close and reports it.
    private func upstreamWriteFailed(_ error: SystemError) {
        OpLog.debug("writing to upstream failed", ["upstream": .string(upstreamDisplay), "error": .string(error.description)])
        upstreamReusable = false
        dropUnsentRequest()
        closeAfterResponse = true
        upstream?.readable = true
        upstream?.writable = false
    }

    /// A request can go again on a fresh connection when its method is idempotent, nothing of its body was
    /// consumed and its head is still kept (it is, on reused connections, until the response head arrives).
    private var canReplay: Bool {
        ExchangeReuse.mayReplay(method: requestMethod, alreadyReplayed: replayed, bodyBytesSent: requestBodyBytes,
                                responseBytesRead: (upstreamIn?.readableCount ?? 0) > 0, headKept: upstreamOut != nil)
    }

    /// The pooled connection turned out closed by the server before it answered: send the same head on a new one.
    private func replay() {
        replayed = true
        closeUpstream()
        upstreamHeadSent = 0
        requestHeadWritten = false
        upstreamReusable = true
        loop.metrics.countUpstreamReplay()
        connectUpstream()
    }

    /// Reads from the upstream and hands the bytes on at once; returns true if it read.
    private func readFromUpstream() -> Bool {
        guard let connection = upstream, connection.connected, connection.readable else { return false }
        switch response {
        case .awaitingHead: guard !waitingForHeadRoom else { return false }
        case .body: guard upstreamReadPause.isEmpty else { return false }
        case .complete, .aborted: return false
        }
        if (clientOut?.readableCount ?? 0) == 0 && responseSendEnd == 0 { lastClientWriteProgress = loop.now }
        let buffer = takeBuffer(&upstreamIn)
        if buffer.writableCount == 0 { buffer.compact() }
        guard buffer.writableCount > 0 else {
            if response == .awaitingHead {
                upstreamFailed(.badResponse("upstream response head is too large"))
            }
            return false
        }
        let space = buffer.writableCount
        let result: IOResult<Int>
        do { result = try connection.transport.read(into: buffer) } catch {
            releaseIfEmpty(&upstreamIn)
            switch error {
            case .socket(let error): upstreamEndOfStream(error: error)
            case .tls(let reason): upstreamTLSFailed(reason)
            }
            return false
        }
        // A TLS handshake may have finished: the request waiting for it can go now.
        if connection.tls != nil { connection.writable = true }
        switch result {
        case .wouldBlock:
            connection.readable = false
            releaseIfEmpty(&upstreamIn)
            return false
        case .processed(0):
            connection.readable = false
            releaseIfEmpty(&upstreamIn)
            upstreamEndOfStream(error: nil)
            return false
        case .processed(let count):
            if count < space && !connection.hangup && connection.transport.shortReadDrainsSocket { connection.readable = false }
            lastUpstreamRead = loop.now
            loop.metrics.addUpstreamBytesReceived(count)
            processResponseBytes()
            return true
        }
    }

    /// Parses response heads and frames body bytes now in `upstreamIn`.
    private func processResponseBytes() {
        guard let buffer = upstreamIn else { return }
        while phase == .exchange {
            switch response {
            case .awaitingHead:
                let parsers = takeParsers()
                let result = buffer.withReadableSpan { parsers.response.parse($0, requestMethod: requestMethod) }
                switch result {
                case .needMore:
                    return
                case .failed(let error, _):
                    return upstreamFailed(.badResponse("invalid response from upstream \(upstreamDisplay): \(error.message)"))
                case .complete(let headLength):
                    guard acceptResponseHead(headLength: headLength, buffer: buffer, parsers: parsers) else { return }
                }
            case .body(let body):
                let available = buffer.readableCount - responseSendEnd
                guard available > 0 else { return updateUpstreamPause() }
                switch body {
                case .contentLength(let remaining):
                    let take = Int(min(Int64(available), remaining))
                    observeResponse(buffer, responseSendEnd..<(responseSendEnd + take))
                    responseSendEnd += take
                    if Int64(take) == remaining { responseFinished() } else { response = .body(.contentLength(remaining: remaining - Int64(take))) }
                case .chunked:
                    // Chunk boundaries are tracked to find the end and to hand the payload to the tap;
                    // the bytes themselves go out unchanged.
                    guard let observer = responseObserver else { return }
                    let step = buffer.withReadableSpan(from: responseSendEnd) { observer.chunks.next($0) }
                    switch step {
                    case .framing(let count):
                        responseSendEnd += count
                    case .data(let count):
                        observeResponse(buffer, responseSendEnd..<(responseSendEnd + count))
                        responseSendEnd += count
                    case .end(let count):
                        responseSendEnd += count
                        responseFinished()
                    case .failed(let error, _):
                        return endTruncated(reason: "invalid chunked framing from upstream: \(error.message)", end: .upstreamAbort)
                    }
                case .dechunked:
                    guard dechunk(buffer) else { return updateUpstreamPause() }
                case .untilClose:
                    observeResponse(buffer, responseSendEnd..<buffer.readableCount)
                    responseSendEnd = buffer.readableCount
                }
            case .complete, .aborted:
                // Bytes after the end of a response: the server broke framing, so the connection is not reused.
                if buffer.readableCount > responseSendEnd {
                    upstreamReusable = false
                    buffer.truncate(toReadable: responseSendEnd)
                }
                return
            }
        }
    }

    /// Copies payload bytes into `clientOut`, dropping chunk framing; returns false when `clientOut` is full.
    private func dechunk(_ buffer: ByteBuffer) -> Bool {
        let out = takeBuffer(&clientOut)
        while buffer.readableCount > 0 {
            let room = out.writableCount
            guard room > 0 else { return false }
            guard let observer = responseObserver else { return false }
            let step = buffer.withReadableSpan(from: 0, to: min(buffer.readableCount, room)) { observer.chunks.next($0) }
            switch step {
            case .framing(let count):
                buffer.consume(count)
            case .data(let count):
                observeResponse(buffer, 0..<count)
                out.append(from: buffer, 0..<count)
                buffer.consume(count)
            case .end(let count):
                buffer.consume(count)
                responseFinished()
                return true
            case .failed(let error, _):
                endTruncated(reason: "invalid chunked framing from upstream: \(error.message)", end: .upstreamAbort)
                return false
            }
        }
        return true
    }

    /// Handles a complete response head: interim ones are relayed and parsing continues, a final one
    /// decides the body framing. Returns false when the exchange ended.
    private func acceptResponseHead(headLength: Int, buffer: ByteBuffer, parsers: HeadParsers) -> Bool {
        let out = takeBuffer(&clientOut)
        let queuedBefore = out.readableCount
        if parsers.response.head.isInformational {
            guard parsers.response.head.status != 101 else {
                upstreamFailed(.badResponse("upstream switched protocols, which was not requested"))
                return false
            }
            // RFC 9110 §15.2: a 1xx is not sent to an HTTP/1.0 client.
            if !clientIsHTTP10 {
                let written = buffer.withReadableSpan {
                    HeadRewriter.writeResponseHead(into: out, source: $0, head: parsers.response.head, requestID: nil, close: false, dechunk: false)
                }
                guard written != nil else { return headDidNotFit(out, queuedBefore: queuedBefore) }
            }
            buffer.consume(headLength)
            parsers.response.reset()
            return true
        }
        dropUpstreamHead()
        let head = parsers.response.head
        if !head.keepAlive { upstreamReusable = false }
        let body: ResponseBody?
        switch head.framing {
        case .none: body = nil
        case .contentLength(let length): body = length == 0 ? nil : .contentLength(remaining: length)
        case .chunked:
            body = clientIsHTTP10 ? .dechunked : .chunked
        case .untilClose:
            upstreamReusable = false
            body = .untilClose
        }
        if body == .dechunked || body == .untilClose { closeAfterResponse = true }
        if !requestIsComplete { closeAfterResponse = true }
        let facts = buffer.withReadableSpan {
            HeadRewriter.writeResponseHead(into: out, source: $0, head: head, requestID: requestID,
                                           close: closeAfterResponse, dechunk: body == .dechunked, rateLimitFields: rateLimitFields)
        }
        guard let facts else { return headDidNotFit(out, queuedBefore: queuedBefore) }
        if let upstreamID = facts.upstreamRequestID, loop.completions != nil {
            let sent = buffer.withReadableSpan { source in upstreamID.count == requestID.count && (0..<upstreamID.count).allSatisfy { source[upstreamID.lowerBound + $0] == requestID[$0] } }
            if !sent { upstreamRequestIDText = buffer.withReadableSpan { source in String(decoding: upstreamID.map { source[$0] }, as: UTF8.self) } }
        }
        responseStarted = true
        responseStatus = head.status
        responseHeadAt = loop.now
        if body != nil {
            // Usage and model feed only the completion record and token budgets.
            let readsUsage = loop.completions != nil || settings.routes[routeIndex].chargesTokens
            responseObserver = loop.takeResponseObserver(kind: facts.eventStream ? .eventStream : facts.json ? .json : .other,
                                                         readsUsage: readsUsage, capture: captureResponseBytes)
            countedAsStream = true
            loop.metrics.addActiveStreams(1)
        }
        buffer.consume(headLength)
        releaseParsers()
        if let body { response = .body(body) } else { responseFinished() }
        return true
    }

    /// A response head did not fit the client queue: the part written is taken back, so no cut head is ever sent.
    /// Behind earlier queued heads (several 1xx) it waits for them to drain: the parser keeps its completed result,
    /// and `flushToClient` parses again. Alone in the queue it never fits: the exchange fails. Returns false.
    private func headDidNotFit(_ out: ByteBuffer, queuedBefore: Int) -> Bool {
        out.truncate(toReadable: queuedBefore)
        guard queuedBefore == 0 else {
            waitingForHeadRoom = true
            return false
        }
        upstreamFailed(.badResponse("upstream response head is too large to forward"))
        return false
    }

    /// Hysteresis on the response direction.
    private func updateUpstreamPause() {
        let queued = (upstreamIn?.readableCount ?? 0) + (clientOut?.readableCount ?? 0)
        peakQueued = max(peakQueued, queued)
        if queued >= highWatermark {
            if upstreamReadPause.insert(.peerQueueFull).inserted {
                pausedSince = loop.now
                loop.metrics.countBackpressurePause()
            }
        } else if queued <= lowWatermark {
            if upstreamReadPause.remove(.peerQueueFull) != nil { pausedTotal += loop.now - pausedSince }
        }
    }

    private func responseFinished() {
        response = .complete
        var cleanEnd = true
        if let buffer = upstreamIn, buffer.readableCount > responseSendEnd {
            cleanEnd = false
            buffer.truncate(toReadable: responseSendEnd)
        }
        if let connection = upstream {
            let facts = ExchangeReuse.UpstreamFacts(requestWrittenWhole: requestWrittenWhole, responseEndedCleanly: cleanEnd,
                                                    serverKeepsAlive: upstreamReusable, hungUp: connection.hangup)
            if ExchangeReuse.mayPoolUpstream(facts) {
                upstream = nil
                loop.poolUpstream(connection)
            }
        }
        closeUpstream()
        finishIfFlushed()
    }

    /// The request's head and whole body went to the current upstream connection, nothing left in its transport.
    private var requestWrittenWhole: Bool {
        requestIsComplete && requestHeadWritten && requestSendEnd == 0 && !(upstream?.transport.hasPendingOutput ?? true)
    }

    /// The upstream closed (or failed) its side.
    private func upstreamEndOfStream(error: SystemError?) {
        upstreamReusable = false
        switch response {
        case .awaitingHead:
            if upstream?.reused == true, !responseStarted, canReplay {
                return replay()
            }
            let reason = error.map { $0.description } ?? "connection closed"
            upstreamFailed(.badResponse("upstream \(upstreamDisplay) closed before sending a complete response head (\(reason))"))
        case .body(.untilClose):
            responseFinished()
        case .body:
            endTruncated(reason: error.map { "upstream failed mid-body: \($0.description)" } ?? "upstream closed mid-body", end: .upstreamAbort)
        case .complete, .aborted:
            closeUpstream()
        }
    }

    /// An upstream failure before any response byte went to the client becomes a JSON error response.
    private func upstreamFailed(_ error: ProxyError) {
        OpLog.warn("upstream error", ["upstream": .string(settings.upstreams[upstreamIndex].name),
                                      "address": .string(upstreamDisplay), "status": .int(error.status), "error": .string(error.message)])
        upstreamReusable = false
        closeUpstream()
        if responseStarted {
            endTruncated(reason: error.message, end: error.end)
        } else {
            respond(error, closeAfter: !requestIsComplete || closeAfterResponse)
        }
    }

    private func closeUpstream() {
        guard let connection = upstream else { return }
        upstream = nil
        loop.closeUpstream(connection)
    }

    // MARK: - Client output

    /// Writes queued bytes to the client; returns true if it wrote.
    private func flushToClient() -> Bool {
        guard clientWritable, phase != .closed else { return false }
        let headCount = clientOut?.readableCount ?? 0
        let bodyCount = responseSendEnd
        guard headCount + bodyCount > 0 || clientTransport.hasPendingOutput else { return false }
        let result: IOResult<Int>
        do { result = try clientTransport.write(clientOut, 0..<headCount, upstreamIn, 0..<bodyCount) } catch {
            if phase == .lingering { close() } else { abort(reason: "client write failed: \(error.description)", end: .clientAbort) }
            return false
        }
        guard case .processed(let written) = result else {
            clientWritable = false
            return false
        }
        lastClientWriteProgress = loop.now
        responseBytes += Int64(written)
        loop.metrics.addClientBytesSent(written)
        let headWritten = min(written, headCount)
        if headWritten > 0, let out = clientOut {
            out.consume(headWritten)
            releaseIfEmpty(&clientOut)
        }
        let bodyWritten = written - headWritten
        if bodyWritten > 0, let buffer = upstreamIn {
            buffer.consume(bodyWritten)
            responseSendEnd -= bodyWritten
            releaseIfEmpty(&upstreamIn)
        }
        if written < headCount + bodyCount || clientTransport.hasPendingOutput { clientWritable = false }
        updateUpstreamPause()
        if case .body(.dechunked) = response, upstreamIn != nil { processResponseBytes() }
        if waitingForHeadRoom && (clientOut?.readableCount ?? 0) == 0 {
            waitingForHeadRoom = false
            processResponseBytes()
        }
        finishIfFlushed()
        return written > 0
    }

    private var clientOutputPending: Bool {
        (clientOut?.readableCount ?? 0) + responseSendEnd > 0 || clientTransport.hasPendingOutput
    }

    /// Ends the exchange once its response is complete and fully written.
    private func finishIfFlushed() {
        guard phase == .exchange, !clientOutputPending else { return }
        switch response {
        case .complete:
            finishExchange()
        case .aborted:
            close()
        case .awaitingHead, .body:
            break
        }
    }

    private func finishExchange() {
        closeUpstream()
        releaseParsers()
        emitRecord()
        requestsServed += 1
        let next = ExchangeReuse.clientNext(requestReceivedWhole: requestIsComplete, closeRequested: closeAfterResponse || loop.isDraining,
                                            unsentBodyBytes: requestSendEnd)
        guard case .nextRequest(let unsentBody) = next else { return lingerAndClose() }
        if unsentBody > 0, let buffer = clientIn {
            // Body bytes framed for an upstream that answered without taking them: they end here, never parsed.
            buffer.consume(unsentBody)
            requestSendEnd = 0
        }
        phase = .idle
        timeouts = settings.timeouts
        idleSince = loop.now
        requestSentAt = 0
        releaseIfEmpty(&upstreamIn)
        releaseIfEmpty(&upstreamOut)
        // Pipelined bytes already read start the next request now.
        if let buffer = clientIn, buffer.readableCount > 0 {
            phase = .readingHead
            headStartedAt = loop.now
            parseRequestHead()
        } else {
            releaseIfEmpty(&clientIn)
            loop.sessionBecameIdle(self)  // kept alive with nothing pending: may make room at max_connections
        }
    }

    /// Sends a response sluice generated (an error), then closes or keeps the connection.
    private func respond(_ error: ProxyError, closeAfter: Bool, extraFields: [UInt8] = [], body: [UInt8]? = nil) {
        closeUpstream()
        releaseParsers()
        if !recordPending { beginRecord(head: nil, source: nil) }
        exchangeEnd = error.end
        exchangeError = error.message
        responseStatus = error.status
        if requestID.isEmpty { mintRequestID() }
        responseSendEnd = 0
        upstreamIn.map { $0.clear() }
        releaseIfEmpty(&upstreamIn)
        let out = takeBuffer(&clientOut)
        out.clear()
        ErrorResponse.write(into: out, error, requestID: requestID, close: closeAfter, extraFields: extraFields, body: body)
        closeAfterResponse = closeAfter
        lastClientWriteProgress = loop.now
        responseStarted = true
        response = .complete
        phase = .exchange
        finishIfFlushed()
    }

    /// A request sluice refuses: answered and the connection closed, never forwarded.
    private func rejectRequest(_ error: ProxyError) {
        OpLog.debug("request rejected", ["client": .string(String(decoding: clientIP, as: UTF8.self)), "status": .int(error.status),
                                         "error": .string(error.message)])
        dropUnsentRequest()
        dropUpstreamHead()
        respond(error, closeAfter: true)
    }

    /// Ends an exchange at once because the client is gone or stuck: the upstream is closed in this
    /// loop turn (stopping a paid generation) and queued bytes are dropped.
    private func abort(reason: String, end: CompletionRecord.End) {
        OpLog.debug("exchange aborted", ["reason": .string(reason)])
        if exchangeEnd == nil {
            exchangeEnd = end
            exchangeError = reason
        }
        upstreamReusable = false
        closeUpstream()
        response = .aborted
        close()
    }

    /// The upstream failed after the response began: what was received still goes out, then the client
    /// is closed without the body's clean end (no last chunk, or short of Content-Length), so it can
    /// tell the response was truncated.
    private func endTruncated(reason: String, end: CompletionRecord.End) {
        OpLog.warn("upstream response truncated", ["upstream": .string(upstreamDisplay), "error": .string(reason)])
        exchangeEnd = end
        exchangeError = reason
        upstreamReusable = false
        closeUpstream()
        response = .aborted
        closeAfterResponse = true
        finishIfFlushed()
    }

    // MARK: - Closing

    /// Shuts our write side and discards input for a while, so the response is not destroyed by a
    /// reset when the client still had bytes in flight (nginx lingering_close).
    private func lingerAndClose() {
        phase = .lingering
        lingerStartedAt = loop.now
        lingerDiscarded = 0
        // close_notify: the clean end of the response (an aborted one gets none, see `abort`).
        clientTransport.closeNotify()
        Syscall.shutdownWrite(clientFD)
        clientIn?.clear()
        releaseIfEmpty(&clientIn)
        if clientHangup { close() }
    }

    /// `http://` used on an https port gets a 400 it can read, in plain text, instead of a silent close (as nginx
    /// answers). One best-effort write: the connection closes after it either way, lingering so the answer is not
    /// destroyed by a reset while the rest of the request is unread.
    private func answerPlainHTTPOnTLSListener() {
        mintRequestID()
        let out = loop.bufferPool.take()
        ErrorResponse.write(into: out, .plainHTTPOnTLSListener, requestID: requestID, close: true)
        out.withReadableRawBytes(from: 0, to: out.readableCount) { _ = try? Syscall.write(clientFD, $0, UnsafeRawBufferPointer(start: nil, count: 0)) }
        loop.bufferPool.give(out)
        lingerAndClose()
    }

    private func discardLingeringInput() -> Bool {
        let buffer = takeBuffer(&clientIn)
        buffer.clear()
        let result = try? buffer.read(from: clientFD)
        buffer.clear()
        releaseIfEmpty(&clientIn)
        switch result {
        case .processed(let count) where count > 0:
            lingerDiscarded += count
            guard lingerDiscarded < ClientSession.lingerMaxBytes else {
                close()
                return false
            }
            return true
        case .wouldBlock:
            clientReadable = false
            return false
        default:
            close()
            return false
        }
    }

    /// Answered 503 at accept because `max_connections` were open; not counted among them.
    private(set) var refusedOverCapacity = false

    /// Refuses a connection accepted over `max_connections`: 503 with Retry-After, then a lingering close (so
    /// the answer is not lost to a reset while the client's request is still arriving).
    func refuseOverCapacity(limit: Int) {
        refusedOverCapacity = true
        loop.metrics.countOverloadRefusal()
        respond(.overloaded(limit: limit), closeAfter: true, extraFields: Array("Retry-After: 1\r\n".utf8))
    }

    /// The process is draining: an idle keep-alive connection closes now; one with a request under way
    /// finishes its exchange (its response says `Connection: close` if its head is not out yet) and then closes.
    /// A connection that looks idle but has bytes waiting (a request sent just after accept or after the last
    /// read) is served instead: closing it would leave that client an empty EOF and no record.
    func beginDrain() {
        switch phase {
        case .idle where (clientIn?.readableCount ?? 0) > 0 || Syscall.hasPendingInput(clientFD):
            clientReadable = true
            loop.post(self)
        case .idle: close()
        case .exchange: closeAfterResponse = true
        case .readingHead, .lingering, .closed: break
        }
    }

    /// The process is stopping: an exchange in flight is cut and recorded as `drain`.
    func shutDown() {
        if recordPending && exchangeEnd == nil {
            exchangeEnd = .drain
            exchangeError = "sluice is shutting down"
        }
        close()
    }

    /// Closes the client and anything attached; returns every buffer to the pool.
    func close() {
        guard phase != .closed else { return }
        closeUpstream()
        // An exchange cut short without a decided end lost its client.
        if recordPending && exchangeEnd == nil { exchangeEnd = .clientAbort }
        emitRecord()
        loop.metrics.addQueuedBytes(-reportedQueued)
        reportedQueued = 0
        phase = .closed
        for buffer in [clientIn, clientOut, upstreamIn, upstreamOut] {
            if let buffer { loop.bufferPool.give(buffer) }
        }
        clientIn = nil
        clientOut = nil
        upstreamIn = nil
        upstreamOut = nil
        releaseParsers()
        loop.sessionClosed(self)
        client = nil
    }

    // MARK: - Observation and the completion record

    /// Starts the record of an exchange: identity fields now, while the head bytes exist.
    /// `head` is nil for a request refused before its head could be parsed.
    private func beginRecord(head: RequestHead?, source: Span<UInt8>?) {
        recordPending = true
        exchangeWallClock = CompletionRecord.wallClockMilliseconds()
        exchangeStartedAt = loop.now
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
    private func observeRequest(_ buffer: ByteBuffer, _ range: Range<Int>) {
        guard let observer = requestObserver, !range.isEmpty else { return }
        buffer.withReadableSpan(from: range.lowerBound, to: range.upperBound) { observer.tap.observe($0) }
    }

    /// Response body payload on its way to the client; feeds the inter-event gap histogram as events complete.
    private func observeResponse(_ buffer: ByteBuffer, _ range: Range<Int>) {
        guard let observer = responseObserver, !range.isEmpty else { return }
        let eventsBefore = observer.tap.dispatchedEventCount
        let previous = observer.tap.latestEventAt
        let now = loop.now
        buffer.withReadableSpan(from: range.lowerBound, to: range.upperBound) { observer.tap.observe($0, now: now) }
        let newEvents = observer.tap.dispatchedEventCount - eventsBefore
        guard newEvents > 0 else { return }
        // One gap per pair of consecutive events: events completed by the same read are 0 ms apart.
        if let previous { loop.metrics.observe(.eventGap, milliseconds: Double(now - previous)) }
        for _ in 1..<newEvents { loop.metrics.observe(.eventGap, milliseconds: 0) }
    }

    /// The request body is complete (or abandoned): keep what its tap learned and give the tap back.
    private func finishRequestObservation() {
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
    private func emitRecord() {
        guard recordPending else { return }
        recordPending = false
        let now = loop.now
        let logged = loop.completions != nil
        var record = CompletionRecord(timestampMilliseconds: exchangeWallClock,
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
        if responseHeadAt > 0 { record.ttfbMilliseconds = Double(responseHeadAt - exchangeStartedAt) }
        record.durationMilliseconds = Double(now - exchangeStartedAt)
        let pausedNow = upstreamReadPause.contains(.peerQueueFull) ? now - pausedSince : 0
        record.pausedMilliseconds = Double(pausedTotal + pausedNow)
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
            record.ttftMilliseconds = observation.firstDataEventAt.map { Double($0 - exchangeStartedAt) }
            record.maxGapMilliseconds = Double(observation.maxGap)
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

    private static func text(_ bytes: Span<UInt8>) -> String {
        String(decoding: (0..<bytes.count).map { bytes[$0] }, as: UTF8.self)
    }

    /// Takes the route's rate-limit budget for this request; a refused request is answered 429 here and
    /// never reaches the upstream. Returns false when refused.
    private func admitRateLimited(_ limiter: RateLimiter, rules: [Int], head: RequestHead, headLength: Int, buffer: ByteBuffer) -> Bool {
        let keys = buffer.withReadableSpan { source in
            rules.map { rule in rateLimitKey(limiter, rule: rule, head: head, source: source) }
        }
        switch limiter.admit(rules: rules, keys: keys, nowNanoseconds: Int64(Syscall.monotonicNanoseconds())) {
        case .admitted(let grant):
            rateLimitGrant = grant
            rateLimitFields = RateLimitHeaders.fields(for: grant)
            rateLimitKeyHash = keys.first?.displayHash
            rateLimitDecision = "allowed"
            return true
        case .rejected(let rejection):
            rateLimitKeyHash = rejection.key.displayHash
            rateLimitDecision = "rejected"
            if let slot = settings.ruleMetricsSlots[rejection.rule] { loop.metrics.countRateLimitRejection(rule: slot) }
            OpLog.debug("rate limited", ["rule": .string(rejection.name), "key": .string(rejection.key.displayHash)])
            // The body of a refused request is not forwarded; the connection closes if one is on its way. Without
            // a body, requests pipelined behind it stay and are answered in order once the 429 is out.
            let closeAfter = !requestIsComplete || closeAfterResponse
            if closeAfter {
                dropUnsentRequest()
            } else {
                buffer.consume(headLength)
            }
            dropUpstreamHead()
            respond(.rateLimited(RateLimitHeaders.message(for: rejection)), closeAfter: closeAfter,
                    extraFields: RateLimitHeaders.serialize(RateLimitHeaders.fields(for: rejection)),
                    body: RateLimitHeaders.body(for: rejection))
            return false
        }
    }

    /// The key a rule counts this request under: the client address (from X-Forwarded-For when the
    /// peer is a trusted proxy), a request header's value (hashed, never kept), or one global key.
    private func rateLimitKey(_ limiter: RateLimiter, rule: Int, head: RequestHead, source: Span<UInt8>) -> RateLimitKey {
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

    /// Moves the loop's queued-bytes gauge by this session's change since the last report.
    private func reportQueuedBytes() {
        let queued = (clientOut?.readableCount ?? 0) + (upstreamIn?.readableCount ?? 0) + (clientIn?.readableCount ?? 0)
        guard queued != reportedQueued else { return }
        loop.metrics.addQueuedBytes(queued - reportedQueued)
        reportedQueued = queued
    }

    // MARK: - Buffers and parsers

    /// Forgets request bytes not yet forwarded (the rest of a body, pipelined requests): the upstream
    /// gets nothing more of this request, and nothing after it is parsed.
    private func dropUnsentRequest() {
        requestBody = .complete
        requestSendEnd = 0
        clientIn?.clear()
        releaseIfEmpty(&clientIn)
    }

    /// Gives back the rewritten request head (kept for a replay until the response head arrives).
    private func dropUpstreamHead() {
        upstreamOut.map { loop.bufferPool.give($0) }
        upstreamOut = nil
        upstreamHeadSent = 0
    }

    private func takeParsers() -> HeadParsers {
        if let parsers { return parsers }
        let borrowed = loop.takeParsers()
        parsers = borrowed
        return borrowed
    }

    private func releaseParsers() {
        guard let borrowed = parsers else { return }
        parsers = nil
        loop.giveParsers(borrowed)
    }

    private func takeBuffer(_ slot: inout ByteBuffer?) -> ByteBuffer {
        if let buffer = slot { return buffer }
        let buffer = loop.bufferPool.take()
        slot = buffer
        return buffer
    }

    private func releaseIfEmpty(_ slot: inout ByteBuffer?) {
        // An empty buffer holds no parser state (parsers keep offsets only over bytes present), so an
        // idle stream, or one waiting minutes for a first token, holds no buffer at all.
        guard let buffer = slot, buffer.isEmpty else { return }
        slot = nil
        loop.bufferPool.give(buffer)
    }

    // MARK: - Timers

    /// The facts the timeouts depend on, read from the session's state (ExchangeDeadlines decides).
    private var deadlineFacts: ExchangeDeadlines.Facts {
        let phase: ExchangeDeadlines.Phase = switch self.phase {
        case .idle: .idle
        case .readingHead: .readingHead
        case .exchange: .exchange
        case .lingering: .lingering
        case .closed: .closed
        }
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

    private var deadlineTimes: ExchangeDeadlines.Times {
        ExchangeDeadlines.Times(acceptedAt: acceptedAt, idleSince: idleSince, headStartedAt: headStartedAt, exchangeStartedAt: exchangeStartedAt,
                                connectStartedAt: connectStartedAt, requestSentAt: requestSentAt, lastUpstreamRead: lastUpstreamRead,
                                lastClientRead: lastClientRead, lastClientWriteProgress: lastClientWriteProgress, lingerStartedAt: lingerStartedAt)
    }

    private var deadlineLimits: ExchangeDeadlines.Limits {
        ExchangeDeadlines.Limits(timeouts: timeouts, handshake: settings.handshakeTimeout, linger: ClientSession.lingerMilliseconds)
    }

    /// The earliest moment one of the current phase's timeouts can fire.
    private func nextDeadline() -> Int64 {
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
    private func expire(now: Int64) {
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
                                           end: .timeoutConnect))
        case .firstByte:
            upstreamFailed(.upstreamTimeout("upstream \(upstreamDisplay) sent no response within \(timeouts.upstreamFirstByte) ms", end: .timeoutFirstByte))
        case .total:
            upstreamFailed(.upstreamTimeout("exchange exceeded the total limit of \(timeouts.total) ms", end: .timeoutTotal))
        case .upstreamIdle:
            upstreamFailed(.upstreamTimeout("upstream \(upstreamDisplay) sent nothing for \(timeouts.upstreamIdle) ms", end: .timeoutIdle))
        case .clientBodyIdle:
            failRequestBody(.requestBodyStalled(milliseconds: timeouts.clientBodyIdle))
        case .linger:
            close()
        }
    }
}
