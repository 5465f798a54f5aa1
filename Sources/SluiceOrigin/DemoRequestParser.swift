// An HTTP/1.1 request parser for the demo backend: a pure function of the
// bytes received so far, so it is testable without a socket and restartable
// by calling it again with more bytes.
//
// Contract: `DemoRequestParser.parse(buffer)` looks at one request at the
// start of `buffer` and returns need-more, the request plus the bytes it
// consumed, or an error with the status to answer. It keeps no state between
// calls; the caller keeps the unconsumed bytes (which may already hold the
// next pipelined request). A call rescans the head (at most
// `maxHeadBytes`) and the chunk-size lines, never the body bytes themselves,
// so re-parsing after each read stays cheap.

/// Named bounds for everything in a request that is otherwise unbounded.
enum DemoRequestLimits {
    /// Request line plus header lines plus the blank line.
    static let maxHeadBytes = 16 * 1024
    /// Header fields in one request.
    static let maxHeaderCount = 100
    /// Decoded body size; a long chat history fits with room to spare.
    static let maxBodyBytes = 8 * 1024 * 1024
    /// Hex digits in one chunk-size (8 already exceeds `maxBodyBytes`).
    static let maxChunkSizeDigits = 8
    /// One chunk-size line including extensions, or one trailer line.
    static let maxChunkLineBytes = 4 * 1024
}

/// The HTTP versions the demo answers (RFC 9112 §2.3).
enum DemoHTTPVersion: Equatable, Sendable {
    /// HTTP/1.0: close by default, no chunked framing in responses.
    case http10
    /// HTTP/1.1: keep-alive by default.
    case http11
}

/// One header field as received; the name keeps its case, lookups ignore it.
struct DemoHeader: Equatable, Sendable {
    var name: String
    var value: String
}

/// A complete request, body already de-chunked.
struct DemoRequest: Equatable, Sendable {
    /// The method token, case-sensitive (RFC 9110 §9.1).
    var method: String
    /// The request-target as sent.
    var target: String
    /// The target's path without the query, used for routing.
    var path: String
    var version: DemoHTTPVersion
    var headers: [DemoHeader]
    var body: [UInt8]
    /// Whether the connection may carry another request after this one
    /// (RFC 9112 §9.3): the version's default adjusted by `Connection`.
    var keepAlive: Bool

    /// The first value of the header `name`, compared case-insensitively.
    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name }?.value
    }
}

/// Why a request cannot be served; the connection is closed after answering.
struct DemoParseError: Error, Equatable, Sendable {
    /// The status to answer with (400, 413, 431, 501 or 505).
    var status: Int
    /// A message for the client saying what was wrong.
    var message: String
}

/// What one parse call found at the start of the buffer.
enum DemoParseOutcome: Equatable, Sendable {
    /// The request is incomplete. `expectsContinue` is true once the head is
    /// complete, asked for `100-continue`, and the body has not all arrived:
    /// the client may be waiting for an interim `100 Continue` before sending it.
    case needMore(expectsContinue: Bool)
    /// A request and how many bytes of the buffer it used.
    case complete(DemoRequest, consumed: Int)
    /// The bytes are not a request this server accepts.
    case invalid(DemoParseError)
}

/// Namespace for the stateless parse function and its helpers.
enum DemoRequestParser {
    private static let cr: UInt8 = 13
    private static let lf: UInt8 = 10
    private static let space: UInt8 = 32
    private static let tab: UInt8 = 9
    private static let colon: UInt8 = 58

