/// The admin listener: `GET /metrics` (Prometheus text), `GET /healthz` (the process is alive),
/// `GET /readyz` (it takes new connections: 503 once draining), and the operator endpoints `POST /reload` and
/// `GET /reload-status` (`AdminReloadRoutes`) on its own address, never on a public
/// listener, served by its own non-blocking epoll loop on its own thread (`AdminLoop`), so a client that
/// dribbles or stops reading can hold neither a probe nor the data path.
public enum AdminServer {
    /// Binds `address` (no other process may hold it) and starts the admin thread. Warns on stderr when
    /// the address is reachable from other hosts.
    /// - Returns: the bound address, "host:port" (a port 0 resolved).
    /// - Throws: `SystemError` from resolving, binding (`EADDRINUSE` when the address is held) or starting the thread.
    public static func start(address: ListenAddress, metrics: MetricsRegistry, readiness: Readiness,
                             reloads: ReloadCoordinator) throws(SystemError) -> String {
        try start(address: address, metrics: metrics, readiness: readiness, reloads: reloads, limits: AdminLimits())
    }

    static func start(address: ListenAddress, metrics: MetricsRegistry, readiness: Readiness, reloads: ReloadCoordinator,
                      limits: AdminLimits) throws(SystemError) -> String {
        let socketAddress = try SocketAddress.resolve(host: address.host == "*" ? "0.0.0.0" : address.host, port: address.port)
        let listener = try Syscall.exclusiveListeningSocket(socketAddress, backlog: 64)
        let bound = try Syscall.localAddress(listener.rawValue)
        let loop = try AdminLoop(listener: listener, metrics: metrics, readiness: readiness, reloads: reloads, limits: limits)
        let handoff = AdminLoopHandoff(loop)
        try LoopThread.spawn(name: "sluice-admin") { handoff.loop.run() }
        if !bound.isLoopback {
            // Kubernetes needs it (the kubelet probes the pod IP), so a warning, not an error: anyone who can
            // reach the port can read the metrics and see readiness, and the loop's bounds are what keep them
            // from stalling the probes.
            // POST /reload re-reads the same file (coalesced, so a flood costs two reloads at most), but it is still
            // an operator's endpoint, so the warning names it.
            OpLog.warn("the admin listener is reachable from other hosts: /metrics, /healthz, /readyz, /reload-status and "
                       + "POST /reload are served to anyone who can connect; bind it to 127.0.0.1 unless probes or scrapers "
                       + "come from outside",
                       ["admin": .string(bound.description)])
        }
        return bound.description
    }
}

/// Moves an admin loop built on the starting thread to the thread that runs it.
final class AdminLoopHandoff: @unchecked Sendable {
    // @unchecked: the starting thread never touches the loop after `spawn`; from then on only the admin thread does.
    let loop: AdminLoop
    init(_ loop: AdminLoop) { self.loop = loop }
}
