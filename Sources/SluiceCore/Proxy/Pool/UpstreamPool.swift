import Synchronization

/// The servers of one upstream and what is shared about them by every loop: which addresses are in use, the
/// round-robin counter and the retry budget. Each `server` line's name is followed by the resolver thread
/// (``UpstreamAddresses``); each address it resolves to is a ``PoolServer``.
public final class UpstreamPool: Sendable {
    /// One `server` line and what its name resolves to.
    public struct Line: Sendable {
        public let config: UpstreamServerConfig
        public let addresses: UpstreamAddresses
        /// SNI and the verified name for an https server.
        public let tlsHost: String
    }

    public let name: String
    public let config: UpstreamPoolConfig
    public let lines: [Line]
    public let counters: UpstreamPoolCounters
    private let tls: TLSContext?
    private let members: Locked<Members>
    /// Whether any server is in the pool: one atomic load per request instead of the lock when none is.
    private let populated: Atomic<Bool>
    private let turn = Atomic<Int>(0)
    /// The retry budget, in thousandths of a retry: each request adds `retry_ratio`, each retry takes one.
    private let retryBalance: Atomic<Int>

    private struct Members {
        var servers: [PoolServer]
        var nextSlot: Int
    }

    /// Looks every line's name up (blocking: start-up and reload only). Servers of `previous` (the same upstream
    /// before a reload) whose line is unchanged are kept, with their streams in flight and their health; the
    /// others are retired: no new streams, the running ones finish.
    init(upstream: UpstreamConfig, tls: TLSContext?, lookUp: Bool, previous: UpstreamPool?, now: Int64) {
        name = upstream.name
        config = upstream.pool
        self.tls = tls
        // A reload keeps the counts: Prometheus counters must not go back.
        counters = previous?.counters ?? UpstreamPoolCounters()
        lines = upstream.servers.map { server in
            let previousLine = previous?.lines.first { $0.config.host == server.host && $0.config.port == server.port }
            return Line(config: server,
                        addresses: UpstreamAddresses(host: server.host, port: server.port, refreshInterval: upstream.resolveInterval, now: now,
                                                     lookUp: lookUp, previous: previousLine?.addresses),
                        tlsHost: upstream.tls?.serverName ?? server.host)
        }
        // Slots go on from the previous pool's: a kept server keeps its slot, and a new one must not share it.
        members = Locked(Members(servers: [], nextSlot: previous?.members.withLock { $0.nextSlot } ?? 0))
        populated = Atomic(false)
        retryBalance = Atomic(RetryConfig.budgetReserve * 1_000)
        rebuild(keeping: previous?.servers ?? [])
        if let previous {
            let kept = Set(servers.map(ObjectIdentifier.init))
            for server in previous.servers where !kept.contains(ObjectIdentifier(server)) { server.retire() }
            // A failing probe would otherwise keep a kept server out for good once nothing probes it.
            if upstream.pool.healthCheck == nil { servers.forEach { $0.probesStopped() } }
        }
    }

    /// The servers in use now (any thread; a lock and a retain).
    public var servers: [PoolServer] { members.withLock { $0.servers } }

    /// Some line resolves: requests can be served (one atomic load).
    public var isResolved: Bool { populated.load(ordering: .acquiring) }

    /// Why no line resolves (the first line's resolver message); nil once any does.
    public var unresolvedReason: String? {
        if isResolved { return nil }
        return lines.lazy.compactMap(\.addresses.unresolvedReason).first ?? "no server resolves"
    }

    /// The lines' names changed addresses (the resolver thread): servers are made for new addresses, kept for
    /// the ones still there (streams, health), and retired for the ones gone.
    func addressesChanged() {
        rebuild(keeping: servers)
    }

    private func rebuild(keeping previous: [PoolServer]) {
        members.withLock { members in
            var servers: [PoolServer] = []
            var labels = Set<String>()
            for (lineIndex, line) in lines.enumerated() {
                for address in line.addresses.all {
                    let label = address.description
                    guard labels.insert(label).inserted else { continue }  // two lines, one address: one server
                    if let kept = previous.first(where: { $0.label == label && $0.lineIndex == lineIndex
                                                          && Self.sameSettings($0, line, tls: line.config.scheme == .https ? tls : nil) }),
                       !kept.isRetired {
                        servers.append(kept)
                        continue
                    }
                    servers.append(PoolServer(address: address, label: label, lineIndex: lineIndex, line: line.config,
                                              tls: line.config.scheme == .https ? tls : nil, tlsHost: line.tlsHost,
                                              slot: members.nextSlot, health: config.passiveHealth))
                    members.nextSlot += 1
                }
            }
            let current = Set(servers.map(ObjectIdentifier.init))
            for server in members.servers where !current.contains(ObjectIdentifier(server)) { server.retire() }
            members.servers = servers
            populated.store(!servers.isEmpty, ordering: .releasing)
        }
    }

    /// A server is kept (its streams and health carried over) only when nothing it was made with changed; a reload
    /// builds new TLS contexts, so an https server is always made anew with the new verification settings.
    private static func sameSettings(_ server: PoolServer, _ line: Line, tls: TLSContext?) -> Bool {
        server.weight == max(line.config.weight, 1) && server.maxStreams == line.config.maxStreams && server.backup == line.config.backup
            && server.tls === tls && server.tlsHost == line.tlsHost
    }

