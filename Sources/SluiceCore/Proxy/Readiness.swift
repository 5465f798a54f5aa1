import Synchronization

/// A routed upstream whose host name has not resolved yet: its routes answer 502 `upstream_unresolved`.
public struct UnresolvedUpstream: Sendable, Equatable {
    /// The upstream's configured name.
    public var name: String
    /// `host:port` as configured.
    public var server: String
    /// The resolver's message for the last lookup.
    public var reason: String

    public init(name: String, server: String, reason: String) {
        self.name = name
        self.server = server
        self.reason = reason
    }

    /// One line for `/readyz` and the logs: which upstream, which name, and why.
    public var description: String { "upstream '\(name)' (\(server)) does not resolve yet: \(reason)" }
}

/// What `/readyz` says.
public enum ReadinessReport: Sendable, Equatable {
    /// Takes new work: 200.
    case ready
    /// SIGTERM (or stop) arrived: 503, so the endpoints controller takes the pod out before the listeners close.
    case draining
    /// A routed upstream's name has not resolved yet (a sidecar whose backend Service has no endpoints, a
    /// standalone pod started before its backend): 503 until it does, so a rollout waits and no Service sends
    /// clients to routes that would only answer 502. Liveness (`/healthz`) is unaffected: restarting would not help.
    case unresolved([UnresolvedUpstream])
}

/// Whether the proxy takes new work, for `GET /readyz`. Any thread: the admin loop asks, start-up, reload and
/// drain tell.
public final class Readiness: Sendable {
    private let draining = Atomic<Bool>(false)
    /// The settings in force, whose routed upstreams are asked whether they resolved (each answers under its own
    /// lock, so a name the resolver thread just found counts at the next probe).
    private let settings = Locked<ProxySettings?>(nil)

    public init() {}

    public var report: ReadinessReport {
        if draining.load(ordering: .acquiring) { return .draining }
        let unresolved = settings.withLock { $0?.unresolvedUpstreams ?? [] }
        return unresolved.isEmpty ? .ready : .unresolved(unresolved)
    }

    /// Readiness follows `settings` from now on (start-up, then every applied reload).
    func watch(_ settings: ProxySettings) { self.settings.withLock { $0 = settings } }

    func startDraining() { draining.store(true, ordering: .releasing) }
}
