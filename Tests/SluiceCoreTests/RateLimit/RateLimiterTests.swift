import Testing

@testable import SluiceCore

/// Leases, token budgets, multi-rule rollback, expiry, the key cap and counters.
@Suite struct RateLimiterTests {
    static let s = RL.second

    // MARK: Concurrency leases

    @Test func leasesCapStreamsAndComeBack() throws {
        let limiter = RL.limiter([RateLimitRuleConfig(name: "c", key: .header("authorization"), concurrent: 2)])
        let alice = limiter.headerKey(rule: 0, value: "Bearer alice".utf8)
        let bob = limiter.headerKey(rule: 0, value: "Bearer bob".utf8)
        let first = try #require(limiter.admit(key: alice, at: 0).grant)
        let second = try #require(limiter.admit(key: alice, at: 0).grant)
        #expect(first.statuses[0].concurrent == RateLimitConcurrencyStatus(limit: 2, inUse: 1))
        #expect(second.statuses[0].concurrent?.remaining == 0)
        let third = try #require(limiter.admit(key: alice, at: 0).rejection)
        #expect(third.kind == .concurrent && third.retryAfterSeconds == 1 && third.rule == 0 && third.name == "c")
        #expect(third.status?.concurrent == RateLimitConcurrencyStatus(limit: 2, inUse: 2))
        // Another key has its own leases.
        #expect(limiter.admit(key: bob, at: 0).isAdmitted)
        // A stream ends (whichever way): one more may start, and only one.
        limiter.release(first)
        #expect(first.isReleased && !second.isReleased)
        let fourth = try #require(limiter.admit(key: alice, at: 0).grant)
        #expect(!limiter.admit(key: alice, at: 0).isAdmitted)
        // Double release (say, a timeout racing a client abort) returns nothing twice.
        limiter.release(first)
        limiter.release(first)
        #expect(!limiter.admit(key: alice, at: 0).isAdmitted)
        limiter.release(second)
        limiter.release(fourth)
        limiter.release(fourth)
        // Both leases are free again, not more and not fewer.
        #expect(limiter.admitted(3, key: alice, at: 0) == 2)
    }

    @Test func releasedLeaseEntriesExpire() throws {
        let limiter = RL.limiter([RateLimitRuleConfig(name: "c", key: .global, concurrent: 1)])
        let key = limiter.globalKey(rule: 0)
        let grant = try #require(limiter.admit(key: key, at: 0).grant)
        // A held lease is never swept, however long the stream runs.
        #expect(limiter.sweep(nowNanoseconds: 3_600 * Self.s) == 0)
        #expect(limiter.trackedKeyCount(rule: 0) == 1)
        #expect(!limiter.admit(key: key, at: 3_600 * Self.s).isAdmitted)
        limiter.release(grant)
        #expect(limiter.sweep(nowNanoseconds: 3_600 * Self.s) == 1)
        #expect(limiter.trackedKeyCount(rule: 0) == 0)
        // A late release of an expired entry's grant is harmless.
        limiter.release(grant)
        #expect(limiter.admit(key: key, at: 3_600 * Self.s).isAdmitted)
    }

    // MARK: Token budgets

