import Testing

@testable import SluiceCore

/// The pool keys of an `upstream` block (issue 16): several servers with their options, balance, affinity,
/// passive and active health, retries; their defaults, every value accepted or refused, and the checks across
/// lines.
@Suite struct ConfigPoolTests {
    /// A file whose upstream 'a' holds `body`, starting at line 3, routed by '/'.
    static func file(_ body: String) -> String {
        "listen :8080\nupstream a {\n" + body + "\n}\nroute / {\n    upstream a\n}\n"
    }

    /// Upstream 'a' of ``file(_:)``.
    static func upstream(_ body: String) throws -> UpstreamConfig {
        try Config.parse(text: file(body), file: "p.conf").upstreams[0]
    }

    /// The defaults with `change` applied.
    static func pool(_ change: (inout UpstreamPoolConfig) -> Void) -> UpstreamPoolConfig {
        var pool = UpstreamPoolConfig()
        change(&pool)
        return pool
    }

    static let server = "server http://127.0.0.1:8000"

    @Test func defaults() throws {
        let upstream = try Self.upstream(Self.server)
        #expect(upstream.servers == [UpstreamServerConfig(scheme: .http, host: "127.0.0.1", port: 8000, line: 3)])
        #expect(upstream.pool == UpstreamPoolConfig())
        let server = upstream.servers[0]
        #expect(server.weight == 1 && server.maxStreams == 0 && !server.backup)
        let pool = upstream.pool
        #expect(pool.balance == .leastStreams && pool.affinity == nil && pool.affinityLoadFactor == 1.25 && pool.healthCheck == nil)
        #expect(pool.passiveHealth == PassiveHealthConfig(maxFails: 3, failWindow: 10_000, ejectTime: 10_000, maxEjectTime: 300_000))
        #expect(pool.retry.retries == 2 && pool.retry.retryBodyLimit == 1 << 20 && pool.retry.retryRatio == 0.2)
        #expect(pool.retry.retryOn == [.connectError, .reset, .status(502), .status(503), .status(504), .status(429)])
        #expect(RetryConfig.budgetReserve == 10 && AffinityKey.bodyReadLimit == 65_536)
        // A health check given with only its method and path.
        let check = try #require(try Self.upstream(Self.server + "\nhealth_check GET /health").pool.healthCheck)
        #expect(check == HealthCheckConfig(method: "GET", path: "/health", interval: 5_000, timeout: 2_000, expect: 200...299))
    }

    /// Each server line (after a primary at line 3, so a backup is allowed) and the server it makes at line 4.
    @Test(arguments: [
        ("server http://h", UpstreamServerConfig(scheme: .http, host: "h", port: 80, line: 4)),
        ("server http://h weight 5", UpstreamServerConfig(scheme: .http, host: "h", port: 80, weight: 5, line: 4)),
        ("server http://h:81 weight 1000 max_streams 0", UpstreamServerConfig(scheme: .http, host: "h", port: 81, weight: 1_000, line: 4)),
        ("server http://h backup", UpstreamServerConfig(scheme: .http, host: "h", port: 80, backup: true, line: 4)),
        ("server http://h backup weight 3 max_streams 1000000",
         UpstreamServerConfig(scheme: .http, host: "h", port: 80, weight: 3, maxStreams: 1_000_000, backup: true, line: 4)),
        ("server http://h max_streams 8 backup", UpstreamServerConfig(scheme: .http, host: "h", port: 80, maxStreams: 8, backup: true, line: 4)),
        ("server http://[::1]:8001/ weight 01", UpstreamServerConfig(scheme: .http, host: "::1", port: 8001, line: 4)),
    ])
    func serverLine(text: String, expected: UpstreamServerConfig) throws {
        let upstream = try Self.upstream(Self.server + "\n" + text)
        #expect(upstream.servers.count == 2)
        #expect(upstream.servers[1] == expected)
    }

