import Testing

@testable import SluiceCore

/// The token-bucket arithmetic, driven through the limiter with a hand-held clock.
@Suite struct RateBucketTests {
    /// At `at` ns, `attempts` requests arrive at once and `admitted` of them pass.
    struct Step: Sendable {
        var at: Int64
        var attempts: Int
        var admitted: Int
        init(_ at: Int64, _ attempts: Int, _ admitted: Int) {
            self.at = at
            self.attempts = attempts
            self.admitted = admitted
        }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var rate: RateLimitRate
        var steps: [Step]
        var testDescription: String { name }
    }

    static let s = RL.second
    static let ms = RL.ms

    static let cases: [Case] = [
        Case(name: "5/s burst 5: 20 at once, 5 more after exactly 1 s", rate: RateLimitRate(count: 5, periodMilliseconds: 1_000),
             steps: [Step(0, 20, 5), Step(s, 20, 5), Step(2 * s, 20, 5)]),
        Case(name: "5/s burst 5: one nanosecond early finds 4", rate: RateLimitRate(count: 5, periodMilliseconds: 1_000),
             steps: [Step(0, 20, 5), Step(s - 1, 20, 4), Step(s, 20, 1)]),
        Case(name: "5/s after the burst: one per 200 ms", rate: RateLimitRate(count: 5, periodMilliseconds: 1_000),
             steps: [Step(0, 5, 5), Step(200 * ms - 1, 1, 0), Step(200 * ms, 2, 1), Step(400 * ms, 2, 1), Step(1_000 * ms, 4, 3)]),
        Case(name: "10/s burst 20", rate: RateLimitRate(count: 10, periodMilliseconds: 1_000, burst: 20),
             steps: [Step(0, 30, 20), Step(100 * ms, 5, 1), Step(150 * ms, 5, 0), Step(200 * ms, 5, 1), Step(2_200 * ms, 30, 20)]),
        Case(name: "burst below the count", rate: RateLimitRate(count: 10, periodMilliseconds: 1_000, burst: 1),
             steps: [Step(0, 5, 1), Step(100 * ms - 1, 5, 0), Step(100 * ms, 5, 1), Step(10 * s, 5, 1)]),
        Case(name: "600/min: one per 100 ms after 600", rate: RateLimitRate(count: 600, periodMilliseconds: 60_000),
             steps: [Step(0, 700, 600), Step(100 * ms - 1, 1, 0), Step(100 * ms, 2, 1), Step(60_100 * ms, 700, 600)]),
        Case(name: "1/h", rate: RateLimitRate(count: 1, periodMilliseconds: 3_600_000),
             steps: [Step(0, 3, 1), Step(3_600 * s - 1, 1, 0), Step(3_600 * s, 2, 1)]),
        Case(name: "3600/h burst 1: one per second", rate: RateLimitRate(count: 3_600, periodMilliseconds: 3_600_000, burst: 1),
             steps: [Step(0, 2, 1), Step(s - 1, 1, 0), Step(s, 1, 1)]),
        // A full bucket of one cannot bank the ⅔ ns by which a request came late, so each
        // interval starts at the request: the next is due 333 333 333⅓ ns after it.
        Case(name: "3/s burst 1: a full bucket does not bank a fraction", rate: RateLimitRate(count: 3, periodMilliseconds: 1_000, burst: 1),
             steps: [Step(0, 2, 1), Step(333_333_333, 1, 0), Step(333_333_334, 1, 1), Step(666_666_667, 1, 0),
                     Step(666_666_668, 1, 1), Step(1_000_000_001, 1, 0), Step(1_000_000_002, 1, 1)]),
        Case(name: "7/min burst 3: 2 of 3 back one nanosecond before 3/7 min", rate: RateLimitRate(count: 7, periodMilliseconds: 60_000, burst: 3),
             steps: [Step(0, 5, 3), Step(8_571_428_571, 1, 0), Step(25_714_285_714, 3, 2)]),
        Case(name: "7/min burst 3: all 3 back at 3/7 min", rate: RateLimitRate(count: 7, periodMilliseconds: 60_000, burst: 3),
             steps: [Step(0, 5, 3), Step(8_571_428_572, 1, 1), Step(25_714_285_715, 3, 2)]),
        Case(name: "1000000/s burst 1: one per microsecond", rate: RateLimitRate(count: 1_000_000, periodMilliseconds: 1_000, burst: 1),
             steps: [Step(0, 2, 1), Step(999, 1, 0), Step(1_000, 2, 1), Step(1_000_000_000, 2, 1)]),
        Case(name: "idle for a day refills only to the burst", rate: RateLimitRate(count: 2, periodMilliseconds: 1_000, burst: 4),
             steps: [Step(0, 1, 1), Step(86_400 * s, 10, 4)]),
        Case(name: "clock starting far from zero", rate: RateLimitRate(count: 5, periodMilliseconds: 1_000),
             steps: [Step(1 << 61, 20, 5), Step((1 << 61) + s, 20, 5)]),
        Case(name: "negative clock values", rate: RateLimitRate(count: 5, periodMilliseconds: 1_000),
             steps: [Step(-5 * s, 20, 5), Step(-4 * s, 20, 5)]),
    ]