    /// 900 of 1000/min used: the next request is admitted; once usage passes the budget the
    /// key is rejected until the balance refills above zero, and Retry-After says when.
    @Test func tokenBudgetChargedAfterTheFact() throws {
        let rule = RateLimitRuleConfig(name: "t", key: .header("x-api-key"), tokens: RateLimitRate(count: 1_000, periodMilliseconds: 60_000))
        let limiter = RL.limiter([rule])
        let key = limiter.headerKey(rule: 0, value: "k".utf8)
        let first = try #require(limiter.admit(key: key, at: 0).grant)
        #expect(first.statuses[0].tokens?.remaining == 1_000)
        limiter.chargeTokens(first, tokens: 900, nowNanoseconds: 0)
        limiter.release(first)
        let second = try #require(limiter.admit(key: key, at: 0).grant)
        #expect(second.statuses[0].tokens?.remaining == 100)
        #expect(second.statuses[0].tokens?.resetNanoseconds == 54 * Self.s)  // 900 tokens at 1000/min
        limiter.chargeTokens(second, tokens: 900, nowNanoseconds: 0)
        // 800 in debt: the balance is back to exactly 0 at 48 s, positive 1 ns later.
        let third = try #require(limiter.admit(key: key, at: 0).rejection)
        #expect(third.kind == .tokens && third.retryAfterSeconds == 49)
        #expect(third.status?.tokens?.remaining == 0)
        #expect(third.status?.tokens?.resetNanoseconds == 108 * Self.s)
        #expect(!limiter.admit(key: key, at: 30 * Self.s).isAdmitted)
        #expect(limiter.admit(key: key, at: 30 * Self.s).rejection?.retryAfterSeconds == 19)
        #expect(!limiter.admit(key: key, at: 48 * Self.s).isAdmitted)
        #expect(limiter.admit(key: key, at: 48 * Self.s + 1).isAdmitted)
        #expect(limiter.counters(rule: 0) == RateLimitCounters(allowed: 3, rejectedRequests: 0, rejectedConcurrent: 0, rejectedTokens: 4))
    }

    @Test func tokenChargesAccumulateAndIgnoreNonPositive() throws {
        let rule = RateLimitRuleConfig(name: "t", key: .global, tokens: RateLimitRate(count: 100, periodMilliseconds: 1_000))
        let limiter = RL.limiter([rule, RL.requests(1_000, per: 1_000)])
        let key = limiter.globalKey(rule: 0)
        let grant = try #require(limiter.admit(key: key, at: 0).grant)
        for _ in 0..<9 { limiter.chargeTokens(grant, tokens: 10, nowNanoseconds: 0) }
        limiter.chargeTokens(grant, tokens: 0, nowNanoseconds: 0)
        limiter.chargeTokens(grant, tokens: -50, nowNanoseconds: 0)
        #expect(limiter.admit(key: key, at: 0).grant?.statuses[0].tokens?.remaining == 10)
        limiter.chargeTokens(grant, tokens: 10, nowNanoseconds: 0)
        #expect(!limiter.admit(key: key, at: 0).isAdmitted)
        // Charging a rule without a token budget does nothing.
        let other = limiter.globalKey(rule: 1)
        limiter.chargeTokens(rule: 1, key: other, tokens: 1_000_000, nowNanoseconds: 0)
        #expect(limiter.trackedKeyCount(rule: 1) == 0)
        // An absurd report is capped (2⁶² ns of refill), not an overflow.
        limiter.chargeTokens(grant, tokens: .max, nowNanoseconds: 0)
        limiter.chargeTokens(grant, tokens: .max, nowNanoseconds: 0)
        let rejection = try #require(limiter.admit(key: key, at: 0).rejection)
        #expect(rejection.retryAfterSeconds > 100 * 365 * 86_400)
    }

    /// One rule with all three limits: the longest wait decides the reported kind.
    @Test func longestWaitIsReported() throws {
        let rule = RateLimitRuleConfig(
            name: "all", key: .global, requests: RateLimitRate(count: 1, periodMilliseconds: 1_000), concurrent: 1,
            tokens: RateLimitRate(count: 60, periodMilliseconds: 60_000))
        let limiter = RL.limiter([rule])
        let key = limiter.globalKey(rule: 0)
        let grant = try #require(limiter.admit(key: key, at: 0).grant)
        let busy = try #require(limiter.admit(key: key, at: 0).rejection)
        #expect(busy.kind == .requests && busy.retryAfterSeconds == 1)  // ties keep the first checked
        limiter.chargeTokens(grant, tokens: 90, nowNanoseconds: 0)
        let broke = try #require(limiter.admit(key: key, at: 0).rejection)
        #expect(broke.kind == .tokens && broke.retryAfterSeconds == 31)
        #expect(broke.status?.concurrent?.inUse == 1)
        limiter.release(grant)
        #expect(limiter.admit(key: key, at: 31 * Self.s).isAdmitted)
    }

