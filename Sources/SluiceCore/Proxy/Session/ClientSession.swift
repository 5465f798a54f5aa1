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
    /// Where the client connection is in its life (one type with the timeouts that depend on it).
    typealias Phase = ConnectionPhase

    /// How far the request body has been framed.
    enum RequestBody {
        case complete
        case contentLength(remaining: Int64)
        case chunked
    }

    /// Where the response is, with the body's framing (`machine.response` joined with `responseBody`).
    enum ResponseState: Equatable {
        /// Waiting for the (final) response head.
        case awaitingHead
        /// Relaying the body with this framing.
        case body(ResponseBody)
        /// The last body byte is queued to the client.
        case complete
        /// The exchange was cut: what was received goes out, then the client is closed without a clean end.
        case aborted
    }

    enum ResponseBody: Equatable {
        case contentLength(remaining: Int64)
        /// Chunked framing passed through verbatim to an HTTP/1.1 client.
        case chunked
        /// Chunked framing removed for an HTTP/1.0 client, the body then ends with the connection.
        case dechunked
        case untilClose
        /// A tunnel after a 101: bytes relayed as they are, with no end but a close.
        case tunnel
        /// An event stream whose request sluice edited (`inject_usage`): its payload goes through the usage filter
        /// and out re-framed (chunked, or until close for an HTTP/1.0 client). `input` is the upstream's framing.
        case filtered(input: FilteredInput, rechunk: Bool)

        /// The upstream framing this body reads, for filtering it instead.
        var filteredInput: FilteredInput {
            switch self {
            case .contentLength(let remaining): .contentLength(remaining: remaining)
            case .chunked, .dechunked: .chunked
            case .untilClose, .tunnel: .untilClose
            case .filtered(let input, _): input
            }
        }
    }

    /// The upstream framing of a filtered body (see `ResponseBody.filtered`).
    /// `ResponseBody.filteredInput` maps a body to it.
    enum FilteredInput: Equatable {
        case chunked
        case contentLength(remaining: Int64)
        case untilClose
        /// Close-delimited and the upstream has closed: what is left in `upstreamIn` is the end.
        case closed
    }

    /// Where an exchange is with `inject_usage`.
    enum UsageInjection: Equatable {
        case off
        /// The request body is held until it is complete; the upstream head waits for its Content-Length.
        case holdingBody
        /// The body went out with `stream_options.include_usage` added: the response's usage-only event is removed.
        case injected
    }

    // MARK: loop thread only: identity and sockets
    // unowned(unsafe): the loop owns its sessions and outlives them, and a checked unowned
    // reference costs a retain and a release on every access (measured: 5 % of a small request).
    unowned(unsafe) let loop: ProxyLoop
    var client: FileDescriptor?
    let clientFD: Int32
    /// Plain, or TLS on a `listen ... tls` connection.
    let clientTransport: Transport
    /// The client's IP as ASCII, for X-Forwarded-For.
    let clientIP: [UInt8]
    var clientReadable = true
    var clientWritable = true
    var clientHangup = false
    /// Reads from the client pause while `clientIn` is full; reads from the upstream while the client queue is.
    var clientGate = ReadGate()
    var upstreamGate = ReadGate()
    let watermarks: ReadGate.Watermarks
    /// Decides every transition of the connection and its exchange; the session carries its actions out.
    var machine = ExchangeStateMachine()
    var phase: Phase { machine.phase }
    var timerIndex = -1
    var timerDeadline: Int64 = 0
    /// Set while the session is in the loop's posted list.
    var isPosted = false

    // MARK: loop thread only: buffers
    var clientIn: ByteBuffer?
    var clientOut: ByteBuffer?
    var upstreamOut: ByteBuffer?
    var upstreamIn: ByteBuffer?

    // MARK: loop thread only: the current exchange
    /// The loop's settings when the exchange began: a reload swaps the loop's, and this exchange keeps its
    /// routes, upstream and rate limiter to the end.
    var settings: ProxySettings
    /// Borrowed from the loop only while a head is partly parsed: their field tables are the largest
    /// part of a session, and an established stream needs none.
    var parsers: HeadParsers?
    var upstream: UpstreamConnection?
    /// The server this exchange's stream counts against (chosen, not yet ended), and the ones it tried before.
    var server: PoolServer?
    var triedServers = TriedServers()
    /// Servers contacted by this exchange (1 + retries), for the record.
    var tries = 0
    /// The request's affinity key, hashed; nil without one.
    var affinityKey: UInt64?
    var affinity: ServerChooser.Affinity = .none
    /// The connect waits for a body affinity key (see `ClientSession+Affinity`).
    var awaitingAffinityKey = false
    var affinityScanner: AffinityBodyKey?
    var affinityBytesRead = 0
    var connectHeldForAffinity = false
    /// The server whose final response head this exchange relays: its first-token time is counted at the end.
    var servedBy: PoolServer?
    /// Its status when it was a success, counted with the first-token time at the end (0: counted already).
    var servedStatus = 0
    /// The rewritten head stays after it is sent while a retry may send it again.
    var keepsRequestForRetry = false
    /// Body bytes sent are copied into `keptBody` while a retry may send them again.
    var keepsBodyForRetry = false
    var keptBody: ByteBuffer?
    /// Bytes of `keptBody` written on the current connection.
    var keptBodyResent = 0
    /// Body bytes went out that were not kept (over `retry_body_limit`): the request can no longer be retried.
    var bodyNotKept = false
    /// When the current try began (loop microseconds): its server's time to first byte counts from here.
    var attemptStartedAt: Int64 = 0
    var routeIndex = 0
    // Copied from the route when an exchange starts, so the per-chunk path reads plain fields.
    var upstreamIndex = 0
    var maxRequestBody: Int64 = 0
    var captureResponseBytes = 0
    var timeouts: Timeouts
    var requestBody: RequestBody = .complete
    var requestBodyBytes: Int64 = 0
    /// Body bytes at the front of `clientIn` that are framed and may go to the upstream.
    var requestSendEnd = 0
    /// Bytes of `upstreamOut` already written.
    var upstreamHeadSent = 0
    /// A response head waits for the client queue to drain before it is written (see `headDidNotFit`).
    var waitingForHeadRoom = false
    var usageInjection: UsageInjection = .off
    /// Finds the usage-only event of an injected exchange's response. Made the first time this connection injects:
    /// held inline, its 285 bytes were a tenth of what every idle stream cost, on routes that never inject.
    var usageFilter: UsageFilterState?
    /// The filtered stream's current event, held until the filter decides (see `ClientSession+UsageFilter`).
    var usageHeld: ByteBuffer?
    /// The body's framing while `machine.response` is `.body`.
    var responseBody: ResponseBody = .untilClose
    var response: ResponseState {
        switch machine.response {
        case .awaitingHead: .awaitingHead
        case .body: .body(responseBody)
        case .complete: .complete
        case .aborted: .aborted
        }
    }
    /// Body bytes at the front of `upstreamIn` that are framed and may go to the client.
    var responseSendEnd = 0
    /// The response body may go through a pipe (`ClientSession+Splice`), and the pipe it uses once it does.
    var spliceAllowed = false
    var splice: SplicePipe?
    /// Set while the exchange is a tunnel (from the 101 on).
    var tunnel: TunnelRelay?
    var requestID: [UInt8] = []

    // MARK: loop thread only: what the completion record and metrics need
    /// Borrowed from the loop while a request body streams upstream, and while a response body
    /// streams to the client: an established stream holds only the response side.
    var requestObserver: RequestObserver?
    var responseObserver: ResponseObserver?
    /// What this exchange's completion record gathers (replaced whole when an exchange begins).
    var record = ExchangeRecord()
    /// The queued bytes last added to the loop's gauge, so the gauge moves by deltas.
    var reportedQueued = 0
    var countedAsStream = false
    /// The rate-limit admission of this exchange, released exactly once when its record is written.
    var rateLimitGrant: AdmissionGrant?
    /// Rate-limit fields for the response head (remaining budget), serialized once per exchange.
    var rateLimitFields: [RateLimitHeaderField] = []

    // MARK: loop thread only: times (loop milliseconds)
    /// What the timeouts count from (`ExchangeDeadlines` reads them; 0 means that clock has not started).
    var times: ExchangeDeadlines.Times
    var lingerDiscarded = 0

    /// Takes ownership of an accepted, non-blocking client socket; `tls` when the listener terminates TLS.
    init(loop: ProxyLoop, fd: consuming FileDescriptor, peer: SocketAddress, tls: TLSEngine? = nil) {
        self.loop = loop
        clientFD = fd.rawValue
        clientTransport = Transport(fd: fd.rawValue, tls: tls)
        client = .some(fd)
        clientIP = Array(peer.hostString.utf8)
        times = ExchangeDeadlines.Times(acceptedAt: loop.now, idleSince: loop.now)
        requestID.reserveCapacity(ClientSession.maxRequestIDLength)
        settings = loop.settings
        timeouts = settings.timeouts
        watermarks = ReadGate.Watermarks(high: settings.highWatermark, low: settings.lowWatermark)
    }

    static let maxRequestIDLength = 128
    static let rootPath: [UInt8] = [UInt8(ascii: "/")]
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
                connectFailed(.unreachable("cannot connect to upstream \(upstreamDisplay): \(SystemError(call: "connect to \(connection.address)", errno: error).description)",
                                           client: "cannot connect to upstream \(upstreamName)"))
                return drive()
            }
            connection.connected = true
            if requestIsComplete { times.requestSentAt = loop.now }
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

    /// A client that hung up while we still owe it a response cancels the exchange; returns true when that closed it.
    func clientGoneCheck() -> Bool {
        carryOut(machine.clientHungUp(inputPending: clientReadable))
        return phase == .closed
    }

    // MARK: - Closing

    /// Shuts our write side and discards input for a while, so the response is not destroyed by a
    /// reset when the client still had bytes in flight (nginx lingering_close).
    func lingerAndClose() {
        times.lingerStartedAt = loop.now
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
    func answerPlainHTTPOnTLSListener() {
        mintRequestID()
        let out = loop.bufferPool.take()
        ErrorResponse.write(into: out, .plainHTTPOnTLSListener, requestID: requestID, close: true)
        loop.metrics.countGeneratedResponse(ProxyError.plainHTTPOnTLSListener.source)
        out.withReadableRawBytes(from: 0, to: out.readableCount) { _ = try? Syscall.write(clientFD, $0, UnsafeRawBufferPointer(start: nil, count: 0)) }
        loop.bufferPool.give(out)
        carryOut(machine.answeredPlainHTTPOnTLS())
    }

    func discardLingeringInput() -> Bool {
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
        carryOut(machine.refusedAtAccept(.overloaded(limit: limit)), extraFields: Array("Retry-After: 1\r\n".utf8))
    }

    /// The process is draining: an idle keep-alive connection closes now; one with a request under way
    /// finishes its exchange (its response says `Connection: close` if its head is not out yet) and then closes.
    /// A connection that looks idle but has bytes waiting (a request sent just after accept or after the last
    /// read) is served instead: closing it would leave that client an empty EOF and no record.
    func beginDrain() {
        let inputPending = phase == .idle && ((clientIn?.readableCount ?? 0) > 0 || Syscall.hasPendingInput(clientFD))
        carryOut(machine.drain(inputPending: inputPending))
    }

    /// The process is stopping: an exchange in flight is cut and recorded as `drain`.
    func shutDown() {
        carryOut(machine.shutDown())
    }

    /// Closes the client and anything attached; returns every buffer to the pool.
    func close() {
        guard phase != .closed else { return }
        closeUpstream()
        releaseServer()
        releaseRetryState()
        // An exchange cut short without a decided end lost its client.
        if record.pending && record.end == nil { record.end = .clientAbort }
        concludeExchange()
        loop.metrics.addQueuedBytes(-reportedQueued)
        reportedQueued = 0
        machine.connectionClosed()
        for buffer in [clientIn, clientOut, upstreamIn, upstreamOut, usageHeld] {
            if let buffer { loop.bufferPool.give(buffer) }
        }
        clientIn = nil
        clientOut = nil
        upstreamIn = nil
        upstreamOut = nil
        usageHeld = nil
        releaseSplice()
        releaseParsers()
        loop.sessionClosed(self)
        client = nil
    }

    /// Moves the loop's queued-bytes gauge by this session's change since the last report.
    func reportQueuedBytes() {
        let queued = (clientOut?.readableCount ?? 0) + (upstreamIn?.readableCount ?? 0) + (clientIn?.readableCount ?? 0)
            + (splice?.queued ?? 0)
        guard queued != reportedQueued else { return }
        loop.metrics.addQueuedBytes(queued - reportedQueued)
        reportedQueued = queued
    }

    // MARK: - Buffers and parsers

    /// Forgets request bytes not yet forwarded (the rest of a body, pipelined requests): the upstream
    /// gets nothing more of this request, and nothing after it is parsed.
    func dropUnsentRequest() {
        requestBody = .complete
        requestSendEnd = 0
        clientIn?.clear()
        releaseIfEmpty(&clientIn)
    }

    /// Gives back the rewritten request head (kept for a replay until the response head arrives).
    func dropUpstreamHead() {
        upstreamOut.map { loop.bufferPool.give($0) }
        upstreamOut = nil
        upstreamHeadSent = 0
    }

    func takeParsers() -> HeadParsers {
        if let parsers { return parsers }
        let borrowed = loop.takeParsers()
        parsers = borrowed
        return borrowed
    }

    func releaseParsers() {
        guard let borrowed = parsers else { return }
        parsers = nil
        loop.giveParsers(borrowed)
    }

    func takeBuffer(_ slot: inout ByteBuffer?) -> ByteBuffer {
        if let buffer = slot { return buffer }
        let buffer = loop.bufferPool.take()
        slot = buffer
        return buffer
    }

    func releaseIfEmpty(_ slot: inout ByteBuffer?) {
        // An empty buffer holds no parser state (parsers keep offsets only over bytes present), so an
        // idle stream, or one waiting minutes for a first token, holds no buffer at all.
        guard let buffer = slot, buffer.isEmpty else { return }
        slot = nil
        loop.bufferPool.give(buffer)
    }

}
