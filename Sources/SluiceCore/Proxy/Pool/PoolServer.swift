import Synchronization

/// One server of an upstream pool: one address of one `server` line. Shared by every loop; what the data path
/// reads per request (streams in flight, until when it is out) is atomic, and what changes on failures and
/// probes is under a lock taken only then.
public final class PoolServer: Sendable {
    public let address: SocketAddress
    /// The address as text, "10.0.0.7:8000" or "[fd00::7]:8000": the `server` label of the metrics, the record's
    /// `server`, the logs. Unique within a pool (two lines that resolve to one address make one server).
    public let label: String
    /// The `server` line it comes from (index into the upstream's servers).
    public let lineIndex: Int
    public let weight: Int
    public let maxStreams: Int
    public let backup: Bool
    /// For an https server: the context, and the name sent as SNI and verified.
    public let tls: TLSContext?
    public let tlsHost: String
    /// Where the loops keep this server's idle connections: unique within its pool, never reused.
    let slot: Int
    /// The server's identity for rendezvous hashing: from its label, so every sluice replica (and a restart)
    /// maps a key to the same server.
    let rendezvousSeed: UInt64

    /// Streams in flight to it, from every loop: chosen, and not yet ended.
    private let streamCount = Atomic<Int>(0)
    /// Loop-clock milliseconds until which it takes no new streams (`Int64.max` while probes fail).
    private let outUntil = Atomic<Int64>(0)
    /// Anything but good standing is recorded, so a success must take the lock to clear it.
    private let marked = Atomic<Bool>(false)
    /// Gone from the pool (its address no longer resolves, or a reload removed its line): no new streams, its
    /// idle connections are closed, its streams in flight finish.
    private let retiredFlag = Atomic<Bool>(false)
    private let health: Locked<PassiveHealth>
    let counters: Locked<PoolServerCounters>

    init(address: SocketAddress, label: String, lineIndex: Int, line: UpstreamServerConfig, tls: TLSContext?, tlsHost: String, slot: Int,
         health: PassiveHealthConfig) {
        self.address = address
        self.label = label
        self.lineIndex = lineIndex
        weight = max(line.weight, 1)
        maxStreams = line.maxStreams
        backup = line.backup
        self.tls = tls
        self.tlsHost = tlsHost
        self.slot = slot
        rendezvousSeed = SipHash24.hash(k0: 0x736C_7569_6365_7276, k1: 0x7365_7276_6572_6964, bytes: Array(label.utf8))
        self.health = Locked(PassiveHealth(config: health))
        counters = Locked(PoolServerCounters())
    }

    public var streams: Int { streamCount.load(ordering: .relaxed) }
    public var isRetired: Bool { retiredFlag.load(ordering: .relaxed) }

    /// It may take a new stream at `now` (not ejected, not failing probes, not retired); `max_streams` is the
    /// chooser's to check.
    func isAvailable(now: Int64) -> Bool {
        outUntil.load(ordering: .relaxed) <= now && !retiredFlag.load(ordering: .relaxed)
    }

    /// Until when it is out: 0 when it is not, `Int64.max` while probes fail.
    public var unavailableUntil: Int64 { outUntil.load(ordering: .relaxed) }

    func streamStarted() { streamCount.add(1, ordering: .relaxed) }
    func streamEnded() { streamCount.subtract(1, ordering: .relaxed) }

    func retire() { retiredFlag.store(true, ordering: .relaxed) }

    /// Traffic saw it fail at `now` (`what` for the log): may eject it.
    func failed(now: Int64, upstream: String, what: String) {
        let event = health.withLock { health in
            let event = health.failed(now: now)
            publish(health)
            return event
        }
        counters.withLock { $0.failures += 1 }
        if case .ejected(let until, let ejections) = event {
            counters.withLock { $0.ejections += 1 }
            OpLog.warn("upstream server ejected", ["upstream": .string(upstream), "server": .string(label), "after": .string(what),
                                                   "for_ms": .int(Int(until - now)), "ejections_in_a_row": .int(ejections)])
        }
    }

    /// Traffic saw it answer well at `now`: one atomic load unless failures are on record.
    func succeeded(now: Int64) {
        guard marked.load(ordering: .relaxed) else { return }
        health.withLock { health in
            health.succeeded(now: now)
            publish(health)
        }
    }

    /// An active probe finished at `now`.
    public func probed(passed: Bool, now: Int64, upstream: String, detail: String) {
        let event = health.withLock { health in
            let event = health.probed(passed: passed, now: now)
            publish(health)
            return event
        }
        switch event {
        case .probeFailed:
            counters.withLock { $0.ejections += 1 }
            OpLog.warn("upstream server failed its health check", ["upstream": .string(upstream), "server": .string(label),
                                                                   "error": .string(detail)])
        case .probePassed:
            OpLog.info("upstream server passed its health check; back in use", ["upstream": .string(upstream), "server": .string(label)])
        case .ejected, nil:
            break
        }
    }

    /// Active checks ended for this server (a reload kept it but removed its upstream's `health_check`).
    func probesStopped() {
        health.withLock { health in
            health.probesStopped()
            publish(health)
        }
    }

    /// Under the health lock: what the data path reads without it.
    private func publish(_ health: PassiveHealth) {
        outUntil.store(health.unavailableUntil, ordering: .relaxed)
        marked.store(!health.isClean, ordering: .relaxed)
    }
}

/// A server's totals for the metrics (all loops), updated once per exchange.
struct PoolServerCounters {
    /// Final response statuses by class: 1xx (unused), 2xx, 3xx, 4xx, 5xx.
    var responses = [Int](repeating: 0, count: 5)
    var failures = 0
    var ejections = 0
    /// Time to first response byte, by bucket of ``PoolServerCounters/ttftBounds`` (the last one `+Inf`).
    var ttftBuckets = [Int](repeating: 0, count: Self.ttftBounds.count + 1)
    var ttftSumMicroseconds = 0

    static let ttftBounds = LatencyMetric.requestLatencyBounds

    mutating func count(status: Int) {
        if (100...599).contains(status) { responses[status / 100 - 1] += 1 }
    }

    /// Time from the try's start (connect, or a pooled connection taken) to the first output: the first
    /// content-bearing event of a stream, or the first body byte of another response.
    mutating func countTTFT(microseconds: Int) {
        ttftBuckets[Self.ttftBounds.firstIndex { microseconds <= $0 } ?? Self.ttftBounds.count] += 1
        ttftSumMicroseconds += microseconds
    }
}