    // MARK: Several rules

    /// When a later rule rejects, what earlier rules took is given back: the request costs
    /// nothing anywhere.
    @Test func rollbackWhenTheSecondRuleRejects() throws {
        let perUser = RateLimitRuleConfig(name: "per_user", key: .header("authorization"), requests: RateLimitRate(count: 5, periodMilliseconds: 1_000))
        let shared = RateLimitRuleConfig(name: "shared", key: .global, concurrent: 1)
        let limiter = RL.limiter([perUser, shared])
        let route = [0, 1]
        let keys = [limiter.headerKey(rule: 0, value: "u".utf8), limiter.globalKey(rule: 1)]
        let held = try #require(limiter.admit(rules: route, keys: keys, nowNanoseconds: 0).grant)
        #expect(held.statuses.map(\.requests?.remaining) == [4, nil])
        for _ in 0..<10 {
            let rejection = try #require(limiter.admit(rules: route, keys: keys, nowNanoseconds: 0).rejection)
            #expect(rejection.rule == 1 && rejection.name == "shared" && rejection.kind == .concurrent)
            #expect(rejection.key == keys[1])
            // The statuses show per_user's token given back.
            #expect(rejection.statuses.map(\.rule) == [0, 1])
            #expect(rejection.statuses[0].requests?.remaining == 4)
        }
        // per_user still has its 4: ten rejections cost nothing.
        #expect(limiter.admitted(10, rule: 0, key: keys[0], at: 0) == 4)
        #expect(limiter.counters(rule: 0) == RateLimitCounters(allowed: 5, rejectedRequests: 6, rejectedConcurrent: 0, rejectedTokens: 0))
        #expect(limiter.counters(rule: 1) == RateLimitCounters(allowed: 1, rejectedRequests: 0, rejectedConcurrent: 10, rejectedTokens: 0))
        limiter.release(held)
    }

    /// Leases are rolled back too.
    @Test func rollbackReturnsLeases() throws {
        let streams = RateLimitRuleConfig(name: "streams", key: .global, concurrent: 2)
        let strict = RL.requests(1, per: 60_000, key: .client, name: "strict")
        let limiter = RL.limiter([streams, strict])
        let client = IPAddress("198.51.100.4")!
        let keys = [limiter.globalKey(rule: 0), limiter.clientKey(rule: 1, address: client)]
        let first = try #require(limiter.admit(rules: [0, 1], keys: keys, nowNanoseconds: 0).grant)
        let rejection = try #require(limiter.admit(rules: [0, 1], keys: keys, nowNanoseconds: 0).rejection)
        #expect(rejection.rule == 1 && rejection.kind == .requests && rejection.retryAfterSeconds == 60)
        #expect(rejection.statuses[0].concurrent?.inUse == 1)
        // One lease is held by `first`; the rejected request's was returned, so one is free.
        #expect(limiter.admitted(3, key: keys[0], at: 0) == 1)
        limiter.release(first)
    }

    @Test func routeWithoutRulesIsAlwaysAdmitted() throws {
        let limiter = RL.limiter([RL.requests(1, per: 1_000)])
        let grant = try #require(limiter.admit(rules: [], keys: [], nowNanoseconds: 0).grant)
        #expect(grant.statuses.isEmpty && RateLimitHeaders.fields(for: grant).isEmpty)
        limiter.release(grant)
        limiter.chargeTokens(grant, tokens: 5, nowNanoseconds: 0)
    }

    // MARK: Expiry and the key cap

    @Test func idleEntriesExpireBySweep() {
        let limiter = RL.limiter([RL.requests(5, per: 1_000, key: .header("x-api-key"))])
        for user in 0..<10 { _ = limiter.admit(key: limiter.headerKey(rule: 0, value: "\(user)".utf8), at: 0) }
        #expect(limiter.trackedKeyCount(rule: 0) == 10)
        // Mid-refill entries stay: dropping them would hand out a fresh burst.
        #expect(limiter.sweep(nowNanoseconds: 200 * RL.ms - 1) == 0)
        // Once full again they equal fresh entries and go.
        #expect(limiter.sweep(nowNanoseconds: 200 * RL.ms) == 10)
        #expect(limiter.trackedKeyCount(rule: 0) == 0)
    }

