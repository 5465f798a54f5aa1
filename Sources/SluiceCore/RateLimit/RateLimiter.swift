import Synchronization

/// Per-key rate limits shared by every event loop: requests token buckets, concurrency leases
/// and LLM-token budgets, exact across threads.
///
/// **Sharding.** State for a (rule, key) lives in one of `shards` shards, chosen by the key's
/// hash; each shard is a `Locked` (pthread mutex) around a table per rule. Every operation locks one shard at a
/// time, for O(1) amortised work (a dictionary lookup, a few integer operations and a bounded
/// sweep; the table occasionally grows, like any dictionary), and never holds a lock across
/// I/O or while taking another: there is no lock order to get wrong. One key's budget is
/// therefore exact whichever loop its requests arrive on.
///
/// **Time.** Every call takes `nowNanoseconds` from the caller's monotonic clock (the same clock
/// on every thread); nothing here reads a clock or sleeps, so tests drive time by hand. The
/// arithmetic is exact in integers (see ``RateBucket``).
///
/// **Expiry.** An entry whose buckets are full and which holds no lease is *idle*: it is
/// exactly what a fresh entry would be, so dropping it loses nothing. Idle entries are removed
/// lazily: each operation on a shard first examines ``sweepStepsPerAccess`` entries of the
/// table it uses (round robin), and ``sweep(nowNanoseconds:maximumEntriesPerShard:)``, which
/// the loops call about once a second, examines more.
///
/// **Key cap.** Each rule tracks at most about `maxKeysPerRule` keys (the cap is split evenly
/// over the shards, so per shard it is ⌈maxKeysPerRule / shards⌉). A new key arriving at a full
/// shard first evicts an idle entry among the next ``evictionScanLimit``; if none is idle (every
/// tracked key is mid-burst, in debt or holding a lease), the request is admitted *untracked*:
/// nothing is recorded for it, no lease is held, and ``untrackedCount`` grows. This fails open on
/// purpose: a flood of distinct keys (spoofed API keys cost nothing) must not lock out every
/// other client, and memory stays bounded. Alert on ``untrackedCount``; raise the cap if it moves.
/// Tables keep their high-water capacity after a flood (shrinking would mean an O(n) rehash
/// under a lock); memory is bounded by the cap, about 100 bytes per tracked key.
public final class RateLimiter: Sendable {
    /// The rules, indexed as in ``Config/rateLimits``.
    public let rules: [RateLimitRuleConfig]
    /// Entries a rule may track per shard.
    public let keysPerShard: Int
    /// Idle entries examined (and dropped) per operation on a shard.
    public static let sweepStepsPerAccess = 2
    /// Entries examined for an idle one to evict when a new key meets a full shard.
    public static let evictionScanLimit = 8

    private let buckets: [RuleBuckets]
    private let shards: [Shard]
    private let counters: [RuleCounters]
    private let untracked = Atomic<Int>(0)
    private let k0: UInt64
    private let k1: UInt64
    /// Per rule, how a header value becomes key material (decided once, not per request).
    private let headerForms: [HeaderKeyForm]

    /// Creates a limiter for `rules`.
    /// - Parameters:
    ///   - rules: ``Config/rateLimits``; admission calls refer to them by index. Counts, periods
    ///     and bursts must be at least 1 (the parser guarantees it; violating it traps).
    ///   - shards: number of independently locked shards (at least 1). More shards mean less
    ///     contention between loops on different keys; 64 is plenty for 256 workers.
    ///   - maxKeysPerRule: the key cap per rule (at least 1); see the type's documentation.
    ///   - seed: the SipHash key for ``RateLimitKey``s. Pass 16 random bytes: with a guessable
    ///     seed, logged hashes could be brute-forced back to API keys.
    public init(rules: [RateLimitRuleConfig], shards: Int = 64, maxKeysPerRule: Int = 1_000_000, seed: (UInt64, UInt64)) {
        precondition(shards >= 1 && maxKeysPerRule >= 1, "shards and maxKeysPerRule must be positive")
        self.rules = rules
        self.keysPerShard = (maxKeysPerRule + shards - 1) / shards
        self.buckets = rules.map(RuleBuckets.init)
        self.shards = (0..<shards).map { _ in Shard(ruleCount: rules.count) }
        self.counters = rules.map { _ in RuleCounters() }
        self.headerForms = rules.map { rule in
            if case .header(let name) = rule.key { HeaderKeyForm(headerName: name) } else { .trimmed }
        }
        (k0, k1) = seed
    }

