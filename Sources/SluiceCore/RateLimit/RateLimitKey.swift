/// Whose budget a request spends under one rule: a 64-bit keyed hash of the rule index and the
/// key material (header value, client address, or nothing for `global`).
///
/// Built by ``RateLimiter`` (``RateLimiter/headerKey(rule:value:)`` and friends) with
/// ``SipHash24`` under the limiter's secret seed, so API keys taken from headers are never
/// stored in clear, not even in memory past the request, and ``displayHash`` can go to the
/// completion log. The seed is random per process: hashes are stable within a run, not
/// across restarts. Two distinct keys of one rule share a budget only on a 64-bit collision.
public struct RateLimitKey: Sendable, Hashable, CustomStringConvertible {
    /// The hash.
    public let rawValue: UInt64

    /// Wraps a hash (tests, or a caller with its own hashing).
    public init(rawValue: UInt64) {
        self.rawValue = rawValue
    }

    /// The hash as 16 lower-case hex digits, for the completion log.
    public var displayHash: String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8](repeating: 0, count: 16)
        for index in 0..<16 {
            text[index] = digits[Int(rawValue >> (UInt64(15 - index) * 4) & 0xF)]
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// ``displayHash``.
    public var description: String { displayHash }
}

/// The first byte hashed after the rule index: keeps the kinds of key material apart, so a
/// header value can never collide with an address by construction, and "no header" differs
/// from an empty one.
enum RateLimitKeyTag: UInt8 {
    /// `key header NAME` with the header absent.
    case missingHeader = 0
    /// `key header NAME` followed by the value's bytes.
    case headerValue = 1
    /// `key client` followed by the 16 bytes of the (IPv4-mapped) address.
    case client = 2
    /// `key global`: nothing follows.
    case global = 3
}

/// How a header's value is turned into key material, so that spellings a server treats as the
/// same credential share one budget.
///
/// Without this, `Bearer x`, `bearer x` and `Bearer  x` would be three budgets for one API key:
/// a client could multiply its limit by varying the spelling.
enum HeaderKeyForm: Sendable, Equatable {
    /// Any other header (`x-api-key`): leading and trailing OWS removed (RFC 9110 §5.5),
    /// nothing else. The value may be a raw API key, whose case matters.
    case trimmed
    /// `Authorization` or `Proxy-Authorization` (`credentials = auth-scheme [ 1*SP ( token68 /
    /// #auth-param ) ]`, RFC 9110 §11.4): OWS trimmed, the scheme lower-cased (schemes are
    /// case-insensitive, §11.1) and the whitespace between scheme and credentials collapsed to one
    /// SP. The credentials are kept byte for byte (token68 is case-sensitive). A value without
    /// whitespace is kept as it is: it is either a lone scheme or a bare key sent without one, and
    /// lower-casing a bare key would merge keys that differ only in case.
    case credentials

    /// The form for the header `name` (any case) of a `key header NAME` rule.
    init(headerName name: String) {
        switch name.lowercased() {
        case "authorization", "proxy-authorization": self = .credentials
        default: self = .trimmed
        }
    }

    /// Calls `body` with each byte of the normalised form of `value`, in order. Two passes over
    /// `value` and no allocation, so the per-request key costs no more than hashing the raw value.
    @inline(__always)
    func forEachByte<Bytes: Collection<UInt8>>(of value: Bytes, _ body: (UInt8) -> Void) {
        var start = value.startIndex
        while start != value.endIndex && Self.isOWS(value[start]) { value.formIndex(after: &start) }
        // The end of the last non-OWS byte: a forward scan, since `Bytes` need not be bidirectional.
        var end = start
        var index = start
        while index != value.endIndex {
            let byte = value[index]
            value.formIndex(after: &index)
            if !Self.isOWS(byte) { end = index }
        }
        var schemeEnd = start
        if self == .credentials {
            while schemeEnd != end && !Self.isOWS(value[schemeEnd]) { value.formIndex(after: &schemeEnd) }
        }
        guard self == .credentials, schemeEnd != end else {
            index = start
            while index != end {
                body(value[index])
                value.formIndex(after: &index)
            }
            return
        }
        index = start
        while index != schemeEnd {
            let byte = value[index]
            body(byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte)
            value.formIndex(after: &index)
        }
        // Trimmed above, so a non-OWS byte follows the run: exactly one SP stands for the run.
        while Self.isOWS(value[index]) { value.formIndex(after: &index) }
        body(UInt8(ascii: " "))
        while index != end {
            body(value[index])
            value.formIndex(after: &index)
        }
    }

    /// SP or HTAB (RFC 9110 §5.6.3).
    @inline(__always)
    static func isOWS(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }
}