    @Test func sweepIsBoundedPerCall() {
        let limiter = RL.limiter([RL.requests(5, per: 1_000, key: .header("x-api-key"))], shards: 1)
        for user in 0..<100 { _ = limiter.admit(key: limiter.headerKey(rule: 0, value: "\(user)".utf8), at: 0) }
        #expect(limiter.sweep(nowNanoseconds: RL.second, maximumEntriesPerShard: 30) == 30)
        #expect(limiter.sweep(nowNanoseconds: RL.second, maximumEntriesPerShard: 30) == 30)
        #expect(limiter.trackedKeyCount(rule: 0) == 40)
        #expect(limiter.sweep(nowNanoseconds: RL.second, maximumEntriesPerShard: 0) == 0)
        #expect(limiter.sweep(nowNanoseconds: RL.second, maximumEntriesPerShard: -1) == 0)
    }

    /// Each use of a shard examines a couple of entries, so idle keys go even without sweep().
    @Test func idleEntriesExpireLazily() {
        let limiter = RL.limiter([RL.requests(5, per: 1_000, key: .header("x-api-key"))], shards: 1)
        for user in 0..<10 { _ = limiter.admit(key: limiter.headerKey(rule: 0, value: "\(user)".utf8), at: 0) }
        _ = limiter.admit(key: limiter.headerKey(rule: 0, value: "new".utf8), at: RL.second)
        #expect(limiter.trackedKeyCount(rule: 0) == 11 - RateLimiter.sweepStepsPerAccess)
        for _ in 0..<10 { _ = limiter.admit(key: limiter.headerKey(rule: 0, value: "new".utf8), at: 2 * RL.second) }
        #expect(limiter.trackedKeyCount(rule: 0) == 1)
    }

    @Test func tokenDebtKeepsAnEntry() throws {
        let rule = RateLimitRuleConfig(name: "t", key: .global, tokens: RateLimitRate(count: 10, periodMilliseconds: 1_000))
        let limiter = RL.limiter([rule])
        let key = limiter.globalKey(rule: 0)
        let grant = try #require(limiter.admit(key: key, at: 0).grant)
        limiter.release(grant)
        limiter.chargeTokens(grant, tokens: 30, nowNanoseconds: 0)
        #expect(!limiter.admit(key: key, at: 2 * Self.s).isAdmitted)
        #expect(limiter.sweep(nowNanoseconds: 3 * Self.s - 1) == 0)
        #expect(limiter.sweep(nowNanoseconds: 3 * Self.s) == 1)
    }

    /// At the cap, an idle entry is evicted for a new key; with none idle the new key is
    /// admitted untracked (fail open) and counted.
    @Test func keyCapFailsOpenAndCounts() throws {
        let limiter = RL.limiter([RL.requests(1, per: 1_000, key: .header("x-api-key"))], shards: 1, maxKeysPerRule: 2)
        let a = limiter.headerKey(rule: 0, value: "a".utf8)
        let b = limiter.headerKey(rule: 0, value: "b".utf8)
        let c = limiter.headerKey(rule: 0, value: "c".utf8)
        #expect(limiter.admit(key: a, at: 0).isAdmitted && limiter.admit(key: b, at: 0).isAdmitted)
        // a and b are mid-refill: nothing to evict, c is admitted without tracking, every time.
        #expect(limiter.admitted(5, key: c, at: 0) == 5)
        #expect(limiter.untrackedCount == 5)
        #expect(limiter.trackedKeyCount(rule: 0) == 2)
        // Tracked keys are still limited.
        #expect(!limiter.admit(key: a, at: 0).isAdmitted)
        // A second later a and b are idle: c evicts one and is tracked (and limited) again.
        #expect(limiter.admitted(5, key: c, at: Self.s) == 1)
        #expect(limiter.untrackedCount == 5)
        #expect(limiter.trackedKeyCount(rule: 0) <= 2)
        #expect(limiter.counters(rule: 0).allowed == 8)
    }