    /// Parses the request at the start of `buffer`; see the contract above.
    static func parse(_ buffer: [UInt8]) -> DemoParseOutcome {
        // RFC 9112 §2.2: ignore at least one empty line before the request-line
        // (some clients send a stray CRLF after a POST body).
        var start = 0
        while start + 1 < buffer.count, buffer[start] == cr, buffer[start + 1] == lf { start += 2 }
        if start > DemoRequestLimits.maxHeadBytes { return bad("too many empty lines before the request line") }

        guard let lineEnd = findCRLF(buffer, from: start) else {
            // Reject garbage that never ends a line as soon as it cannot be a
            // method, instead of waiting for the head limit or the idle timeout.
            for index in start..<buffer.count {
                let byte = buffer[index]
                if byte == space && index > start { break }
                if !isTokenByte(byte) && byte != cr { return bad("malformed request line") }
            }
            if buffer.count - start > DemoRequestLimits.maxHeadBytes {
                return .invalid(DemoParseError(status: 431, message: "request line too long"))
            }
            return .needMore(expectsContinue: false)
        }

        let requestLine: (method: String, target: String, path: String, version: DemoHTTPVersion)
        switch parseRequestLine(buffer[start..<lineEnd]) {
        case .success(let parsed): requestLine = parsed
        case .failure(let error): return .invalid(error)
        }

        // The head ends at the first empty line: CRLF right after a CRLF.
        var headersStart = lineEnd + 2
        var headEnd: Int?
        var cursor = headersStart
        while let end = findCRLF(buffer, from: cursor) {
            if end == cursor { headEnd = end + 2; break }
            cursor = end + 2
        }
        guard let headEnd else {
            if buffer.count - start > DemoRequestLimits.maxHeadBytes {
                return .invalid(DemoParseError(status: 431, message: "request head larger than \(DemoRequestLimits.maxHeadBytes) bytes"))
            }
            return .needMore(expectsContinue: false)
        }
        if headEnd - start > DemoRequestLimits.maxHeadBytes {
            return .invalid(DemoParseError(status: 431, message: "request head larger than \(DemoRequestLimits.maxHeadBytes) bytes"))
        }

        var headers: [DemoHeader] = []
        while headersStart < headEnd - 2 {
            let end = findCRLF(buffer, from: headersStart)!
            if headers.count == DemoRequestLimits.maxHeaderCount {
                return .invalid(DemoParseError(status: 431, message: "more than \(DemoRequestLimits.maxHeaderCount) header fields"))
            }
            switch parseHeaderLine(buffer[headersStart..<end]) {
            case .success(let header): headers.append(header)
            case .failure(let error): return .invalid(error)
            }
            headersStart = end + 2
        }

        let framing: DemoBodyFraming
        switch bodyFraming(headers, version: requestLine.version) {
        case .success(let found): framing = found
        case .failure(let error): return .invalid(error)
        }

        var request = DemoRequest(
            method: requestLine.method, target: requestLine.target, path: requestLine.path,
            version: requestLine.version, headers: headers, body: [],
            keepAlive: keepAlive(headers, version: requestLine.version))

        // RFC 9110 §10.1.1: only an HTTP/1.1 client gets a 100 Continue.
        let expectsContinue = requestLine.version == .http11
            && headers.contains { $0.name.lowercased() == "expect" && $0.value.lowercased() == "100-continue" }

        switch framing {
        case .none:
            return .complete(request, consumed: headEnd)
        case .length(let length):
            guard buffer.count - headEnd >= length else { return .needMore(expectsContinue: expectsContinue) }
            request.body = Array(buffer[headEnd..<headEnd + length])
            return .complete(request, consumed: headEnd + length)
        case .chunked:
            switch decodeChunked(buffer, from: headEnd) {
            case .needMore:
                return .needMore(expectsContinue: expectsContinue)
            case .invalid(let error):
                return .invalid(error)
            case .complete(let body, let end):
                request.body = body
                return .complete(request, consumed: end)
            }
        }
    }

    // MARK: Request line and header fields

