import Glibc
import Synchronization

/// What a started proxy exposes to the process that runs it (signals, shutdown).
public struct RunningProxy: Sendable {
    /// Bound public addresses, "host:port".
    public var listeners: [String]
    /// The admin address, when configured.
    public var admin: String?
    /// The completion-log writer, when a sink is configured (SIGHUP calls `reopen`).
    public var completionWriter: CompletionWriter?
    public var metrics: MetricsRegistry
    let loops: [LoopHandoff]
    let stoppedLoops: StopCounter

    /// Stops the loops (exchanges in flight are cut and recorded as `drain`), waits up to
    /// `milliseconds` for them, then flushes the completion log. Returns false if something did not finish.
    public func stop(within milliseconds: Int) -> Bool {
        loops.forEach { $0.loop.requestStop() }
        let deadline = Syscall.monotonicMilliseconds() + Int64(milliseconds)
        while stoppedLoops.count < loops.count && Syscall.monotonicMilliseconds() < deadline {
            Syscall.sleep(milliseconds: 5)
        }
        let flushed = completionWriter?.stop(flushWithin: max(100, Int(deadline - Syscall.monotonicMilliseconds()))) ?? true
        return flushed && stoppedLoops.count == loops.count
    }
}

/// How many loops have returned from `run`.
final class StopCounter: Sendable {
    private let stopped = Atomic<Int>(0)
    var count: Int { stopped.load(ordering: .acquiring) }
    func add() { stopped.add(1, ordering: .releasing) }
}

/// Binds the listeners and starts one `ProxyLoop` thread per worker.
public enum ProxyServer {
    /// Binds every listen address once per worker (SO_REUSEPORT; a port 0 is resolved by the first bind
    /// and reused by the others), opens the completion log, then starts the loops. Throws before any
    /// loop starts, so an address in use, an unresolvable upstream or an unwritable log is a start-up error.
    public static func start(config: Config) throws(StartError) -> RunningProxy {
        Syscall.ignoreSIGPIPE()
        Syscall.configureAllocator()
        Syscall.raiseOpenFileLimit()
        let settings: ProxySettings
        do { settings = try ProxySettings(config: config) } catch { throw StartError(error.description) }
        var perWorker: [[Int32]] = Array(repeating: [], count: config.workers)
        var bound: [String] = []
        do throws(SystemError) {
            for listen in config.listeners {
                let host = listen.host == "*" ? "0.0.0.0" : listen.host
                var address = try SocketAddress.resolve(host: host, port: listen.port)
                for worker in 0..<config.workers {
                    let fd: FileDescriptor
                    do { fd = try Syscall.listeningSocket(address) } catch {
                        throw SystemError(call: "listen on \(listen)", errno: error.errno)
                    }
                    if worker == 0 {
                        address = try Syscall.localAddress(fd.rawValue)
                        bound.append(address.description)
                    }
                    perWorker[worker].append(fd.releaseRawValue())
                }
            }
        } catch {
            perWorker.joined().forEach { _ = Glibc.close($0) }
            throw StartError(error.description)
        }

        let sinks = completionSinks(config.log)
        let queue = sinks.isEmpty ? nil : CompletionQueue(producers: config.workers, capacity: config.log.queueCapacity)
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
        let metrics = MetricsRegistry(workers: config.workers, routes: settings.routes.map { String(decoding: $0.prefix, as: UTF8.self) },
                                      rateLimitRules: config.rateLimits.map(\.name), logQueue: queue, rateLimiter: settings.rateLimiter)
        var admin: String?
        if let address = config.admin {
            do { admin = try AdminServer.start(address: address, metrics: metrics) } catch {
                throw StartError("admin listener \(address): \(error.description)")
            }
        }
        var handoffs: [LoopHandoff] = []
        let stopped = StopCounter()
        do {
            for worker in 0..<config.workers {
                let loop = try ProxyLoop(index: worker, settings: settings, listenerFDs: perWorker[worker],
                                         metrics: metrics.loop(worker), completions: queue?.producer(worker))
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
        return RunningProxy(listeners: bound, admin: admin, completionWriter: writer, metrics: metrics,
                            loops: handoffs, stoppedLoops: stopped)
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
    init(_ description: String) { self.description = description }
}

/// Moves a loop built on the main thread to the thread that will own it.
final class LoopHandoff: @unchecked Sendable {
    // @unchecked: the loop is touched by the main thread only before spawn, and by its worker after,
    // except `requestStop`, which is thread-safe (an atomic flag and an eventfd).
    let loop: ProxyLoop
    init(_ loop: ProxyLoop) { self.loop = loop }
}