    // MARK: Keys

    /// The key of a request carrying `value` in the header of `key header NAME` rule `rule`.
    /// The value is hashed case-sensitively, as API keys are, after ``HeaderKeyForm``'s
    /// normalisation: OWS trimmed and, for `Authorization`/`Proxy-Authorization`, the scheme's case
    /// and the whitespace after it made canonical, so every spelling of one credential is one key.
    public func headerKey(rule: Int, value: some Collection<UInt8>) -> RateLimitKey {
        var hasher = hasher(rule: rule, tag: .headerValue)
        headerForms[rule].forEachByte(of: value) { hasher.append(byte: $0) }
        return RateLimitKey(rawValue: hasher.finalize())
    }

    /// The key of requests without the header of `key header NAME` rule `rule`: all of them
    /// share this one "no value" budget (distinct from an empty value), so omitting the header
    /// is limited like any other key rather than unlimited.
    public func missingHeaderKey(rule: Int) -> RateLimitKey {
        var hasher = hasher(rule: rule, tag: .missingHeader)
        return RateLimitKey(rawValue: hasher.finalize())
    }

    /// The key of client `address` under `key client` rule `rule` (see ``ForwardedFor`` for
    /// which address that is).
    public func clientKey(rule: Int, address: IPAddress) -> RateLimitKey {
        var hasher = hasher(rule: rule, tag: .client)
        hasher.append(littleEndian: address.high)
        hasher.append(littleEndian: address.low)
        return RateLimitKey(rawValue: hasher.finalize())
    }

    /// The one key of `key global` rule `rule`.
    public func globalKey(rule: Int) -> RateLimitKey {
        var hasher = hasher(rule: rule, tag: .global)
        return RateLimitKey(rawValue: hasher.finalize())
    }

    /// The key for `rule` according to its ``RateLimitRuleConfig/key``: `clientAddress` for
    /// `client`, `headerValue` (the value of the header the rule names, nil when absent) for
    /// `header`, neither for `global`.
    public func key(rule: Int, clientAddress: IPAddress, headerValue: [UInt8]?) -> RateLimitKey {
        switch rules[rule].key {
        case .client: clientKey(rule: rule, address: clientAddress)
        case .header: headerValue.map { headerKey(rule: rule, value: $0) } ?? missingHeaderKey(rule: rule)
        case .global: globalKey(rule: rule)
        }
    }

    private func hasher(rule: Int, tag: RateLimitKeyTag) -> SipHash24 {
        var hasher = SipHash24(k0: k0, k1: k1)
        hasher.append(littleEndian: UInt64(truncatingIfNeeded: rule))
        hasher.append(byte: tag.rawValue)
        return hasher
    }

    // MARK: Admission

