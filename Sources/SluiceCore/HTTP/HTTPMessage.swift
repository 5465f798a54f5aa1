/// What a head parser's `parse` call found. The parser saves its state between calls, so `.needMore` costs nothing
/// to retry.
public enum HeadParseResult: Equatable, Sendable {
    /// The head is not complete yet; call again with the same bytes plus more.
    case needMore
    /// `bytes[0..<headLength]` is the head, including skipped leading empty lines and the final CRLF CRLF;
    /// what follows belongs to the body or the next message.
    case complete(headLength: Int)
    /// The head is malformed; `at` is the offset of the offending byte.
    case failed(HTTPParseError, at: Int)
}

/// An HTTP version (RFC 9112 §2.3); the parsers produce only 1.0 and 1.1 for requests and 1.x for responses.
public struct HTTPVersion: Equatable, Sendable {
    public var major: UInt8
    public var minor: UInt8

    public init(major: UInt8, minor: UInt8) {
        self.major = major
        self.minor = minor
    }

    public static let http1_0 = HTTPVersion(major: 1, minor: 0)
    public static let http1_1 = HTTPVersion(major: 1, minor: 1)

    /// Parses `HTTP/` DIGIT `.` DIGIT at `bytes[offset..<offset + 8]`, a case-sensitive name (RFC 9112 §2.3).
    /// - Returns: nil if fewer than 8 bytes lie before `end` or they do not match.
    init?(_ bytes: Span<UInt8>, at offset: Int, end: Int) {
        guard end - offset >= 8, HTTPByte.equals(bytes, offset..<offset + 5, "HTTP/", ignoringCase: false),
              HTTPByte.isDigit(bytes[offset + 5]), bytes[offset + 6] == HTTPByte.dot,
              HTTPByte.isDigit(bytes[offset + 7])
        else { return nil }
        self.init(major: bytes[offset + 5] - HTTPByte.zero, minor: bytes[offset + 7] - HTTPByte.zero)
    }
}

/// A request method (RFC 9110 §9); methods are case-sensitive, so `get` is `.other`.
public enum HTTPMethod: Equatable, Sendable {
    case get, head, post, put, delete, options, patch, connect, trace
    /// Any other token; `RequestHead.methodRange` holds its bytes.
    case other

    /// Classifies the method token `bytes[range]`.
    init(_ bytes: Span<UInt8>, _ range: Range<Int>) {
        func matches(_ literal: StaticString) -> Bool {
            HTTPByte.equals(bytes, range, literal, ignoringCase: false)
        }
        // Dispatch on length first: one comparison per method instead of nine.
        switch range.count {
        case 3: self = matches("GET") ? .get : matches("PUT") ? .put : .other
        case 4: self = matches("HEAD") ? .head : matches("POST") ? .post : .other
        case 5: self = matches("PATCH") ? .patch : matches("TRACE") ? .trace : .other
        case 6: self = matches("DELETE") ? .delete : .other
        case 7: self = matches("OPTIONS") ? .options : matches("CONNECT") ? .connect : .other
        default: self = .other
        }
    }
}

/// How the body of a message is delimited (RFC 9112 §6.3).
public enum BodyFraming: Equatable, Sendable {
    /// No body: the message ends with its head.
    case none
    /// Exactly this many bytes follow the head (possibly 0).
    case contentLength(Int64)
    /// A chunked body follows (RFC 9112 §7.1); feed it to a `ChunkedDecoder`.
    case chunked
    /// Response only: the body ends when the upstream closes the connection.
    case untilClose
}

/// One field line of a head, as offsets into the bytes that were parsed.
public struct HeadField: Equatable, Sendable {
    /// The field name (a token; compare it with `fieldNameEquals`).
    public var name: Range<Int>
    /// The field value without leading and trailing OWS; empty for an empty value.
    public var value: Range<Int>

    public init(name: Range<Int>, value: Range<Int>) {
        self.name = name
        self.value = value
    }
}

/// The form of a request target (RFC 9112 §3.2).
public enum TargetForm: Equatable, Sendable {
    /// `/path?query`, the usual form.
    case origin
    /// `http://host/path` or `https://…`, sent to proxies.
    case absolute
    /// `host:port`, with CONNECT only.
    case authority
    /// `*`, with OPTIONS only.
    case asterisk
}
