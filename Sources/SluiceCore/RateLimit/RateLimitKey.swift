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