    /// Checks every rule of a route, in order, and takes what an admitted request costs: one
    /// unit of each requests bucket and one lease of each concurrency cap. Token budgets only
    /// need a positive balance; usage is charged later with ``chargeTokens(_:tokens:nowNanoseconds:)``.
    ///
    /// All or nothing: when rule *j* rejects, what rules before it took is given back before
    /// returning. (Between the take and the give-back, another request on those keys may see
    /// them one unit poorer: that can only cause a spurious rejection, never an excess admit.)
    ///
    /// - Parameters:
    ///   - rules: the route's ``RouteConfig/limits``.
    ///   - keys: one key per rule, in the same order.
    ///   - nowNanoseconds: the caller's monotonic clock.
    /// - Returns: ``Admission/admitted(_:)`` with the grant to ``release(_:)`` when the exchange
    ///   ends, or ``Admission/rejected(_:)``.
    ///
    /// Any thread. Allocates the grant (or rejection) and its arrays.
    public func admit(rules: [Int], keys: [RateLimitKey], nowNanoseconds now: Int64) -> Admission {
        precondition(rules.count == keys.count, "one key per rule")
        var statuses: [RateLimitStatus] = []
        var tookUnit: [Bool] = []
        var leases: [Bool] = []
        statuses.reserveCapacity(rules.count)
        tookUnit.reserveCapacity(rules.count)
        leases.reserveCapacity(rules.count)
        for index in rules.indices {
            let rule = rules[index]
            let outcome = evaluate(rule: rule, key: keys[index], now: now)
            switch outcome {
            case .admitted(let status, let unit, let lease, let isUntracked):
                if isUntracked { untracked.wrappingAdd(1, ordering: .relaxed) }
                statuses.append(status)
                tookUnit.append(unit)
                leases.append(lease)
            case .rejected(let kind, let retryAfter, let status):
                counters[rule].rejected(kind)
                for earlier in statuses.indices {
                    statuses[earlier] = giveBack(
                        rule: rules[earlier], key: keys[earlier], unit: tookUnit[earlier], lease: leases[earlier],
                        now: now) ?? statuses[earlier]
                }
                statuses.append(status)
                return .rejected(
                    RateLimitRejection(
                        rule: rule, name: self.rules[rule].name, key: keys[index], kind: kind, retryAfterSeconds: retryAfter,
                        statuses: statuses))
            }
        }
        for rule in rules { counters[rule].allowed.wrappingAdd(1, ordering: .relaxed) }
        return .admitted(AdmissionGrant(rules: rules, keys: keys, statuses: statuses, leases: leases))
    }

    /// Returns a grant's concurrency leases. Call once when the exchange ends, on every path
    /// (complete, client abort, upstream error, each timeout, drain). Safe to call again: only
    /// the first call returns anything. Any thread.
    public func release(_ grant: AdmissionGrant) {
        guard grant.markReleased() else { return }
        for index in grant.rules.indices where grant.leases[index] {
            let rule = grant.rules[index]
            let key = grant.keys[index].rawValue
            shard(for: grant.keys[index]).state.withLock { state in
                state.tables[rule].releaseLease(key)
            }
        }
    }

    /// Charges `tokens` of reported usage to every token budget of the grant's rules, after the
    /// fact: the balance may go negative, and the key is rejected until it refills above zero.
    /// May be called several times (e.g. as usage arrives), before or after ``release(_:)``.
    /// Non-positive counts are ignored. Any thread.
    public func chargeTokens(_ grant: AdmissionGrant, tokens: Int64, nowNanoseconds now: Int64) {
        for index in grant.rules.indices {
            chargeTokens(rule: grant.rules[index], key: grant.keys[index], tokens: tokens, nowNanoseconds: now)
        }
    }

    /// Charges `tokens` to rule `rule`'s budget for `key`; a no-op for a rule without one or a
    /// non-positive count. When the key is untracked at the cap the charge is dropped and
    /// counted in ``untrackedCount``.
    public func chargeTokens(rule: Int, key: RateLimitKey, tokens: Int64, nowNanoseconds now: Int64) {
        guard tokens > 0, let bucket = buckets[rule].tokens else { return }
        let capacity = keysPerShard
        let charged = shard(for: key).state.withLock { state -> Bool in
            let now = state.clock(now)
            state.tables[rule].sweep(steps: Self.sweepStepsPerAccess, now: now)
            guard let slot = state.tables[rule].findOrInsert(key.rawValue, now: now, capacity: capacity) else {
                return false
            }
            let debt = bucket.debt(state.tables[rule].entries[slot].tokens, now: now)
            state.tables[rule].entries[slot].tokens = bucket.state(debt: bucket.taking(tokens, debt: debt), now: now)
            return true
        }
        if !charged { untracked.wrappingAdd(1, ordering: .relaxed) }
    }

    // MARK: Maintenance and metrics

    /// Drops idle entries: examines up to `maximumEntriesPerShard` entries of each rule's table
    /// in each shard, continuing where the last sweep stopped. Meant to be called about once a
    /// second from a loop's timer; the lock is held per shard for a bounded time.
    /// - Returns: how many entries were dropped.
    @discardableResult
    public func sweep(nowNanoseconds now: Int64, maximumEntriesPerShard: Int = 1024) -> Int {
        var removed = 0
        for shard in shards {
            removed += shard.state.withLock { state in
                let now = state.clock(now)
                var count = 0
                for rule in state.tables.indices {
                    count += state.tables[rule].sweep(steps: maximumEntriesPerShard, now: now)
                }
                return count
            }
        }
        return removed
    }

