import Testing

@testable import SluiceCore

/// The pool's bookkeeping with literal addresses (no DNS): which servers a config makes, what a reload keeps, and
/// the retry budget.
@Suite struct UpstreamPoolTests {
    private static func server(_ host: String, _ port: UInt16, weight: Int = 1, maxStreams: Int = 0, backup: Bool = false) -> UpstreamServerConfig {
        UpstreamServerConfig(scheme: .http, host: host, port: port, weight: weight, maxStreams: maxStreams, backup: backup)
    }

    private static func pool(_ servers: [UpstreamServerConfig], pool config: UpstreamPoolConfig = UpstreamPoolConfig(),
                             previous: UpstreamPool? = nil) -> UpstreamPool {
        UpstreamPool(upstream: UpstreamConfig(name: "llm", servers: servers, pool: config), tls: nil, lookUp: true, previous: previous, now: 0)
    }

    @Test func eachLineMakesAServerWithItsSettings() {
        let pool = Self.pool([Self.server("127.0.0.1", 8001, weight: 2), Self.server("127.0.0.2", 8002, maxStreams: 5, backup: true),
                              Self.server("127.0.0.3", 8003, weight: 0)])
        let servers = pool.servers
        #expect(pool.isResolved && pool.unresolvedReason == nil)
        #expect(servers.map(\.label) == ["127.0.0.1:8001", "127.0.0.2:8002", "127.0.0.3:8003"])
        #expect(servers.map(\.lineIndex) == [0, 1, 2])
        #expect(servers.map(\.weight) == [2, 1, 1], "a weight below 1 counts as 1")
        #expect(servers.map(\.maxStreams) == [0, 5, 0])
        #expect(servers.map(\.backup) == [false, true, false])
        #expect(Set(servers.map(\.slot)).count == 3)
        #expect(servers.allSatisfy { !$0.isRetired && $0.streams == 0 && $0.tls == nil })
    }

    @Test func twoLinesWithOneAddressMakeOneServer() {
        let pool = Self.pool([Self.server("127.0.0.1", 8001), Self.server("127.0.0.2", 8001), Self.server("127.0.0.1", 8001, weight: 3)])
        #expect(pool.servers.map(\.label) == ["127.0.0.1:8001", "127.0.0.2:8001"])
        #expect(pool.servers[0].weight == 1, "the first line's settings")
    }

    @Test func aReloadKeepsUnchangedServersAndRetiresTheRest() {
        let before = Self.pool([Self.server("127.0.0.1", 8001), Self.server("127.0.0.2", 8002), Self.server("127.0.0.3", 8003)])
        let old = before.servers
        old[0].streamStarted()
        old[0].streamStarted()
        old[1].streamStarted()
        let after = Self.pool([Self.server("127.0.0.1", 8001), Self.server("127.0.0.2", 8002, weight: 4), Self.server("127.0.0.4", 8004)],
                              previous: before)
        let new = after.servers
        #expect(new.map(\.label) == ["127.0.0.1:8001", "127.0.0.2:8002", "127.0.0.4:8004"])
        #expect(new[0] === old[0] && new[0].streams == 2 && !old[0].isRetired, "unchanged: the same server, its streams counted")
        #expect(new[1] !== old[1] && new[1].weight == 4 && new[1].streams == 0)
        #expect(old[1].isRetired && old[2].isRetired, "changed and removed servers take no new streams")
        #expect(old[1].streams == 1, "their streams in flight finish")
        #expect(!new.contains { $0.isRetired })
        // Slots key the loops' idle connections and a request's tried servers: a kept server's must not be
        // handed to a new one.
        #expect(Set(new.map(\.slot)).count == new.count, "slots \(new.map(\.slot))")
        #expect(after.counters === before.counters, "Prometheus counters do not go back")
    }

