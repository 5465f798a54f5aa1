import Synchronization

/// The result of ``RateLimiter/admit(rules:keys:nowNanoseconds:)``.
public enum Admission: Sendable {
    /// Every rule admitted the request; forward it, and give the grant back with
    /// ``RateLimiter/release(_:)`` when the exchange ends, whichever way it ends.
    case admitted(AdmissionGrant)
    /// A rule rejected the request: answer 429 and never contact the upstream. Nothing was
    /// taken from any rule.
    case rejected(RateLimitRejection)
}

/// Which limit of a rule decided.
public enum RateLimitKind: String, Sendable, Hashable, CaseIterable {
    /// The requests token bucket (`requests N/s`).
    case requests
    /// The concurrent-exchange cap (`concurrent N`).
    case concurrent
    /// The LLM-token budget (`tokens N/min`).
    case tokens
}

/// What one rule looks like to one key right now: the values for the response's rate-limit
/// fields. Taken under the shard lock at admission time.
public struct RateLimitStatus: Sendable, Equatable {
    /// Index of the rule in ``Config/rateLimits``.
    public var rule: Int
    /// The rule's name.
    public var name: String
    /// The requests bucket after this request took its unit, or nil when the rule has none.
    public var requests: RateLimitBucketStatus?
    /// The token budget (nothing is taken at admission), or nil when the rule has none.
    public var tokens: RateLimitBucketStatus?
    /// Leases in use including this request's, or nil when the rule has no concurrency cap.
    public var concurrent: RateLimitConcurrencyStatus?

    /// Creates a status from its parts.
    public init(
        rule: Int, name: String, requests: RateLimitBucketStatus? = nil, tokens: RateLimitBucketStatus? = nil,
        concurrent: RateLimitConcurrencyStatus? = nil
    ) {
        self.rule = rule
        self.name = name
        self.requests = requests
        self.tokens = tokens
        self.concurrent = concurrent
    }
}

/// One bucket's numbers for the response fields.
public struct RateLimitBucketStatus: Sendable, Equatable {
    /// The configured rate; ``RateLimitRate/burst`` is the limit clients see.
    public var rate: RateLimitRate
    /// Whole units left (0 when empty or, for tokens, in debt).
    public var remaining: Int64
    /// Nanoseconds until the bucket is full again.
    public var resetNanoseconds: Int64

    /// Creates a bucket status from its parts.
    public init(rate: RateLimitRate, remaining: Int64, resetNanoseconds: Int64) {
        self.rate = rate
        self.remaining = remaining
        self.resetNanoseconds = resetNanoseconds
    }

    /// The most units held at once: `x-ratelimit-limit-*` and the IETF `q`.
    public var limit: Int64 { rate.burst }

    /// ``resetNanoseconds`` in whole seconds, rounded up (the IETF `t`).
    public var resetSeconds: Int64 { RateBucket.seconds(ceilingOf: resetNanoseconds) }

    /// Seconds an empty bucket takes to fill, at least 1 (the IETF `w`): with ``limit`` as the
    /// quota, `q / w` is the sustained rate and `q` the burst.
    public var windowSeconds: Int64 {
        RateBucket(rate).windowSeconds
    }
}

/// Concurrency numbers for the response fields.
public struct RateLimitConcurrencyStatus: Sendable, Equatable {
    /// The configured cap.
    public var limit: Int
    /// Leases held by this key, this request's included.
    public var inUse: Int

    /// Creates a concurrency status from its parts.
    public init(limit: Int, inUse: Int) {
        self.limit = limit
        self.inUse = inUse
    }

    /// Leases still free.
    public var remaining: Int { max(0, limit - inUse) }
}

/// Why a request was rejected, with everything the 429 response needs.
public struct RateLimitRejection: Sendable, Equatable {
    /// Index of the rejecting rule in ``Config/rateLimits``.
    public var rule: Int
    /// The rejecting rule's name.
    public var name: String
    /// The key the rejecting rule counted (its ``RateLimitKey/displayHash`` is what the
    /// completion log may show).
    public var key: RateLimitKey
    /// Which of its limits rejected. When several would have, the one with the longest wait.
    public var kind: RateLimitKind
    /// Whole seconds until this request would have been admitted, rounded up, at least 1.
    /// For ``RateLimitKind/concurrent`` the wait depends on when other exchanges end, which is
    /// unknown: 1, so clients poll gently instead of hammering.
    public var retryAfterSeconds: Int64
    /// Statuses of the route's rules up to and including the rejecting one (later rules were
    /// not consulted), as they stand after the rollback.
    public var statuses: [RateLimitStatus]

    /// Creates a rejection from its parts.
    public init(
        rule: Int, name: String, key: RateLimitKey, kind: RateLimitKind, retryAfterSeconds: Int64, statuses: [RateLimitStatus]
    ) {
        self.rule = rule
        self.name = name
        self.key = key
        self.kind = kind
        self.retryAfterSeconds = retryAfterSeconds
        self.statuses = statuses
    }

    /// The rejecting rule's status (the last of ``statuses``).
    public var status: RateLimitStatus? { statuses.last }
}

/// An admitted request's claim on its route's rules: the concurrency leases to give back and
/// the keys that reported token usage is charged to.
///
/// A class so that every copy refers to one claim: ``RateLimiter/release(_:)`` flips an atomic
/// flag first, so a second release (say, a timeout racing a client abort) returns nothing twice
/// and counts cannot go negative. Shared freely across threads.
public final class AdmissionGrant: Sendable {
    /// Rule indices of the route, in order.
    public let rules: [Int]
    /// Key per rule, parallel to ``rules``.
    public let keys: [RateLimitKey]
    /// Status per rule after admission, parallel to ``rules``: the values for the response's
    /// rate-limit fields.
    public let statuses: [RateLimitStatus]
    /// Per rule, whether a tracked concurrency lease was taken (false for rules without a cap
    /// and for keys admitted untracked at the key cap).
    let leases: [Bool]
    private let released = Atomic<Bool>(false)

    init(rules: [Int], keys: [RateLimitKey], statuses: [RateLimitStatus], leases: [Bool]) {
        self.rules = rules
        self.keys = keys
        self.statuses = statuses
        self.leases = leases
    }

    /// Whether ``RateLimiter/release(_:)`` has run for this grant.
    public var isReleased: Bool {
        released.load(ordering: .acquiring)
    }

    /// Marks the grant released; true only for the first caller.
    func markReleased() -> Bool {
        !released.exchange(true, ordering: .acquiringAndReleasing)
    }
}
