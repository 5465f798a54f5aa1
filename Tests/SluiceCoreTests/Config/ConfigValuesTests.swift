import Testing

@testable import SluiceCore

/// Durations, sizes, addresses and URLs, valid and invalid, plus the suggestion helper.
@Suite struct ConfigValuesTests {
    @Test(arguments: [
        ("off", 0),
        ("0ms", 0),
        ("0s", 0),
        ("500ms", 500),
        ("1ms", 1),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("168h", 604_800_000),
        ("600s", 600_000),
        ("0010s", 10_000),
    ])
    func validDurations(text: String, milliseconds: Int) throws {
        #expect(try ConfigValues.duration(text) == milliseconds)
    }

    @Test(arguments: [
        ("10", "duration needs a unit: '10' (use ms, s, m or h, e.g. 10s)"),
        ("0", "duration needs a unit"),
        ("", "bad duration '': expected a whole number with a unit"),
        ("s", "bad duration 's': expected"),
        ("-5s", "bad duration '-5s'"),
        ("1.5s", "use a whole number, e.g. 1500ms"),
        ("10sec", "unknown unit 'sec' (use ms, s, m or h)"),
        ("10S", "unknown unit 'S'"),
        ("1d", "unknown unit 'd'"),
        ("10 s", "unknown unit ' s'"),
        ("OFF", "bad duration 'OFF'"),
        ("169h", "duration '169h' is too large (maximum 168h)"),
        ("99999999999999999999999ms", "is too large"),
        ("605000000ms", "is too large"),
    ])
    func invalidDurations(text: String, message: String) {
        #expect {
            try ConfigValues.duration(text)
        } throws: { error in
            (error as? ConfigValueError)?.message.contains(message) == true
        }
    }

    @Test(arguments: [
        ("0", Int64(0)),
        ("512", 512),
        ("1k", 1024),
        ("64k", 65_536),
        ("64K", 65_536),
        ("10m", 10 << 20),
        ("32M", 32 << 20),
        ("1g", 1 << 30),
        ("8G", 8 << 30),
        ("9223372036854775807", Int64.max),
    ])
    func validSizes(text: String, bytes: Int64) throws {
        #expect(try ConfigValues.size(text) == bytes)
    }

    @Test(arguments: [
        ("", "bad size '': expected bytes (512) or a whole number with k, m or g"),
        ("k", "bad size 'k'"),
        ("64kb", "bad size '64kb'"),
        ("1.5m", "bad size '1.5m'"),
        ("-1", "bad size '-1'"),
        ("10t", "bad size '10t'"),
        ("9223372036854775808", "is too large"),
        ("9999999999g", "size '9999999999g' is too large"),
    ])
    func invalidSizes(text: String, message: String) {
        #expect {
            try ConfigValues.size(text)
        } throws: { error in
            (error as? ConfigValueError)?.message.contains(message) == true
        }
    }

    @Test(arguments: [
        ("127.0.0.1:8080", "127.0.0.1", UInt16(8080)),
        ("[::1]:8080", "::1", 8080),
        ("[2001:db8::17]:443", "2001:db8::17", 443),
        ("0.0.0.0:80", "0.0.0.0", 80),
        (":8080", "0.0.0.0", 8080),
        ("localhost:8080", "localhost", 8080),
        ("my-host.example.com:1", "my-host.example.com", 1),
        ("llm_backend:9000", "llm_backend", 9000),
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("[::]:65535", "::", 65_535),
    ])
    func validListenAddresses(text: String, host: String, port: UInt16) throws {
        let address = try ConfigValues.listenAddress(text)
        #expect(address == ListenAddress(host: host, port: port))
        // The description must parse back to the same value (used in logs and `check`).
        if text != ":8080" { #expect(address.description == text) }
    }

    @Test(arguments: [
        ("localhost", "missing port"),
        ("127.0.0.1", "missing port"),
        ("127.0.0.1:", "missing port after ':'"),
        ("127.0.0.1:65536", "bad port '65536', expected 0-65535"),
        ("127.0.0.1:http", "bad port 'http'"),
        ("127.0.0.1:-1", "bad port '-1'"),
        ("::1:8080", "IPv6 addresses need brackets"),
        ("[::1:8080", "missing ']'"),
        ("[::1]8080", "expected ':' after ']'"),
        ("[]:8080", "empty IPv6 address"),
        ("[zz::1]:80", "bad IPv6 address 'zz::1'"),
        ("[127.0.0.1]:80", "bad IPv6 address"),
        ("256.0.0.1:80", "bad IPv4 address '256.0.0.1'"),
        ("1.2.3:80", "bad IPv4 address"),
        ("01.2.3.4:80", "bad IPv4 address"),
        ("bad host:80", "bad host name"),
        ("-lead.example:80", "bad host name"),
        ("a..b:80", "bad host name"),
        ("", "missing port"),
        ("http://127.0.0.1:8080", "a listen address has no scheme"),
    ])
    func invalidListenAddresses(text: String, message: String) {
        #expect {
            try ConfigValues.listenAddress(text)
        } throws: { error in
            let text = (error as? ConfigValueError)?.message ?? ""
            return text.contains(message) && text.contains("expected HOST:PORT, [IPv6]:PORT or :PORT")
        }
    }

    @Test func listenAddressPublicParserUsesCommandLineAsFile() {
        #expect(throws: ConfigError.self) { try ListenAddress(parsing: "nope") }
        do {
            _ = try ListenAddress(parsing: "nope")
        } catch {
            #expect(error.file == "command line")
            #expect(error.line == 0)
            #expect(error.message.contains("missing port"))
        }
    }

    @Test(arguments: [
        ("http://127.0.0.1:8000", UpstreamScheme.http, "127.0.0.1", UInt16(8000)),
        ("http://127.0.0.1", .http, "127.0.0.1", 80),
        ("https://api.example.com", .https, "api.example.com", 443),
        ("https://api.example.com:8443", .https, "api.example.com", 8443),
        ("HTTP://host:1", .http, "host", 1),
        ("http://[::1]:8000", .http, "::1", 8000),
        ("https://[2001:db8::1]", .https, "2001:db8::1", 443),
        ("http://127.0.0.1:8000/", .http, "127.0.0.1", 8000),
        ("http://localhost", .http, "localhost", 80),
    ])
    func validUpstreamURLs(text: String, scheme: UpstreamScheme, host: String, port: UInt16) throws {
        let server = try ConfigValues.upstreamURL(text)
        #expect(server == ConfigValues.Server(scheme: scheme, host: host, port: port))
    }

    @Test(arguments: [
        ("127.0.0.1:8000", "missing scheme"),
        ("ftp://host", "unsupported scheme 'ftp', use http or https"),
        ("ws://host", "unsupported scheme 'ws'"),
        ("http://", "missing host"),
        ("http://:8000", "missing host"),
        ("http://host/v1", "must not have a path, query or fragment, found '/v1'"),
        ("http://host?x=1", "found '?x=1'"),
        ("http://host#frag", "found '#frag'"),
        ("http://user:pw@host", "user info is not supported"),
        ("http://host:0", "bad port '0', expected 1-65535"),
        ("http://host:99999", "bad port '99999'"),
        ("http://host:", "missing port after ':'"),
        ("http://::1:80", "IPv6 addresses need brackets"),
        ("http://[::1", "missing ']'"),
        ("http://[nope]:80", "bad IPv6 address"),
        ("http://300.1.1.1", "bad IPv4 address"),
        ("http://ho st", "bad host name"),
    ])
    func invalidUpstreamURLs(text: String, message: String) {
        #expect {
            try ConfigValues.upstreamURL(text)
        } throws: { error in
            let text = (error as? ConfigValueError)?.message ?? ""
            return text.contains(message) && text.contains("expected http://HOST[:PORT] or https://HOST[:PORT]")
        }
    }

    @Test(arguments: [
        ("conect_timeout", ["server", "connect_timeout"], "connect_timeout" as String?),
        ("wokers", ["workers", "listen"], "workers"),
        ("wrokers", ["workers", "listen"], "workers"),  // transposition counts as one edit
        ("WORKERS", ["workers", "listen"], "workers"),
        ("timeout", ["timeouts", "limits", "upstream", "route"], "timeouts"),
        ("client_heder", ConfigTimeoutKey.allCases.map(\.rawValue), "client_header"),
        ("banana", ["workers", "listen"], nil),
        ("x", ["workers", "listen"], nil),
        (String(repeating: "w", count: 10_000), ["workers"], nil),
    ])
    func suggestions(word: String, candidates: [String], expected: String?) {
        #expect(ConfigValues.suggestion(for: word, among: candidates) == expected)
    }

    @Test(arguments: [
        ("abc", "'abc'"),
        ("a\u{0}b", "'a\\x00b'"),
        ("tab\there", "'tab\\x09here'"),
        (String(repeating: "x", count: 100), "'" + String(repeating: "x", count: 60) + "…'"),
        ("ünï", "'ünï'"),
    ])
    func quoting(text: String, expected: String) {
        #expect(ConfigValues.quoted(text) == expected)
    }

    @Test(arguments: [("on", true), ("off", false), ("true", true), ("false", false), ("yes", true), ("no", false)])
    func validBooleans(text: String, value: Bool) throws {
        #expect(try ConfigValues.boolean(text, what: "x") == value)
    }

    @Test(arguments: [
        ("", "x must be on, off, true, false, yes or no, got ''"),
        ("1", "got '1'"),
        ("ON", "got 'ON' (did you mean 'on'?)"),
        ("Off", "(did you mean 'off'?)"),
        ("enabled", "got 'enabled'"),
        ("of", "(did you mean 'on'?)"),  // ties go to the first form
        ("auto", "x must be on, off"),
    ])
    func invalidBooleans(text: String, message: String) {
        #expect {
            try ConfigValues.boolean(text, what: "x")
        } throws: { error in
            (error as? ConfigValueError)?.message.contains(message) == true
        }
    }

    @Test func booleanErrorListsExtraForms() {
        #expect {
            try ConfigValues.boolean("autp", what: "stdout", extraForms: ["auto"])
        } throws: { error in
            (error as? ConfigValueError)?.message
                == "stdout must be auto, on, off, true, false, yes or no, got 'autp' (did you mean 'auto'?)"
        }
    }

    @Test(arguments: [("0", 0), ("16m", 16 << 20), ("16777216", 16 << 20), ("1k", 1024), ("7", 7)])
    func boundedSizes(text: String, bytes: Int) throws {
        #expect(try ConfigValues.size(text, in: 0...(16 << 20), what: "s") == bytes)
    }

    @Test(arguments: [
        ("17m", "s must be from 0 to 16m (0 to 16777216 bytes), got '17m'"),
        ("16777217", "got '16777217'"),
        ("1g", "got '1g'"),
        ("99999999999999999999", "size '99999999999999999999' is too large; s must be from 0 to 16m"),
        ("-1", "bad size '-1': expected bytes (512) or a whole number with k, m or g (64k, 10m, 1g); s must be from 0 to 16m"),
    ])
    func invalidBoundedSizes(text: String, message: String) {
        #expect {
            try ConfigValues.size(text, in: 0...(16 << 20), what: "s")
        } throws: { error in
            (error as? ConfigValueError)?.message.contains(message) == true
        }
    }

    @Test(arguments: [(0, "0"), (512, "512"), (1024, "1k"), (1536, "1536"), (64 << 20, "64m"), (1 << 30, "1g"), (3 << 30, "3g")])
    func sizeTexts(bytes: Int, text: String) {
        #expect(ConfigValues.sizeText(bytes) == text)
    }

    /// Which admin/public address pairs share a socket.
    @Test(arguments: [
        ("127.0.0.1:9901", "127.0.0.1:9901", "same"),
        ("localhost:9901", "LOCALHOST:9901", "same"),
        ("[::1]:9901", "[::1]:9901", "same"),
        (":9901", "0.0.0.0:9901", "same"),
        ("127.0.0.1:9901", "127.0.0.1:9902", "none"),
        ("127.0.0.1:9901", "127.0.0.2:9901", "none"),
        ("127.0.0.1:0", "127.0.0.1:0", "none"),  // two ephemeral ports never collide
        ("127.0.0.1:9901", ":9901", "wildcard"),
        (":9901", "127.0.0.1:9901", "wildcard"),
        (":9901", "localhost:9901", "wildcard"),
        (":9901", "[::1]:9901", "none"),  // 0.0.0.0 covers IPv4 only
        ("[::]:9901", "127.0.0.1:9901", "wildcard"),  // :: is dual-stack by default
        ("[::1]:9901", "[::]:9901", "wildcard"),
        ("[::]:9901", "0.0.0.0:9901", "wildcard"),
        ("localhost:9901", "127.0.0.1:9901", "none"),  // names are not resolved
    ])
    func adminOverlap(admin: String, public: String, expected: String) throws {
        let overlap = ConfigDraft.overlap(admin: try ListenAddress(parsing: admin), public: try ListenAddress(parsing: `public`))
        let name = switch overlap {
        case .same: "same"
        case .wildcard: "wildcard"
        case nil: "none"
        }
        #expect(name == expected)
    }
}