    /// Between a reload building its settings and a loop adopting them, and for any exchange that began before
    /// (retries, a held connect), the old settings' pool still chooses: its kept servers when some are kept, its
    /// own retired ones when the reload replaced them all (502 "no server left" was the answer before).
    @Test func aPoolReplacedByAReloadStillServesExchangesThatBeganUnderIt() throws {
        var random: UInt64 = 1
        let partly = Self.pool([Self.server("127.0.0.1", 8001), Self.server("127.0.0.2", 8002)])
        _ = Self.pool([Self.server("127.0.0.1", 8001, weight: 4), Self.server("127.0.0.2", 8002)], previous: partly)
        #expect(partly.servers.map(\.isRetired) == [true, false])
        for _ in 0..<8 {
            guard case .server(let chosen, _, _) = partly.choose(key: nil, tried: TriedServers(), now: 0, random: &random) else {
                Issue.record("a partly replaced pool chose nothing")
                return
            }
            #expect(chosen.label == "127.0.0.2:8002", "a kept server, never the retired one")
        }
        let wholly = Self.pool([Self.server("127.0.0.1", 8001)])
        _ = Self.pool([Self.server("127.0.0.9", 8009)], previous: wholly)
        #expect(wholly.servers[0].isRetired)
        guard case .server(let chosen, _, _) = wholly.choose(key: nil, tried: TriedServers(), now: 0, random: &random) else {
            Issue.record("a wholly replaced pool chose nothing")
            return
        }
        #expect(chosen.label == "127.0.0.1:8001")
        var tried = TriedServers()
        tried.insert(chosen.slot)
        guard case .exhausted = wholly.choose(key: nil, tried: tried, now: 0, random: &random) else {
            Issue.record("a tried server was chosen again")
            return
        }
    }

    @Test func aServerRetiredByAnAddressChangeIsNotReused() {
        let pool = Self.pool([Self.server("127.0.0.1", 8001)])
        let first = pool.servers[0]
        first.retire()
        pool.addressesChanged()
        #expect(pool.servers.count == 1 && pool.servers[0] !== first && pool.servers[0].slot != first.slot)
    }

    /// The budget starts with `RetryConfig.budgetReserve` retries; each request pays `retry_ratio` of one, and it
    /// never holds more than the reserve.
    @Test func theRetryBudgetHoldsTheReservePlusWhatRequestsPaid() {
        let pool = Self.pool([Self.server("127.0.0.1", 8001)], pool: UpstreamPoolConfig(retry: RetryConfig(retryRatio: 0.2)))
        let reserve = RetryConfig.budgetReserve
        #expect((0..<reserve).allSatisfy { _ in pool.takeRetry() })
        #expect(!pool.takeRetry(), "spent")
        for _ in 0..<4 { pool.requestStarted() }
        #expect(!pool.takeRetry(), "four requests at 20 % pay 0.8 of a retry")
        pool.requestStarted()
        #expect(pool.takeRetry() && !pool.takeRetry(), "five pay one")
        for _ in 0..<1_000 { pool.requestStarted() }
        #expect((0..<reserve).allSatisfy { _ in pool.takeRetry() } && !pool.takeRetry(), "a quiet spell banks the reserve, no more")
    }

    @Test func aZeroRatioLeavesOnlyTheReserve() {
        let pool = Self.pool([Self.server("127.0.0.1", 8001)], pool: UpstreamPoolConfig(retry: RetryConfig(retryRatio: 0)))
        #expect((0..<RetryConfig.budgetReserve).allSatisfy { _ in pool.takeRetry() })
        for _ in 0..<100 { pool.requestStarted() }
        #expect(!pool.takeRetry())
    }

    @Test func triedServersHoldAnyNumberOfSlots() {
        var tried = TriedServers()
        for slot in [3, 0, 7, 1, 9, 12] { tried.insert(slot) }
        #expect([3, 0, 7, 1, 9, 12].allSatisfy(tried.contains) && !tried.contains(2) && !tried.contains(-1) && tried.count == 6)
        tried.removeAll()
        #expect(!tried.contains(3) && !tried.contains(12) && tried.count == 0)
    }
}
