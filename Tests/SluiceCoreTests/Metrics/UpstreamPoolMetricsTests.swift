import Testing
@testable import SluiceCore

@Suite struct UpstreamPoolMetricsTests {
    /// Loop-clock milliseconds the tests fail servers at.
    static let now: Int64 = 1_000_000
    static let ejectTime = 10_000

    /// An upstream named with a character that needs escaping, over two literal servers (no lookup), routed so that
    /// its lines are taken as servers; one failure ejects a server.
    static func config(servers: [UpstreamServerConfig]? = nil, retryOn: Set<RetryCondition> = [.status(503), .reset, .connectError],
                       affinity: AffinityKey? = .header("x-session-id")) -> Config {
        let pool = UpstreamPoolConfig(affinity: affinity, passiveHealth: PassiveHealthConfig(maxFails: 1, ejectTime: ejectTime),
                                      retry: RetryConfig(retryOn: retryOn))
        let lines = servers ?? [UpstreamServerConfig(scheme: .http, host: "127.0.0.1", port: 8001),
                                UpstreamServerConfig(scheme: .http, host: "::1", port: 8002)]
        return Config(workers: 1, listeners: [Config.defaultListenAddress],
                      upstreams: [UpstreamConfig(name: "fleet\"a", servers: lines, pool: pool)],
                      routes: [RouteConfig(prefix: "/", upstream: "fleet\"a")])
    }

    static func fleet() throws -> (MetricsRegistry, ProxySettings) {
        let registry = MetricsRegistry(workers: 1, routes: ["/"], rateLimitRules: [], logQueue: nil)
        let settings = try ProxySettings(config: config(), metrics: registry)
        registry.watch(settings)
        return (registry, settings)
    }

    /// `name{upstream="fleet\"a",server="…"…}`: the sample key as rendered.
    static func key(_ name: String, server: String? = nil, _ more: String = "") -> String {
        name + "{upstream=\"fleet\\\"a\"" + (server.map { ",server=\"\($0)\"" } ?? "") + more + "}"
    }

    @Test func serversAndUpstreamCountersAreRenderedFromThePools() throws {
        let (registry, settings) = try Self.fleet()
        let pool = settings.upstreams[0].pool
        let servers = pool.servers
        #expect(servers.map(\.label) == ["127.0.0.1:8001", "[::1]:8002"])
        let (first, second) = (servers[0], servers[1])
        first.streamStarted()
        first.streamStarted()
        second.streamStarted()
        second.streamStarted()
        second.streamEnded()
        first.counters.withLock { $0.count(status: 200); $0.countTTFT(microseconds: 3_000) }  // on the first bound (0.005)
        first.counters.withLock { $0.count(status: 204); $0.countTTFT(microseconds: 40_000) }
        first.counters.withLock { $0.count(status: 503); $0.countTTFT(microseconds: 700_000_000) }  // beyond the last bound
        second.counters.withLock { $0.count(status: 429) }
        second.failed(now: Self.now, upstream: pool.name, what: "status 429")
        pool.counters.countAffinity(.hit)
        pool.counters.countAffinity(.hit)
        pool.counters.countAffinity(.spill)
        pool.counters.countAffinity(nil)
        pool.counters.countPanic()
        pool.counters.countRetry(.status(503))
        pool.counters.countRetry(.connectError)
        pool.counters.countRetry(.connectError)
        pool.counters.countRetryRefused()

        let text = registry.render(now: Self.now)
        #expect(PrometheusCheck.check(text).isEmpty, "\(PrometheusCheck.check(text))")
        let samples = PrometheusCheck.samples(text)
        let a = "127.0.0.1:8001", b = "[::1]:8002"
        #expect(samples[Self.key("sluice_upstream_server_streams", server: a)] == "2")
        #expect(samples[Self.key("sluice_upstream_server_streams", server: b)] == "1")
        #expect(samples[Self.key("sluice_upstream_server_up", server: a)] == "1")
        #expect(samples[Self.key("sluice_upstream_server_up", server: b)] == "0", "ejected until now + eject_time")
        #expect(samples[Self.key("sluice_upstream_server_responses_total", server: a, ",code_class=\"2xx\"")] == "2")
        #expect(samples[Self.key("sluice_upstream_server_responses_total", server: a, ",code_class=\"5xx\"")] == "1")
        #expect(samples[Self.key("sluice_upstream_server_responses_total", server: a, ",code_class=\"4xx\"")] == "0")
        #expect(samples[Self.key("sluice_upstream_server_responses_total", server: b, ",code_class=\"4xx\"")] == "1")
        #expect(samples[Self.key("sluice_upstream_server_failures_total", server: a)] == "0")
        #expect(samples[Self.key("sluice_upstream_server_failures_total", server: b)] == "1")
        #expect(samples[Self.key("sluice_upstream_server_ejections_total", server: b)] == "1")
        #expect(samples[Self.key("sluice_upstream_server_ttft_seconds_bucket", server: a, ",le=\"0.005\"")] == "1")
        #expect(samples[Self.key("sluice_upstream_server_ttft_seconds_bucket", server: a, ",le=\"0.05\"")] == "2")
        #expect(samples[Self.key("sluice_upstream_server_ttft_seconds_bucket", server: a, ",le=\"600\"")] == "2")
        #expect(samples[Self.key("sluice_upstream_server_ttft_seconds_bucket", server: a, ",le=\"+Inf\"")] == "3")
        #expect(samples[Self.key("sluice_upstream_server_ttft_seconds_count", server: a)] == "3")
        #expect(samples[Self.key("sluice_upstream_server_ttft_seconds_sum", server: a)] == "700.043")
        #expect(samples[Self.key("sluice_upstream_server_ttft_seconds_count", server: b)] == "0", "a status without a time")
        #expect(samples[Self.key("sluice_affinity_total", ",result=\"hit\"")] == "2")
        #expect(samples[Self.key("sluice_affinity_total", ",result=\"spill\"")] == "1")
        #expect(samples[Self.key("sluice_affinity_total", ",result=\"nokey\"")] == "1")
        #expect(samples[Self.key("sluice_upstream_panic_total")] == "1")
        #expect(samples[Self.key("sluice_upstream_retries_refused_total")] == "1")
        #expect(samples[Self.key("sluice_upstream_retries_total", ",reason=\"connect_error\"")] == "2")
        #expect(samples[Self.key("sluice_upstream_retries_total", ",reason=\"reset\"")] == "0", "configured, never counted")
        #expect(samples[Self.key("sluice_upstream_retries_total", ",reason=\"503\"")] == "1")
        #expect(samples["sluice_upstream_retries_total{reason=\"replay\"}"] == "0")

        // retry_on's order, whatever the set's: connect_error, reset, then the statuses.
        let reasons = text.split(separator: "\n").filter { $0.hasPrefix("sluice_upstream_retries_total{upstream=") }
        #expect(reasons.map { $0.split(separator: "reason=\"")[1].prefix { $0 != "\"" } } == ["connect_error", "reset", "503"])
    }

