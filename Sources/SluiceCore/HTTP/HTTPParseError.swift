/// Why a request head, response head or chunked body was rejected. Every case is one distinct reason, so logs and
/// metrics can count them apart; `status` maps each to the status a server answers with.
public enum HTTPParseError: Error, Equatable, Sendable, CaseIterable {
    // MARK: Start line (RFC 9112 §3, §4)
    /// The request line is not `method SP target SP version` with single spaces, or is empty where one is required.
    case invalidRequestLine
    /// More empty lines precede the request line than `HTTPLimits.maxLeadingEmptyLines` (RFC 9112 §2.2).
    case tooManyLeadingEmptyLines
    /// The method contains a byte outside tchar (RFC 9110 §9.1, §5.6.2).
    case invalidMethod
    /// The request target has a forbidden byte or a form the method does not allow (RFC 9112 §3.2).
    case invalidTarget
    /// The request line has no HTTP version (an HTTP/0.9 request) or a malformed one (RFC 9112 §2.3).
    case invalidVersion
    /// A well-formed HTTP version other than 1.0 and 1.1 (RFC 9110 §15.6.6: 505).
    case unsupportedVersion
    /// The request line is longer than `HTTPLimits.maxRequestLineBytes` (RFC 9112 §3: 414).
    case requestLineTooLong
    /// The status line is not `HTTP/1.x SP 3DIGIT [SP reason]` with a status in 100...599 (RFC 9112 §4).
    case invalidStatusLine

    // MARK: Head size (RFC 6585 §5)
    /// The head is longer than `HTTPLimits.maxHeadBytes`.
    case headTooLarge
    /// The head has more field lines than `HTTPLimits.maxFieldCount`.
    case tooManyFields

    // MARK: Field lines and line endings (RFC 9112 §2.2, §5)
    /// A field name is empty or contains a byte outside tchar.
    case invalidFieldName
    /// A field line ends before any colon.
    case missingColon
    /// Whitespace between a field name and its colon (RFC 9112 §5.1: MUST reject).
    case whitespaceBeforeColon
    /// A field value is malformed for its field (Host, Connection).
    case invalidFieldValue
    /// A line starts with SP or HTAB: obsolete line folding (RFC 9112 §5.2), or whitespace after the start line
    /// (§2.2).
    case obsFold
    /// A CR not followed by LF (RFC 9112 §2.2).
    case bareCR
    /// An LF not preceded by CR; sluice accepts CRLF only, so that every hop agrees where lines end.
    case bareLF
    /// NUL, another CTL than HTAB, or DEL in a field line (RFC 9110 §5.5).
    case controlByte

    // MARK: Framing (RFC 9112 §6, RFC 9110 §8.6, §7.2)
    /// A Content-Length element is not 1*DIGIT of at most 18 digits.
    case invalidContentLength
    /// Content-Length values differ (RFC 9110 §8.6).
    case conflictingContentLength
    /// Both Content-Length and Transfer-Encoding are present (RFC 9112 §6.1: the smuggling vector).
    case contentLengthWithTransferEncoding
    /// Transfer-Encoding with an empty or non-token coding, parameters, chunked twice, or (in a request) a final coding
    /// other than chunked (RFC 9112 §6.3 rule 4).
    case unsupportedTransferEncoding
    /// A request transfer coding other than chunked (`gzip, chunked`, `identity, chunked`): not implemented
    /// (RFC 9112 §6.1), and an intermediary that forwards codings it does not decode invites a TE.TE desync.
    case unimplementedTransferCoding
    /// Transfer-Encoding in an HTTP/1.0 message, whose framing RFC 9112 §6.1 says to treat as faulty.
    case transferEncodingInHTTP10
    /// An HTTP/1.1 request without Host (RFC 9112 §3.2).
    case missingHost
    /// A request with more than one Host field line (RFC 9112 §3.2).
    case multipleHost
    /// More Connection tokens than `HTTPLimits.maxConnectionTokens`.
    case tooManyConnectionOptions
    /// An absolute-form target with `user:password@` in its authority (RFC 9110 §4.2.4).
    case userinfoInTarget

