/// The bounds every parser in this folder enforces, so that no peer can make a connection hold unbounded state
/// (haproxy core-principles: everything unbounded gets a named limit).
public struct HTTPLimits: Sendable, Equatable {
    /// Bytes of the request line, excluding its CRLF; one more fails with `.requestLineTooLong` (414).
    public var maxRequestLineBytes: Int = 8192
    /// Bytes of the whole head, from the first byte (skipped empty lines included) through the final CRLF;
    /// one more fails with `.headTooLarge` (431).
    public var maxHeadBytes: Int = 65536
    /// Field lines in one head; one more fails with `.tooManyFields` (431).
    public var maxFieldCount: Int = 100
    /// Bytes of a chunk-size line including its extensions, excluding its CRLF; one more fails with
    /// `.chunkLineTooLong`.
    public var maxChunkLineBytes: Int = 4096
    /// Bytes of the trailer section, from the byte after the last-chunk line through the final CRLF;
    /// one more fails with `.trailerTooLarge`.
    public var maxTrailerBytes: Int = 16384

    public init() {}
}

extension HTTPLimits {
    /// Tokens across all Connection fields of one head; one more fails with `.tooManyConnectionOptions`.
    /// A constant, not a setting: the proxy compares every field name with these tokens, and the bound keeps that
    /// quadratic step small.
    static let maxConnectionTokens = 32
    /// Empty lines skipped before a request line (RFC 9112 §2.2 asks for "at least one"); one more fails with
    /// `.tooManyLeadingEmptyLines`, so a peer cannot keep a connection busy with CRLFs alone.
    static let maxLeadingEmptyLines = 4
}
