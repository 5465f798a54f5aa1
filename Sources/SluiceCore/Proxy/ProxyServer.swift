import Synchronization

/// What a started proxy exposes to the process that runs it: signals (drain, reload, stop) and shutdown.
/// Its methods are called from the signal-handling thread; the loops are reached through their mailboxes.
public final class RunningProxy: Sendable {
    /// The admin address, when configured.
    public let admin: String?
    /// The completion-log writer, when a sink is configured (SIGHUP calls `reopen`).
    public let completionWriter: CompletionWriter?
    public let metrics: MetricsRegistry
    /// What `/readyz` reports.
    public let readiness: Readiness
    /// Serializes reloads (SIGHUP and `POST /reload`) and keeps `GET /reload-status`; the process enables it
    /// when it has a config file to re-read.
    public let reloads: ReloadCoordinator
    let loops: [LoopHandoff]
    let stoppedLoops: StopCounter
    private let state: Locked<State>
    /// Ends the resolver thread (`refreshUpstreamAddressesUntilStopped`).
    private let resolverStopping = Atomic<Bool>(false)
    /// Posted when the settings change or the server stops, so the sleeping resolver looks at once.
    private let resolverWake = ThreadSemaphore()
    /// Probes the servers of upstreams with a `health_check`, on a thread of its own.
    let healthChecks: HealthChecker

    /// What a reload replaces.
    private struct State {
        var config: Config
        var settings: ProxySettings
        /// Each configured listen address, the local address it is bound to, and its socket on every worker.
        var listeners: [BoundListener]
    }

    init(config: Config, settings: ProxySettings, listeners: [BoundListener],
         admin: String?, completionWriter: CompletionWriter?, metrics: MetricsRegistry, readiness: Readiness,
         reloads: ReloadCoordinator, loops: [LoopHandoff], stoppedLoops: StopCounter, healthChecks: HealthChecker) {
        self.admin = admin
        self.healthChecks = healthChecks
        self.reloads = reloads
        self.completionWriter = completionWriter
        self.metrics = metrics
        self.readiness = readiness
        self.loops = loops
        self.stoppedLoops = stoppedLoops
        state = Locked(State(config: config, settings: settings, listeners: listeners))
    }

    /// Bound public addresses, "host:port".
    public var listeners: [String] { state.withLock { state -> [String] in state.listeners.map { $0.bound } } }
    /// The bound addresses among `listeners` that terminate TLS.
    public var tlsListeners: [String] { state.withLock { state -> [String] in state.listeners.filter { $0.tls }.map { $0.bound } } }

    /// The configuration in force (after any reload).
    public var config: Config { state.withLock { $0.config } }

    /// The routed upstreams of the settings in force whose names have not resolved yet.
    public var unresolvedUpstreams: [UnresolvedUpstream] { state.withLock { $0.settings }.unresolvedUpstreams }

    /// Open client connections over all loops.
    public var openConnections: Int { metrics.loops.reduce(0) { $0 + $1.activeConnections } }

    /// SIGTERM: readiness turns false, every loop closes its listeners and idle connections and lets exchanges
    /// in flight finish; `isDrained` turns true when none is left. Returns at once.
    public func beginDrain() {
        readiness.startDraining()
        // A reload under way finishes (a draining loop closes the listeners it adds); queued ones are answered 503.
        reloads.close()
        loops.forEach { $0.loop.send(.drain) }
    }

    /// Whether every loop has drained (see `beginDrain`).
    public var isDrained: Bool { loops.allSatisfy { $0.loop.isDrained } }

