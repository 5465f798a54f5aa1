import Testing

@testable import SluiceCore

/// The active checks' pure parts: the status line, the request, the schedule.
@Suite struct HealthCheckerTests {
    typealias Parse = HealthProbe.StatusParse

    struct StatusRow: CustomTestStringConvertible {
        var response: String
        var expected: Parse
        var limit = HealthProbe.maxResponseBytes
        var testDescription: String { response.debugDescription }
    }

    static let statusRows: [StatusRow] = [
        StatusRow(response: "HTTP/1.1 200 OK\r\n", expected: .status(200)),
        StatusRow(response: "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", expected: .status(503)),
        StatusRow(response: "HTTP/1.0 204\r\n", expected: .status(204)),
        StatusRow(response: "HTTP/1.1 200 OK\n", expected: .status(200)),
        StatusRow(response: "HTTP/1.1 429 \r\nRetry-After: 1\r\n", expected: .status(429)),
        StatusRow(response: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", expected: .status(200)),
        StatusRow(response: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 404 Not Found\r\n", expected: .status(404)),
        StatusRow(response: "HTTP/1.1 100 Continue\n\nHTTP/1.1 502 Bad Gateway\n", expected: .status(502)),
        StatusRow(response: "HTTP/1.1 101 Switching Protocols\r\n", expected: .status(101)),
        StatusRow(response: "SSH-2.0-OpenSSH_9.6\r\n", expected: .invalid("not an HTTP/1.x response")),
        StatusRow(response: "HTTP/2 200\r\n", expected: .invalid("not an HTTP/1.x response")),
        StatusRow(response: "http/1.1 200 OK\r\n", expected: .invalid("not an HTTP/1.x response")),
        StatusRow(response: "HTTP/1.1 20 OK\r\n", expected: .invalid("not an HTTP/1.x response")),
        StatusRow(response: "HTTP/1.1 2000 OK\r\n", expected: .invalid("not an HTTP/1.x response")),
        StatusRow(response: "HTTP/1.1  200 OK\r\n", expected: .invalid("not an HTTP/1.x response")),
        StatusRow(response: "\r\nHTTP/1.1 200 OK\r\n", expected: .invalid("not an HTTP/1.x response")),
        StatusRow(response: "HTTP/1.1 100 Continue\r\n\r\nnonsense\r\n", expected: .invalid("not an HTTP/1.x response")),
        StatusRow(response: "HTTP/1.1 200 OK, and on and on", expected: .invalid("no status line in the first 16 bytes"), limit: 16),
        StatusRow(response: "HTTP/1.1 100 Continue\r\nX-Padding: xxxxxxxx", expected: .invalid("no status line in the first 32 bytes"),
                  limit: 32),
    ]

    /// The whole response gives the row's answer, and every prefix of it either waits for more or already gives
    /// that answer (and keeps giving it): a status is never read from a line that is not complete.
    @Test(arguments: statusRows)
    func statusLines(_ row: StatusRow) {
        let bytes = Array(row.response.utf8)
        #expect(HealthProbe.parseStatus(bytes, limit: row.limit) == row.expected)
        var answered = false
        for end in 0...bytes.count {
            let parse = HealthProbe.parseStatus(Array(bytes[..<end]), limit: row.limit)
            if answered || parse != .needMore {
                #expect(parse == row.expected, "prefix of \(end) bytes")
                answered = true
            }
        }
        // Up to the end of the final status line, the answer is to wait.
        let version = Array("HTTP/1.".utf8)
        if case .status = row.expected, let start = bytes.indices.last(where: { bytes[$0...].starts(with: version) }),
           let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) {
            #expect(HealthProbe.parseStatus(Array(bytes[..<newline]), limit: row.limit) == .needMore)
        }
    }

    @Test func theRequestNamesTheServerAndAsksToClose() {
        let check = HealthCheckConfig(method: "HEAD", path: "/health?deep=1")
        #expect(String(decoding: HealthProbe.request(check, authority: "10.0.0.7:8000"), as: UTF8.self)
                    == "HEAD /health?deep=1 HTTP/1.1\r\nHost: 10.0.0.7:8000\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n")
    }

