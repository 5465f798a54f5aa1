import Testing

@testable import SluiceCore

/// Valid config files: the shipped example, defaults, overrides, formatting leniency and
/// route lookup.
@Suite struct ConfigFileTests {
    /// `proxy.conf.example` at the package root, located from this file's path
    /// (Tests/SluiceCoreTests/Config/ → three levels up).
    static var examplePath: String {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(4)
        return parts.joined(separator: "/") + "/proxy.conf.example"
    }

    @Test func exampleFileParses() throws {
        let config = try Config.load(overrides: CommandLineOverrides(configPath: Self.examplePath))
        #expect(config.sourcePath == Self.examplePath)
        #expect(config.workers == 2)
        #expect(config.listeners == [ListenAddress(host: "127.0.0.1", port: 8080)])
        #expect(config.timeouts == Timeouts())  // the example spells out every default
        #expect(config.limits == Limits())
        // Servers carry their lines; found by text so that editing the prose above them does not break this test.
        let lines = String(decoding: try ConfigFile.readAll(Self.examplePath), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        func line(_ text: String) -> Int { (lines.firstIndex { $0.trimmingPrefix { $0 == " " } == text } ?? -1) + 1 }
        // The pool example spells out every default but affinity and the health check (both off by default).
        let pool = UpstreamPoolConfig(affinity: .header("x-session-id"), healthCheck: HealthCheckConfig(method: "GET", path: "/health"))
        #expect(config.upstreams == [
            UpstreamConfig(name: "llm", servers: [
                UpstreamServerConfig(scheme: .http, host: "127.0.0.1", port: 8000, weight: 2, maxStreams: 64,
                                     line: line("server http://127.0.0.1:8000 weight 2 max_streams 64")),
                UpstreamServerConfig(scheme: .http, host: "127.0.0.1", port: 8001, line: line("server http://127.0.0.1:8001")),
                UpstreamServerConfig(scheme: .http, host: "127.0.0.1", port: 8002, backup: true, line: line("server http://127.0.0.1:8002 backup")),
            ], maxIdleConnections: 256, pool: pool),
            UpstreamConfig(name: "hosted", servers: [UpstreamServerConfig(scheme: .https, host: "api.example.com", port: 443,
                                                                          line: line("server https://api.example.com"))],
                           maxIdleConnections: 256,
                           tls: TLSClientConfig(caFile: "/etc/ssl/certs/ca-certificates.crt", caDirectory: "/etc/ssl/certs",
                                                verify: true, serverName: "api.example.com")),
        ])
        #expect(line("server http://127.0.0.1:8001") > 0 && line("server https://api.example.com") > 0)
        #expect(config.tlsListeners.isEmpty)
        #expect(config.tls == TLSServerConfig(certificateFile: "/etc/sluice/tls/chain.pem", keyFile: "/etc/sluice/tls/key.pem",
                                              ciphers: "ECDHE+AESGCM:ECDHE+CHACHA20",
                                              ciphersuites: "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"))
        #expect(config.routes.map(\.prefix) == ["/v1/", "/"])
        #expect(config.routes.allSatisfy { $0.upstream == "llm" && $0.maxRequestBody == 32 << 20 })
        var v1Timeouts = Timeouts()
        v1Timeouts.upstreamFirstByte = 600_000
        #expect(config.routes[0].timeouts == v1Timeouts)
        #expect(config.routes[1].timeouts == Timeouts())
        #expect(config.routes.allSatisfy { $0.captureRequestBytes == 0 && $0.captureResponseBytes == 0 })
        #expect(config.log == LogConfig())  // the log block spells out every default
        #expect(config.admin == ListenAddress(host: "127.0.0.1", port: 9901))
        #expect(config.drainTimeout == Config.defaultDrainTimeout)
    }

    @Test func exampleDocumentsEveryKey() throws {
        let text = String(decoding: try ConfigFile.readAll(Self.examplePath), as: UTF8.self)
        var keys = ConfigTopLevelKey.allCases.map(\.rawValue)
        for kind in ConfigBlockKind.allCases { keys += [kind.rawValue] + kind.keys }
        for key in keys {
            // Each key appears as a directive (first word on some line), not only in prose.
            let used = text.split(separator: "\n").contains { $0.split(separator: " ").first.map(String.init) == key }
            #expect(used, "proxy.conf.example does not use '\(key)'")
        }
    }

    @Test func minimalFileGetsDefaults() throws {
        let config = try Config.parse(text: ConfigFileErrorTests.base, file: "min.conf")
        #expect(config.workers == Config.defaultWorkerCount())
        #expect(Config.workerRange.contains(config.workers))
        #expect(config.drainTimeout == 300_000)
        #expect(try Config.parse(text: "drain_timeout 2s\n" + ConfigFileErrorTests.base, file: "d.conf").drainTimeout == 2_000)
        #expect(try Config.parse(text: "drain_timeout off\n" + ConfigFileErrorTests.base, file: "d.conf").drainTimeout == 0)
        #expect(config.listeners == [ListenAddress(host: "0.0.0.0", port: 8080)])
        #expect(config.timeouts == Timeouts())
        #expect(config.limits == Limits())
        #expect(config.sourcePath == "min.conf")
        #expect(config.routes == [RouteConfig(prefix: "/", upstream: "a", timeouts: Timeouts(), maxRequestBody: 32 << 20)])
        #expect(config.routes[0].captureRequestBytes == 0 && config.routes[0].captureResponseBytes == 0)
        #expect(config.upstreams[0].maxIdleConnections == 256)
        #expect(config.log == LogConfig())
        #expect(config.admin == nil)  // no admin block: no admin listener
    }

    @Test func documentedDefaults() {
        let t = Timeouts()
        #expect([t.clientHeader, t.clientBodyIdle, t.clientKeepAlive, t.clientWrite] == [10_000, 60_000, 60_000, 60_000])
        #expect([t.upstreamConnect, t.upstreamFirstByte, t.upstreamIdle, t.total, t.upstreamPoolIdle] == [5_000, 300_000, 300_000, 0, 90_000])
        let l = Limits()
        #expect(l.maxRequestBody == 33_554_432 && l.highWatermark == 65_536 && l.lowWatermark == 32_768)
        let log = LogConfig()
        #expect(log.file == nil && log.stdout && !log.includeQuery)
        #expect([log.queueCapacity, log.fsyncInterval, log.requestBodyScanLimit] == [65_536, 1_000, 1_048_576])
        #expect(LogConfig.queueCapacityRange == 1...16_777_216)
        #expect(LogConfig.maximumRequestBodyScanLimit == 64 << 20)
        // stdout: an explicit value wins, otherwise on exactly when there is no file.
        #expect(LogConfig(file: "f").stdout == false)
        #expect(LogConfig(file: "f", stdout: true).stdout == true)
        #expect(LogConfig(stdout: false).stdout == false)
        let route = RouteConfig(prefix: "/", upstream: "a")
        #expect(route.captureRequestBytes == 0 && route.captureResponseBytes == 0)
        #expect(RouteConfig.maximumCaptureBytes == 16 << 20)
    }

    @Test func everyKeySetsItsField() throws {
        let text = """
            workers 3
            listen 10.0.0.1:1
            listen [::1]:2
            listen localhost:0
            timeouts {
                client_header 1ms
                client_body_idle 2ms
                client_keepalive 3ms
                client_write 4ms
                upstream_connect 5ms
                upstream_first_byte 6ms
                upstream_idle 7ms
                total 8ms
                upstream_pool_idle 9ms
            }
            limits {
                max_request_body 0
                high_watermark 2k
                low_watermark 1k
            }
            upstream one {
                server https://[2001:db8::1]
                max_idle 0
                resolve_interval 5s
            }
            upstream two {
                server http://b.example:81/
                resolve_interval off
            }
            route / {
                upstream one
            }
            route /api/ {
                upstream two
                upstream_first_byte 1s
                upstream_idle 2s
                total 3s
                max_request_body 5k
                capture_request 1k
                capture_response 16m
            }
            log {
                file completions.jsonl
                stdout yes
                queue 1
                fsync 250ms
                include_query on
                request_body_scan 0
            }
            admin {
                listen [::1]:9901
            }

            """
        let config = try Config.parse(text: text, file: "all.conf")
        #expect(config.workers == 3)
        #expect(config.listeners == [
            ListenAddress(host: "10.0.0.1", port: 1), ListenAddress(host: "::1", port: 2),
            ListenAddress(host: "localhost", port: 0),
        ])
        let global = Timeouts(
            clientHeader: 1, clientBodyIdle: 2, clientKeepAlive: 3, clientWrite: 4, upstreamConnect: 5,
            upstreamFirstByte: 6, upstreamIdle: 7, total: 8, upstreamPoolIdle: 9)
        #expect(config.timeouts == global)
        #expect(config.limits == Limits(maxRequestBody: 0, highWatermark: 2048, lowWatermark: 1024))
        #expect(config.upstreams == [
            UpstreamConfig(name: "one", servers: [UpstreamServerConfig(scheme: .https, host: "2001:db8::1", port: 443, line: 22)],
                           maxIdleConnections: 0, resolveInterval: 5_000),
            UpstreamConfig(name: "two", servers: [UpstreamServerConfig(scheme: .http, host: "b.example", port: 81, line: 27)],
                           maxIdleConnections: 256, resolveInterval: 0),
        ])
        var api = global
        api.upstreamFirstByte = 1_000
        api.upstreamIdle = 2_000
        api.total = 3_000
        #expect(config.routes == [
            RouteConfig(
                prefix: "/api/", upstream: "two", timeouts: api, maxRequestBody: 5 * 1024,
                captureRequestBytes: 1024, captureResponseBytes: 16 << 20),
            RouteConfig(prefix: "/", upstream: "one", timeouts: global, maxRequestBody: 0),
        ])
        #expect(config.log == LogConfig(
            file: "completions.jsonl", stdout: true, queueCapacity: 1, fsyncInterval: 250, includeQuery: true,
            requestBodyScanLimit: 0))
        #expect(config.admin == ListenAddress(host: "::1", port: 9901))
        #expect(config.upstreamIndex(named: "two") == 1)
        #expect(config.upstreamIndex(named: "three") == nil)
        #expect(config.upstreams[0].description == "https://[2001:db8::1]:443")
    }

    /// Route overrides apply on top of the global values even when the `timeouts` and
    /// `limits` blocks come after the route, and upstreams may be declared after routes.
    @Test func declarationOrderDoesNotMatter() throws {
        let text = """
            route / {
                upstream_idle 1s
                upstream late
            }
            upstream late {
                server http://h
            }
            timeouts {
                upstream_idle 9s
                upstream_connect 2s
            }
            limits {
                max_request_body 1k
            }
            listen :1

            """
        let config = try Config.parse(text: text, file: "p")
        #expect(config.routes[0].timeouts.upstreamIdle == 1_000)
        #expect(config.routes[0].timeouts.upstreamConnect == 2_000)
        #expect(config.timeouts.upstreamIdle == 9_000)
        #expect(config.routes[0].maxRequestBody == 1024)
    }

    /// Each `log` directive (given after the minimal file) and the ``LogConfig`` it yields.
    /// Relative paths have the working directory as their directory, which exists.
    @Test(arguments: [
        ("", LogConfig()),
        ("file off", LogConfig()),
        ("file c.jsonl", LogConfig(file: "c.jsonl", stdout: false)),
        ("file ./off", LogConfig(file: "./off", stdout: false)),
        ("file /c.jsonl", LogConfig(file: "/c.jsonl", stdout: false)),
        ("file c.jsonl\nstdout on", LogConfig(file: "c.jsonl", stdout: true)),
        ("file c.jsonl\nstdout auto", LogConfig(file: "c.jsonl", stdout: false)),
        ("stdout auto", LogConfig(stdout: true)),
        ("stdout off", LogConfig(stdout: false)),
        ("stdout no", LogConfig(stdout: false)),
        ("stdout false", LogConfig(stdout: false)),
        ("stdout yes", LogConfig(stdout: true)),
        ("queue 1", LogConfig(queueCapacity: 1)),
        ("queue 16777216", LogConfig(queueCapacity: 16_777_216)),
        ("queue 0065536", LogConfig()),
        ("fsync off", LogConfig(fsyncInterval: 0)),
        ("fsync 500ms", LogConfig(fsyncInterval: 500)),
        ("fsync 2m", LogConfig(fsyncInterval: 120_000)),
        ("include_query on", LogConfig(includeQuery: true)),
        ("include_query true", LogConfig(includeQuery: true)),
        ("include_query yes", LogConfig(includeQuery: true)),
        ("include_query off", LogConfig(includeQuery: false)),
        ("include_query false", LogConfig(includeQuery: false)),
        ("include_query no", LogConfig(includeQuery: false)),
        ("request_body_scan 0", LogConfig(requestBodyScanLimit: 0)),
        ("request_body_scan 512", LogConfig(requestBodyScanLimit: 512)),
        ("request_body_scan 4K", LogConfig(requestBodyScanLimit: 4096)),
        ("request_body_scan 64m", LogConfig(requestBodyScanLimit: 64 << 20)),
    ])
    func logDirective(directive: String, expected: LogConfig) throws {
        let text = ConfigFileErrorTests.base + "log {\n" + directive + "\n}\n"
        #expect(try Config.parse(text: text, file: "p").log == expected)
    }

    /// Each capture value and the bytes it sets; the other direction stays 0.
    @Test(arguments: [
        ("capture_request 0", 0, 0),
        ("capture_request 1", 1, 0),
        ("capture_request 64k", 65_536, 0),
        ("capture_request 16m", 16 << 20, 0),
        ("capture_response 0", 0, 0),
        ("capture_response 512", 0, 512),
        ("capture_response 16M", 0, 16 << 20),
        ("capture_request 1k\n capture_response 2k", 1024, 2048),
    ])
    func captureDirective(directive: String, request: Int, response: Int) throws {
        let text = "listen :1\nupstream a {\n server http://h\n}\nroute /v1/ {\n upstream a\n \(directive)\n}\nroute / {\n upstream a\n}\n"
        let config = try Config.parse(text: text, file: "p")
        #expect(config.routes[0].captureRequestBytes == request)
        #expect(config.routes[0].captureResponseBytes == response)
        // Captures are per route: the other route keeps the default.
        #expect(config.routes[1].captureRequestBytes == 0 && config.routes[1].captureResponseBytes == 0)
    }

    /// `inject_usage` per route, off unless a route says on.
    @Test(arguments: [("inject_usage on", true), ("inject_usage yes", true), ("inject_usage off", false), ("", false)])
    func injectUsageDirective(directive: String, expected: Bool) throws {
        let text = "listen :1\nupstream a {\n server http://h\n}\nroute /v1/ {\n upstream a\n \(directive)\n}\nroute / {\n upstream a\n}\n"
        let config = try Config.parse(text: text, file: "p")
        #expect(config.routes[0].injectUsage == expected)
        #expect(config.routes[1].injectUsage == false)
    }

    /// `websocket` per route, on unless a route says off; `tunnel_idle` globally (1h by default) and per route.
    @Test(arguments: [("websocket off", false), ("websocket no", false), ("websocket on", true), ("", true)])
    func websocketDirective(directive: String, expected: Bool) throws {
        let text = "listen :1\ntimeouts {\n tunnel_idle 10m\n}\nupstream a {\n server http://h\n}\n"
            + "route /ws/ {\n upstream a\n tunnel_idle 30s\n \(directive)\n}\nroute / {\n upstream a\n}\n"
        let config = try Config.parse(text: text, file: "p")
        #expect(config.routes[0].websocket == expected)
        #expect(config.routes[1].websocket)
        #expect(config.routes[0].timeouts.tunnelIdle == 30_000 && config.routes[1].timeouts.tunnelIdle == 600_000)
        #expect(Timeouts().tunnelIdle == 3_600_000)
    }

    /// Admin addresses that are accepted next to the given public listeners: different
    /// ports, different hosts on one port, families a wildcard does not cover, ephemeral ports.
    @Test(arguments: [
        ("listen :8080", "127.0.0.1:9901", ListenAddress(host: "127.0.0.1", port: 9901)),
        ("listen :8080", ":9901", ListenAddress(host: "0.0.0.0", port: 9901)),
        ("listen 127.0.0.1:8080", "[::1]:9901", ListenAddress(host: "::1", port: 9901)),
        ("listen 127.0.0.1:8080", "127.0.0.2:8080", ListenAddress(host: "127.0.0.2", port: 8080)),
        ("listen [::1]:8080", "0.0.0.0:8080", ListenAddress(host: "0.0.0.0", port: 8080)),
        ("listen 0.0.0.0:8080", "[::1]:8080", ListenAddress(host: "::1", port: 8080)),
        ("listen 127.0.0.1:0", "127.0.0.1:0", ListenAddress(host: "127.0.0.1", port: 0)),
        ("listen :8080\nlisten [::1]:8081", "localhost:9901", ListenAddress(host: "localhost", port: 9901)),
    ])
    func adminListener(listen: String, admin: String, expected: ListenAddress) throws {
        // The admin block may come before the listeners it is checked against.
        let text = "admin {\n listen \(admin)\n}\n\(listen)\nupstream a {\n server http://h\n}\nroute / {\n upstream a\n}\n"
        #expect(try Config.parse(text: text, file: "p").admin == expected)
    }

    @Test(arguments: [
        ("CRLF line endings", "listen :8080\r\nupstream a {\r\n  server http://h\r\n}\r\nroute / {\r\n  upstream a\r\n}\r\n"),
        ("byte order mark", "\u{FEFF}listen :8080\nupstream a {\n server http://h\n}\nroute / {\n upstream a\n}\n"),
        ("tabs and trailing spaces", "\tlisten\t:8080   \nupstream\ta\t{\t\n\t\tserver\thttp://h\t\n}  \nroute / {\n upstream a\n}"),
        ("comments everywhere", "# head\nlisten :8080 # trailing\nupstream a { # why\n server http://h#x # not a comment: '#' inside a word\n} # end\nroute / {\n upstream a\n}\n"),
        ("braces without spaces", "listen :8080\nupstream a{\n server http://h\n}\nroute /{\n upstream a\n}"),
        ("blank lines", "\n\n\nlisten :8080\n\n\nupstream a {\n\n server http://h\n\n}\n\nroute / {\n upstream a\n}\n\n\n"),
        ("no trailing newline", "listen :8080\nupstream a {\n server http://h\n}\nroute / {\n upstream a\n}"),
        ("workers auto", "workers auto\nlisten :8080\nupstream a {\n server http://h\n}\nroute / {\n upstream a\n}"),
    ])
    func formattingLeniency(name: String, text: String) throws {
        // "comments everywhere": '#' only starts a comment at the start of a word, so
        // "http://h#x" stays one token and is rejected as a URL with a fragment.
        if name == "comments everywhere" {
            #expect(throws: ConfigError.self) { try Config.parse(text: text, file: "p") }
            let fixed = text.replacing("http://h#x", with: "http://h")
            let config = try Config.parse(text: fixed, file: "p")
            #expect(config.upstreams.first?.servers.first?.host == "h")
            return
        }
        let config = try Config.parse(text: text, file: "p")
        #expect(config.listeners == [ListenAddress(host: "0.0.0.0", port: 8080)])
        #expect(config.upstreams.map(\.name) == ["a"])
        #expect(config.routes.map(\.prefix) == ["/"])
    }

    /// Prefixes declared in scrambled order; lookup returns the longest matching prefix.
    @Test(arguments: [
        ("/v1/chat/completions", "/v1/chat/" as String?),
        ("/v1/chat/", "/v1/chat/"),
        ("/v1/chat", "/v1/"),
        ("/v1/models", "/v1/"),
        ("/v10/models", "/v1"),
        ("/v1", "/v1"),
        ("/health", "/health"),
        ("/healthz", "/health"),
        ("/other", "/"),
        ("/", "/"),
        ("", nil),
        ("v1/chat", nil),
    ])
    func routeLookup(path: String, expected: String?) throws {
        var text = "listen :1\nupstream a {\n server http://127.0.0.1\n}\n"
        for prefix in ["/", "/v1/", "/health", "/v1/chat/", "/v1"] {
            text += "route \(prefix) {\n upstream a\n}\n"
        }
        let config = try Config.parse(text: text, file: "p")
        #expect(config.routes.map(\.prefix) == ["/v1/chat/", "/health", "/v1/", "/v1", "/"])
        #expect(try Self.servingPrefix(path, config) == expected)
    }

    @Test func noCatchAllRouteMeansNoMatch() throws {
        let text = "listen :1\nupstream a {\n server http://127.0.0.1\n}\nroute /v1/ {\n upstream a\n}\n"
        let config = try Config.parse(text: text, file: "p")
        #expect(try Self.servingPrefix("/v2/x", config) == nil)
        #expect(try Self.servingPrefix("/v1/x", config) == "/v1/")
    }

    /// The prefix of the route the proxy picks for `path` (the lookup sessions use, on the settings a config makes).
    private static func servingPrefix(_ path: String, _ config: Config) throws -> String? {
        let metrics = MetricsRegistry(workers: 1, routes: config.routes.map(\.prefix), rateLimitRules: [], logQueue: nil)
        let settings = try ProxySettings(config: config, metrics: metrics)
        let index = Array(path.utf8).withUnsafeBufferPointer { settings.routeIndex(forPath: $0.span) }
        return index.map { String(decoding: settings.routes[$0].prefix, as: UTF8.self) }
    }

    @Test func initAndAssignmentKeepRoutesSorted() {
        let short = RouteConfig(prefix: "/", upstream: "a")
        let long = RouteConfig(prefix: "/long/", upstream: "a")
        let mid1 = RouteConfig(prefix: "/ab", upstream: "a")
        let mid2 = RouteConfig(prefix: "/cd", upstream: "b")
        var config = Config(
            workers: 1, listeners: [Config.defaultListenAddress], upstreams: [],
            routes: [short, mid1, long, mid2])
        #expect(config.routes.map(\.prefix) == ["/long/", "/ab", "/cd", "/"])  // stable for ties
        config.routes = [short, mid2, mid1]
        #expect(config.routes.map(\.prefix) == ["/cd", "/ab", "/"])
        config.routes.append(RouteConfig(prefix: "/longest/", upstream: "a"))
        #expect(config.routes.first?.prefix == "/longest/")
    }
}