    /// Keys rule `rule` currently tracks, over all shards. Locks every shard: for metrics
    /// scrapes and tests, not the request path.
    public func trackedKeyCount(rule: Int) -> Int {
        shards.reduce(0) { sum, shard in sum + shard.state.withLock { $0.tables[rule].entries.count } }
    }

    /// Admission counters of rule `rule` since start.
    public func counters(rule: Int) -> RateLimitCounters {
        let cells = counters[rule]
        return RateLimitCounters(
            allowed: cells.allowed.load(ordering: .relaxed),
            rejectedRequests: cells.rejectedRequests.load(ordering: .relaxed),
            rejectedConcurrent: cells.rejectedConcurrent.load(ordering: .relaxed),
            rejectedTokens: cells.rejectedTokens.load(ordering: .relaxed))
    }

    /// Times a key could not be tracked because its shard was at the cap with nothing idle to
    /// evict: requests admitted untracked plus token charges dropped. Should stay 0.
    public var untrackedCount: Int {
        untracked.load(ordering: .relaxed)
    }

    // MARK: Internals

    private func shard(for key: RateLimitKey) -> Shard {
        // The high word of hash × count: uniform over any shard count, no modulo bias.
        shards[Int(key.rawValue.multipliedFullWidth(by: UInt64(shards.count)).high)]
    }

    private func evaluate(rule: Int, key: RateLimitKey, now: Int64) -> RuleDecision {
        let ruleBuckets = buckets[rule]
        let name = rules[rule].name
        let capacity = keysPerShard
        return shard(for: key).state.withLock { state -> RuleDecision in
            let now = state.clock(now)
            state.tables[rule].sweep(steps: Self.sweepStepsPerAccess, now: now)
            guard let slot = state.tables[rule].findOrInsert(key.rawValue, now: now, capacity: capacity) else {
                // Fail open at the cap: decide on a fresh entry (which always admits), keep nothing.
                var scratch = KeyEntry(key: key.rawValue, now: now)
                return ruleBuckets.decide(&scratch, rule: rule, name: name, now: now, untracked: true)
            }
            return ruleBuckets.decide(&state.tables[rule].entries[slot], rule: rule, name: name, now: now, untracked: false)
        }
    }

    /// Gives back what an admission took from `rule` (rollback); returns the status afterwards,
    /// or nil when the entry is gone (it went idle and was swept, so there is nothing to give).
    private func giveBack(rule: Int, key: RateLimitKey, unit: Bool, lease: Bool, now: Int64) -> RateLimitStatus? {
        guard unit || lease else { return nil }
        let ruleBuckets = buckets[rule]
        let name = rules[rule].name
        return shard(for: key).state.withLock { state -> RateLimitStatus? in
            let now = state.clock(now)
            guard let slot = state.tables[rule].slots[key.rawValue] else { return nil }
            if unit, let bucket = ruleBuckets.requests {
                let entry = state.tables[rule].entries[slot]
                state.tables[rule].entries[slot].requests = bucket.state(
                    debt: bucket.debt(entry.requests, now: now) - bucket.unit, now: now)
            }
            if lease, state.tables[rule].entries[slot].leases > 0 {
                state.tables[rule].entries[slot].leases -= 1
            }
            return ruleBuckets.status(of: state.tables[rule].entries[slot], rule: rule, name: name, now: now)
        }
    }
}

/// Admission counters of one rule, for the metrics endpoint.
public struct RateLimitCounters: Sendable, Equatable {
    /// Requests every rule of their route admitted (counted once per rule of the route).
    public var allowed: Int
    /// Rejections by this rule's requests bucket.
    public var rejectedRequests: Int
    /// Rejections by this rule's concurrency cap.
    public var rejectedConcurrent: Int
    /// Rejections by this rule's token budget.
    public var rejectedTokens: Int

    /// Creates counters from their parts.
    public init(allowed: Int, rejectedRequests: Int, rejectedConcurrent: Int, rejectedTokens: Int) {
        self.allowed = allowed
        self.rejectedRequests = rejectedRequests
        self.rejectedConcurrent = rejectedConcurrent
        self.rejectedTokens = rejectedTokens
    }