    /// Applies `config` to new exchanges: routes, upstreams, limits, timeouts, trusted proxies, what the log
    /// records; listen addresses are bound or closed as they appear or disappear, and the sockets of unchanged
    /// ones are kept, so no connection is refused meanwhile. Exchanges in flight keep their settings.
    /// What only a restart can change (workers, admin, log sinks, watermarks) keeps its running value.
    /// - Returns: one message per setting kept because it needs a restart.
    /// - Throws: when a `resolve_at_start required` upstream does not resolve or a new address cannot be bound;
    ///   nothing changed then.
    public func reload(_ newConfig: Config) throws(StartError) -> [String] {
        try state.withLock { state throws(StartError) -> [String] in
            let (config, kept) = Self.restartOnly(newConfig, running: state.config)
            var added: [BoundListener] = []
            do throws(StartError) {
                for address in config.listeners {
                    let tls = config.tlsListeners.contains(address)
                    guard !state.listeners.contains(where: { $0.address == address && $0.tls == tls }) else { continue }
                    // The same address with TLS switched: this process holds the socket, so the new listener
                    // shares it (a second bind would fail, as for anyone else) and no connection is refused.
                    added.append(try ProxyServer.bind(address, tls: tls, workers: loops.count,
                                                      sharing: state.listeners.first { $0.address == address },
                                                      ownListeners: state.listeners + added))
                }
                let settings: ProxySettings
                settings = try ProxySettings(config: config, previous: state.settings, metrics: metrics)
                let unchanged = state.listeners.filter { old in
                    config.listeners.contains(old.address) && config.tlsListeners.contains(old.address) == old.tls
                }
                let removed = state.listeners.filter { old in !unchanged.contains { $0.fds == old.fds } }
                for (worker, handoff) in loops.enumerated() {
                    handoff.loop.send(.reload(settings, addListeners: added.map { ($0.fds[worker], $0.tls) },
                                              removeListeners: removed.map { $0.fds[worker] }))
                }
                state.listeners = config.listeners.compactMap { address in
                    unchanged.first { $0.address == address } ?? added.first { $0.address == address }
                }
                state.config = config
                state.settings = settings
                readiness.watch(settings)
                metrics.watch(settings)
                Self.logResolution(settings)
                resolverWake.post()
                healthChecks.watch(settings)
                return kept
            } catch {
                added.flatMap(\.fds).forEach { Syscall.close($0) }
                throw error
            }
        }
    }

    /// `new` with the settings only a restart can change put back to their `running` values, and a message
    /// for each one that differed.
    private static func restartOnly(_ new: Config, running: Config) -> (Config, [String]) {
        var config = new
        var kept: [String] = []
        if config.workers != running.workers {
            kept.append("workers: \(running.workers) kept (a new worker count needs a restart)")
            config.workers = running.workers
        }
        if config.admin != running.admin {
            kept.append("admin listen: kept (the admin listener needs a restart to move)")
            config.admin = running.admin
        }
        if config.log.file != running.log.file || config.log.stdout != running.log.stdout
            || config.log.queueCapacity != running.log.queueCapacity || config.log.fsyncInterval != running.log.fsyncInterval {
            kept.append("log file, stdout, queue and fsync: kept (completion-log sinks need a restart)")
            config.log.file = running.log.file
            config.log.stdout = running.log.stdout
            config.log.queueCapacity = running.log.queueCapacity
            config.log.fsyncInterval = running.log.fsyncInterval
        }
        if config.limits.highWatermark != running.limits.highWatermark || config.limits.lowWatermark != running.limits.lowWatermark {
            kept.append("high_watermark and low_watermark: kept (buffer sizes need a restart)")
            config.limits.highWatermark = running.limits.highWatermark
            config.limits.lowWatermark = running.limits.lowWatermark
        }
        return (config, kept)
    }

    /// The resolver thread's life: the upstream names of the settings in force whose `resolve_interval` came due
    /// are looked up again (getaddrinfo blocks, so never on a loop). Loops use new addresses from their next connect
    /// on; connections already open are left alone. The thread sleeps until the next name is due, or a reload or
    /// stop wakes it: it shares the CPUs with the loops, and a wake-up every quarter second (as it once polled)
    /// preempted a loop four times a second with nothing to do, all the more with only literal addresses.
    func refreshUpstreamAddressesUntilStopped() {
        while !resolverStopping.load(ordering: .acquiring) {
            let now = Syscall.monotonicMilliseconds()
            refreshUpstreamAddresses(now: now)
            let settings = state.withLock { $0.settings }
            let nextDue = settings.upstreams.flatMap { $0.pool.lines.compactMap(\.addresses.nextRefreshAt) }.min()
            resolverWake.wait(milliseconds: min(RunningProxy.resolverLongestSleep, max(1, (nextDue ?? .max) - now)))
        }
    }

    /// The resolver re-reads the settings at least this often even when nothing is due (a safety net: a reload
    /// and stop wake it at once).
    static let resolverLongestSleep: Int64 = 60_000

