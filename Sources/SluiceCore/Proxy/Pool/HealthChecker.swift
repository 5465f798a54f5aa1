import Synchronization

/// Active health checks (`health_check` in an `upstream` block): one thread per process probes every server of
/// every routed upstream that has a check, each every `interval`, one probe at a time (``HealthProbe``), and
/// reports to the server (``PoolServer/probed(passed:now:upstream:detail:)``), which logs and applies the verdict.
/// Never on a loop: a probe blocks its thread for up to its `timeout`.
///
/// Probes run in sequence, so one server is never probed twice at once, and a server that hangs delays the
/// others' turns by its timeout at most. The servers are read from the settings in force before every probe, so
/// servers added by resolution or a reload are probed from then on and retired ones no longer.
final class HealthChecker: Sendable {
    /// The settings in force (a reload replaces them).
    private let settings: Locked<ProxySettings>
    private let stopping = Atomic<Bool>(false)
    /// Posted by a reload and by `stop`, so the sleeping thread looks at once.
    private let wake = ThreadSemaphore()

    /// Without any check configured the thread still looks this often (a reload wakes it at once anyway).
    static let longestSleep: Int64 = 60_000

    init(settings: ProxySettings) {
        self.settings = Locked(settings)
    }

    /// Probes the servers of `settings` from now on (any thread).
    func watch(_ settings: ProxySettings) {
        self.settings.withLock { $0 = settings }
        wake.post()
    }

    /// Ends `probeUntilStopped` after the probe under way, if any (any thread; returns at once).
    func stop() {
        stopping.store(true, ordering: .releasing)
        wake.post()
    }

    /// The health-check thread's life: probes each server when due, sleeps until the next one is.
    func probeUntilStopped() {
        var schedule = ProbeSchedule<PoolServer>()
        while !stopping.load(ordering: .acquiring) {
            let checks = Self.checks(settings.withLock { $0 })
            let now = Syscall.monotonicMilliseconds()
            schedule.update(checks.groups, now: now)
            if let server = schedule.next(at: now), let check = checks.byServer[ObjectIdentifier(server)] {
                let outcome = check.probe.run()
                let ended = Syscall.monotonicMilliseconds()
                server.probed(passed: outcome.passed, now: ended, upstream: check.upstream, detail: outcome.detail)
                schedule.probed(server, startedAt: now, endedAt: ended)
                continue
            }
            // A name that resolves later adds servers without waking this thread: look again within an interval.
            let nextLook = min(schedule.nextDue ?? .max, now + (checks.shortestInterval ?? Self.longestSleep))
            wake.wait(milliseconds: max(1, nextLook - now))
        }
    }

    /// One server's probe and the upstream it belongs to.
    private struct Check {
        var upstream: String
        var probe: HealthProbe
    }

    /// What the settings ask to probe: the servers of each routed upstream with a check, grouped by upstream.
    private static func checks(_ settings: ProxySettings) -> (groups: [ProbeSchedule<PoolServer>.Group],
                                                             byServer: [ObjectIdentifier: Check], shortestInterval: Int64?) {
        var groups: [ProbeSchedule<PoolServer>.Group] = []
        var byServer: [ObjectIdentifier: Check] = [:]
        var shortest: Int64?
        for upstream in settings.upstreams where upstream.routed {
            guard let check = upstream.pool.config.healthCheck else { continue }
            let pool = upstream.pool
            let servers = pool.servers.filter { !$0.isRetired }
            for server in servers {
                let line = pool.lines[server.lineIndex].config
                byServer[ObjectIdentifier(server)] = Check(
                    upstream: upstream.name,
                    probe: HealthProbe(address: server.address, tls: server.tls, tlsHost: server.tlsHost,
                                       request: HealthProbe.request(check, authority: line.authority), timeout: check.timeout,
                                       expect: check.expect))
            }
            let interval = Int64(max(check.interval, 1))
            groups.append(ProbeSchedule.Group(servers: servers, interval: interval))
            shortest = min(shortest ?? interval, interval)
        }
        return (groups, byServer, shortest)
    }
}

/// When each server is next probed: a value the health-check thread keeps, a pure function of the servers in use
/// and the clock (tests drive it with plain objects and written times).
///
/// A server keeps its turn while it stays in use. Servers that appear (start-up, a reload, a name that resolves to
/// a new address) are spread evenly over their interval, the first due at once, so a fleet's probes do not all
/// leave together and a lone newcomer is probed straight away. A server no longer in use is forgotten.
struct ProbeSchedule<Server: AnyObject> {
    /// One upstream's servers and how often each is probed (milliseconds).
    struct Group {
        var servers: [Server]
        var interval: Int64
    }

    private struct Entry {
        let server: Server
        var due: Int64
        var interval: Int64
    }

    /// In the order servers appeared: ties go to the earliest.
    private var entries: [Entry] = []

    /// Brings the schedule in line with `groups` at `now`.
    mutating func update(_ groups: [Group], now: Int64) {
        var kept: [Entry] = []
        for group in groups {
            var newcomers: [Server] = []
            for server in group.servers {
                guard var entry = entries.first(where: { $0.server === server }) else {
                    newcomers.append(server)
                    continue
                }
                // A reload that shortened the interval applies from now, not after the old, longer wait.
                entry.due = min(entry.due, now + group.interval)
                entry.interval = group.interval
                kept.append(entry)
            }
            for (position, server) in newcomers.enumerated() {
                kept.append(Entry(server: server, due: now + group.interval * Int64(position) / Int64(newcomers.count),
                                  interval: group.interval))
            }
        }
        entries = kept
    }

    /// The server whose probe is due at `now` (the longest overdue first), nil when none is.
    func next(at now: Int64) -> Server? {
        var best: Entry?
        for entry in entries where entry.due <= now && entry.due < (best?.due ?? .max) { best = entry }
        return best?.server
    }

    /// When the next probe is due; nil when nothing is scheduled.
    var nextDue: Int64? { entries.map(\.due).min() }

    /// A probe of `server` ran from `startedAt` to `endedAt`: the next is one interval after this one began (the
    /// cadence does not drift by the probes' durations), and never before this one ended.
    mutating func probed(_ server: Server, startedAt: Int64, endedAt: Int64) {
        guard let index = entries.firstIndex(where: { $0.server === server }) else { return }
        entries[index].due = max(startedAt + entries[index].interval, endedAt)
    }
}
