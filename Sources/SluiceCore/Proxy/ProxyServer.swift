import Glibc

/// Binds the listeners and starts one `ProxyLoop` thread per worker.
public enum ProxyServer {
    /// Binds every listen address once per worker (SO_REUSEPORT; a port 0 is resolved by the first bind
    /// and reused by the others), then starts the loops. Returns the bound addresses as "host:port".
    /// Throws before any loop starts, so an address in use or an unresolvable upstream is a start-up error.
    public static func start(config: Config) throws(SystemError) -> [String] {
        Syscall.ignoreSIGPIPE()
        Syscall.raiseOpenFileLimit()
        let settings = try ProxySettings(config: config)
        var perWorker: [[Int32]] = Array(repeating: [], count: config.workers)
        var bound: [String] = []
        for listen in config.listeners {
            let host = listen.host == "*" ? "0.0.0.0" : listen.host
            var address = try SocketAddress.resolve(host: host, port: listen.port)
            for worker in 0..<config.workers {
                let fd: FileDescriptor
                do { fd = try Syscall.listeningSocket(address) } catch {
                    perWorker.joined().forEach { _ = Glibc.close($0) }
                    throw SystemError(call: "listen on \(listen)", errno: error.errno)
                }
                if worker == 0 {
                    address = try Syscall.localAddress(fd.rawValue)
                    bound.append(address.description)
                }
                perWorker[worker].append(fd.releaseRawValue())
            }
        }
        for worker in 0..<config.workers {
            let fds = perWorker[worker]
            let loop = try ProxyLoop(index: worker, settings: settings, listenerFDs: fds)
            let handoff = LoopHandoff(loop)
            try LoopThread.spawn(name: "sluice-w\(worker)") { handoff.take().run() }
        }
        return bound
    }
}

/// Moves a loop built on the main thread to the thread that will own it.
private final class LoopHandoff: @unchecked Sendable {
    // @unchecked: the loop is touched by the main thread only before spawn, and by its worker after.
    private let loop: ProxyLoop
    init(_ loop: ProxyLoop) { self.loop = loop }
    func take() -> ProxyLoop { loop }
}