    /// One pass of the resolver, logging what changed; a failing name is logged once per failure streak.
    func refreshUpstreamAddresses(now: Int64) {
        let settings = state.withLock { $0.settings }
        for upstream in settings.upstreams {
            for line in upstream.pool.lines {
                let addresses = line.addresses
                let fields: ([SocketAddress]) -> KeyValuePairs<String, OpLog.Value> = { found in
                    ["upstream": .string(upstream.name), "host": .string(addresses.host), "addresses": .strings(found.map(\.description))]
                }
                let refreshed = addresses.refresh(now: now)
                switch refreshed {
                case .changed, .recovered, .resolved:
                    // Before the log line: whoever reads it (or /readyz after it) finds the servers in place.
                    upstream.pool.addressesChanged()
                case .notDue, .unchanged, .failed:
                    break
                }
                switch refreshed {
                case .notDue, .unchanged, .failed(_, first: false):
                    continue
                case .changed(let found):
                    OpLog.info("upstream addresses changed", fields(found))
                case .recovered(let found):
                    OpLog.info("upstream name resolves again", fields(found))
                case .resolved(let found):
                    OpLog.info("upstream name resolves; its routes are served", fields(found))
                case .failed(let error, first: true):
                    OpLog.warn("upstream name lookup failed; its last addresses stay in use",
                               ["upstream": .string(upstream.name), "host": .string(addresses.host), "error": .string(error),
                                "addresses": .strings(addresses.all.map(\.description))])
                }
            }
        }
    }

    /// Logs, for settings just built, each upstream start-up could not look up: a routed name that does not
    /// resolve (retried in the background from now on), one whose lookup failed but that keeps the addresses it
    /// had before a reload, and one no route uses (never looked up). One line each; the resolver thread logs
    /// when a name resolves.
    static func logResolution(_ settings: ProxySettings) {
        for upstream in settings.upstreams {
            if !upstream.routed {
                OpLog.warn("upstream not used by any route: its name is not looked up",
                           ["upstream": .string(upstream.name), "server": .string(upstream.display)])
                continue
            }
            for line in upstream.pool.lines {
                let addresses = line.addresses
                if let reason = addresses.unresolvedReason {
                    OpLog.warn("upstream name does not resolve; retrying in the background (its routes answer 502 upstream_unresolved "
                               + "and /readyz 503 until it resolves)",
                               ["upstream": .string(upstream.name), "host": .string(addresses.host), "error": .string(reason)])
                } else if let failure = addresses.creationFailure {
                    OpLog.warn("upstream name lookup failed; its last addresses stay in use",
                               ["upstream": .string(upstream.name), "error": .string(failure),
                                "addresses": .strings(addresses.all.map(\.description))])
                }
            }
        }
    }

    /// Stops the loops (exchanges in flight are cut and recorded as `drain`), waits up to
    /// `milliseconds` for them, then flushes the completion log. Returns false if something did not finish.
    public func stop(within milliseconds: Int) -> Bool {
        readiness.startDraining()
        resolverStopping.store(true, ordering: .releasing)
        resolverWake.post()
        healthChecks.stop()
        loops.forEach { $0.loop.requestStop() }
        let deadline = Syscall.monotonicMilliseconds() + Int64(milliseconds)
        while stoppedLoops.count < loops.count && Syscall.monotonicMilliseconds() < deadline {
            Syscall.sleep(milliseconds: 5)
        }
        let flushed = completionWriter?.stop(flushWithin: max(100, Int(deadline - Syscall.monotonicMilliseconds()))) ?? true
        return flushed && stoppedLoops.count == loops.count
    }
}

/// A listen address bound on every worker.
struct BoundListener: Sendable {
    var address: ListenAddress
    /// Terminates TLS (`listen ADDRESS tls`).
    var tls: Bool
    /// The local address, "host:port" (a port 0 resolved).
    var bound: String
    /// One socket per worker, by worker index.
    var fds: [Int32]
}

/// Open client connections over every loop, for `max_connections`: one atomic add per accept and per close.
final class ConnectionCount: Sendable {
    private let open = Atomic<Int>(0)
    /// The loops counted here, so one at the cap can have another close an idle connection (`AdmissionPeers`).
    let peers = AdmissionPeers()

