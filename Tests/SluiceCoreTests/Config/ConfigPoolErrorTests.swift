import Testing

@testable import SluiceCore

/// Every error of the pool keys of an `upstream` block: the line it points at and what the message says. Bodies
/// go into ``ConfigPoolTests/file(_:)``, so their first line is line 3 of the file.
@Suite struct ConfigPoolErrorTests {
    typealias Case = ConfigFileErrorTests.Case

    /// `body` after a valid server line (line 3), so its first line is line 4.
    static func served(_ body: String) -> String { ConfigPoolTests.server + "\n" + body }

    static let cases: [Case] = [
        // Server lines.
        Case("server without URL", "server", line: 3,
             "missing value: 'server' needs URL, e.g. 'server http://127.0.0.1:8000' (options: weight N, max_streams N, backup)"),
        Case("server option typo", "server http://h wieght 2", line: 3,
             "unknown server option 'wieght': expected weight N, max_streams N or backup (did you mean 'weight'?)"),
        Case("server option unknown", "server http://h primary", line: 3,
             "unknown server option 'primary': expected weight N, max_streams N or backup"),
        Case("two URLs on one line", "server http://a http://b", line: 3, "one server per line: write 'server http://b' on a line of its own"),
        Case("weight without value", "server http://h weight", line: 3, "missing value: 'weight' needs N, e.g. 'server http://h weight 2'"),
        Case("max_streams without value", "server http://h backup max_streams", line: 3,
             "missing value: 'max_streams' needs N, e.g. 'server http://h max_streams 32'"),
        Case("weight zero", "server http://h weight 0", line: 3, "weight must be a whole number from 1 to 1000, got '0'"),
        Case("weight too large", "server http://h weight 1001", line: 3, "weight must be a whole number from 1 to 1000, got '1001'"),
        Case("weight negative", "server http://h weight -1", line: 3, "got '-1'"),
        Case("weight fraction", "server http://h weight 1.5", line: 3, "got '1.5'"),
        Case("weight followed by an option", "server http://h weight backup", line: 3, "weight must be a whole number from 1 to 1000, got 'backup'"),
        Case("max_streams too large", "server http://h max_streams 1000001", line: 3,
             "max_streams must be a whole number from 0 to 1000000, got '1000001'"),
        Case("max_streams negative", "server http://h max_streams -1", line: 3, "got '-1'"),
        Case("backup twice", "server http://h backup backup", line: 3, "'backup' is given twice on this server line"),
        Case("weight twice", "server http://h weight 2 weight 3", line: 3, "'weight' is given twice on this server line"),
        Case("bad URL", "server ftp://h", line: 3, "bad upstream URL 'ftp://h': unsupported scheme 'ftp'"),
        Case("URL with a path", served("server http://h/v1 weight 2"), line: 4, "must not have a path, query or fragment, found '/v1'"),

        // Checks across the servers of one block.
        Case("no server", "max_fails 3", line: 2, "upstream 'a' has no 'server': add e.g. 'server http://127.0.0.1:8000' inside the block"),
        Case("duplicate server", served("server http://127.0.0.1:8000"), line: 4,
             "duplicate server 'http://127.0.0.1:8000' in upstream 'a' (first on line 3)"),
        Case("duplicate server, default port and case", "server http://h\nserver http://b\nserver http://H:80 backup", line: 5,
             "duplicate server 'http://H:80' in upstream 'a' (first on line 3)"),
        Case("mixed schemes", "server http://a\nserver http://b\nserver https://c", line: 5,
             "upstream 'a' mixes schemes: this server is https:// but line 3's is http://; declare another upstream for the https servers"),
        Case("every server a backup", "server http://a backup\nserver http://b backup", line: 2,
             "every server of upstream 'a' is a backup: remove 'backup' from at least one"),
        Case("tls key without an https server", "server http://a\nserver http://b\ntls_verify off", line: 5,
             "tls_* settings apply to https upstreams; upstream 'a' is http://"),

        // Keys: typos, wrong blocks, duplicates.
        Case("pool key typo", served("max_fail 3"), line: 4, "unknown key 'max_fail' in upstream 'a' (did you mean 'max_fails'?)"),
        Case("retry_on typo", served("retry_onn reset"), line: 4, "unknown key 'retry_onn' in upstream 'a' (did you mean 'retry_on'?)"),
        Case("health_check typo", served("health_chek GET /h"), line: 4, "(did you mean 'health_check'?)"),
        Case("balance typo", served("balanse random"), line: 4, "(did you mean 'balance'?)"),
        Case("pool key typo at the top level", "retry_ration 20%\n", line: 1,
             "unknown key 'retry_ration' at the top level (did you mean 'retry_ratio' in an 'upstream' block?)"),
        Case("pool key in a route", "route / {\n  balance random\n}\n", line: 2,
             "key 'balance' is not allowed in route '/'; it belongs in an 'upstream' block"),
        Case("pool key at the top level", "retries 2\n", line: 1, "key 'retries' is not allowed at the top level; it belongs in an 'upstream' block"),
        Case("duplicate pool key", served("balance random\nbalance random"), line: 5, "duplicate 'balance' in upstream 'a' (first set on line 4)"),
        Case("duplicate health_check", served("health_check GET /a\nhealth_check GET /b"), line: 5, "duplicate 'health_check' in upstream 'a'"),

        // balance.
        Case("balance without value", served("balance"), line: 4,
             "missing value: 'balance' needs least_streams, round_robin or random, e.g. 'balance least_streams'"),
        Case("balance typo", served("balance least_stream"), line: 4,
             "balance must be least_streams, round_robin or random, got 'least_stream' (did you mean 'least_streams'?)"),
        Case("balance two values", served("balance random round_robin"), line: 4, "too many values for 'balance'"),

        // affinity.
        Case("affinity without value", served("affinity"), line: 4,
             "missing value: 'affinity' needs header NAME, json PATH or prompt SIZE, e.g. 'affinity header x-session-id'"),
        Case("affinity unknown kind", served("affinity cookie session"), line: 4,
             "bad affinity 'cookie': expected header NAME, json PATH or prompt SIZE"),
        Case("affinity kind typo", served("affinity heder x-session-id"), line: 4, "bad affinity 'heder'", "(did you mean 'header'?)"),
        Case("affinity header without name", served("affinity header"), line: 4,
             "missing value: 'affinity header' needs NAME, e.g. 'affinity header x-session-id'"),
        Case("affinity header with two names", served("affinity header a b"), line: 4,
             "too many values for 'affinity header': expected one NAME, got 2"),
        Case("affinity header not a token", served("affinity header x-session:id"), line: 4, "bad header name 'x-session:id'"),
        Case("affinity json without path", served("affinity json"), line: 4,
             "missing value: 'affinity json' needs PATH, e.g. 'affinity json metadata.user_id'"),
        Case("affinity json empty part", served("affinity json metadata..user_id"), line: 4,
             "bad JSON path 'metadata..user_id': each part between dots must be a key, e.g. metadata.user_id"),
        Case("affinity json leading dot", served("affinity json .user"), line: 4, "bad JSON path '.user'"),
        Case("affinity json trailing dot", served("affinity json user."), line: 4, "bad JSON path 'user.'"),
        Case("affinity json index", served("affinity json messages[0].content"), line: 4,
             "array indexes and quotes are not supported; name object keys"),
        Case("affinity json too deep", served("affinity json a.b.c.d.e.f.g.h.i"), line: 4,
             "JSON path 'a.b.c.d.e.f.g.h.i' has 9 parts; at most 8"),
        Case("affinity prompt without size", served("affinity prompt"), line: 4, "missing value: 'affinity prompt' needs SIZE, e.g. 'affinity prompt 2k'"),
        Case("affinity prompt zero", served("affinity prompt 0"), line: 4,
             "affinity prompt must be from 1 to 64k (1 to 65536 bytes), got '0'"),
        Case("affinity prompt above 64k", served("affinity prompt 65537"), line: 4, "affinity prompt must be from 1 to 64k", "got '65537'"),
        Case("affinity prompt bad size", served("affinity prompt 2kb"), line: 4, "bad size '2kb'"),

        // affinity_load_factor.
        Case("load factor without value", served("affinity_load_factor"), line: 4,
             "missing value: 'affinity_load_factor' needs a decimal number above 1, e.g. 'affinity_load_factor 1.25'"),
        Case("load factor 1", served("affinity_load_factor 1"), line: 4,
             "affinity_load_factor must be a decimal number above 1 and at most 100, e.g. 1.25, got '1'"),
        Case("load factor 1.0", served("affinity_load_factor 1.0"), line: 4, "got '1.0'"),
        Case("load factor below 1", served("affinity_load_factor 0.5"), line: 4, "got '0.5'"),
        Case("load factor above 100", served("affinity_load_factor 100.5"), line: 4, "got '100.5'"),
        Case("load factor exponent", served("affinity_load_factor 1e2"), line: 4, "got '1e2'"),
        Case("load factor inf", served("affinity_load_factor inf"), line: 4, "got 'inf'"),
        Case("load factor nan", served("affinity_load_factor nan"), line: 4, "got 'nan'"),
        Case("load factor signed", served("affinity_load_factor +2"), line: 4, "got '+2'"),
        Case("load factor trailing dot", served("affinity_load_factor 2."), line: 4, "got '2.'"),
        Case("load factor leading dot", served("affinity_load_factor .5"), line: 4, "got '.5'"),
        Case("load factor comma", served("affinity_load_factor 1,25"), line: 4, "got '1,25'"),

        // Passive health.
        Case("max_fails negative", served("max_fails -1"), line: 4, "max_fails must be a whole number from 0 to 1000, got '-1'"),
        Case("max_fails too large", served("max_fails 1001"), line: 4, "max_fails must be a whole number from 0 to 1000, got '1001'"),
        Case("max_fails off", served("max_fails off"), line: 4, "got 'off'"),
        Case("max_fails without value", served("max_fails"), line: 4, "missing value: 'max_fails' needs N (0 = off), e.g. 'max_fails 3'"),
        Case("fail_window off", served("fail_window off"), line: 4,
             "fail_window must be above 0, got 'off' (to turn passive ejection off, write 'max_fails 0')"),
        Case("fail_window 0s", served("fail_window 0s"), line: 4, "fail_window must be above 0, got '0s'"),
        Case("fail_window without unit", served("fail_window 10"), line: 4, "duration needs a unit: '10'"),
        Case("eject_time off", served("eject_time off"), line: 4, "eject_time must be above 0"),
        Case("max_eject_time 0ms", served("max_eject_time 0ms"), line: 4, "max_eject_time must be above 0"),
        Case("eject_time without value", served("eject_time"), line: 4, "missing value: 'eject_time' needs DURATION, e.g. 'eject_time 10s'"),
        Case("eject_time above max_eject_time", served("eject_time 60s\nmax_eject_time 30s"), line: 5,
             "eject_time (1m, line 4) must not exceed max_eject_time (30s, line 5) in upstream 'a'"),
        Case("max_eject_time first, then eject_time above it", served("max_eject_time 30s\neject_time 31s"), line: 5,
             "eject_time (31s, line 5) must not exceed max_eject_time (30s, line 4)"),
        Case("max_eject_time below the default eject_time", served("max_eject_time 5s"), line: 4,
             "eject_time (10s, the default) must not exceed max_eject_time (5s, line 4)"),
        Case("eject_time above the default max_eject_time", served("eject_time 10m"), line: 4,
             "eject_time (10m, line 4) must not exceed max_eject_time (5m, the default)"),

        // health_check.
        Case("health_check without value", served("health_check"), line: 4,
             "missing value: 'health_check' needs METHOD PATH, e.g. 'health_check GET /health every 5s timeout 2s expect 200'"),
        Case("health_check without path", served("health_check GET"), line: 4, "missing value: 'health_check' needs METHOD PATH"),
        Case("health_check lower-case method", served("health_check get /health"), line: 4,
             "health_check method must be GET or HEAD, got 'get' (did you mean 'GET'?)"),
        Case("health_check POST", served("health_check POST /health"), line: 4, "health_check method must be GET or HEAD, got 'POST'"),
        Case("health_check path without slash", served("health_check GET health"), line: 4,
             "bad health_check path 'health': must start with '/', e.g. /health"),
        Case("health_check path a URL", served("health_check GET http://h/health"), line: 4, "must start with '/'"),
        Case("health_check path not ASCII", served("health_check GET /santé"), line: 4,
             "must be ASCII without spaces or control characters; percent-encode other characters"),
        Case("health_check path too long", served("health_check GET /" + String(repeating: "a", count: 1_024)), line: 4,
             "health_check path is 1025 bytes long; at most 1024"),
        Case("health_check option typo", served("health_check GET /h evry 5s"), line: 4,
             "unknown health_check option 'evry': expected every DURATION, timeout DURATION or expect STATUS (did you mean 'every'?)"),
        Case("health_check option without value", served("health_check GET /h every"), line: 4,
             "missing value: 'every' needs DURATION, e.g. 'health_check GET /health every 5s timeout 2s expect 200'"),
        Case("health_check expect without value", served("health_check GET /h expect"), line: 4,
             "missing value: 'expect' needs STATUS or LOW-HIGH"),
        Case("health_check option twice", served("health_check GET /h every 5s every 6s"), line: 4,
             "'every' is given twice on this health_check line"),
        Case("health_check every off", served("health_check GET /h every off"), line: 4,
             "health_check every must be above 0, got 'off' (to stop probing, remove the line)"),
        Case("health_check timeout 0s", served("health_check GET /h timeout 0s"), line: 4, "health_check timeout must be above 0, got '0s'"),
        Case("health_check every without unit", served("health_check GET /h every 5"), line: 4, "duration needs a unit: '5'"),
        Case("health_check timeout not below every", served("health_check GET /h every 2s timeout 2s"), line: 4,
             "health_check timeout (2s) must be below its interval (every 2s)"),
        Case("health_check every below the default timeout", served("health_check GET /h every 1s"), line: 4,
             "health_check timeout (2s, the default) must be below its interval (every 1s)"),
        Case("health_check timeout above the default every", served("health_check GET /h timeout 5s"), line: 4,
             "health_check timeout (5s) must be below its interval (every 5s, the default)"),
        Case("health_check expect 600", served("health_check GET /h expect 600"), line: 4,
             "bad status '600': expected a status from 100 to 599 or a range such as 200-399"),
        Case("health_check expect 99", served("health_check GET /h expect 99"), line: 4, "bad status '99'"),
        Case("health_check expect 2xx", served("health_check GET /h expect 2xx"), line: 4, "bad status '2xx'"),
        Case("health_check expect 0200", served("health_check GET /h expect 0200"), line: 4, "bad status '0200'"),
        Case("health_check expect open range", served("health_check GET /h expect 200-"), line: 4, "bad status '200-'"),
        Case("health_check expect reversed", served("health_check GET /h expect 399-200"), line: 4,
             "bad status range '399-200': 399 is above 200"),

        // Retries.
        Case("retries too many", served("retries 11"), line: 4, "retries must be a whole number from 0 to 10, got '11'"),
        Case("retries negative", served("retries -1"), line: 4, "got '-1'"),
        Case("retries off", served("retries off"), line: 4, "got 'off'"),
        Case("retry_on without value", served("retry_on"), line: 4,
             "missing value: 'retry_on' needs conditions or off, e.g. 'retry_on connect_error, reset, 502, 503, 504, 429'"),
        Case("retry_on only commas", served("retry_on , ,"), line: 4, "missing value: 'retry_on' needs conditions or off"),
        Case("retry_on typo", served("retry_on connect_error, rest"), line: 4,
             "bad retry_on condition 'rest': expected connect_error, reset, 429 or a status from 500 to 599, or off (did you mean 'reset'?)"),
        Case("retry_on typo of connect_error", served("retry_on conect_error"), line: 4, "(did you mean 'connect_error'?)"),
        Case("retry_on a 4xx", served("retry_on 502, 404"), line: 4,
             "retry_on status '404' is not retried: only 429 and 500-599 are (a 4xx is the client's to fix)"),
        Case("retry_on beyond 599", served("retry_on 600"), line: 4, "retry_on status '600' is not retried"),
        Case("retry_on a class", served("retry_on 5xx"), line: 4, "bad retry_on condition '5xx'"),
        Case("retry_on twice the same", served("retry_on reset, 503, reset"), line: 4, "retry_on lists 'reset' twice"),
        Case("retry_on off with others", served("retry_on off, reset"), line: 4,
             "retry_on off turns every condition off; it cannot be combined with others"),
        Case("retry_body_limit too large", served("retry_body_limit 65m"), line: 4,
             "retry_body_limit must be from 0 to 64m (0 to 67108864 bytes), got '65m'"),
        Case("retry_body_limit bad size", served("retry_body_limit 1mb"), line: 4, "bad size '1mb'"),
        Case("retry_body_limit off", served("retry_body_limit off"), line: 4, "bad size 'off'"),
        Case("retry_ratio without %", served("retry_ratio 20"), line: 4,
             "retry_ratio must be a percentage from 0% to 100%, e.g. 20%, got '20'"),
        Case("retry_ratio as a fraction", served("retry_ratio 0.2"), line: 4, "got '0.2'"),
        Case("retry_ratio above 100%", served("retry_ratio 101%"), line: 4, "got '101%'"),
        Case("retry_ratio negative", served("retry_ratio -5%"), line: 4, "got '-5%'"),
        Case("retry_ratio bare %", served("retry_ratio %"), line: 4, "got '%'"),
        Case("retry_ratio without value", served("retry_ratio"), line: 4, "missing value: 'retry_ratio' needs PERCENT, e.g. 'retry_ratio 20%'"),
    ]

    @Test(arguments: cases)
    func reportsLineAndMessage(_ c: Case) {
        // Cases that start at the top level are whole files; the rest are the body of upstream 'a'.
        ConfigFileErrorTests.expectError(parsing: c.text.hasSuffix("\n") ? c.text + ConfigFileErrorTests.base : ConfigPoolTests.file(c.text), c)
    }

    /// The compiler-style line `sluice check` prints, for one error of each kind (a value, a cross-line check).
    @Test(arguments: [
        (served("retry_on rest"),
         "proxy.conf:4: bad retry_on condition 'rest': expected connect_error, reset, 429 or a status from 500 to 599, or off (did you mean 'reset'?)"),
        (served("server https://b"),
         "proxy.conf:4: upstream 'a' mixes schemes: this server is https:// but line 3's is http://; declare another upstream for the https servers"),
    ])
    func descriptionIsCompilerStyle(body: String, description: String) {
        #expect {
            try Config.parse(text: ConfigPoolTests.file(body), file: "proxy.conf")
        } throws: { error in
            (error as? ConfigError)?.description == description
        }
    }
}
