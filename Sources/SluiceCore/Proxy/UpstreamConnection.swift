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

/// The request and response taps of one exchange, lent by the loop for the exchange's lifetime.
/// Taps without capture are pooled; a route that captures gets taps sized for it.
final class ExchangeTaps {
    var request: RequestTap
    var response: ResponseTap
    let capturesRequest: Bool
    let capturesResponse: Bool

    init(requestScanLimit: Int, captureRequest: Int, captureResponse: Int) {
        request = RequestTap(maxBodyBytes: requestScanLimit, captureLimit: captureRequest)
        response = ResponseTap(captureLimit: captureResponse)
        capturesRequest = captureRequest > 0
        capturesResponse = captureResponse > 0
    }
}