    @Test(arguments: cases)
    func schedule(_ c: Case) {
        let limiter = RL.limiter([RateLimitRuleConfig(name: "r", key: .global, requests: c.rate)])
        let key = limiter.globalKey(rule: 0)
        for step in c.steps {
            #expect(limiter.admitted(step.attempts, key: key, at: step.at) == step.admitted, "at \(step.at) ns")
        }
    }

    /// Refill is exact however long it runs: 3/s has a 333 333 333⅓ ns interval, and with the
    /// bucket drained (so no refill is lost to a full bucket), request k is admitted at exactly
    /// ⌈k × 10⁹ / 3⌉ ns and not a nanosecond before, for 100 000 intervals (over 9 hours).
    @Test func fractionalRefillDoesNotDrift() {
        let limiter = RL.limiter([RL.requests(3, per: 1_000)])
        let key = limiter.globalKey(rule: 0)
        #expect(limiter.admitted(4, key: key, at: 0) == 3)
        var early = 0
        var late = 0
        for k in Int64(1)...100_000 {
            let due = (k * RL.second + 2) / 3  // ⌈k × 10⁹ / 3⌉
            if limiter.admit(key: key, at: due - 1).isAdmitted { early += 1 }
            if !limiter.admit(key: key, at: due).isAdmitted { late += 1 }
        }
        #expect(early == 0 && late == 0)
        // 33 333 s and a third after the start the bucket is still exactly empty.
        #expect(!limiter.admit(key: key, at: 33_333_333_333_334).isAdmitted)
        #expect(limiter.admit(key: key, at: 33_333_666_666_667).isAdmitted)
    }

    /// Products beyond 64 bits (a trillion tokens an hour) stay exact.
    @Test func hugeBudgetsStayExact() throws {
        let rule = RateLimitRuleConfig(name: "t", key: .global, tokens: RateLimitRate(count: 1_000_000_000_000, periodMilliseconds: 3_600_000))
        let limiter = RL.limiter([rule])
        let key = limiter.globalKey(rule: 0)
        let grant = try #require(limiter.admit(key: key, at: 0).grant)
        limiter.chargeTokens(grant, tokens: 999_999_999_999, nowNanoseconds: 0)
        // 10¹² per 3.6 × 10¹² ns: 0.2777… tokens per nanosecond on top of the 1 left.
        let remaining = (0...4).map { t in limiter.admit(key: key, at: Int64(t)).grant?.statuses[0].tokens?.remaining }
        #expect(remaining == [1, 1, 1, 1, 2])
    }

