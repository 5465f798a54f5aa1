import Testing

@testable import SluiceCore

/// The exact response fields and 429 bodies.
@Suite struct RateLimitHeadersTests {
    static let perUser = RateLimitRuleConfig(
        name: "per_user", key: .header("authorization"), requests: RateLimitRate(count: 10, periodMilliseconds: 1_000, burst: 20),
        concurrent: 4, tokens: RateLimitRate(count: 100_000, periodMilliseconds: 60_000))

    static func lines(_ fields: [RateLimitHeaderField]) -> [String] {
        fields.map(\.description)
    }

    @Test func admittedResponseFields() throws {
        let limiter = RL.limiter([Self.perUser])
        let key = limiter.headerKey(rule: 0, value: "Bearer sk-1".utf8)
        let grant = try #require(limiter.admit(key: key, at: 0).grant)
        #expect(Self.lines(RateLimitHeaders.fields(for: grant)) == [
            #"RateLimit-Policy: "per_user-requests";q=20;w=2, "per_user-concurrent";q=4;qu="concurrent-requests", "per_user-tokens";q=100000;w=60;qu="tokens""#,
            #"RateLimit: "per_user-requests";r=19;t=1, "per_user-concurrent";r=3, "per_user-tokens";r=100000;t=0"#,
            "x-ratelimit-limit-requests: 20",
            "x-ratelimit-remaining-requests: 19",
            "x-ratelimit-reset-requests: 100ms",
            "x-ratelimit-limit-tokens: 100000",
            "x-ratelimit-remaining-tokens: 100000",
            "x-ratelimit-reset-tokens: 0s",
        ])
        limiter.chargeTokens(grant, tokens: 40_000, nowNanoseconds: 0)
        let next = try #require(limiter.admit(key: key, at: 500 * RL.ms).grant)
        #expect(Self.lines(RateLimitHeaders.fields(for: next)).suffix(6) == [
            "x-ratelimit-limit-requests: 20",
            "x-ratelimit-remaining-requests: 19",  // 19 + 5 refilled, capped at 20, minus this one
            "x-ratelimit-reset-requests: 100ms",
            "x-ratelimit-limit-tokens: 100000",
            "x-ratelimit-remaining-tokens: 60833",  // 60000 + 833⅓ refilled in 0.5 s
            "x-ratelimit-reset-tokens: 23.5s",
        ])
    }

    /// The example from the spec: `10/s` exhausted.
    @Test func rejectionFieldsAndBody() throws {
        let rule = RateLimitRuleConfig(name: "per_user", key: .header("authorization"), requests: RateLimitRate(count: 10, periodMilliseconds: 1_000))
        let limiter = RL.limiter([rule])
        let key = limiter.headerKey(rule: 0, value: "Bearer sk-1".utf8)
        #expect(limiter.admitted(10, key: key, at: 0) == 10)
        let rejection = try #require(limiter.admit(key: key, at: 0).rejection)
        #expect(Self.lines(RateLimitHeaders.fields(for: rejection)) == [
            "Retry-After: 1",
            #"RateLimit-Policy: "per_user-requests";q=10;w=1"#,
            #"RateLimit: "per_user-requests";r=0;t=1"#,
            "x-ratelimit-limit-requests: 10",
            "x-ratelimit-remaining-requests: 0",
            "x-ratelimit-reset-requests: 1s",
        ])
        #expect(String(decoding: RateLimitHeaders.body(for: rejection), as: UTF8.self)
            == #"{"error":{"message":"Rate limit reached for per_user (requests): 10 per 1s. Retry after 1 s.","type":"rate_limit_exceeded","param":null,"code":"rate_limit_exceeded"}}"#)
        #expect(String(decoding: RateLimitHeaders.serialize(RateLimitHeaders.fields(for: rejection)), as: UTF8.self)
            == "Retry-After: 1\r\nRateLimit-Policy: \"per_user-requests\";q=10;w=1\r\nRateLimit: \"per_user-requests\";r=0;t=1\r\n"
            + "x-ratelimit-limit-requests: 10\r\nx-ratelimit-remaining-requests: 0\r\nx-ratelimit-reset-requests: 1s\r\n")
    }

    @Test func tokenAndConcurrencyMessages() throws {
        let tokens = RateLimitRuleConfig(name: "budget", key: .global, tokens: RateLimitRate(count: 1_000, periodMilliseconds: 60_000))
        let streams = RateLimitRuleConfig(name: "streams", key: .global, concurrent: 2)
        let bursty = RateLimitRuleConfig(name: "b", key: .global, requests: RateLimitRate(count: 600, periodMilliseconds: 60_000, burst: 5))
        let limiter = RL.limiter([tokens, streams, bursty])
        let grant = try #require(limiter.admit(key: limiter.globalKey(rule: 0), at: 0).grant)
        limiter.chargeTokens(grant, tokens: 1_800, nowNanoseconds: 0)
        let broke = try #require(limiter.admit(key: limiter.globalKey(rule: 0), at: 0).rejection)
        #expect(RateLimitHeaders.message(for: broke) == "Rate limit reached for budget (tokens): 1000 per 1min. Retry after 49 s.")
        #expect(Self.lines(RateLimitHeaders.fields(for: broke)) == [
            "Retry-After: 49",
            #"RateLimit-Policy: "budget-tokens";q=1000;w=60;qu="tokens""#,
            #"RateLimit: "budget-tokens";r=0;t=108"#,
            "x-ratelimit-limit-tokens: 1000",
            "x-ratelimit-remaining-tokens: 0",
            "x-ratelimit-reset-tokens: 1m48s",
        ])
        let held = (0..<2).compactMap { _ in limiter.admit(rule: 1, key: limiter.globalKey(rule: 1), at: 0).grant }
        let busy = try #require(limiter.admit(rule: 1, key: limiter.globalKey(rule: 1), at: 0).rejection)
        #expect(RateLimitHeaders.message(for: busy) == "Rate limit reached for streams (concurrent): 2 concurrent requests. Retry after 1 s.")
        #expect(Self.lines(RateLimitHeaders.fields(for: busy)) == [
            "Retry-After: 1",
            #"RateLimit-Policy: "streams-concurrent";q=2;qu="concurrent-requests""#,
            #"RateLimit: "streams-concurrent";r=0"#,
        ])
        held.forEach(limiter.release)
        _ = limiter.admitted(5, rule: 2, key: limiter.globalKey(rule: 2), at: 0)
        let early = try #require(limiter.admit(rule: 2, key: limiter.globalKey(rule: 2), at: 0).rejection)
        #expect(RateLimitHeaders.message(for: early) == "Rate limit reached for b (requests): 600 per 1min (burst 5). Retry after 1 s.")
    }

    /// With several requests rules on a route, the OpenAI fields show the tightest.
    @Test func openAIFieldsShowTheTightestRule() throws {
        let loose = RateLimitRuleConfig(name: "org", key: .global, requests: RateLimitRate(count: 100, periodMilliseconds: 1_000))
        let tight = RateLimitRuleConfig(name: "user", key: .global, requests: RateLimitRate(count: 2, periodMilliseconds: 60_000))
        let limiter = RL.limiter([loose, tight])
        let grant = try #require(limiter.admit(rules: [0, 1], keys: [limiter.globalKey(rule: 0), limiter.globalKey(rule: 1)], nowNanoseconds: 0).grant)
        #expect(Self.lines(RateLimitHeaders.fields(for: grant)) == [
            #"RateLimit-Policy: "org-requests";q=100;w=1, "user-requests";q=2;w=60"#,
            #"RateLimit: "org-requests";r=99;t=1, "user-requests";r=1;t=30"#,
            "x-ratelimit-limit-requests: 2",
            "x-ratelimit-remaining-requests: 1",
            "x-ratelimit-reset-requests: 30s",
        ])
    }

    @Test(arguments: [
        (Int64(0), "0s"), (-5, "0s"), (1, "1ms"), (999_999, "1ms"), (1_000_000, "1ms"), (1_000_001, "2ms"), (20_000_000, "20ms"),
        (999_000_000, "999ms"), (999_000_001, "1s"), (1_000_000_000, "1s"), (1_500_000_000, "1.5s"), (8_640_000_000, "8.64s"),
        (1_064_000_000, "1.064s"), (59_999_000_000, "59.999s"), (60_000_000_000, "1m0s"), (360_000_000_000, "6m0s"),
        (361_500_000_000, "6m1.5s"), (3_600_000_000_000, "1h0m0s"), (3_723_500_000_000, "1h2m3.5s"), (90_000_000_000_000, "25h0m0s"),
    ] as [(Int64, String)])
    func openAIDuration(nanoseconds: Int64, text: String) {
        #expect(RateLimitHeaders.openAIDuration(nanoseconds: nanoseconds) == text)
    }

    @Test func escaping() {
        #expect(RateLimitHeaders.sfString(#"a"b\c"#) == #""a\"b\\c""#)
        #expect(RateLimitHeaders.sfString("ü") == #""?""#)
        #expect(RateLimitHeaders.jsonString("a\"b\\c\n\u{1}") == #""a\"b\\c\n\u0001""#)
    }
}
