/// Every response sluice generates instead of forwarding one: whose fault it is, the status, the JSON error's type and
/// message, and how the completion record ends (pingora-error's model: the source decides the status class, the
/// metric label and the record). One value, built by the named constructors below, so a type string is written once.
struct ProxyError: Error, Equatable {
    /// Whose fault the failure is.
    enum Source: String, Equatable {
        /// The request was malformed, too large, too slow, or over a limit: 4xx.
        case client
        /// The upstream could not be reached, was too slow, or answered badly: 502/504.
        case upstream
        /// sluice itself cannot take the request now (overload): 503.
        case `internal`
    }

    let source: Source
    let status: Int
    /// The `error.type` of the JSON body, a stable identifier clients can match.
    let type: String
    /// What the operator log and the completion record say (an upstream's address included).
    let message: String
    let end: CompletionRecord.End
    /// The `error.message` of the JSON body when it must say less than `message`: clients learn the upstream's
    /// name, never its address.
    var clientMessage: String? = nil

    /// The message the client reads.
    var messageForClient: String { clientMessage ?? message }

    // MARK: client

    /// A head the parser refused, with its own status (400, 414, 431, 501, 505).
    static func malformedRequest(_ error: HTTPParseError) -> ProxyError {
        ProxyError(source: .client, status: error.status, type: ErrorResponse.type(for: error.status), message: error.message, end: .rejectedBadRequest)
    }

    /// A chunked request body whose framing broke after forwarding began.
    static func malformedBody(_ error: HTTPParseError) -> ProxyError {
        ProxyError(source: .client, status: error.status, type: "bad_request", message: error.message, end: .rejectedBadRequest)
    }

    static func headTooLarge(_ message: String) -> ProxyError {
        ProxyError(source: .client, status: 431, type: "header_too_large", message: message, end: .rejectedBadRequest)
    }

    static func bodyTooLarge(_ message: String) -> ProxyError {
        ProxyError(source: .client, status: 413, type: "payload_too_large", message: message, end: .rejectedBadRequest)
    }

    static let connectNotSupported = ProxyError(source: .client, status: 405, type: "method_not_allowed",
                                                message: "CONNECT is not supported by this reverse proxy", end: .rejectedBadRequest)

    /// RFC 6455 §4.1: the opening handshake is a GET without a body; bytes after one could not be told apart from
    /// the first frames.
    static let upgradeWithBody = ProxyError(source: .client, status: 400, type: "bad_request",
                                            message: "a WebSocket upgrade request has no body", end: .rejectedBadRequest)

    /// A tunnel carried no byte either way for `tunnel_idle`.
    static func tunnelIdle(milliseconds: Int) -> ProxyError {
        ProxyError(source: .client, status: 0, type: "tunnel_idle", message: "tunnel idle for \(milliseconds) ms", end: .tunnelIdleTimeout)
    }

    static let noRoute = ProxyError(source: .client, status: 404, type: "no_route", message: "no route matches this path", end: .rejectedBadRequest)

    static func requestHeadTimeout(milliseconds: Int) -> ProxyError {
        ProxyError(source: .client, status: 408, type: "request_timeout",
                   message: "the request head did not arrive within \(milliseconds) ms", end: .rejectedBadRequest)
    }

    static func requestBodyStalled(milliseconds: Int) -> ProxyError {
        ProxyError(source: .client, status: 408, type: "request_timeout", message: "request body stalled for \(milliseconds) ms", end: .rejectedBadRequest)
    }

    /// The client read nothing for `client_write`: the exchange is cut, so this is only ever recorded, never sent.
    static func clientWriteStalled(milliseconds: Int) -> ProxyError {
        ProxyError(source: .client, status: 408, type: "client_write_timeout",
                   message: "client made no write progress for \(milliseconds) ms", end: .clientWriteTimeout)
    }

    /// An idle or lingering connection ran out its time: it closes quietly, so this is never sent.
    static let connectionTimedOut = ProxyError(source: .client, status: 408, type: "request_timeout",
                                               message: "the connection was idle too long", end: .clientAbort)

    static let plainHTTPOnTLSListener = ProxyError(source: .client, status: 400, type: "plain_http_to_tls_listener",
                                                   message: "this listener speaks HTTPS; send the request with https://", end: .rejectedBadRequest)

    static func rateLimited(_ message: String) -> ProxyError {
        ProxyError(source: .client, status: 429, type: "rate_limit_exceeded", message: message, end: .rejectedRateLimit)
    }

    // MARK: upstream

    // Each takes the full `message` and, where it names an address, the `client` text without it.

    static func unreachable(_ message: String, client: String? = nil) -> ProxyError {
        ProxyError(source: .upstream, status: 502, type: "upstream_unreachable", message: message, end: .upstreamError, clientMessage: client)
    }

    /// The upstream's host name has not resolved yet (retried in the background): nothing was tried, so the
    /// client learns only the upstream's name.
    static func unresolved(_ message: String, client: String) -> ProxyError {
        ProxyError(source: .upstream, status: 502, type: "upstream_unresolved", message: message, end: .upstreamUnresolved,
                   clientMessage: client)
    }

    static func badResponse(_ message: String, client: String? = nil) -> ProxyError {
        ProxyError(source: .upstream, status: 502, type: "upstream_bad_response", message: message, end: .upstreamError, clientMessage: client)
    }

    static func upstreamTLS(_ message: String, client: String? = nil) -> ProxyError {
        ProxyError(source: .upstream, status: 502, type: "upstream_tls_error", message: message, end: .upstreamError, clientMessage: client)
    }

    /// Every server that could take the stream is at its `max_streams`: a 503 (sent with Retry-After) the client
    /// may retry shortly; nothing was sent to any server.
    static func upstreamBusy(_ message: String, client: String) -> ProxyError {
        ProxyError(source: .upstream, status: 503, type: "upstream_busy", message: message, end: .upstreamError, clientMessage: client)
    }

    /// A 504: `end` says which clock ran out (`timeoutConnect`, `timeoutFirstByte`, `timeoutIdle`, `timeoutTotal`).
    static func upstreamTimeout(_ message: String, client: String? = nil, end: CompletionRecord.End) -> ProxyError {
        ProxyError(source: .upstream, status: 504, type: "upstream_timeout", message: message, end: end, clientMessage: client)
    }

    // MARK: internal

    static func overloaded(limit: Int) -> ProxyError {
        ProxyError(source: .internal, status: 503, type: "overloaded",
                   message: "sluice has \(limit) client connections open (max_connections); retry shortly", end: .rejectedOverload)
    }
}