    @Test func upFollowsEjectionsAndProbes() throws {
        let (registry, settings) = try Self.fleet()
        let pool = settings.upstreams[0].pool
        let server = pool.servers[0]
        let key = Self.key("sluice_upstream_server_up", server: server.label)
        server.failed(now: Self.now, upstream: pool.name, what: "reset")
        #expect(PrometheusCheck.samples(registry.render(now: Self.now + Int64(Self.ejectTime) - 1))[key] == "0")
        #expect(PrometheusCheck.samples(registry.render(now: Self.now + Int64(Self.ejectTime)))[key] == "1", "back when the ejection ends")
        server.probed(passed: false, now: Self.now, upstream: pool.name, detail: "status 500")
        #expect(PrometheusCheck.samples(registry.render(now: .max - 1))[key] == "0", "out while its probes fail, however late")
        server.probed(passed: true, now: Self.now, upstream: pool.name, detail: "")
        #expect(PrometheusCheck.samples(registry.render(now: Self.now))[key] == "1")
        #expect(PrometheusCheck.samples(registry.render(now: Self.now))[Self.key("sluice_upstream_server_ejections_total", server: server.label)] == "2",
                "the ejection and the failed probe")
    }

    @Test func aReloadKeepsTheCountsOfWhatItKeepsAndDropsTheSeriesOfARemovedServer() throws {
        let (registry, settings) = try Self.fleet()
        let pool = settings.upstreams[0].pool
        pool.servers[0].counters.withLock { $0.count(status: 200); $0.countTTFT(microseconds: 1_000) }
        pool.servers[1].counters.withLock { $0.count(status: 200); $0.countTTFT(microseconds: 1_000) }
        pool.counters.countRetry(.reset)
        // The second line goes, and `reset` leaves retry_on: its count stays (a counter does not vanish).
        let reloaded = try ProxySettings(config: Self.config(servers: [UpstreamServerConfig(scheme: .http, host: "127.0.0.1", port: 8001)],
                                                             retryOn: [.status(502)], affinity: nil),
                                         previous: settings, metrics: registry)
        registry.watch(reloaded)
        let text = registry.render(now: Self.now)
        #expect(PrometheusCheck.check(text).isEmpty, "\(PrometheusCheck.check(text))")
        let samples = PrometheusCheck.samples(text)
        #expect(samples[Self.key("sluice_upstream_server_responses_total", server: "127.0.0.1:8001", ",code_class=\"2xx\"")] == "1")
        #expect(!text.contains("[::1]:8002"))
        #expect(samples[Self.key("sluice_upstream_retries_total", ",reason=\"502\"")] == "0")
        #expect(samples[Self.key("sluice_upstream_retries_total", ",reason=\"reset\"")] == "1")
        #expect(!text.contains("sluice_affinity_total{"), "no affinity now, and none counted before")
    }

    @Test func withoutPoolsEveryFamilyIsStillDeclaredOnce() {
        let text = MetricsRegistry(workers: 1, routes: [], rateLimitRules: [], logQueue: nil).render()
        for family in ["sluice_upstream_server_streams", "sluice_upstream_server_up", "sluice_upstream_server_responses_total",
                       "sluice_upstream_server_failures_total", "sluice_upstream_server_ejections_total",
                       "sluice_upstream_server_ttft_seconds", "sluice_affinity_total", "sluice_upstream_panic_total",
                       "sluice_upstream_retries_total", "sluice_upstream_retries_refused_total"] {
            #expect(text.split(separator: "\n").filter { $0.hasPrefix("# TYPE \(family) ") }.count == 1, "\(family)")
        }
        #expect(PrometheusCheck.check(text).isEmpty, "\(PrometheusCheck.check(text))")
    }
}
