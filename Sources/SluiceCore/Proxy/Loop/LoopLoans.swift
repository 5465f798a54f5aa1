// State a session borrows from its loop only while it needs it, so an idle or established
// connection carries none of it (see ProxyLoop's take/give pairs).

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