    @Test(arguments: [(UpstreamScheme.http, "10.0.0.7", UInt16(80), "10.0.0.7"), (.http, "10.0.0.7", 8000, "10.0.0.7:8000"),
                      (.https, "fd00::7", 443, "[fd00::7]"), (.https, "api.example", 8443, "api.example:8443"),
                      (.http, "api.example", 443, "api.example:443"), (.http, "fd00::7", 8000, "[fd00::7]:8000")])
    func theHostIsTheServerLinesAuthority(_ row: (UpstreamScheme, String, UInt16, String)) {
        #expect(UpstreamServerConfig(scheme: row.0, host: row.1, port: row.2).authority == row.3)
    }

    // MARK: Schedule

    private final class Server: CustomStringConvertible {
        let description: String
        init(_ name: String) { description = name }
    }

    private typealias Schedule = ProbeSchedule<Server>

    @Test func newServersAreSpreadOverTheIntervalAndKeepTheirCadence() {
        let servers = ["a", "b", "c", "d"].map(Server.init)
        var schedule = Schedule()
        schedule.update([Schedule.Group(servers: servers, interval: 4_000)], now: 0)
        #expect(schedule.next(at: 0) === servers[0])
        #expect(schedule.next(at: 999) === servers[0], "still due until probed")
        schedule.probed(servers[0], startedAt: 0, endedAt: 30)
        #expect(schedule.next(at: 999) == nil && schedule.nextDue == 1_000)
        for (index, server) in servers.enumerated().dropFirst() {
            let due = Int64(index) * 1_000
            #expect(schedule.next(at: due - 1) == nil)
            #expect(schedule.next(at: due) === server)
            schedule.probed(server, startedAt: due + 5, endedAt: due + 2_000)
        }
        // One interval after each probe began, whatever it took.
        #expect(schedule.nextDue == 4_000 && schedule.next(at: 4_000) === servers[0])
        schedule.probed(servers[0], startedAt: 4_000, endedAt: 4_001)
        #expect(schedule.nextDue == 5_005)
    }

    @Test func aProbeLongerThanTheIntervalIsNotFollowedBeforeItEnds() {
        let server = Server("slow")
        var schedule = Schedule()
        schedule.update([Schedule.Group(servers: [server], interval: 1_000)], now: 0)
        schedule.probed(server, startedAt: 0, endedAt: 2_500)
        #expect(schedule.nextDue == 2_500)
    }

    @Test func serversFollowTheSettingsInForce() {
        let a = Server("a"), b = Server("b"), c = Server("c"), d = Server("d")
        var schedule = Schedule()
        schedule.update([Schedule.Group(servers: [a, b], interval: 4_000)], now: 0)
        schedule.probed(a, startedAt: 0, endedAt: 10)
        // A name resolves to one more address: the newcomer is probed at once, the others keep their turns.
        schedule.update([Schedule.Group(servers: [a, b, c], interval: 4_000)], now: 500)
        #expect(schedule.next(at: 500) === c)
        schedule.probed(c, startedAt: 500, endedAt: 510)
        #expect(schedule.nextDue == 2_000)
        // b is retired (gone from the settings): never probed again; a new upstream's servers are spread.
        schedule.update([Schedule.Group(servers: [a, c], interval: 4_000), Schedule.Group(servers: [d], interval: 10_000)], now: 600)
        #expect(schedule.next(at: 600) === d)
        schedule.probed(d, startedAt: 600, endedAt: 700)
        #expect(schedule.next(at: 3_999) == nil && schedule.nextDue == 4_000)
        // A reload shortens the interval: it applies from now, not after the old wait.
        schedule.update([Schedule.Group(servers: [a, c], interval: 1_000)], now: 800)
        #expect(schedule.nextDue == 1_800 && schedule.next(at: 1_800) === a)
        // No check left: nothing is scheduled.
        schedule.update([], now: 900)
        #expect(schedule.nextDue == nil && schedule.next(at: .max) == nil)
    }

