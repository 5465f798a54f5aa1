import Glibc

// Routing for the demo backend: a request in, a response plan out, no IO.
// The connection shell turns the plan into bytes on the socket.

/// What to send for one request, decided before anything is written.
enum DemoResponsePlan: Equatable, Sendable {
    /// A complete response with a Content-Length body.
    case fixed(DemoFixedResponse)
    /// A `text/event-stream` reply written one event at a time, each event
    /// already framed (`data: ...\n\n`, with an `event:` line for Anthropic's).
    case stream(events: [String])
}

/// A response whose body is known up front.
struct DemoFixedResponse: Equatable, Sendable {
    var status: Int
    var contentType: String
    var body: [UInt8]
    /// Extra header fields such as `Allow`, written after the standard ones.
    var extraHeaders: [DemoHeader] = []

    /// An OpenAI-shaped error response.
    init(error: DemoAPIError, extraHeaders: [DemoHeader] = []) {
        self.init(status: error.status, contentType: "application/json", body: Array(error.json.utf8), extraHeaders: extraHeaders)
    }

    /// An Anthropic-shaped error response, for `/v1/messages`.
    init(anthropicError error: DemoAnthropicError, extraHeaders: [DemoHeader] = []) {
        self.init(status: error.status, contentType: "application/json", body: Array(error.json.utf8), extraHeaders: extraHeaders)
    }

    init(status: Int, contentType: String, body: [UInt8], extraHeaders: [DemoHeader] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.extraHeaders = extraHeaders
    }

    /// A JSON 200.
    static func json(_ text: String) -> DemoFixedResponse {
        DemoFixedResponse(status: 200, contentType: "application/json", body: Array(text.utf8))
    }
}

/// Namespace for the routing table.
enum DemoRouter {
    /// Start time reported as the demo model's `created`.
    static let modelCreated = Int(time(nil))

    /// Maps a parsed request to its response.
    static func plan(for request: DemoRequest) -> DemoResponsePlan {
        let isRead = request.method == "GET" || request.method == "HEAD"
        switch request.path {
        case "/v1/chat/completions":
            guard request.method == "POST" else { return .fixed(methodNotAllowed(request, allow: "POST")) }
            switch DemoChatRequest.decode(request.body) {
            case .failure(let error):
                return .fixed(DemoFixedResponse(error: error))
            case .success(let chat):
                let reply = DemoChatReply(request: chat)
                if chat.stream { return .stream(events: reply.streamEvents(includeUsage: chat.includeUsage)) }
                return .fixed(.json(reply.completionJSON))
            }
        case "/v1/messages":
            guard request.method == "POST" else {
                return .fixed(DemoFixedResponse(
                    anthropicError: DemoAnthropicError(status: 405, message: "Method Not Allowed: \(request.method) \(request.path)"),
                    extraHeaders: [DemoHeader(name: "Allow", value: "POST")]))
            }
            switch DemoMessagesRequest.decode(request.body) {
            case .failure(let error):
                return .fixed(DemoFixedResponse(anthropicError: error))
            case .success(let messages):
                let reply = DemoMessagesReply(request: messages)
                if messages.stream { return .stream(events: reply.streamEvents) }
                return .fixed(.json(reply.bodyJSON))
            }
        case "/v1/models":
            guard isRead else { return .fixed(methodNotAllowed(request, allow: "GET, HEAD")) }
            return .fixed(.json(#"{"object":"list","data":[\#(modelJSON)]}"#))
        case "/healthz":
            guard isRead else { return .fixed(methodNotAllowed(request, allow: "GET, HEAD")) }
            return .fixed(DemoFixedResponse(status: 200, contentType: "text/plain; charset=utf-8", body: Array("ok".utf8)))
        case let path where path.hasPrefix("/v1/models/"):
            guard isRead else { return .fixed(methodNotAllowed(request, allow: "GET, HEAD")) }
            let id = String(path.dropFirst("/v1/models/".count))
            guard id == demoModelID else {
                return .fixed(DemoFixedResponse(error: DemoAPIError(
                    status: 404, message: "The model '\(id)' does not exist or you do not have access to it.",
                    code: "model_not_found")))
            }
            return .fixed(.json(modelJSON))
        default:
            return .fixed(DemoFixedResponse(error: DemoAPIError(
                status: 404, message: "Unknown request URL: \(request.method) \(request.path). Please check the URL for typos.",
                code: "unknown_url")))
        }
    }

    /// The one model object, as in `GET /v1/models`.
    private static var modelJSON: String {
        #"{"id":"\#(demoModelID)","object":"model","created":\#(modelCreated),"owned_by":"sluice"}"#
    }

    /// 405 with the `Allow` header RFC 9110 §15.5.6 requires.
    private static func methodNotAllowed(_ request: DemoRequest, allow: String) -> DemoFixedResponse {
        DemoFixedResponse(
            error: DemoAPIError(status: 405, message: "Invalid method for URL (\(request.method) \(request.path))."),
            extraHeaders: [DemoHeader(name: "Allow", value: allow)])
    }
}

/// Serializes response heads.
enum DemoResponseHead {
    /// The reason phrase for each status the demo sends.
    static func reason(_ status: Int) -> String {
        switch status {
        case 100: "Continue"
        case 200: "OK"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 413: "Content Too Large"
        case 431: "Request Header Fields Too Large"
        case 501: "Not Implemented"
        case 505: "HTTP Version Not Supported"
        default: "Unknown"
        }
    }

    /// `HTTP/1.1 <status> <reason>` then `Date`, `Server`, `headers`, a
    /// `Connection` field when it differs from the version's default, and the
    /// blank line.
    static func bytes(status: Int, headers: [DemoHeader], keepAlive: Bool, version: DemoHTTPVersion) -> [UInt8] {
        var text = "HTTP/1.1 \(status) \(reason(status))\r\nDate: \(httpDate())\r\nServer: sluice-demo\r\n"
        for header in headers { text += "\(header.name): \(header.value)\r\n" }
        if !keepAlive {
            text += "Connection: close\r\n"
        } else if version == .http10 {
            text += "Connection: keep-alive\r\n"
        }
        text += "\r\n"
        return Array(text.utf8)
    }

    /// The IMF-fixdate form of now (RFC 9110 §5.6.7), which an origin server
    /// with a clock must send (§6.6.1). Built by hand so no locale can alter it.
    static func httpDate(_ seconds: time_t = time(nil)) -> String {
        var seconds = seconds
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
