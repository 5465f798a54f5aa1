import Dispatch
import Synchronization
import Testing

@testable import SluiceCore

/// Exactness under contention: several threads hammering the same keys with a fixed clock.
/// `concurrentPerform` runs the iterations on as many threads as there are cores.
@Suite struct RateLimiterThreadTests {
    final class Counter: Sendable {
        let value = Atomic<Int>(0)
        let peak = Atomic<Int>(0)

        func add(_ delta: Int) {
            let now = value.add(delta, ordering: .relaxed).newValue
            var seen = peak.load(ordering: .relaxed)
            while now > seen {
                let (exchanged, original) = peak.compareExchange(expected: seen, desired: now, ordering: .relaxed)
                if exchanged { break }
                seen = original
            }
        }

        var total: Int { value.load(ordering: .relaxed) }
        var maximum: Int { peak.load(ordering: .relaxed) }
    }

    static let threads = 8

    @Test(arguments: [1, 64])
    func burstIsExactAcrossThreads(shards: Int) {
        let limiter = RL.limiter([RL.requests(5, per: 1_000, burst: 1_000)], shards: shards)
        let key = limiter.globalKey(rule: 0)
        let admitted = Counter()
        DispatchQueue.concurrentPerform(iterations: Self.threads) { _ in
            for _ in 0..<500 where limiter.admit(key: key, at: 0).isAdmitted { admitted.add(1) }
        }
        #expect(admitted.total == 1_000)
        #expect(limiter.counters(rule: 0) == RateLimitCounters(allowed: 1_000, rejectedRequests: 3_000, rejectedConcurrent: 0, rejectedTokens: 0))
    }

    /// `5/s burst 5` on many keys at once: exactly 5 per key, then exactly 5 more a second later.
    @Test func manyKeysAcrossThreads() {
        let limiter = RL.limiter([RL.requests(5, per: 1_000, key: .header("authorization"))])
        let keys = (0..<32).map { limiter.headerKey(rule: 0, value: "Bearer \($0)".utf8) }
        for now in [Int64(0), RL.second] {
            let admitted = Counter()
            DispatchQueue.concurrentPerform(iterations: Self.threads) { thread in
                for round in 0..<20 {
                    for index in keys.indices where limiter.admit(key: keys[(index + thread + round) % keys.count], at: now).isAdmitted {
                        admitted.add(1)
                    }
                }
            }
            #expect(admitted.total == 5 * keys.count)
        }
    }

    /// In-flight streams never exceed the cap, and after every stream ends (some released
    /// twice, from two threads) exactly the cap is free again.
    @Test func leasesNeverExceedTheCap() {
        let limiter = RL.limiter([RateLimitRuleConfig(name: "c", key: .global, concurrent: 3)])
        let key = limiter.globalKey(rule: 0)
        let inFlight = Counter()
        let admitted = Counter()
        DispatchQueue.concurrentPerform(iterations: Self.threads) { _ in
            for _ in 0..<2_000 {
                guard let grant = limiter.admit(key: key, at: 0).grant else { continue }
                inFlight.add(1)
                admitted.add(1)
                inFlight.add(-1)
                limiter.release(grant)
                limiter.release(grant)
            }
        }
        #expect(inFlight.maximum <= 3)
        #expect(admitted.total > 0)
        #expect(limiter.admitted(5, key: key, at: 0) == 3)
    }

    /// Racing releases of one grant return its lease once.
    @Test func concurrentDoubleReleaseReturnsOnce() throws {
        let limiter = RL.limiter([RateLimitRuleConfig(name: "c", key: .global, concurrent: 2)])
        let key = limiter.globalKey(rule: 0)
        for _ in 0..<200 {
            let held = try #require(limiter.admit(key: key, at: 0).grant)
            let raced = try #require(limiter.admit(key: key, at: 0).grant)
            DispatchQueue.concurrentPerform(iterations: 4) { _ in limiter.release(raced) }
            let free = (0..<2).compactMap { _ in limiter.admit(key: key, at: 0).grant }
            #expect(free.count == 1)  // one lease came back, not two or more
            free.forEach(limiter.release)
            limiter.release(held)
            let all = (0..<3).compactMap { _ in limiter.admit(key: key, at: 0).grant }
            #expect(all.count == 2)
            all.forEach(limiter.release)
        }
    }

    /// Rollback under contention: route [a (burst 100), b (burst 50)] admits exactly 50, and
    /// every rejection by b gives a's unit back, so a has exactly 50 left.
    @Test func rollbackIsExactUnderContention() {
        let limiter = RL.limiter([RL.requests(1, per: 60_000, burst: 100, name: "a"), RL.requests(1, per: 60_000, burst: 50, name: "b")])
        let keys = [limiter.globalKey(rule: 0), limiter.globalKey(rule: 1)]
        let admitted = Counter()
        DispatchQueue.concurrentPerform(iterations: Self.threads) { _ in
            for _ in 0..<100 where limiter.admit(rules: [0, 1], keys: keys, nowNanoseconds: 0).isAdmitted { admitted.add(1) }
        }
        #expect(admitted.total == 50)
        #expect(limiter.admitted(100, key: keys[0], at: 0) == 50)
    }
}