    @Test func untrackedKeysHoldNoLeases() throws {
        let rule = RateLimitRuleConfig(
            name: "c", key: .header("x-api-key"), concurrent: 1, tokens: RateLimitRate(count: 10, periodMilliseconds: 1_000))
        let limiter = RL.limiter([rule], shards: 1, maxKeysPerRule: 1)
        let a = limiter.headerKey(rule: 0, value: "a".utf8)
        let b = limiter.headerKey(rule: 0, value: "b".utf8)
        let held = try #require(limiter.admit(key: a, at: 0).grant)
        let untracked = try #require(limiter.admit(key: b, at: 0).grant)
        #expect(limiter.untrackedCount == 1)
        #expect(untracked.statuses[0].concurrent?.inUse == 1)  // as a fresh key would see it
        #expect(limiter.admit(key: b, at: 0).isAdmitted)  // no lease was recorded
        limiter.release(untracked)
        limiter.chargeTokens(untracked, tokens: 5, nowNanoseconds: 0)  // dropped, counted
        #expect(limiter.untrackedCount == 3)
        #expect(!limiter.admit(key: a, at: 0).isAdmitted)  // a's lease is untouched
        limiter.release(held)
        #expect(limiter.admit(key: a, at: 0).isAdmitted)
    }

    @Test func capIsSplitOverShards() {
        #expect(RL.limiter([RL.requests(1, per: 1_000)], shards: 64, maxKeysPerRule: 1_000_000).keysPerShard == 15_625)
        #expect(RL.limiter([RL.requests(1, per: 1_000)], shards: 64, maxKeysPerRule: 100).keysPerShard == 2)
        #expect(RL.limiter([RL.requests(1, per: 1_000)], shards: 3, maxKeysPerRule: 1).keysPerShard == 1)
    }

    // MARK: Clocks

    /// A thread whose clock reading is older than one already applied (it read the clock, then
    /// waited for the shard's lock) is judged at the later time: never more admitted, and never
    /// told the bucket fills later than its period allows.
    @Test func staleClockReadingsAreJudgedAtTheLatestTime() throws {
        let limiter = RL.limiter([RL.requests(1, per: 1_000)])
        let key = limiter.globalKey(rule: 0)
        #expect(limiter.admit(key: key, at: 10 * Self.s).isAdmitted)
        let stale = try #require(limiter.admit(key: key, at: 9 * Self.s).rejection)
        #expect(stale.retryAfterSeconds == 1)
        #expect(stale.statuses[0].requests?.resetNanoseconds == Self.s)
        #expect(!limiter.admit(key: key, at: 11 * Self.s - 1).isAdmitted)
        #expect(limiter.admit(key: key, at: 11 * Self.s).isAdmitted)
    }

    @Test func countersPerRuleAndKind() {
        let limiter = RL.limiter([RL.requests(2, per: 1_000, name: "a"), RateLimitRuleConfig(name: "b", key: .global, concurrent: 1)])
        let a = limiter.globalKey(rule: 0)
        _ = limiter.admitted(5, key: a, at: 0)
        _ = limiter.admitted(3, rule: 1, key: limiter.globalKey(rule: 1), at: 0)
        #expect(limiter.counters(rule: 0) == RateLimitCounters(allowed: 2, rejectedRequests: 3, rejectedConcurrent: 0, rejectedTokens: 0))
        #expect(limiter.counters(rule: 1) == RateLimitCounters(allowed: 1, rejectedRequests: 0, rejectedConcurrent: 2, rejectedTokens: 0))
        #expect(limiter.counters(rule: 1).rejected == 2)
        #expect(limiter.untrackedCount == 0)
    }
}
