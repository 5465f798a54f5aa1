/// The JSON error responses sluice itself sends: `{"error":{"type":"...","message":"..."}}`.
enum ErrorResponse {
    static func reason(for status: Int) -> StaticString {
        switch status {
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 413: "Content Too Large"
        case 429: "Too Many Requests"
        case 414: "URI Too Long"
        case 431: "Request Header Fields Too Large"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        case 505: "HTTP Version Not Supported"
        case 501: "Not Implemented"
        default: "Error"
        }
    }

    /// The error type for a parse failure's status.
    static func type(for status: Int) -> String {
        switch status {
        case 414: "uri_too_long"
        case 431: "header_too_large"
        case 505: "version_not_supported"
        case 501: "not_implemented"
        default: "bad_request"
        }
    }

    /// Writes a complete response; errors are rare, so building the body as a String is fine here.
    /// `extraFields` are serialized header lines; `body` replaces the standard error body (a 429 uses OpenAI's shape).
    static func write(into out: ByteBuffer, _ error: ProxyError, requestID: [UInt8], close: Bool,
                      extraFields: [UInt8] = [], body customBody: [UInt8]? = nil) {
        let status = error.status
        var body = "{\"error\":{\"type\":"
        OpLog.appendQuoted(error.type, to: &body)
        body += ",\"message\":"
        OpLog.appendQuoted(error.messageForClient, to: &body)
        body += "}}\n"
        if let customBody { body = String(decoding: customBody, as: UTF8.self) }
        out.append("HTTP/1.1 ")
        out.append(decimal: status)
        out.append(byte: 0x20)
        out.append(reason(for: status))
        out.append("\r\nContent-Type: application/json\r\nContent-Length: ")
        out.append(decimal: body.utf8.count)
        out.append("\r\nX-Request-Id: ")
        requestID.withUnsafeBufferPointer { _ = out.append($0.span) }
        out.append("\r\n")
        if !extraFields.isEmpty { extraFields.withUnsafeBufferPointer { _ = out.append($0.span) } }
        out.append(close ? "Connection: close\r\n\r\n" : "\r\n")
        out.append(string: body)
    }
}
