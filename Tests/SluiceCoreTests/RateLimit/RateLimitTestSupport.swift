@testable import SluiceCore

/// Shared helpers: an injected clock is just a number of nanoseconds.
enum RL {
    static let ms: Int64 = 1_000_000
    static let second: Int64 = 1_000_000_000

    static func limiter(_ rules: [RateLimitRuleConfig], shards: Int = 4, maxKeysPerRule: Int = 10_000) -> RateLimiter {
        RateLimiter(rules: rules, shards: shards, maxKeysPerRule: maxKeysPerRule, seed: (0x0123_4567, 0x89ab_cdef))
    }

    static func requests(_ count: Int64, per periodMilliseconds: Int64, burst: Int64? = nil, key: RateLimitKeySource = .global, name: String = "r")
        -> RateLimitRuleConfig
    {
        RateLimitRuleConfig(name: name, key: key, requests: RateLimitRate(count: count, periodMilliseconds: periodMilliseconds, burst: burst))
    }
}

extension Admission {
    var grant: AdmissionGrant? {
        if case .admitted(let grant) = self { return grant }
        return nil
    }

    var rejection: RateLimitRejection? {
        if case .rejected(let rejection) = self { return rejection }
        return nil
    }

    var isAdmitted: Bool { grant != nil }
}

extension RateLimiter {
    /// Admits one request on a single-rule route.
    func admit(rule: Int = 0, key: RateLimitKey, at now: Int64) -> Admission {
        admit(rules: [rule], keys: [key], nowNanoseconds: now)
    }

    /// How many of `attempts` requests at `now` are admitted.
    func admitted(_ attempts: Int, rule: Int = 0, key: RateLimitKey, at now: Int64) -> Int {
        (0..<attempts).count { _ in admit(rule: rule, key: key, at: now).isAdmitted }
    }
}