    @Test func theLongestOverdueGoesFirst() {
        let a = Server("a"), b = Server("b")
        var schedule = Schedule()
        schedule.update([Schedule.Group(servers: [a], interval: 3_000), Schedule.Group(servers: [b], interval: 1_000)], now: 0)
        schedule.probed(a, startedAt: 0, endedAt: 1)
        schedule.probed(b, startedAt: 0, endedAt: 1)
        // The thread was held up: b (due at 1 000) waited longer than a (due at 3 000).
        #expect(schedule.next(at: 5_000) === b)
    }

    /// The thread's loop on a virtual clock: one server's probes always time out (2 s), the others answer in
    /// 10 ms. Probes run one at a time; the others' probes start at most one slow probe late, and every server
    /// keeps its cadence.
    @Test func aSlowServerDelaysTheOthersByItsTimeoutAtMost() {
        let servers = ["slow", "b", "c", "d"].map(Server.init)
        let interval: Int64 = 5_000, timeout: Int64 = 2_000
        var schedule = Schedule()
        var now: Int64 = 0
        var probes: [String: [Int64]] = [:]
        var worstLateness: [String: Int64] = [:]
        var dueAt: [String: Int64] = [:]
        schedule.update([Schedule.Group(servers: servers, interval: interval)], now: 0)
        for (index, server) in servers.enumerated() { dueAt[server.description] = interval * Int64(index) / 4 }
        while now < 60_000 {
            schedule.update([Schedule.Group(servers: servers, interval: interval)], now: now)
            guard let server = schedule.next(at: now) else {
                now = schedule.nextDue!
                continue
            }
            let name = server.description
            worstLateness[name] = max(worstLateness[name] ?? 0, now - dueAt[name]!)
            probes[name, default: []].append(now)
            let ended = now + (name == "slow" ? timeout : 10)
            schedule.probed(server, startedAt: now, endedAt: ended)
            dueAt[name] = now + interval
            now = ended
        }
        for server in servers {
            #expect(worstLateness[server.description]! <= timeout + 10, "\(server): \(worstLateness)")
            #expect((11...13).contains(probes[server.description]!.count), "\(server): \(probes[server.description]!)")
        }
    }

    // MARK: The thread

    /// The thread against real servers: one answering 200, one refusing. The refusing one is taken out, the other
    /// stays in and is probed again and again; `stop` ends the thread.
    @Test func theThreadProbesEveryServerUntilStopped() throws {
        let healthy = try ProbeOrigin(reply: Array("HTTP/1.1 200 OK\r\n\r\n".utf8), connections: 50)
        let refused = try ProbeOrigin(reply: nil).finish(returningPort: true)
        let check = HealthCheckConfig(path: "/health", interval: 20, timeout: 500)
        let servers = [UpstreamServerConfig(scheme: .http, host: "127.0.0.1", port: healthy.port),
                       UpstreamServerConfig(scheme: .http, host: "127.0.0.1", port: refused)]
        let config = Config(workers: 1, listeners: [Config.defaultListenAddress],
                            upstreams: [UpstreamConfig(name: "fleet", servers: servers, pool: UpstreamPoolConfig(healthCheck: check))],
                            routes: [RouteConfig(prefix: "/", upstream: "fleet")])
        let settings = try ProxySettings(config: config, metrics: MetricsRegistry(workers: 1, routes: ["/"], rateLimitRules: [], logQueue: nil))
        let checker = HealthChecker(settings: settings)
        let stopped = ThreadSemaphore()
        try LoopThread.spawn(name: "health-test") {
            checker.probeUntilStopped()
            stopped.post()
        }
        let pool = settings.upstreams[0].pool
        let deadline = Syscall.monotonicMilliseconds() + 5_000
        while (pool.servers[1].unavailableUntil != .max || healthy.served < 3) && Syscall.monotonicMilliseconds() < deadline {
            Syscall.sleep(milliseconds: 5)
        }
        #expect(pool.servers[1].unavailableUntil == .max, "the refusing server fails its probes")
        #expect(healthy.served >= 3 && pool.servers[0].unavailableUntil == 0, "the healthy one is probed every interval and stays in")
        checker.stop()
        #expect(stopped.wait(milliseconds: 2_000), "stop ends the thread")
        healthy.finish()
    }
}
