/// One TCP connection to an upstream, owned by a loop: attached to the session it serves, or idle in
/// the loop's pool. Its fd stays registered with epoll while pooled, so a server closing an idle
/// connection is noticed and the connection dropped before anyone reuses it.
final class UpstreamConnection {
    // MARK: loop thread only
    var fd: FileDescriptor?
    let rawFD: Int32
    let upstreamIndex: Int
    /// Connect finished (SO_ERROR checked).
    var connected = false
    /// Edge-triggered readiness: true until a read or write returns EAGAIN.
    var readable = true
    var writable = true
    /// The server closed its side (EPOLLRDHUP) or the socket failed.
    var hangup = false
    /// Served at least one exchange before the current one.
    var reused = false
    /// The session it serves; nil while pooled.
    var session: ClientSession?
    /// When it entered the pool (loop milliseconds).
    var idleSince: Int64 = 0

    init(fd: consuming FileDescriptor, upstreamIndex: Int) {
        rawFD = fd.rawValue
        self.fd = .some(fd)
        self.upstreamIndex = upstreamIndex
    }

    var isOpen: Bool { fd != nil }
}

/// A request and a response head parser, lent by the loop to a session while it has a head partly
/// parsed, and returned as soon as the head is handled.
final class HeadParsers {
    var request: RequestHeadParser
    var response: ResponseHeadParser

    init(limits: HTTPLimits) {
        request = RequestHeadParser(limits: limits)
        response = ResponseHeadParser(limits: limits)
    }
}

/// What reads a request body on its way upstream: its chunked framing and the JSON tap. Lent by the
/// loop while the body streams; pooled unless it captures (capture is a rare per-route audit option).
final class RequestObserver {
    var chunks: ChunkedDecoder
    var tap: RequestTap
    let capturing: Bool

    init(limits: HTTPLimits, scanLimit: Int, capture: Int) {
        chunks = ChunkedDecoder(limits: limits)
        tap = RequestTap(maxBodyBytes: scanLimit, captureLimit: capture)
        capturing = capture > 0
    }
}

/// What reads a response body on its way to the client: its chunked framing and the stream tap
/// (SSE events, timing, usage). Lent by the loop while the body streams.
final class ResponseObserver {
    var chunks: ChunkedDecoder
    var tap: ResponseTap
    let capturing: Bool

    init(limits: HTTPLimits, capture: Int) {
        chunks = ChunkedDecoder(limits: limits)
        tap = ResponseTap(captureLimit: capture)
        capturing = capture > 0
    }
}
