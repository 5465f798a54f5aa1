/// Writes the heads sluice forwards: the request head for the upstream and the response head for the
/// client, with hop-by-hop fields removed (RFC 9110 §7.6.1) and the forwarding fields set. Heads are
/// copied field by field from the parsed bytes; bodies never pass through here.
enum HeadRewriter {
    /// The path to route on and to send upstream: the target itself in origin form, the path part of an
    /// absolute-form target (RFC 9112 §3.2.2), empty when an absolute form has no path ("/" is sent).
    static func pathRange(of head: RequestHead, in buffer: ByteBuffer) -> Range<Int> {
        guard head.targetForm == .absolute else { return head.target }
        return buffer.withReadableSpan { source in
            var index = head.target.lowerBound
            var slashes = 0
            while index < head.target.upperBound {
                if source[index] == UInt8(ascii: "/") {
                    slashes += 1
                    if slashes == 3 { return index..<head.target.upperBound }
                }
                index += 1
            }
            return head.target.upperBound..<head.target.upperBound
        }
    }

    /// The authority of an absolute-form target (`http://AUTHORITY/path`): between "://" and the path.
    static func authorityRange(of head: RequestHead, pathRange: Range<Int>, in source: Span<UInt8>) -> Range<Int>? {
        var index = head.target.lowerBound
        while index + 2 < pathRange.lowerBound {
            if source[index] == UInt8(ascii: ":") && source[index + 1] == UInt8(ascii: "/") && source[index + 2] == UInt8(ascii: "/") {
                let start = index + 3
                return start < pathRange.lowerBound ? start..<pathRange.lowerBound : nil
            }
            index += 1
        }
        return nil
    }

    /// True for fields that describe one connection, not the message: never forwarded. Framing fields and Host
    /// are not decided here: the writers produce them from the parsed message before this filter runs, so a
    /// `Connection: transfer-encoding` (or `content-length`, `host`) cannot strip framing the body still has
    /// (RFC 9110 §7.6.1 lets a sender name only hop-by-hop fields; such a token is ignored).
    static func isHopByHop(_ source: Span<UInt8>, _ name: Range<Int>, connectionTokens: [Range<Int>]) -> Bool {
        if fieldNameEquals(source, name, "connection") || fieldNameEquals(source, name, "keep-alive")
            || fieldNameEquals(source, name, "proxy-connection") || fieldNameEquals(source, name, "te")
            || fieldNameEquals(source, name, "trailer") || fieldNameEquals(source, name, "upgrade") {
            return true
        }
        for token in connectionTokens where fieldNameEquals(source, name, token) { return true }
        return false
    }

    /// Content-Length, Transfer-Encoding and Host: the fields that decide where a message ends and whom it is
    /// for. Only the head writers' framing steps emit them.
    private static func isFramingOrHost(_ source: Span<UInt8>, _ name: Range<Int>) -> Bool {
        fieldNameEquals(source, name, "content-length") || fieldNameEquals(source, name, "transfer-encoding")
            || fieldNameEquals(source, name, "host")
    }