    /// Counts a new connection; false (and not counted) when that would exceed `limit` (0 = no limit).
    func admit(limit: Int) -> Bool {
        let now = open.wrappingAdd(1, ordering: .relaxed).newValue
        guard limit > 0 && now > limit else { return true }
        open.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    func release() { open.wrappingSubtract(1, ordering: .relaxed) }
}

/// How many loops have returned from `run`.
final class StopCounter: Sendable {
    private let stopped = Atomic<Int>(0)
    var count: Int { stopped.load(ordering: .acquiring) }
    func add() { stopped.add(1, ordering: .releasing) }
}

/// Binds the listeners and starts one `ProxyLoop` thread per worker.
public enum ProxyServer {
    /// Binds every listen address once per worker, opens the completion log, then starts the loops. Throws
    /// before any loop starts, so an address in use, an unwritable log or a routed upstream with
    /// `resolve_at_start required` whose name does not resolve is a start-up error (any other name that does
    /// not resolve is retried in the background).
    public static func start(config: Config) throws(StartError) -> RunningProxy {
        Syscall.ignoreSIGPIPE()
        Syscall.configureAllocator()
        Syscall.raiseOpenFileLimit()
        var listeners: [BoundListener] = []
        do throws(StartError) {
            for address in config.listeners {
                listeners.append(try bind(address, tls: config.tlsListeners.contains(address), workers: config.workers,
                                          ownListeners: listeners))
            }
        } catch {
            listeners.flatMap(\.fds).forEach { Syscall.close($0) }
            throw error
        }

        let sinks = completionSinks(config.log)
        let queue = sinks.isEmpty ? nil : CompletionQueue(producers: config.workers, capacity: config.log.queueCapacity)
        // Room for the routes and rules of later reloads: every name ever used keeps its own counters.
        let metrics = MetricsRegistry(workers: config.workers, routes: config.routes.map(\.prefix),
                                      rateLimitRules: config.rateLimits.map(\.name), logQueue: queue,
                                      routeCapacity: max(256, 2 * config.routes.count),
                                      ruleCapacity: max(64, 2 * config.rateLimits.count))
        let settings: ProxySettings
        do throws(StartError) { settings = try ProxySettings(config: config, metrics: metrics) } catch {
            listeners.flatMap(\.fds).forEach { Syscall.close($0) }
            throw error
        }
        var writer: CompletionWriter?
        if let queue {
            do {
                let started = try CompletionWriter(queue: queue, sinks: sinks,
                                                   options: CompletionWriterOptions(fsyncIntervalMilliseconds: config.log.fsyncInterval))
                try started.start()
                writer = started
            } catch {
                throw StartError("completion log: \(error.description)")
            }
        }
        let readiness = Readiness()
        readiness.watch(settings)
        metrics.watch(settings)
        let reloads = ReloadCoordinator()
        var admin: String?
        if let address = config.admin {
            do { admin = try AdminServer.start(address: address, metrics: metrics, readiness: readiness, reloads: reloads) } catch {
                listeners.flatMap(\.fds).forEach { Syscall.close($0) }
                guard error.isAddressInUse else {
                    throw StartError("admin listener \(address): \(error.description)", address: address.description)
                }
                throw StartError("admin listener \(address): the address is in use by another process (bind: EADDRINUSE); "
                                 + "stop it or choose another address", address: address.description)
            }
        }
        var handoffs: [LoopHandoff] = []
        let stopped = StopCounter()
        let connections = ConnectionCount()
        do {
            for worker in 0..<config.workers {
                let loop = try ProxyLoop(index: worker, settings: settings, listeners: listeners.map { ($0.fds[worker], $0.tls) },
                                         metrics: metrics.loop(worker), completions: queue?.producer(worker), connections: connections)
                let handoff = LoopHandoff(loop)
                handoffs.append(handoff)
                try LoopThread.spawn(name: "sluice-w\(worker)") {
                    handoff.loop.run()
                    stopped.add()
                }
            }
        } catch {
            throw StartError(error.description)
        }
        let running = RunningProxy(config: config, settings: settings, listeners: listeners, admin: admin, completionWriter: writer,
                                   metrics: metrics, readiness: readiness, reloads: reloads, loops: handoffs, stoppedLoops: stopped,
                                   healthChecks: HealthChecker(settings: settings))
        RunningProxy.logResolution(settings)
        do {
            try LoopThread.spawn(name: "sluice-resolver") { running.refreshUpstreamAddressesUntilStopped() }
            try LoopThread.spawn(name: "sluice-health") { running.healthChecks.probeUntilStopped() }
        } catch {
            throw StartError(error.description)
        }
        return running
    }