    /// Each pool directive (after the server line) and the pool it makes.
    @Test(arguments: [
        ("balance least_streams", pool { _ in }),
        ("balance round_robin", pool { $0.balance = .roundRobin }),
        ("balance random", pool { $0.balance = .random }),
        ("affinity header X-Session-ID", pool { $0.affinity = .header("x-session-id") }),
        ("affinity json user", pool { $0.affinity = .json(["user"]) }),
        ("affinity json metadata.user_id", pool { $0.affinity = .json(["metadata", "user_id"]) }),
        ("affinity json a.b.c.d.e.f.g.h", pool { $0.affinity = .json(["a", "b", "c", "d", "e", "f", "g", "h"]) }),
        ("affinity prompt 2k", pool { $0.affinity = .prompt(bytes: 2_048) }),
        ("affinity prompt 1", pool { $0.affinity = .prompt(bytes: 1) }),
        ("affinity prompt 64k", pool { $0.affinity = .prompt(bytes: 65_536) }),
        ("affinity_load_factor 1.01", pool { $0.affinityLoadFactor = 1.01 }),
        ("affinity_load_factor 2", pool { $0.affinityLoadFactor = 2 }),
        ("affinity_load_factor 100", pool { $0.affinityLoadFactor = 100 }),
        ("affinity_load_factor 100.0", pool { $0.affinityLoadFactor = 100 }),
        ("max_fails 0", pool { $0.passiveHealth.maxFails = 0 }),
        ("max_fails 1000", pool { $0.passiveHealth.maxFails = 1_000 }),
        ("fail_window 30s", pool { $0.passiveHealth.failWindow = 30_000 }),
        ("eject_time 1s", pool { $0.passiveHealth.ejectTime = 1_000 }),
        ("eject_time 5m", pool { $0.passiveHealth.ejectTime = 300_000 }),
        ("max_eject_time 10s", pool { $0.passiveHealth.maxEjectTime = 10_000 }),
        ("eject_time 30s\nmax_eject_time 30s", pool { $0.passiveHealth.ejectTime = 30_000; $0.passiveHealth.maxEjectTime = 30_000 }),
        ("max_eject_time 1h\neject_time 20m", pool { $0.passiveHealth.ejectTime = 1_200_000; $0.passiveHealth.maxEjectTime = 3_600_000 }),
        ("health_check HEAD /healthz?full=1 every 10s timeout 500ms expect 200-399",
         pool { $0.healthCheck = HealthCheckConfig(method: "HEAD", path: "/healthz?full=1", interval: 10_000, timeout: 500, expect: 200...399) }),
        ("health_check GET / expect 204 timeout 1s every 2s",
         pool { $0.healthCheck = HealthCheckConfig(method: "GET", path: "/", interval: 2_000, timeout: 1_000, expect: 204...204) }),
        ("health_check GET /v1/models every 1m", pool { $0.healthCheck = HealthCheckConfig(path: "/v1/models", interval: 60_000) }),
        ("health_check GET /h expect 100-599", pool { $0.healthCheck = HealthCheckConfig(path: "/h", expect: 100...599) }),
        ("retries 0", pool { $0.retry.retries = 0 }),
        ("retries 10", pool { $0.retry.retries = 10 }),
        ("retry_on connect_error, reset, 502", pool { $0.retry.retryOn = [.connectError, .reset, .status(502)] }),
        ("retry_on 503,504", pool { $0.retry.retryOn = [.status(503), .status(504)] }),
        ("retry_on reset ,429,", pool { $0.retry.retryOn = [.reset, .status(429)] }),
        ("retry_on 500 599", pool { $0.retry.retryOn = [.status(500), .status(599)] }),
        ("retry_on off", pool { $0.retry.retryOn = [] }),
        ("retry_body_limit 0", pool { $0.retry.retryBodyLimit = 0 }),
        ("retry_body_limit 200k", pool { $0.retry.retryBodyLimit = 204_800 }),
        ("retry_body_limit 64m", pool { $0.retry.retryBodyLimit = 64 << 20 }),
        ("retry_ratio 0%", pool { $0.retry.retryRatio = 0 }),
        ("retry_ratio 12.5%", pool { $0.retry.retryRatio = 0.125 }),
        ("retry_ratio 20%", pool { $0.retry.retryRatio = 0.2 }),
        ("retry_ratio 100%", pool { $0.retry.retryRatio = 1 }),
    ])
    func poolDirective(text: String, expected: UpstreamPoolConfig) throws {
        #expect(try Self.upstream(Self.server + "\n" + text).pool == expected)
    }