    /// All rejections by this rule.
    public var rejected: Int { rejectedRequests + rejectedConcurrent + rejectedTokens }
}

// MARK: - Shard state

/// One rule's immutable bucket parameters.
private struct RuleBuckets: Sendable {
    let rule: RateLimitRuleConfig
    let requests: RateBucket?
    let tokens: RateBucket?
    let concurrent: Int?

    init(_ rule: RateLimitRuleConfig) {
        self.rule = rule
        requests = rule.requests.map(RateBucket.init)
        tokens = rule.tokens.map(RateBucket.init)
        concurrent = rule.concurrent
    }

    /// Checks `entry` against every limit of the rule and, when all pass, takes one request
    /// unit and one lease. Under the shard lock.
    func decide(_ entry: inout KeyEntry, rule index: Int, name: String, now: Int64, untracked: Bool) -> RuleDecision {
        var worst: (kind: RateLimitKind, seconds: Int64)?
        func consider(_ kind: RateLimitKind, _ seconds: Int64) {
            // The longest wait wins: retrying sooner would only be rejected by this limit.
            if seconds > (worst?.seconds ?? 0) { worst = (kind, seconds) }
        }
        var requestDebt: Int128 = 0
        if let requests {
            requestDebt = requests.debt(entry.requests, now: now)
            if !requests.canTakeOne(debt: requestDebt) {
                consider(.requests, max(1, RateBucket.seconds(ceilingOf: requests.nanosecondsUntilOne(debt: requestDebt))))
            }
        }
        if let tokens {
            let debt = tokens.debt(entry.tokens, now: now)
            if !tokens.hasPositiveBalance(debt: debt) {
                consider(.tokens, max(1, RateBucket.seconds(ceilingOf: tokens.nanosecondsUntilPositive(debt: debt))))
            }
        }
        if let concurrent, entry.leases >= concurrent {
            consider(.concurrent, 1)
        }
        if let worst {
            return .rejected(worst.kind, retryAfter: worst.seconds, status(of: entry, rule: index, name: name, now: now))
        }
        if let requests {
            entry.requests = requests.state(debt: requests.taking(1, debt: requestDebt), now: now)
        }
        if concurrent != nil {
            entry.leases += 1
        }
        return .admitted(
            status(of: entry, rule: index, name: name, now: now), unit: requests != nil,
            lease: concurrent != nil && !untracked, untracked: untracked)
    }

    /// The rule's numbers for `entry` at `now`.
    func status(of entry: KeyEntry, rule index: Int, name: String, now: Int64) -> RateLimitStatus {
        var status = RateLimitStatus(rule: index, name: name)
        if let requests, let rate = rule.requests {
            let debt = requests.debt(entry.requests, now: now)
            status.requests = RateLimitBucketStatus(
                rate: rate, remaining: requests.remaining(debt: debt),
                resetNanoseconds: requests.nanosecondsUntilFull(debt: debt))
        }
        if let tokens, let rate = rule.tokens {
            let debt = tokens.debt(entry.tokens, now: now)
            status.tokens = RateLimitBucketStatus(
                rate: rate, remaining: tokens.remaining(debt: debt), resetNanoseconds: tokens.nanosecondsUntilFull(debt: debt))
        }
        if let concurrent {
            status.concurrent = RateLimitConcurrencyStatus(limit: concurrent, inUse: Int(entry.leases))
        }
        return status
    }
}

/// What one rule decided for one request.
private enum RuleDecision {
    /// Admitted; `unit` and `lease` say what was taken (for rollback), `untracked` that the
    /// key could not be tracked at the cap.
    case admitted(RateLimitStatus, unit: Bool, lease: Bool, untracked: Bool)
    /// Rejected by `kind`, with the wait in whole seconds.
    case rejected(RateLimitKind, retryAfter: Int64, RateLimitStatus)
}

/// One lock's worth of state.
private final class Shard: Sendable {
    let state: Locked<ShardState>

    init(ruleCount: Int) {
        state = Locked(ShardState(tables: Array(repeating: KeyTable(), count: ruleCount)))
    }
}