    /// Writes `METHOD path HTTP/1.1`, Host and the framing fields from the parsed head, the end-to-end fields,
    /// then X-Forwarded-For/-Proto/-Host and X-Request-Id. `host`, when given, replaces the client's Host (an
    /// https upstream's own name: hosted APIs route and check by it); the client's stays in X-Forwarded-Host. An
    /// absolute-form target's authority replaces the Host field (RFC 9112 §3.2.2), and a request without Host
    /// (HTTP/1.0) gets `fallbackHost` (RFC 9112 §3.2: an HTTP/1.1 request must carry one). Content-Length goes
    /// out once, as the parsed number (`005` and `5, 5` reach the upstream as `5`); a chunked body as
    /// `Transfer-Encoding: chunked` (the parser refuses any other request coding). `overTLS`: the client came
    /// over TLS (X-Forwarded-Proto: https). `deferContentLength` leaves out Content-Length and the blank line that
    /// ends the head, for a body that is edited before it goes (`inject_usage`): the caller appends both once the
    /// body's new length is known. `upgrade`: the request goes as a WebSocket upgrade (`Connection: Upgrade`,
    /// `Upgrade: websocket`). Returns false when it does not fit in `out`.
    static func writeRequestHead(into out: ByteBuffer, source: Span<UInt8>, head: RequestHead, pathRange: Range<Int>,
                                 clientIP: [UInt8], requestID: [UInt8], host: [UInt8]? = nil, fallbackHost: [UInt8] = [],
                                 overTLS: Bool = false, deferContentLength: Bool = false, upgrade: Bool = false) -> Bool {
        var fits = out.append(source.extracting(head.methodRange)) && out.append(byte: 0x20)
        fits = fits && (pathRange.isEmpty ? out.append(byte: UInt8(ascii: "/")) : out.append(source.extracting(pathRange)))
        fits = fits && out.append(" HTTP/1.1\r\nHost: ")
        if let host {
            fits = fits && host.withUnsafeBufferPointer { out.append($0.span) }
        } else if head.targetForm == .absolute, let authority = authorityRange(of: head, pathRange: pathRange, in: source) {
            fits = fits && out.append(source.extracting(authority))
        } else if let hostField = head.hostField {
            fits = fits && out.append(source.extracting(head.fields[hostField].value))
        } else {
            fits = fits && fallbackHost.withUnsafeBufferPointer { out.append($0.span) }
        }
        fits = fits && out.append("\r\n")
        switch head.framing {
        case .contentLength where deferContentLength:
            break
        case .contentLength(let length):
            fits = fits && out.append("Content-Length: ") && out.append(decimal: Int(length)) && out.append("\r\n")
        case .chunked:
            fits = fits && out.append("Transfer-Encoding: chunked\r\n")
        case .none, .untilClose:
            break
        }
        var forwardedFor = 0
        for field in head.fields {
            let name = field.name
            if isFramingOrHost(source, name) || isHopByHop(source, name, connectionTokens: head.connectionTokens)
                || fieldNameEquals(source, name, "x-forwarded-proto") || fieldNameEquals(source, name, "x-forwarded-host")
                || fieldNameEquals(source, name, "x-request-id") {
                continue
            }
            if fieldNameEquals(source, name, "x-forwarded-for") {
                forwardedFor += 1
                continue
            }
            fits = fits && writeField(into: out, source: source, field)
        }
        // X-Forwarded-For: earlier hops in order, then this client (the de facto list form).
        fits = fits && out.append("X-Forwarded-For: ")
        if forwardedFor > 0 {
            for field in head.fields where fieldNameEquals(source, field.name, "x-forwarded-for") && !field.value.isEmpty {
                fits = fits && out.append(source.extracting(field.value)) && out.append(", ")
            }
        }
        fits = fits && clientIP.withUnsafeBufferPointer { out.append($0.span) }
            && out.append(overTLS ? "\r\nX-Forwarded-Proto: https\r\n" : "\r\nX-Forwarded-Proto: http\r\n")
        if let host = head.hostField {
            fits = fits && out.append("X-Forwarded-Host: ") && out.append(source.extracting(head.fields[host].value)) && out.append("\r\n")
        }
        fits = fits && out.append("X-Request-Id: ") && requestID.withUnsafeBufferPointer { out.append($0.span) }
        // The client's Connection and Upgrade fields were dropped as hop-by-hop; a forwarded upgrade names only
        // what the proxy decided to tunnel.
        if upgrade { fits = fits && out.append("\r\nConnection: Upgrade\r\nUpgrade: websocket") }
        return fits && out.append(deferContentLength ? "\r\n" : "\r\n\r\n")
    }

    /// How the client's response body is framed when sluice does not pass the upstream's framing through.
    enum Reframe: Equatable {
        /// The upstream's Content-Length or Transfer-Encoding as parsed.
        case asReceived
        /// No framing field: the body ends with the connection (an HTTP/1.0 client of a chunked or edited body).
        case untilClose
        /// `Transfer-Encoding: chunked`, sluice writing the chunks (a body edited on its way, `inject_usage`).
        case chunked
    }

    /// What the response head says about the body, for the stream tap, and the upstream's own request id.
    struct ResponseFacts {
        var eventStream = false
        var json = false
        /// The value of the upstream's X-Request-Id, which the client receives instead of sluice's.
        var upstreamRequestID: Range<Int>?
    }

