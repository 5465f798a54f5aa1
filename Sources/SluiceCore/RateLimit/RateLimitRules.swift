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