/// A shard's tables, one per rule, and the latest clock reading used on them.
private struct ShardState {
    var tables: [KeyTable]
    /// Callers read the clock before they wait for the lock, so a reading can arrive older than
    /// one already used here. Deciding with it would make a bucket look emptier than it can be
    /// (a requests bucket "full again" in more than its period), so time never goes back.
    private var latestNow: Int64 = .min

    init(tables: [KeyTable]) {
        self.tables = tables
    }

    /// `now`, or the latest reading already used in this shard when that is later.
    mutating func clock(_ now: Int64) -> Int64 {
        latestNow = max(latestNow, now)
        return latestNow
    }
}

/// The keys one rule tracks in one shard: a dense array of entries (so sweeping and eviction
/// can walk it round robin in O(1) steps) and a dictionary from key hash to array slot.
private struct KeyTable {
    var slots: [UInt64: Int] = [:]
    var entries: [KeyEntry] = []
    /// Next entry the sweep examines.
    var cursor = 0

    /// Examines up to `steps` entries from the cursor, removing idle ones.
    /// - Returns: how many were removed.
    @discardableResult
    mutating func sweep(steps: Int, now: Int64) -> Int {
        var removed = 0
        for _ in 0..<max(0, min(steps, entries.count)) {
            if cursor >= entries.count { cursor = 0 }
            if entries[cursor].isIdle(now: now) {
                remove(at: cursor)  // the last entry moves here; examine it next
                removed += 1
            } else {
                cursor += 1
            }
        }
        return removed
    }

    /// The slot of `key`, inserting a fresh entry when absent; nil when the table holds
    /// `capacity` entries and none of the next few is idle.
    mutating func findOrInsert(_ key: UInt64, now: Int64, capacity: Int) -> Int? {
        if let slot = slots[key] { return slot }
        if entries.count >= capacity, !evictOne(now: now) { return nil }
        entries.append(KeyEntry(key: key, now: now))
        slots[key] = entries.count - 1
        return entries.count - 1
    }

    /// Returns one lease of `key`, never going below zero.
    mutating func releaseLease(_ key: UInt64) {
        guard let slot = slots[key], entries[slot].leases > 0 else { return }
        entries[slot].leases -= 1
    }

    private mutating func evictOne(now: Int64) -> Bool {
        for _ in 0..<min(RateLimiter.evictionScanLimit, entries.count) {
            if cursor >= entries.count { cursor = 0 }
            if entries[cursor].isIdle(now: now) {
                remove(at: cursor)
                return true
            }
            cursor += 1
        }
        return false
    }

    /// Swap-remove: O(1), keeps `entries` dense.
    private mutating func remove(at index: Int) {
        slots[entries[index].key] = nil
        let last = entries.count - 1
        if index != last {
            entries[index] = entries[last]
            slots[entries[index].key] = index
        }
        entries.removeLast()
    }
}

/// State of one (rule, key). 48 bytes.
private struct KeyEntry {
    /// ``RateLimitKey/rawValue``.
    let key: UInt64
    /// The requests bucket (stays full for rules without one).
    var requests: RateBucketState
    /// The token budget (stays full for rules without one).
    var tokens: RateBucketState
    /// Concurrency leases held.
    var leases: Int32

    /// A fresh entry: full buckets, no leases.
    init(key: UInt64, now: Int64) {
        self.key = key
        requests = .full(at: now)
        tokens = .full(at: now)
        leases = 0
    }

    /// Whether the entry equals a fresh one at `now`, so dropping it loses nothing.
    func isIdle(now: Int64) -> Bool {
        leases == 0 && RateBucket.isFull(requests, now: now) && RateBucket.isFull(tokens, now: now)
    }
}

/// Per-rule atomic counters; updated with relaxed increments from any loop.
private final class RuleCounters: Sendable {
    let allowed = Atomic<Int>(0)
    let rejectedRequests = Atomic<Int>(0)
    let rejectedConcurrent = Atomic<Int>(0)
    let rejectedTokens = Atomic<Int>(0)

    func rejected(_ kind: RateLimitKind) {
        switch kind {
        case .requests: rejectedRequests.wrappingAdd(1, ordering: .relaxed)
        case .concurrent: rejectedConcurrent.wrappingAdd(1, ordering: .relaxed)
        case .tokens: rejectedTokens.wrappingAdd(1, ordering: .relaxed)
        }
    }
}
