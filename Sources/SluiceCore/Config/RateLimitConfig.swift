/// One `limit NAME { }` block: what to count requests by, and the limits that apply per key.
///
/// Routes refer to rules by index (``RouteConfig/limits``, into ``Config/rateLimits``); the
/// ``RateLimiter`` keeps one budget per (rule, key). The parser guarantees a key and at least
/// one of ``requests``, ``concurrent`` and ``tokens``.
public struct RateLimitRuleConfig: Sendable, Equatable {
    /// The rule's name: 1-64 letters, digits, `_`, `-` or `.`; unique. Appears in the
    /// `RateLimit-Policy` field and the 429 message, so it should not be secret.
    public var name: String
    /// What a budget belongs to.
    public var key: RateLimitKeySource
    /// The requests token bucket, or nil for none.
    public var requests: RateLimitRate?
    /// Most exchanges in flight per key at once, or nil for no limit.
    public var concurrent: Int?
    /// The LLM-token budget, charged after each exchange from the usage the backend reports,
    /// or nil for none. Its ``RateLimitRate/burst`` always equals its ``RateLimitRate/count``.
    public var tokens: RateLimitRate?

    /// Creates a rule from its parts; no validation (the parser is where validation lives).
    public init(
        name: String, key: RateLimitKeySource, requests: RateLimitRate? = nil, concurrent: Int? = nil,
        tokens: RateLimitRate? = nil
    ) {
        self.name = name
        self.key = key
        self.requests = requests
        self.concurrent = concurrent
        self.tokens = tokens
    }

    /// Largest `requests` count and burst: a billion per period.
    public static let maximumRequests: Int64 = 1_000_000_000
    /// Largest `tokens` count: a trillion per period.
    public static let maximumTokens: Int64 = 1_000_000_000_000
    /// Largest `concurrent` value.
    public static let maximumConcurrent = 1_000_000
}

/// What a rate-limit budget belongs to: the `key` directive of a `limit` block.
public enum RateLimitKeySource: Sendable, Hashable {
    /// The client's IP address: the connection's peer, or the `X-Forwarded-For` client when
    /// the peer is in ``Config/trustedProxies`` (see ``ForwardedFor``).
    case client
    /// The value of a request header, named here in lower case (e.g. `authorization`,
    /// `x-api-key`). Values are hashed, never stored; requests without the header share one
    /// "no value" key per rule.
    case header(String)
    /// One budget shared by every request the rule applies to.
    case global
}

/// A rate: `count` units per `periodMilliseconds`, in a bucket holding at most `burst`.
///
/// `requests 10/s burst 20` is count 10, period 1000 ms, burst 20: twenty requests may come at
/// once, then one every 100 ms. Without `burst`, the bucket holds one period's worth (`count`).
public struct RateLimitRate: Sendable, Hashable {
    /// Units added per period.
    public var count: Int64
    /// The period in milliseconds: 1000 for `/s`, 60000 for `/min`, 3600000 for `/h`.
    public var periodMilliseconds: Int64
    /// Bucket capacity: the most units available at once.
    public var burst: Int64

    /// Creates a rate; `burst` defaults to `count`.
    public init(count: Int64, periodMilliseconds: Int64, burst: Int64? = nil) {
        self.count = count
        self.periodMilliseconds = periodMilliseconds
        self.burst = burst ?? count
    }

    /// The period as the config writes it: `1s`, `1min`, `1h`, otherwise `Nms`.
    public var periodText: String {
        let ms = periodMilliseconds
        if ms > 0, ms % 3_600_000 == 0 { return "\(ms / 3_600_000)h" }
        if ms > 0, ms % 60_000 == 0 { return "\(ms / 60_000)min" }
        if ms > 0, ms % 1_000 == 0 { return "\(ms / 1_000)s" }
        return "\(ms)ms"
    }
}

/// An IPv4 or IPv6 CIDR range, e.g. `10.0.0.0/8` or `::1/128`: a `trusted_proxies` entry.
///
/// IPv4 ranges match IPv4 peers however they arrived (plain or IPv4-mapped on a dual-stack
/// socket), because ``IPAddress`` stores IPv4 mapped; `::/0` matches every address.
public struct IPRange: Sendable, Hashable, CustomStringConvertible {
    /// The first address of the range (no bits set past the prefix).
    public let network: IPAddress
    /// Leading bits that must match, in the 128-bit space (IPv4 prefixes are offset by 96).
    let maskBits: Int

    /// A range from a network address and a prefix length in that address's family (0-32
    /// for IPv4, 0-128 for IPv6). Nil when the length is out of range or the address has
    /// bits set past the prefix (`10.0.0.1/8`).
    public init?(network: IPAddress, prefixLength: Int) {
        let maximum = network.isIPv4 ? 32 : 128
        guard (0...maximum).contains(prefixLength) else { return nil }
        self.init(network: network, maskBits: network.isIPv4 ? 96 + prefixLength : prefixLength)
    }

    /// A range from a network address and a prefix length in the 128-bit space, which is how
    /// IPv6 text such as `::ffff:10.0.0.0/104` is written. Nil as for ``init(network:prefixLength:)``.
    init?(network: IPAddress, maskBits: Int) {
        guard (0...128).contains(maskBits) else { return nil }
        let mask = Self.mask(maskBits)
        guard network.high & ~mask.high == 0, network.low & ~mask.low == 0 else { return nil }
        self.network = network
        self.maskBits = maskBits
    }

    /// Parses `10.0.0.0/8`, `::1/128` or a single address (`/32` or `/128` implied).
    /// - Throws: ``ConfigError`` with file "command line" and line 0; the file parser wraps
    ///   the same check with its own file and line.
    public init(parsing text: String) throws(ConfigError) {
        self = try ConfigError.locating(file: ConfigError.commandLine, line: 0) { () throws(ConfigValueError) in
            try ConfigValues.ipRange(text)
        }
    }

    /// The prefix length in the family of ``network``: 0-32 for IPv4, 0-128 for IPv6.
    public var prefixLength: Int {
        network.isIPv4 && maskBits >= 96 ? maskBits - 96 : maskBits
    }

    /// Whether `address` lies in the range.
    @inline(__always)
    public func contains(_ address: IPAddress) -> Bool {
        let mask = Self.mask(maskBits)
        return address.high & mask.high == network.high && address.low & mask.low == network.low
    }

    /// Whether the IPv4 address with these 4 network-order bytes (`sin_addr`) is in the range.
    public func contains(ipv4 bytes: some Collection<UInt8>) -> Bool {
        bytes.count == 4 && IPAddress(bytes: bytes).map(contains) == true
    }

    /// Whether the IPv6 address with these 16 network-order bytes (`sin6_addr`) is in the range.
    public func contains(ipv6 bytes: some Collection<UInt8>) -> Bool {
        bytes.count == 16 && IPAddress(bytes: bytes).map(contains) == true
    }

    /// `10.0.0.0/8`, `2001:db8::/32`.
    public var description: String {
        if network.isIPv4 && maskBits >= 96 { return "\(network)/\(prefixLength)" }
        return "\(network.ipv6Text)/\(maskBits)"
    }

    /// The mask with the first `bits` of 128 set.
    @inline(__always)
    static func mask(_ bits: Int) -> (high: UInt64, low: UInt64) {
        let high: UInt64 = bits >= 64 ? .max : (bits == 0 ? 0 : .max << UInt64(64 - bits))
        let low: UInt64 = bits <= 64 ? 0 : (bits >= 128 ? .max : .max << UInt64(128 - bits))
        return (high, low)
    }
}
