/// One admin response, before it is turned into bytes.
struct AdminResponse: Equatable {
    var status: Int
    var reason: String
    var contentType: String
    var body: String
    /// A HEAD request: the head says the body's length, the body is not sent.
    var headOnly = false
    /// The `Allow` field of a 405 (RFC 9110 §15.5.6), nil for none.
    var allow: String? = nil

    /// The response on the wire: every one closes the connection, so no client can hold a slot idle
    /// between requests.
    var bytes: [UInt8] {
        var text = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n"
        if let allow { text += "Allow: \(allow)\r\n" }
        text += "Connection: close\r\n\r\n"
        if !headOnly { text += body }
        return Array(text.utf8)
    }
}

/// What the admin listener answers: `/metrics`, `/healthz`, `/readyz`. Pure, so each route is tested
/// without a socket; the shell supplies readiness and the metrics text (rendered only when asked for).
enum AdminRoutes {
    /// The response to `reply`.
    /// - Parameters:
    ///   - readiness: what `/readyz` answers: 200 `ready`, or 503 with why not (`draining`, or one line per
    ///     routed upstream whose name has not resolved yet).
    ///   - metrics: renders the Prometheus text; called only for `/metrics`.
    static func response(to reply: AdminReply, readiness: ReadinessReport, metrics: () -> String) -> AdminResponse {
        switch reply {
        case .badRequest(let message):
            return AdminResponse(status: 400, reason: "Bad Request", contentType: "text/plain", body: message + "\n")
        case .headTooLarge:
            return AdminResponse(status: 431, reason: "Request Header Fields Too Large", contentType: "text/plain",
                                 body: "request head too large\n")
        case .route(let request):
            guard request.method == .get || request.method == .head else {
                return AdminResponse(status: 405, reason: "Method Not Allowed", contentType: "text/plain", body: "use GET\n")
            }
            let headOnly = request.method == .head
            switch request.path {
            case "/metrics":
                return AdminResponse(status: 200, reason: "OK", contentType: MetricsRegistry.contentType, body: metrics(), headOnly: headOnly)
            case "/healthz":
                return AdminResponse(status: 200, reason: "OK", contentType: "text/plain", body: "ok\n", headOnly: headOnly)
            case "/readyz":
                let body: String
                switch readiness {
                case .ready:
                    return AdminResponse(status: 200, reason: "OK", contentType: "text/plain", body: "ready\n", headOnly: headOnly)
                case .draining:
                    body = "draining\n"
                case .unresolved(let upstreams):
                    body = upstreams.map { "not ready: \($0.description)\n" }.joined()
                }
                return AdminResponse(status: 503, reason: "Service Unavailable", contentType: "text/plain", body: body, headOnly: headOnly)
            default:
                return AdminResponse(status: 404, reason: "Not Found", contentType: "text/plain",
                                     body: "not found; try /metrics, /healthz or /readyz\n")
            }
        }
    }
}