    /// Binds `address` with one socket that no other process can share, and gives every worker its own
    /// descriptor of it (`Syscall.exclusiveListeningSocket` says why not SO_REUSEPORT). A port 0 is resolved
    /// by the bind.
    /// - Parameters:
    ///   - sharing: this process's listener on the same address (a reload that switches TLS): its socket is
    ///     shared, not bound again.
    ///   - ownListeners: the listeners this process already holds, so that an address one of them overlaps
    ///     (`0.0.0.0:8080` next to `127.0.0.1:8080`) is not blamed on another process.
    /// - Throws: `StartError` naming the address; an address in use says that another process holds it.
    static func bind(_ address: ListenAddress, tls: Bool, workers: Int, sharing existing: BoundListener? = nil,
                     ownListeners: [BoundListener] = []) throws(StartError) -> BoundListener {
        var fds: [Int32] = []
        do throws(SystemError) {
            let socketAddress: SocketAddress
            let first: Int32
            if let existing {
                first = existing.fds[0]
                socketAddress = try Syscall.localAddress(first)
            } else {
                let host = address.host == "*" ? "0.0.0.0" : address.host
                let resolved = try SocketAddress.resolve(host: host, port: address.port)
                let fd = try Syscall.exclusiveListeningSocket(resolved)
                socketAddress = try Syscall.localAddress(fd.rawValue)
                first = fd.releaseRawValue()
                fds.append(first)
            }
            while fds.count < workers {
                fds.append(try Syscall.duplicate(first).releaseRawValue())
            }
            return BoundListener(address: address, tls: tls, bound: socketAddress.description, fds: fds)
        } catch {
            fds.forEach { Syscall.close($0) }
            guard error.isAddressInUse else { throw StartError("listen on \(address): \(error.description)", address: address.description) }
            let wildcards: Set<String> = ["*", "0.0.0.0", "::"]
            if let own = ownListeners.first(where: { own in
                own.address.port == address.port && (wildcards.contains(own.address.host) || wildcards.contains(address.host))
            }) {
                throw StartError("listen on \(address): the port is held by this process's listener \(own.address); a wildcard and a "
                                 + "specific address cannot share a port, and moving between them needs a restart", address: address.description)
            }
            throw StartError("listen on \(address): the address is in use by another process (bind: EADDRINUSE); "
                             + "stop it or choose another address", address: address.description)
        }
    }

    private static func completionSinks(_ log: LogConfig) -> [CompletionSink] {
        var sinks: [CompletionSink] = []
        if let file = log.file { sinks.append(.file(path: file)) }
        if log.stdout { sinks.append(.standardOutput) }
        return sinks
    }
}

/// Why the proxy could not start, in words for the start-up error line.
public struct StartError: Error, CustomStringConvertible {
    public let description: String
    /// The config file and line to blame (a certificate that does not load, a cipher list OpenSSL rejects);
    /// nil when no line is (an address in use).
    public let file: String?
    public let line: Int
    /// The listen or admin address that could not be bound, for the error line's `address` field.
    public let address: String?

    init(_ description: String, file: String? = nil, line: Int = 0, address: String? = nil) {
        self.description = description
        self.file = file
        self.line = line
        self.address = address
    }

    /// `FILE:LINE: what` when a line is known, else `fallback: what`: the form of ``ConfigError``.
    public func located(orIn fallback: String) -> String {
        if let file, line > 0 { return "\(file):\(line): \(description)" }
        return "\(file ?? fallback): \(description)"
    }
}

/// Moves a loop built on the main thread to the thread that will own it.
final class LoopHandoff: @unchecked Sendable {
    // @unchecked: the loop is touched by the main thread only before spawn, and by its worker after,
    // except `requestStop`, which is thread-safe (an atomic flag and an eventfd).
    let loop: ProxyLoop
    init(_ loop: ProxyLoop) { self.loop = loop }
}
