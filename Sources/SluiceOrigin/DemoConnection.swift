import Glibc

// The thin shell around the parser and the router: one blocking thread per
// accepted socket, serving requests in arrival order until either side ends
// the connection.

/// Serves one accepted connection on the calling thread, then closes it.
///
/// Owning thread: the connection's own. The registry only ever calls
/// `shutdown(2)` on the fd from other threads, never `close`.
struct DemoConnection {
    let fd: Int32
    /// Time between consecutive SSE events of a stream.
    let tokenInterval: Duration
    let registry: DemoConnectionRegistry

    /// How one exchange left the connection.
    private enum Next {
        /// Read the next request.
        case keepReading
        /// The response asked to end the connection; close it gracefully.
        case closeAfterResponse
        /// The peer is gone or the socket failed; close at once.
        case abort
    }

    /// Runs the request loop until the connection ends; closes the fd.
    func run() {
        var buffer: [UInt8] = []
        // Set once the interim 100 Continue for the request at the front of
        // `buffer` has been sent, so it is sent at most once.
        var continueSent = false
        var next = Next.keepReading
        loop: while true {
            switch DemoRequestParser.parse(buffer) {
            case .needMore(let expectsContinue):
                if expectsContinue && !continueSent {
                    continueSent = true
                    guard DemoSocket.sendAll(fd, Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)) else { next = .abort; break loop }
                }
                guard let n = DemoSocket.receive(fd, appendingTo: &buffer), n > 0 else { next = .abort; break loop }
            case .invalid(let error):
                let response = DemoFixedResponse(error: DemoAPIError(status: error.status, message: error.message))
                _ = send(response, keepAlive: false, version: .http11, headOnly: false)
                next = .closeAfterResponse
                break loop
            case .complete(let request, let consumed):
                buffer.removeFirst(consumed)
                continueSent = false
                next = serve(request)
                if case .keepReading = next { continue loop }
                break loop
            }
        }
        registry.remove(fd)
        switch next {
        case .closeAfterResponse: DemoSocket.lingeringClose(fd)
        case .abort, .keepReading: _ = Glibc.close(fd)
        }
    }

    /// Answers one request.
    private func serve(_ request: DemoRequest) -> Next {
        switch DemoRouter.plan(for: request) {
        case .fixed(let response):
            guard send(response, keepAlive: request.keepAlive, version: request.version, headOnly: request.method == "HEAD") else {
                return .abort
            }
            return request.keepAlive ? .keepReading : .closeAfterResponse
        case .stream(let events):
            return stream(events, for: request)
        }
    }

    /// Writes a Content-Length response in one send. Returns false if the peer is gone.
    private func send(_ response: DemoFixedResponse, keepAlive: Bool, version: DemoHTTPVersion, headOnly: Bool) -> Bool {
        let headers = [
            DemoHeader(name: "Content-Type", value: response.contentType),
            DemoHeader(name: "Content-Length", value: String(response.body.count)),
        ] + response.extraHeaders
        var bytes = DemoResponseHead.bytes(status: response.status, headers: headers, keepAlive: keepAlive, version: version)
        if !headOnly { bytes += response.body }
        return DemoSocket.sendAll(fd, bytes)
    }

    /// Streams SSE events `tokenInterval` apart, one `send` per event.
    ///
    /// An HTTP/1.1 client gets chunked framing, one chunk per event, then the
    /// last-chunk in a write of its own; an HTTP/1.0 client cannot parse
    /// chunks, so it gets raw events and the close marks the end (RFC 9112 §6.3).
    /// Between events the socket is watched for the client hanging up, so a
    /// cancelled stream stops within one interval rather than at a failed write.
    private func stream(_ events: [String], for request: DemoRequest) -> Next {
        let chunked = request.version == .http11
        let keepAlive = chunked && request.keepAlive
        var headers = [
            DemoHeader(name: "Content-Type", value: "text/event-stream; charset=utf-8"),
            DemoHeader(name: "Cache-Control", value: "no-cache"),
        ]
        if chunked { headers.append(DemoHeader(name: "Transfer-Encoding", value: "chunked")) }
        let head = DemoResponseHead.bytes(status: 200, headers: headers, keepAlive: keepAlive, version: request.version)
        guard DemoSocket.sendAll(fd, head) else { return .abort }

        let clock = ContinuousClock()
        var nextEventAt = clock.now
        for (index, event) in events.enumerated() {
            if index > 0 {
                // Deadlines from a fixed start, so slow writes do not stretch the stream.
                nextEventAt = nextEventAt.advanced(by: tokenInterval)
                if waitForPeerHangup(until: nextEventAt, clock: clock) { return .abort }
            }
            let payload = Array(event.utf8)
            let framed = chunked ? Array((String(payload.count, radix: 16) + "\r\n").utf8) + payload + [13, 10] : payload
            guard DemoSocket.sendAll(fd, framed) else { return .abort }
        }
        if chunked {
            guard DemoSocket.sendAll(fd, Array("0\r\n\r\n".utf8)) else { return .abort }
        }
        return keepAlive ? .keepReading : .closeAfterResponse
    }

    /// Sleeps until `deadline` unless the peer hangs up first.
    /// Returns true if it did.
    private func waitForPeerHangup(until deadline: ContinuousClock.Instant, clock: ContinuousClock) -> Bool {
        while true {
            let remaining = clock.now.duration(to: deadline)
            if remaining <= .zero { return false }
            let (seconds, attoseconds) = remaining.components
            // Round up to whole milliseconds (poll's unit), so the wait never ends early and spins.
            let milliseconds = min(seconds * 1_000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000, Int64(Int32.max))
            if DemoSocket.peerHungUp(fd, waitingMilliseconds: Int32(milliseconds)) { return true }
        }
    }
}