    /// Splits `method SP request-target SP HTTP-version` (RFC 9112 §3).
    private static func parseRequestLine(_ line: ArraySlice<UInt8>)
        -> Result<(method: String, target: String, path: String, version: DemoHTTPVersion), DemoParseError>
    {
        let parts = line.split(separator: space, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(isTokenByte) else {
            return .failure(DemoParseError(status: 400, message: "malformed request line"))
        }
        guard !parts[1].isEmpty, parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return .failure(DemoParseError(status: 400, message: "malformed request target"))
        }
        let version: DemoHTTPVersion
        switch String(decoding: parts[2], as: UTF8.self) {
        case "HTTP/1.1": version = .http11
        case "HTTP/1.0": version = .http10
        case let other where other.utf8.count == 8 && other.hasPrefix("HTTP/") && other.utf8.allSatisfy({ $0 != space }):
            return .failure(DemoParseError(status: 505, message: "HTTP version \(other) not supported"))
        default:
            return .failure(DemoParseError(status: 400, message: "malformed HTTP version"))
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = String(decoding: parts[1], as: UTF8.self)
        // Origin-form is the norm; absolute-form (RFC 9112 §3.2.2) is what a
        // forward-proxy-style client sends, so reduce it to its path.
        var path: Substring
        if target.hasPrefix("/") {
            path = Substring(target)
        } else if target == "*" {
            path = "*"
        } else if let schemeEnd = target.range(of: "://"), target.hasPrefix("http") {
            let afterAuthority = target[schemeEnd.upperBound...]
            path = afterAuthority.firstIndex(where: { $0 == "/" || $0 == "?" }).map { afterAuthority[$0...] } ?? "/"
            if path.hasPrefix("?") { path = "/" + path }
        } else {
            return .failure(DemoParseError(status: 400, message: "malformed request target"))
        }
        if let query = path.firstIndex(of: "?") { path = path[..<query] }
        return .success((method, target, String(path), version))
    }

    /// Splits `field-name ":" OWS field-value OWS` (RFC 9112 §5).
    private static func parseHeaderLine(_ line: ArraySlice<UInt8>) -> Result<DemoHeader, DemoParseError> {
        // A leading space is obsolete line folding, which a server may reject (RFC 9112 §5.2).
        guard let colonIndex = line.firstIndex(of: colon), colonIndex > line.startIndex,
              line[..<colonIndex].allSatisfy(isTokenByte)
        else {
            // Also catches whitespace before the colon, which MUST be rejected (RFC 9112 §5.1).
            return .failure(DemoParseError(status: 400, message: "malformed header field"))
        }
        var value = line[(colonIndex + 1)...]
        while let first = value.first, first == space || first == tab { value = value.dropFirst() }
        while let last = value.last, last == space || last == tab { value = value.dropLast() }
        // Field values are visible ASCII, obs-text, SP and HTAB; a bare CR or
        // LF or a NUL is a smuggling risk (RFC 9110 §5.5).
        guard value.allSatisfy({ $0 >= 0x20 && $0 != 0x7F || $0 == tab }) else {
            return .failure(DemoParseError(status: 400, message: "invalid character in header field value"))
        }
        return .success(DemoHeader(
            name: String(decoding: line[..<colonIndex], as: UTF8.self),
            value: String(decoding: value, as: UTF8.self)))
    }

    // MARK: Framing

    /// How the request body is delimited (RFC 9112 §6.3).
    private enum DemoBodyFraming: Equatable {
        /// Neither Content-Length nor Transfer-Encoding: no body.
        case none
        /// Exactly this many bytes follow the head.
        case length(Int)
        /// The chunked transfer coding follows the head.
        case chunked
    }

    /// Works out the body framing from the headers, rejecting the ambiguous
    /// combinations behind request smuggling.
    private static func bodyFraming(_ headers: [DemoHeader], version: DemoHTTPVersion) -> Result<DemoBodyFraming, DemoParseError> {
        var codings: [String] = []
        var lengths: [String] = []
        var hosts = 0
        for header in headers {
            switch header.name.lowercased() {
            case "transfer-encoding":
                codings += header.value.split(separator: ",").map { $0.trimmingOWS().lowercased() }
            case "content-length":
                lengths += header.value.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingOWS() }
            case "host":
                hosts += 1
            default:
                break
            }
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host is a 400.
        if version == .http11 && hosts != 1 {
            return .failure(DemoParseError(status: 400, message: hosts == 0 ? "missing Host header" : "more than one Host header"))
        }
        if !codings.isEmpty {
            // RFC 9112 §6.1: both headers at once is a smuggling signature;
            // rejecting it is the simplest safe answer.
            if !lengths.isEmpty {
                return .failure(DemoParseError(status: 400, message: "both Transfer-Encoding and Content-Length"))
            }
            if version == .http10 {
                return .failure(DemoParseError(status: 400, message: "Transfer-Encoding in an HTTP/1.0 request"))
            }
            guard codings.last == "chunked" else {
                return .failure(DemoParseError(status: 400, message: "Transfer-Encoding does not end in chunked"))
            }
            guard codings.count == 1 else {
                return .failure(DemoParseError(status: 501, message: "unsupported transfer coding \(codings.dropLast().joined(separator: ", "))"))
            }
            return .success(.chunked)
        }
        guard let first = lengths.first else { return .success(.none) }
        // Repeated values are allowed only when identical (RFC 9110 §8.6).
        guard lengths.allSatisfy({ $0 == first }), !first.isEmpty, first.utf8.count <= 10,
              first.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let length = Int(first)
        else {
            return .failure(DemoParseError(status: 400, message: "invalid Content-Length"))
        }
        guard length <= DemoRequestLimits.maxBodyBytes else {
            return .failure(DemoParseError(status: 413, message: "request body larger than \(DemoRequestLimits.maxBodyBytes) bytes"))
        }
        return .success(.length(length))
    }

    /// Connection persistence for the request (RFC 9112 §9.3).
    private static func keepAlive(_ headers: [DemoHeader], version: DemoHTTPVersion) -> Bool {
        let options = headers.filter { $0.name.lowercased() == "connection" }
            .flatMap { $0.value.split(separator: ",").map { $0.trimmingOWS().lowercased() } }
        if options.contains("close") { return false }
        return version == .http11 || options.contains("keep-alive")
    }

    /// Result of scanning a chunked body.
    private enum ChunkedOutcome {
        /// The last-chunk or the trailer section has not fully arrived.
        case needMore
        /// The de-chunked body and the index just past the final CRLF.
        case complete(body: [UInt8], end: Int)
        /// The framing is broken or over a limit.
        case invalid(DemoParseError)
    }

    /// Decodes `chunk-size [ext] CRLF data CRLF ... 0 CRLF *(trailer CRLF) CRLF`
    /// (RFC 9112 §7.1). Validates the framing first and copies data only once
    /// the whole body is present.
    private static func decodeChunked(_ buffer: [UInt8], from bodyStart: Int) -> ChunkedOutcome {
        var spans: [Range<Int>] = []
        var total = 0
        var cursor = bodyStart
        while true {
            guard let lineEnd = findCRLF(buffer, from: cursor) else {
                return buffer.count - cursor > DemoRequestLimits.maxChunkLineBytes ? .invalid(badChunk) : .needMore
            }
            if lineEnd - cursor > DemoRequestLimits.maxChunkLineBytes { return .invalid(badChunk) }
            var size = 0
            var digits = 0
            var index = cursor
            while index < lineEnd, let value = hexValue(buffer[index]) {
                size = size * 16 + value
                digits += 1
                index += 1
            }
            // After the digits only BWS and chunk extensions may follow; the
            // extensions carry nothing this server uses.
            guard digits > 0, digits <= DemoRequestLimits.maxChunkSizeDigits,
                  index == lineEnd || buffer[index] == UInt8(ascii: ";") || buffer[index] == space || buffer[index] == tab
            else { return .invalid(badChunk) }
            cursor = lineEnd + 2
            if size == 0 { break }
            total += size
            if total > DemoRequestLimits.maxBodyBytes {
                return .invalid(DemoParseError(status: 413, message: "request body larger than \(DemoRequestLimits.maxBodyBytes) bytes"))
            }
            guard buffer.count >= cursor + size + 2 else { return .needMore }
            guard buffer[cursor + size] == cr, buffer[cursor + size + 1] == lf else { return .invalid(badChunk) }
            spans.append(cursor..<cursor + size)
            cursor += size + 2
        }
        // Trailer section: header lines up to an empty line; their content is ignored.
        while true {
            guard let lineEnd = findCRLF(buffer, from: cursor) else {
                return buffer.count - cursor > DemoRequestLimits.maxChunkLineBytes ? .invalid(badChunk) : .needMore
            }
            if lineEnd == cursor { cursor += 2; break }
            if case .failure = parseHeaderLine(buffer[cursor..<lineEnd]) { return .invalid(badChunk) }
            cursor = lineEnd + 2
        }
        var body: [UInt8] = []
        body.reserveCapacity(total)
        for span in spans { body.append(contentsOf: buffer[span]) }
        return .complete(body: body, end: cursor)
    }

    /// The one answer for any chunked-framing error; the offset is of no use to a client.
    private static let badChunk = DemoParseError(status: 400, message: "malformed chunked request body")

    // MARK: Bytes

    /// Index of the next CR LF at or after `from`, or nil if there is none yet.
    private static func findCRLF(_ buffer: [UInt8], from: Int) -> Int? {
        var index = from
        while index + 1 < buffer.count {
            if buffer[index] == cr {
                if buffer[index + 1] == lf { return index }
            }
            index += 1
        }
        return nil
    }

    /// `tchar` from RFC 9110 §5.6.2.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// The value of one hex digit, or nil for any other byte.
    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a")) + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A")) + 10
        default: nil
        }
    }

    /// A 400 outcome carrying `message`.
    private static func bad(_ message: String) -> DemoParseOutcome {
        .invalid(DemoParseError(status: 400, message: message))
    }
}

extension Substring {
    /// The text without leading and trailing SP / HTAB (HTTP's OWS).
    fileprivate func trimmingOWS() -> String {
        var trimmed = self[...]
        while let first = trimmed.first, first == " " || first == "\t" { trimmed = trimmed.dropFirst() }
        while let last = trimmed.last, last == " " || last == "\t" { trimmed = trimmed.dropLast() }
        return String(trimmed)
    }
}