    /// Whether a retry would find a server: one not in `tried`, available at `now` and under its `max_streams`.
    /// Asked before a retry spends the budget, so a retry never replaces a server's real answer (a 503, a refused
    /// connect) with "no server left".
    func hasUntriedServer(_ tried: TriedServers, now: Int64) -> Bool {
        members.withLock { members in
            members.servers.contains { !tried.contains($0.slot) && $0.isAvailable(now: now) && ($0.maxStreams == 0 || $0.streams < $0.maxStreams) }
        }
    }

    /// The next round-robin turn.
    func nextTurn() -> Int { turn.add(1, ordering: .relaxed).oldValue }

    /// A request started: it pays `retry_ratio` of a retry into the budget (capped, so a quiet spell does not bank
    /// an unbounded burst of retries).
    func requestStarted() {
        let deposit = Int(config.retry.retryRatio * 1_000)
        guard deposit > 0 else { return }
        let cap = RetryConfig.budgetReserve * 1_000
        var current = retryBalance.load(ordering: .relaxed)
        while current < cap {
            let (exchanged, original) = retryBalance.compareExchange(expected: current, desired: min(current + deposit, cap),
                                                                      ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    func takeRetry() -> Bool {
        var current = retryBalance.load(ordering: .relaxed)
        while current >= 1_000 {
            let (exchanged, original) = retryBalance.compareExchange(expected: current, desired: current - 1_000, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Chooses a server for a stream at `now`, skipping `tried` (slots of servers this request already used).
    func choose(key: UInt64?, tried: TriedServers, now: Int64, random: inout UInt64) -> Choice {
        let servers = self.servers
        // A pool in force never retires all its servers; one whose servers are all retired was replaced by a reload
        // (its upstream changed every server, or no route uses it now). An exchange that began under it keeps its
        // settings to the end, so it is served by those servers: the new settings' pool may not have any.
        let replaced = !servers.isEmpty && servers.allSatisfy(\.isRetired)
        let outcome = servers.withUnsafeBufferPointer { servers in
            withUnsafeTemporaryAllocation(of: ServerChooser.Candidate.self, capacity: servers.count) { candidates in
                for (index, server) in servers.enumerated() {
                    candidates.initializeElement(at: index, to: ServerChooser.Candidate(
                        streams: server.streams, weight: server.weight, maxStreams: server.maxStreams, backup: server.backup,
                        healthy: server.unavailableUntil <= now, retired: server.isRetired && !replaced,
                        tried: tried.contains(server.slot),
                        seed: server.rendezvousSeed))
                }
                defer { candidates.deinitialize() }
                return ServerChooser.choose(UnsafeBufferPointer(candidates), balance: config.balance, key: key,
                                            loadFactor: config.affinityLoadFactor,
                                            turn: config.balance == .roundRobin ? nextTurn() : 0, random: &random)
            }
        }
        switch outcome {
        case .chosen(let index, let affinity, let panic): return .server(servers[index], affinity: affinity, panic: panic)
        case .busy: return .busy
        case .exhausted: return .exhausted
        }
    }

    /// What `choose` found.
    enum Choice {
        case server(PoolServer, affinity: ServerChooser.Affinity, panic: Bool)
        /// Every server that could take it is at `max_streams`.
        case busy
        /// No server is left to try.
        case exhausted
    }
}

/// The servers one request has tried (their slots), kept inline: a request tries a handful at most.
struct TriedServers {
    private var slots: (Int, Int, Int, Int) = (-1, -1, -1, -1)
    private var overflow: [Int] = []
    private(set) var count = 0

    func contains(_ slot: Int) -> Bool {
        slots.0 == slot || slots.1 == slot || slots.2 == slot || slots.3 == slot || (count > 4 && overflow.contains(slot))
    }

    mutating func insert(_ slot: Int) {
        switch count {
        case 0: slots.0 = slot
        case 1: slots.1 = slot
        case 2: slots.2 = slot
        case 3: slots.3 = slot
        default: overflow.append(slot)
        }
        count += 1
    }

    mutating func removeAll() {
        slots = (-1, -1, -1, -1)
        overflow.removeAll(keepingCapacity: true)
        count = 0
    }
}

/// An upstream's counters for the metrics, from every loop (relaxed atomics: one add per request at most).
public final class UpstreamPoolCounters: Sendable {
    private let affinityHits = Atomic<Int>(0)
    private let affinitySpills = Atomic<Int>(0)
    private let affinityMissingKeys = Atomic<Int>(0)
    private let panics = Atomic<Int>(0)
    private let retriesByReason = Locked<[String: Int]>([:])
    private let retriesRefused = Atomic<Int>(0)

    /// An affinity outcome; nil: the request had no key.
    func countAffinity(_ outcome: ServerChooser.Affinity?) {
        switch outcome {
        case .hit: affinityHits.add(1, ordering: .relaxed)
        case .spill: affinitySpills.add(1, ordering: .relaxed)
        case .none?, nil: affinityMissingKeys.add(1, ordering: .relaxed)
        }
    }

    func countPanic() { panics.add(1, ordering: .relaxed) }

    func countRetry(_ reason: RetryCondition) { retriesByReason.withLock { $0[reason.description, default: 0] += 1 } }

    /// A retry the policy allowed but the budget did not.
    func countRetryRefused() { retriesRefused.add(1, ordering: .relaxed) }

    public var affinity: (hit: Int, spill: Int, nokey: Int) {
        (affinityHits.load(ordering: .relaxed), affinitySpills.load(ordering: .relaxed), affinityMissingKeys.load(ordering: .relaxed))
    }
    public var panicCount: Int { panics.load(ordering: .relaxed) }
    public var retries: [String: Int] { retriesByReason.withLock { $0 } }
    public var refusedRetries: Int { retriesRefused.load(ordering: .relaxed) }
}