    /// The wait reported after a rejection: whole seconds, rounded up, never 0.
    @Test(arguments: [
        ("5/s burst 5, empty", RateLimitRate(count: 5, periodMilliseconds: 1_000), [Int64](repeating: 0, count: 5), Int64(0), Int64(1)),
        ("10/s burst 20, empty", RateLimitRate(count: 10, periodMilliseconds: 1_000, burst: 20), .init(repeating: 0, count: 20), 0, 1),
        ("1/min", RateLimitRate(count: 1, periodMilliseconds: 60_000), [0], 0, 60),
        ("1/min, 1 ns later", RateLimitRate(count: 1, periodMilliseconds: 60_000), [0], 1, 60),
        ("1/min, 1 s later", RateLimitRate(count: 1, periodMilliseconds: 60_000), [0], RL.second, 59),
        ("1/min, 59.5 s later", RateLimitRate(count: 1, periodMilliseconds: 60_000), [0], 59_500 * RL.ms, 1),
        ("1/h, half way", RateLimitRate(count: 1, periodMilliseconds: 3_600_000), [0], 1_800 * RL.second, 1_800),
        ("2/min burst 1, 0.5 s later", RateLimitRate(count: 2, periodMilliseconds: 60_000, burst: 1), [0], 500 * RL.ms, 30),
        ("3/s burst 2, empty", RateLimitRate(count: 3, periodMilliseconds: 1_000, burst: 2), [0, 0], 0, 1),
    ] as [(String, RateLimitRate, [Int64], Int64, Int64)])
    func retryAfter(name: String, rate: RateLimitRate, takes: [Int64], rejectAt: Int64, seconds: Int64) throws {
        let limiter = RL.limiter([RateLimitRuleConfig(name: "r", key: .global, requests: rate)])
        let key = limiter.globalKey(rule: 0)
        for t in takes { #expect(limiter.admit(key: key, at: t).isAdmitted) }
        let rejection = try #require(limiter.admit(key: key, at: rejectAt).rejection)
        #expect(rejection.kind == .requests)
        #expect(rejection.retryAfterSeconds == seconds)
        // Waiting exactly that long is enough.
        #expect(limiter.admit(key: key, at: rejectAt + seconds * RL.second).isAdmitted)
    }

    /// Remaining, reset and window values for the response fields.
    @Test func statusValues() throws {
        let limiter = RL.limiter([RL.requests(10, per: 1_000, burst: 20)])
        let key = limiter.globalKey(rule: 0)
        let first = try #require(limiter.admit(key: key, at: 0).grant?.statuses[0].requests)
        #expect(first.limit == 20 && first.remaining == 19 && first.resetNanoseconds == 100 * RL.ms)
        #expect(first.resetSeconds == 1 && first.windowSeconds == 2)
        for _ in 0..<18 { _ = limiter.admit(key: key, at: 0) }
        let last = try #require(limiter.admit(key: key, at: 0).grant?.statuses[0].requests)
        #expect(last.remaining == 0 && last.resetNanoseconds == 2 * RL.second)
        let later = try #require(limiter.admit(key: key, at: 1_050 * RL.ms).grant?.statuses[0].requests)
        // 10.5 units refilled, one taken: 9 whole left, full again in 1.05 s.
        #expect(later.remaining == 9 && later.resetNanoseconds == 1_050 * RL.ms)
    }

    @Test(arguments: [
        (RateLimitRate(count: 5, periodMilliseconds: 1_000), Int64(1)),
        (RateLimitRate(count: 10, periodMilliseconds: 1_000, burst: 20), 2),
        (RateLimitRate(count: 600, periodMilliseconds: 60_000), 60),
        (RateLimitRate(count: 100_000, periodMilliseconds: 60_000), 60),
        (RateLimitRate(count: 3, periodMilliseconds: 1_000, burst: 2), 1),
        (RateLimitRate(count: 1, periodMilliseconds: 3_600_000, burst: 24), 86_400),
        (RateLimitRate(count: 1_000, periodMilliseconds: 1_000, burst: 1), 1),
    ] as [(RateLimitRate, Int64)])
    func windowSeconds(rate: RateLimitRate, window: Int64) {
        #expect(RateBucket(rate).windowSeconds == window)
    }

    @Test(arguments: [
        (Int64(0), Int64(0)), (1, 1), (999_999_999, 1), (1_000_000_000, 1), (1_000_000_001, 2), (48_000_000_001, 49),
    ] as [(Int64, Int64)])
    func secondsRoundUp(nanoseconds: Int64, seconds: Int64) {
        #expect(RateBucket.seconds(ceilingOf: nanoseconds) == seconds)
    }

    @Test(arguments: [
        (RateLimitRate(count: 1, periodMilliseconds: 1_000), "1s"),
        (RateLimitRate(count: 1, periodMilliseconds: 60_000), "1min"),
        (RateLimitRate(count: 1, periodMilliseconds: 3_600_000), "1h"),
        (RateLimitRate(count: 1, periodMilliseconds: 250), "250ms"),
        (RateLimitRate(count: 1, periodMilliseconds: 7_200_000), "2h"),
    ] as [(RateLimitRate, String)])
    func periodText(rate: RateLimitRate, text: String) {
        #expect(rate.periodText == text)
    }
}
