import Testing

@testable import SluiceCore

/// The rate-limit parts of the config: `limit` blocks, a route's `limit` directives and the
/// top-level `trusted_proxies`, valid and invalid.
@Suite struct RateLimitConfigTests {
    static let base = ConfigFileErrorTests.base

    /// Parses `base` plus `extra`.
    static func parse(_ extra: String) throws -> Config {
        try Config.parse(text: base + extra, file: "p")
    }

    @Test func exampleFileRateLimits() throws {
        let config = try Config.load(overrides: CommandLineOverrides(configPath: ConfigFileTests.examplePath))
        #expect(config.rateLimits == [
            RateLimitRuleConfig(
                name: "per_user", key: .header("authorization"),
                requests: RateLimitRate(count: 10, periodMilliseconds: 1_000, burst: 20), concurrent: 4,
                tokens: RateLimitRate(count: 100_000, periodMilliseconds: 60_000)),
        ])
        #expect(config.trustedProxies.map(\.description) == ["127.0.0.1/32", "::1/128"])
        #expect(config.routes.map(\.prefix) == ["/v1/", "/"])
        #expect(config.routes.map(\.limits) == [[0], []])
    }

    @Test func defaultsKeepOldInitialisersWorking() throws {
        let config = Config(listeners: [Config.defaultListenAddress], upstreams: [], routes: [RouteConfig(prefix: "/", upstream: "a")])
        #expect(config.rateLimits.isEmpty && config.trustedProxies.isEmpty)
        #expect(config.routes[0].limits.isEmpty)
        let parsed = try Config.parse(text: Self.base, file: "p")
        #expect(parsed.rateLimits.isEmpty && parsed.trustedProxies.isEmpty && parsed.routes[0].limits.isEmpty)
        #expect(RateLimitRate(count: 5, periodMilliseconds: 1_000).burst == 5)
    }

    /// One directive inside `limit r { key global ... }` and the rule it yields.
    @Test(arguments: [
        ("requests 10/s", RateLimitRuleConfig(name: "r", key: .global, requests: RateLimitRate(count: 10, periodMilliseconds: 1_000))),
        ("requests 10/s burst 20", RateLimitRuleConfig(name: "r", key: .global, requests: RateLimitRate(count: 10, periodMilliseconds: 1_000, burst: 20))),
        ("requests 600/min", RateLimitRuleConfig(name: "r", key: .global, requests: RateLimitRate(count: 600, periodMilliseconds: 60_000, burst: 600))),
        ("requests 3600/h burst 1", RateLimitRuleConfig(name: "r", key: .global, requests: RateLimitRate(count: 3_600, periodMilliseconds: 3_600_000, burst: 1))),
        ("requests 5/s burst 1000000000", RateLimitRuleConfig(name: "r", key: .global, requests: RateLimitRate(count: 5, periodMilliseconds: 1_000, burst: 1_000_000_000))),
        ("requests 1000000000/s", RateLimitRuleConfig(name: "r", key: .global, requests: RateLimitRate(count: 1_000_000_000, periodMilliseconds: 1_000))),
        ("requests 007/s", RateLimitRuleConfig(name: "r", key: .global, requests: RateLimitRate(count: 7, periodMilliseconds: 1_000))),
        ("concurrent 4", RateLimitRuleConfig(name: "r", key: .global, concurrent: 4)),
        ("concurrent 1000000", RateLimitRuleConfig(name: "r", key: .global, concurrent: 1_000_000)),
        ("tokens 100000/min", RateLimitRuleConfig(name: "r", key: .global, tokens: RateLimitRate(count: 100_000, periodMilliseconds: 60_000))),
        ("tokens 1000000000000/h", RateLimitRuleConfig(name: "r", key: .global, tokens: RateLimitRate(count: 1_000_000_000_000, periodMilliseconds: 3_600_000))),
        ("tokens 50/s\n requests 1/min\n concurrent 2", RateLimitRuleConfig(
            name: "r", key: .global, requests: RateLimitRate(count: 1, periodMilliseconds: 60_000), concurrent: 2,
            tokens: RateLimitRate(count: 50, periodMilliseconds: 1_000))),
    ])
    func limitDirective(directive: String, expected: RateLimitRuleConfig) throws {
        let config = try Self.parse("limit r {\n key global\n \(directive)\n}\n")
        #expect(config.rateLimits == [expected])
    }

    @Test(arguments: [
        ("key client", RateLimitKeySource.client),
        ("key global", .global),
        ("key header authorization", .header("authorization")),
        ("key header Authorization", .header("authorization")),
        ("key header X-API-Key", .header("x-api-key")),
        ("key header x_custom.key~1", .header("x_custom.key~1")),
    ])
    func keyForms(directive: String, expected: RateLimitKeySource) throws {
        let config = try Self.parse("limit r {\n \(directive)\n concurrent 1\n}\n")
        #expect(config.rateLimits.first?.key == expected)
    }

    /// Routes refer to rules by name, in the order written, whatever the declaration order;
    /// the model holds indices into `rateLimits`.
    @Test func routesResolveRuleNamesToIndices() throws {
        let text = """
            listen :1
            route /v1/ {
                limit b
                upstream a
                limit a
            }
            upstream a {
                server http://h
            }
            limit a {
                key client
                concurrent 1
            }
            route / {
                upstream a
            }
            route /x/ {
                upstream a
                limit b
            }
            limit b {
                key header x-api-key
                requests 1/s
            }

            """
        let config = try Config.parse(text: text, file: "p")
        #expect(config.rateLimits.map(\.name) == ["a", "b"])
        #expect(config.routes.map(\.prefix) == ["/v1/", "/x/", "/"])
        #expect(config.routes.map(\.limits) == [[1, 0], [1], []])
    }

    @Test(arguments: [
        ("trusted_proxies 10.0.0.0/8", ["10.0.0.0/8"]),
        ("trusted_proxies 127.0.0.1", ["127.0.0.1/32"]),
        ("trusted_proxies ::1", ["::1/128"]),
        ("trusted_proxies 10.0.0.0/8 127.0.0.1/32 ::1/128", ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]),
        ("trusted_proxies 0.0.0.0/0\ntrusted_proxies ::/0", ["0.0.0.0/0", "::/0"]),
        ("trusted_proxies 2001:DB8::/32\ntrusted_proxies 192.168.0.0/16", ["2001:db8::/32", "192.168.0.0/16"]),
        ("trusted_proxies ::ffff:10.0.0.0/104", ["10.0.0.0/8"]),
        ("trusted_proxies fe80::/10 172.16.0.0/12", ["fe80::/10", "172.16.0.0/12"]),
    ])
    func trustedProxies(directive: String, expected: [String]) throws {
        let config = try Config.parse(text: directive + "\n" + Self.base, file: "p")
        #expect(config.trustedProxies.map(\.description) == expected)
    }

    @Test func trustedRangesParseToTheSameValueAsThePublicParser() throws {
        let config = try Config.parse(text: "trusted_proxies 10.0.0.0/8 ::1\n" + Self.base, file: "p")
        #expect(config.trustedProxies == [try IPRange(parsing: "10.0.0.0/8"), try IPRange(parsing: "::1/128")])
        #expect(throws: ConfigError(file: "command line", line: 0, message: "bad address range 'x': expected an IPv4 or IPv6 address with an optional /PREFIX, e.g. 10.0.0.0/8 or ::1/128")) {
            try IPRange(parsing: "x")
        }
    }

    /// One bad file: expected line and message fragments.
    static let errors: [ConfigFileErrorTests.Case] = [
        // Block structure and names.
        .init("limit without {", "limit per_user\n", line: 1,
              "'limit' starts a block: write 'limit NAME {' with the '{' on the same line (inside a route block, 'limit NAME' applies a rule)"),
        .init("bare limit", "limit\n", line: 1, "'limit' starts a block"),
        .init("limit without name", "limit {\n}\n", line: 1, "missing value: 'limit' needs NAME, e.g. 'limit NAME {'"),
        .init("limit with two names", "limit a b {\n}\n", line: 1, "too many values for 'limit': expected one NAME, got 2"),
        .init("bad limit name", "limit a/b {\n}\n", line: 1, "bad limit name 'a/b': use 1-64 letters, digits, '_', '-' or '.'"),
        .init("duplicate limit", "limit a {\n  key global\n  concurrent 1\n}\nlimit a {\n}\n", line: 5,
              "duplicate limit 'a' (first declared on line 1)"),
        .init("limit block inside a route", "route / {\n  limit a {\n}\n", line: 2, "blocks do not nest: 'limit' inside route '/'"),
        .init("unclosed limit", "limit a {\n  key global\n", line: 1, "unclosed block: limit 'a' opened here has no closing '}'"),
        .init("unknown key in limit", "limit a {\n  burst 5\n}\n", line: 2, "unknown key 'burst' in limit 'a'"),
        .init("typo in limit", "limit a {\n  requets 10/s\n}\n", line: 2, "unknown key 'requets' in limit 'a' (did you mean 'requests'?)"),
        .init("typo concurrent", "limit a {\n  concurent 4\n}\n", line: 2, "(did you mean 'concurrent'?)"),
        .init("limit key in a route", "route / {\n  requests 10/s\n}\n", line: 2,
              "key 'requests' is not allowed in route '/'; it belongs in a 'limit' block"),
        .init("limit key at top level", "tokens 5/s\n", line: 1, "key 'tokens' is not allowed at the top level; it belongs in a 'limit' block"),
        .init("route's limit in an upstream", "upstream a {\n  limit x\n}\n", line: 2,
              "key 'limit' is not allowed in upstream 'a'; it belongs in a 'route' block"),
        .init("limit key used as a block", "requests {\n}\n", line: 1, "'requests' is a key, not a block; it belongs inside a 'limit' block"),
        .init("duplicate key in limit", "limit a {\n  requests 1/s\n  requests 2/s\n}\n", line: 3,
              "duplicate 'requests' in limit 'a' (first set on line 2)"),

        // key
        .init("key without value", "limit a {\n  key\n}\n", line: 2,
              "missing value: 'key' needs client, header NAME or global, e.g. 'key header authorization'"),
        .init("key header without name", "limit a {\n  key header\n}\n", line: 2, "missing value: 'key header' needs a header name"),
        .init("key header with two names", "limit a {\n  key header a b\n}\n", line: 2, "too many values for 'key header': expected one header name, got 2"),
        .init("bad header name", "limit a {\n  key header x:y\n}\n", line: 2,
              "bad header name 'x:y': expected a field name such as authorization or x-api-key"),
        .init("unknown key kind", "limit a {\n  key ip\n}\n", line: 2, "bad key 'ip': expected client, header NAME or global"),
        .init("key kind typo", "limit a {\n  key clent\n}\n", line: 2, "bad key 'clent': expected client, header NAME or global (did you mean 'client'?)"),
        .init("key client with a value", "limit a {\n  key client x\n}\n", line: 2, "too many values for 'key client': it takes nothing after 'client'"),
        .init("key global with a value", "limit a {\n  key global all\n}\n", line: 2, "too many values for 'key global'"),

        // requests
        .init("requests without value", "limit a {\n  requests\n}\n", line: 2, "missing value: 'requests' needs N/s, N/min or N/h, e.g. 'requests 10/s burst 20'"),
        .init("requests without unit", "limit a {\n  requests 10\n}\n", line: 2, "bad rate '10': expected N/s, N/min or N/h, e.g. '10/s'"),
        .init("requests with unknown unit", "limit a {\n  requests 10/sec\n}\n", line: 2, "bad rate '10/sec': unknown unit 'sec' (use s, min or h)"),
        .init("requests per m", "limit a {\n  requests 10/m\n}\n", line: 2, "unknown unit 'm' (use s, min or h) (did you mean 'min'?)"),
        .init("requests per ms", "limit a {\n  requests 10/ms\n}\n", line: 2, "unknown unit 'ms' (use s, min or h)"),
        .init("requests empty unit", "limit a {\n  requests 10/\n}\n", line: 2, "unknown unit '' (use s, min or h)"),
        .init("requests zero", "limit a {\n  requests 0/s\n}\n", line: 2, "requests must be from 1 to 1000000000 per period, got '0/s'"),
        .init("requests too many", "limit a {\n  requests 1000000001/s\n}\n", line: 2, "got '1000000001/s'"),
        .init("requests overflow", "limit a {\n  requests 99999999999999999999999/s\n}\n", line: 2, "requests must be from 1 to 1000000000 per period"),
        .init("requests fraction", "limit a {\n  requests 1.5/s\n}\n", line: 2, "bad rate '1.5/s': the count before '/' must be a whole number"),
        .init("requests negative", "limit a {\n  requests -1/s\n}\n", line: 2, "the count before '/' must be a whole number"),
        .init("requests no count", "limit a {\n  requests /s\n}\n", line: 2, "the count before '/' must be a whole number"),
        .init("burst without keyword", "limit a {\n  requests 10/s 20\n}\n", line: 2, "unexpected '20' after the rate: write 'requests 10/s burst N'"),
        .init("burst typo", "limit a {\n  requests 10/s burts 20\n}\n", line: 2, "unexpected 'burts' after the rate: write 'requests 10/s burst N' (did you mean 'burst'?)"),
        .init("burst without value", "limit a {\n  requests 10/s burst\n}\n", line: 2, "missing value: 'burst' needs N, e.g. 'requests 10/s burst 20'"),
        .init("burst zero", "limit a {\n  requests 10/s burst 0\n}\n", line: 2, "burst must be a whole number from 1 to 1000000000, got '0'"),
        .init("burst with a unit", "limit a {\n  requests 10/s burst 20/s\n}\n", line: 2, "burst must be a whole number from 1 to 1000000000, got '20/s'"),
        .init("requests with too many values", "limit a {\n  requests 10/s burst 20 30\n}\n", line: 2,
              "too many values for 'requests': expected 'requests N/UNIT [burst N]'"),

        // concurrent and tokens
        .init("concurrent without value", "limit a {\n  concurrent\n}\n", line: 2, "missing value: 'concurrent' needs N, e.g. 'concurrent 4'"),
        .init("concurrent zero", "limit a {\n  concurrent 0\n}\n", line: 2, "concurrent must be a whole number from 1 to 1000000, got '0'"),
        .init("concurrent as a rate", "limit a {\n  concurrent 4/s\n}\n", line: 2, "got '4/s'"),
        .init("tokens without value", "limit a {\n  tokens\n}\n", line: 2, "missing value: 'tokens' needs N/s, N/min or N/h, e.g. 'tokens 100000/min'"),
        .init("tokens with burst", "limit a {\n  tokens 1000/min burst 5\n}\n", line: 2,
              "too many values for 'tokens': expected one N/s, N/min or N/h, got 3 (token budgets take no burst: the budget is the burst)"),
        .init("tokens zero", "limit a {\n  tokens 0/min\n}\n", line: 2, "tokens must be from 1 to 1000000000000 per period, got '0/min'"),
        .init("tokens per day", "limit a {\n  tokens 5/d\n}\n", line: 2, "unknown unit 'd' (use s, min or h)"),

        // Checks after the whole file.
        .init("limit without key", base + "limit a {\n  concurrent 1\n}\n", line: 8,
              "limit 'a' has no 'key': add 'key header NAME', 'key client' or 'key global' inside the block"),
        .init("limit without limits", base + "limit a {\n  key client\n}\n", line: 8,
              "limit 'a' sets no limit: add 'requests N/s', 'concurrent N' or 'tokens N/min' inside the block"),
        .init("empty limit block", base + "limit a {\n}\n", line: 8, "limit 'a' has no 'key'"),
        .init("route names an unknown limit", base.replacing("upstream a\n}", with: "upstream a\n    limit per_usr\n}")
              + "limit per_user {\n  key global\n  concurrent 1\n}\n", line: 7,
              "route '/' names unknown limit 'per_usr' (did you mean 'per_user'?)"),
        .init("route names a limit when none exist", base.replacing("upstream a\n}", with: "upstream a\n    limit x\n}"), line: 7,
              "route '/' names unknown limit 'x' (no limit blocks are declared)"),
        .init("route applies a limit twice", "route / {\n  limit a\n  upstream a\n  limit a\n}\n", line: 4,
              "limit 'a' is already applied in route '/' (line 2)"),
        .init("route limit without name", "route / {\n  limit\n}\n", line: 2, "missing value: 'limit' needs NAME, e.g. 'limit per_user'"),
        .init("route limit with two names", "route / {\n  limit a b\n}\n", line: 2,
              "too many values for 'limit': expected one NAME, got 2; repeat 'limit' on separate lines to apply several rules"),

        // trusted_proxies
        .init("trusted_proxies without value", "trusted_proxies\n", line: 1,
              "missing value: 'trusted_proxies' needs one or more address ranges, e.g. 'trusted_proxies 10.0.0.0/8 ::1/128'"),
        .init("bad range", "trusted_proxies 10.0.0/8\n", line: 1,
              "bad address range '10.0.0/8': expected an IPv4 or IPv6 address with an optional /PREFIX, e.g. 10.0.0.0/8 or ::1/128"),
        .init("host name as a range", "trusted_proxies localhost\n", line: 1, "bad address range 'localhost'"),
        .init("bracketed IPv6 range", "trusted_proxies [::1]/128\n", line: 1, "bad address range '[::1]/128'"),
        .init("IPv4 prefix too long", "trusted_proxies 10.0.0.0/33\n", line: 1, "bad prefix length in '10.0.0.0/33': IPv4 prefixes are 0-32"),
        .init("IPv6 prefix too long", "trusted_proxies ::/129\n", line: 1, "bad prefix length in '::/129': IPv6 prefixes are 0-128"),
        .init("empty prefix", "trusted_proxies 10.0.0.0/\n", line: 1, "bad prefix length in '10.0.0.0/'"),
        .init("signed prefix", "trusted_proxies 10.0.0.0/+8\n", line: 1, "bad prefix length"),
        .init("host bits set", "trusted_proxies 10.0.0.1/8\n", line: 1,
              "'10.0.0.1/8' has address bits set past the /8 prefix; write '10.0.0.0/8'"),
        .init("IPv6 host bits set", "trusted_proxies 2001:db8::1/32\n", line: 1, "write '2001:db8::/32'"),
        .init("second range bad", "trusted_proxies 10.0.0.0/8 nope\n", line: 1, "bad address range 'nope'"),
        .init("duplicate range on one line", "trusted_proxies 10.0.0.0/8 10.0.0.0/8\n", line: 1,
              "duplicate trusted proxy range '10.0.0.0/8' (earlier on this line)"),
        .init("duplicate range across lines", "trusted_proxies ::1\ntrusted_proxies ::1/128\n", line: 2,
              "duplicate trusted proxy range '::1/128' (first on line 1)"),
        .init("trusted_proxies in a block", "route / {\n  trusted_proxies ::1\n}\n", line: 2,
              "key 'trusted_proxies' is not allowed in route '/'; it belongs at the top level, outside any block"),
        .init("trusted_proxies typo", "trusted_proxy 10.0.0.0/8\n", line: 1, "(did you mean 'trusted_proxies'?)"),
        .init("trusted_proxies as a block", "trusted_proxies {\n}\n", line: 1, "'trusted_proxies' is a directive, not a block: remove the '{'"),
    ]

    @Test(arguments: errors)
    func reportsLineAndMessage(_ c: ConfigFileErrorTests.Case) {
        ConfigFileErrorTests.expectError(parsing: c.text, c)
    }

    @Test(arguments: [
        ("10.0.0.0/8", "10.0.0.0/8", 8),
        ("10.1.2.3", "10.1.2.3/32", 32),
        ("0.0.0.0/0", "0.0.0.0/0", 0),
        ("::1", "::1/128", 128),
        ("::/0", "::/0", 0),
        ("2001:db8::/32", "2001:db8::/32", 32),
        ("::ffff:0:0/96", "0.0.0.0/0", 0),
        ("64:ff9b::/96", "64:ff9b::/96", 96),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8", 8),
    ])
    func rangeValues(text: String, description: String, prefixLength: Int) throws {
        let range = try ConfigError.locating(file: "t", line: 1) { () throws(ConfigValueError) in try ConfigValues.ipRange(text) }
        #expect(range.description == description)
        #expect(range.prefixLength == prefixLength)
    }
}