    // MARK: Chunked body (RFC 9112 §7.1)
    /// A chunk-size is missing or has a byte other than HEXDIG.
    case invalidChunkSize
    /// A chunk-size has more than 16 digits or exceeds Int64.max / 2.
    case chunkSizeOverflow
    /// A chunk extension does not match `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`.
    case invalidChunkExtension
    /// A chunk-size line or chunk data is not followed by exactly CRLF.
    case invalidChunkLineEnd
    /// A chunk-size line is longer than `HTTPLimits.maxChunkLineBytes`.
    case chunkLineTooLong
    /// A trailer field line is malformed (same rules as header field lines).
    case invalidTrailer
    /// The trailer section is longer than `HTTPLimits.maxTrailerBytes`.
    case trailerTooLarge

    /// The status a server answers with: 400, 414 (requestLineTooLong), 431 (headTooLarge, tooManyFields),
    /// 505 (unsupportedVersion). For a response from upstream the proxy answers 502 whatever this says.
    public var status: Int {
        switch self {
        case .requestLineTooLong: 414
        case .headTooLarge, .tooManyFields: 431
        case .unsupportedVersion: 505
        case .unimplementedTransferCoding: 501
        default: 400
        }
    }

    /// A short human sentence for the JSON error body.
    public var message: String {
        switch self {
        case .invalidRequestLine: "malformed request line"
        case .tooManyLeadingEmptyLines: "too many empty lines before the request line"
        case .invalidMethod: "request method is not a valid token"
        case .invalidTarget: "request target is malformed or not allowed for this method"
        case .invalidVersion: "request line has a missing or malformed HTTP version"
        case .unsupportedVersion: "HTTP version not supported"
        case .requestLineTooLong: "request line is too long"
        case .invalidStatusLine: "malformed status line"
        case .headTooLarge: "header section is too large"
        case .tooManyFields: "too many header fields"
        case .invalidFieldName: "header field name is not a valid token"
        case .missingColon: "header field line has no colon"
        case .whitespaceBeforeColon: "whitespace between header field name and colon"
        case .invalidFieldValue: "malformed header field value"
        case .obsFold: "obsolete line folding is not allowed"
        case .bareCR: "CR not followed by LF"
        case .bareLF: "LF not preceded by CR"
        case .controlByte: "control character in header field"
        case .invalidContentLength: "invalid Content-Length"
        case .conflictingContentLength: "conflicting Content-Length values"
        case .contentLengthWithTransferEncoding: "message has both Content-Length and Transfer-Encoding"
        case .unsupportedTransferEncoding: "unsupported Transfer-Encoding"
        case .unimplementedTransferCoding: "only the chunked transfer coding is implemented for requests"
        case .transferEncodingInHTTP10: "Transfer-Encoding in an HTTP/1.0 message"
        case .missingHost: "HTTP/1.1 request has no Host header"
        case .multipleHost: "request has more than one Host header"
        case .tooManyConnectionOptions: "too many Connection options"
        case .userinfoInTarget: "request target carries userinfo (credentials before an @ in its authority), which is not allowed"
        case .invalidChunkSize: "invalid chunk size"
        case .chunkSizeOverflow: "chunk size is too large"
        case .invalidChunkExtension: "invalid chunk extension"
        case .invalidChunkLineEnd: "chunk line not terminated by CRLF"
        case .chunkLineTooLong: "chunk size line is too long"
        case .invalidTrailer: "malformed trailer field"
        case .trailerTooLarge: "trailer section is too large"
        }
    }
}

/// An error and the offset of the byte that caused it. The parsers throw it with typed throws, which neither boxes
/// nor allocates, and turn it into a `.failed` result at their public boundary.
struct HTTPParseFailure: Error, Equatable {
    var error: HTTPParseError
    var offset: Int

    init(_ error: HTTPParseError, at offset: Int) {
        self.error = error
        self.offset = offset
    }
}