    /// Writes a response head for the client: status line as HTTP/1.1, the framing fields from the parsed head,
    /// end-to-end fields, and X-Accel-Buffering: no for event streams so an nginx further down does not buffer
    /// them. `requestID` nil writes an interim (1xx) head. The upstream's X-Request-Id is end to end and passes
    /// unchanged; sluice's `requestID` is added only when the response has none. `reframe` replaces the upstream's
    /// framing fields when sluice frames the body itself. `upgrade`: a 101 accepting a WebSocket upgrade, whose
    /// Connection and Upgrade fields are written anew. Returns nil when the head does not fit in `out`.
    static func writeResponseHead(into out: ByteBuffer, source: Span<UInt8>, head: ResponseHead, requestID: [UInt8]?,
                                  close: Bool, reframe: Reframe = .asReceived, rateLimitFields: [RateLimitHeaderField] = [],
                                  upgrade: Bool = false) -> ResponseFacts? {
        var fits = out.append("HTTP/1.1 ") && out.append(decimal: head.status) && out.append(byte: 0x20)
        fits = fits && out.append(source.extracting(head.reason)) && out.append("\r\n")
        // RFC 9110 §8.6: no Content-Length in a 1xx; in a final head it is the parsed number (also for HEAD and 304).
        if requestID != nil, reframe == .asReceived, let length = head.contentLength {
            fits = fits && out.append("Content-Length: ") && out.append(decimal: Int(length)) && out.append("\r\n")
        }
        if reframe == .chunked { fits = fits && out.append("Transfer-Encoding: chunked\r\n") }
        let dechunk = reframe != .asReceived
        var facts = ResponseFacts()
        var accelBufferingSet = false
        for field in head.fields {
            let name = field.name
            if fieldNameEquals(source, name, "content-length") { continue }
            if fieldNameEquals(source, name, "transfer-encoding") {
                // The codings as sent (gzip, chunked keeps its gzip), whatever Connection names; none once de-chunked.
                if !dechunk { fits = fits && writeField(into: out, source: source, field) }
                continue
            }
            if isHopByHop(source, name, connectionTokens: head.connectionTokens) { continue }
            if fieldNameEquals(source, name, "x-request-id") && facts.upstreamRequestID == nil { facts.upstreamRequestID = field.value }
            if fieldNameEquals(source, name, "content-type") {
                facts.eventStream = isEventStream(source.extracting(field.value))
                facts.json = isJSONMediaType(source.extracting(field.value))
            }
            if fieldNameEquals(source, name, "x-accel-buffering") { accelBufferingSet = true }
            fits = fits && writeField(into: out, source: source, field)
        }
        if facts.eventStream && !accelBufferingSet { fits = fits && out.append("X-Accel-Buffering: no\r\n") }
        if let requestID, facts.upstreamRequestID == nil {
            fits = fits && out.append("X-Request-Id: ") && requestID.withUnsafeBufferPointer { out.append($0.span) } && out.append("\r\n")
        }
        for field in rateLimitFields where !(field.name.hasPrefix("x-ratelimit-") && self.field(named: field.name, in: head.fields, source) != nil) {
            // The backend's own OpenAI-style fields win: two values under one name would not parse
            // (RateLimit and RateLimit-Policy are lists, so both policies may stand side by side).
            fits = fits && out.append(string: field.name) && out.append(": ") && out.append(string: field.value) && out.append("\r\n")
        }
        if close { fits = fits && out.append("Connection: close\r\n") }
        if upgrade { fits = fits && out.append("Connection: Upgrade\r\nUpgrade: websocket\r\n") }
        return fits && out.append("\r\n") ? facts : nil
    }

    /// The first field called `name` (a name known only at run time, e.g. from the config), compared
    /// without ASCII case; nil when the head has none.
    static func field(named name: String, in fields: [HeadField], _ source: Span<UInt8>) -> HeadField? {
        field(named: Array(name.utf8), in: fields, source)
    }

    /// As `field(named:in:_:)`, with the name's bytes made once (per configuration, not per request).
    static func field(named wanted: [UInt8], in fields: [HeadField], _ source: Span<UInt8>) -> HeadField? {
        fields.first { field in
            field.name.count == wanted.count
                && wanted.indices.allSatisfy { source[field.name.lowerBound + $0] | 0x20 == wanted[$0] | 0x20 }
        }
    }

    private static func writeField(into out: ByteBuffer, source: Span<UInt8>, _ field: HeadField) -> Bool {
        out.append(source.extracting(field.name)) && out.append(": ") && out.append(source.extracting(field.value)) && out.append("\r\n")
    }
}