    /// A block with several servers and every key, in the order a reader would write them.
    @Test func fullBlock() throws {
        let body = """
                server https://10.0.0.1:8443 weight 2 max_streams 64
                server https://10.0.0.2:8443
                server https://Replica-3.internal max_streams 16 backup
                balance round_robin
                affinity json metadata.user_id
                affinity_load_factor 1.5
                max_fails 5
                fail_window 20s
                eject_time 15s
                max_eject_time 2m
                health_check GET /health every 3s timeout 1s expect 200
                retries 3
                retry_on connect_error, reset, 503
                retry_body_limit 256k
                retry_ratio 10%
                max_idle 32
                resolve_interval 10s
                resolve_at_start required
                tls_verify off
            """
        let config = try Config.parse(text: Self.file(body), file: "p.conf")
        let pool = UpstreamPoolConfig(
            balance: .roundRobin, affinity: .json(["metadata", "user_id"]), affinityLoadFactor: 1.5,
            passiveHealth: PassiveHealthConfig(maxFails: 5, failWindow: 20_000, ejectTime: 15_000, maxEjectTime: 120_000),
            healthCheck: HealthCheckConfig(method: "GET", path: "/health", interval: 3_000, timeout: 1_000, expect: 200...200),
            retry: RetryConfig(retries: 3, retryOn: [.connectError, .reset, .status(503)], retryBodyLimit: 262_144, retryRatio: 0.1))
        let expected = UpstreamConfig(
            name: "a",
            servers: [
                UpstreamServerConfig(scheme: .https, host: "10.0.0.1", port: 8443, weight: 2, maxStreams: 64, line: 3),
                UpstreamServerConfig(scheme: .https, host: "10.0.0.2", port: 8443, line: 4),
                UpstreamServerConfig(scheme: .https, host: "Replica-3.internal", port: 443, maxStreams: 16, backup: true, line: 5),
            ],
            maxIdleConnections: 32, resolveInterval: 10_000, resolveAtStart: .required, tls: TLSClientConfig(verify: false), pool: pool)
        #expect(config.upstreams == [expected])
        #expect(config.upstreams[0].description == "https://10.0.0.1:8443 https://10.0.0.2:8443 https://Replica-3.internal:443")
        // Where a line is needed for the upstream as a whole, it is its first server's.
        #expect(config.keyLines["upstream.a.server"] == 3)
        #expect(config.serverLine(of: config.upstreams[0]) == 3)
    }

    /// `sluice check` reports each server name that does not resolve at that server's line.
    @Test func checkReportsEachServerThatDoesNotResolve() throws {
        let body = "server http://a.invalid:8000\nserver http://127.0.0.1:8001\nserver http://b.invalid:8002 backup"
        let config = try Config.parse(text: Self.file(body), file: "p.conf")
        let lookup: (String, UInt16) throws(SystemError) -> [SocketAddress] = { (host, port) throws(SystemError) in
            guard let literal = SocketAddress(numericHost: host, port: port) else {
                throw SystemError(call: "getaddrinfo(\(host))", reason: "Name or service not known")
            }
            return [literal]
        }
        let findings = UpstreamNameCheck.findings(config, file: "p.conf", lookup: lookup)
        #expect(findings.map(\.line) == [3, 5])
        #expect(findings.allSatisfy { $0.severity == .warning })
        #expect(findings[0].description.hasPrefix("p.conf:3: warning: upstream 'a' (a.invalid) does not resolve here"))
        #expect(findings[1].description.hasPrefix("p.conf:5: warning: upstream 'a' (b.invalid) does not resolve here"))
    }

    /// `--upstream URL` replaces every server line of route '/''s upstream with its one server and keeps the pool keys.
    @Test func upstreamFlagReplacesTheServers() throws {
        let body = "server http://10.0.0.1:8000 weight 3\nserver http://10.0.0.2:8000\nbalance random\nretries 1"
        var draft = try ConfigParser.parse(Array(Self.file(body).utf8), file: "p.conf")
        try draft.apply(CommandLineOverrides(upstreamURL: "https://[::1]:8443"))
        let config = try draft.resolve(file: "p.conf", sourcePath: nil)
        #expect(config.upstreams[0].servers == [UpstreamServerConfig(scheme: .https, host: "::1", port: 8443, line: 0)])
        #expect(config.upstreams[0].pool == Self.pool { $0.balance = .random; $0.retry.retries = 1 })
        #expect(config.upstreams[0].tls == TLSClientConfig())
        #expect(config.serverLine(of: config.upstreams[0]) == 2)  // the block's line: no server line names the server
    }
}
