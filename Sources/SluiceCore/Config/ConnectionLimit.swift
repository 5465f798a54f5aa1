/// The `max_connections` sluice uses when the config does not set one: as many client connections as the
/// open-file limit can carry, so that running out of descriptors (which pauses accepting for everyone) is not how
/// an idle-connection flood is stopped: the cap is reached first, and at the cap idle connections make room
/// (`ProxyLoop.accept`).
///
///     max_connections = max(64, (open-file limit − reserved) / 2)
///     reserved        = 32 + workers × (listeners + 2 + Σ upstreams' max_idle)
///
/// Halved because each client connection can hold an upstream connection. Reserved: 32 for stdio, the
/// completion log, the admin listener and its connections, the resolver's lookups and files read on reload;
/// per worker its listener sockets (an upper bound: the workers may share them), its epoll and wakeup
/// descriptors, and the idle upstream connections its pools may keep. The floor of 64 applies when the limit is
/// too low to matter: descriptors then run out before the cap, and accepting pauses until some are freed. Pure
/// arithmetic; the caller reads the limit.
public enum ConnectionLimit {
    /// The default never goes below this.
    public static let minimumDefault = 64
    /// Descriptors that belong to no worker (see the type's comment).
    public static let processReserve = 32
    /// Each worker's epoll and wakeup descriptors.
    public static let descriptorsPerWorker = 2

    /// Descriptors kept out of the client budget.
    public static func reserved(workers: Int, listeners: Int, pooledPerWorker: Int) -> Int {
        processReserve + workers * (listeners + descriptorsPerWorker + pooledPerWorker)
    }

    /// The default `max_connections` for a process allowed `openFileLimit` descriptors.
    public static func defaultMaxConnections(openFileLimit: Int, workers: Int, listeners: Int, pooledPerWorker: Int) -> Int {
        // Subtracting first: a limit of RLIM_INFINITY arrives as Int.max.
        let available = openFileLimit - reserved(workers: workers, listeners: listeners, pooledPerWorker: pooledPerWorker)
        return min(Limits.maximumConnections, max(minimumDefault, available / 2))
    }
}

extension Config {
    /// The `max_connections` in force when the process may hold `openFileLimit` descriptors: the configured value
    /// (0 = no limit), else ``ConnectionLimit/defaultMaxConnections(openFileLimit:workers:listeners:pooledPerWorker:)``.
    public func effectiveMaxConnections(openFileLimit: Int) -> Int {
        if let configured = limits.maxConnections { return configured }
        return ConnectionLimit.defaultMaxConnections(openFileLimit: openFileLimit, workers: workers, listeners: listeners.count,
                                                     pooledPerWorker: upstreams.reduce(0) { $0 + $1.maxIdleConnections })
    }
}
