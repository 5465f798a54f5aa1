/// A config file as written: values are parsed and individually valid, cross-references
/// (route → upstream, watermark order, "at least one of") are not yet checked. Line numbers
/// are kept so those later checks can still point at the right line.
struct ConfigDraft: Equatable {
    /// An `upstream NAME { }` block.
    struct Upstream: Equatable {
        var name: String
        /// Line of `upstream NAME {`; 0 when added by `--upstream`.
        var line: Int
        /// The `server` lines in order, each with its line number.
        var servers: [UpstreamServerConfig] = []
        /// Balance, affinity, health and retry keys; the eject times are checked against each other in resolve().
        var pool = UpstreamPoolConfig()
        /// Lines of `eject_time` and `max_eject_time`, for the error when the first exceeds the second; 0 when
        /// not given.
        var ejectTimeLine = 0
        var maxEjectTimeLine = 0
        var maxIdle = UpstreamConfig.defaultMaxIdleConnections
        var resolveInterval = UpstreamConfig.defaultResolveInterval
        /// nil: the top-level `resolve_at_start` (or its default) applies.
        var resolveAtStart: ResolveAtStart?
        var tls = TLSClientConfig()
        /// Line of the first `tls_*` key, for "only for https" errors; 0 when none.
        var tlsLine = 0
    }

    /// The `tls { }` block; certificate and key are checked at resolve time.
    struct TLS: Equatable {
        var line: Int
        var certificate: String?
        var key: String?
        var minVersion = TLSVersion.tls12
        var ciphers: String?
        var ciphersuites: String?
        var handshakeTimeout = TLSServerConfig.defaultHandshakeTimeout
    }

    /// A `route PREFIX { }` block.
    struct Route: Equatable {
        var prefix: String
        /// Line of `route PREFIX {`; 0 when added by `--upstream`.
        var line: Int
        var upstream: String?
        /// Line of the `upstream NAME` directive, for "unknown upstream" errors.
        var upstreamLine = 0
        /// Overrides applied on top of the global timeouts at resolve time, so a `timeouts`
        /// block after the route still provides the other values.
        var timeoutOverrides: [ConfigTimeoutKey: Int] = [:]
        var maxRequestBody: Int64?
        var captureRequestBytes = 0
        var captureResponseBytes = 0
        var injectUsage = false
        var websocket = true
        /// `limit NAME` directives in order, resolved to rule indices at resolve time so rules
        /// may be declared after the routes that use them.
        var limits: [LimitReference] = []
    }

    /// A route's `limit NAME`, with its line for "unknown limit" errors.
    struct LimitReference: Equatable {
        var name: String
        var line: Int
    }

    /// A `limit NAME { }` block; the "needs a key and a limit" checks wait for resolve().
    struct RateLimit: Equatable {
        var name: String
        /// Line of `limit NAME {`.
        var line: Int
        var key: RateLimitKeySource?
        var requests: RateLimitRate?
        var concurrent: Int?
        var tokens: RateLimitRate?
    }

    /// The `log { }` block; `file` and `stdout` stay unresolved until ``ConfigDraft/resolve(file:sourcePath:)``.
    struct Log: Equatable {
        /// nil: no file (not given, or `file off`).
        var file: String?
        /// Line of the `file` directive; 0 when not given or set by `--log-file`.
        var fileLine = 0
        /// nil means `auto` or not given: on exactly when there is no file.
        var stdout: Bool?
        var queueCapacity = LogConfig.defaultQueueCapacity
        var fsyncInterval = LogConfig.defaultFsyncInterval
        var includeQuery = false
        var requestBodyScanLimit = LogConfig.defaultRequestBodyScanLimit
    }

    /// nil means `auto` or not given: one worker per online CPU.
    var workers: Int?
    var drainTimeout = Config.defaultDrainTimeout
    /// The top-level `resolve_at_start`: the default of upstreams that do not set their own.
    var resolveAtStart = ResolveAtStart.retry
    var listeners: [ListenAddress] = []
    /// Line of each entry of ``listeners``; 0 for one that came from `--listen` or the default.
    var listenerLines: [Int] = []
    /// Listeners written `listen ADDRESS tls`.
    var tlsListeners: Set<ListenAddress> = []
    var tls: TLS?
    /// Lines of the keys naming files and cipher lists, for errors found only when they are loaded (see
    /// ``Config/keyLines``).
    var keyLines: [String: Int] = [:]
    /// Whether ``listeners`` came from `--listen` (for messages about line-0 listeners).
    var listenersFromFlag = false
    var timeouts = Timeouts()
    var limits = Limits()
    var highWatermarkLine = 0
    var lowWatermarkLine = 0
    var upstreams: [Upstream] = []
    var routes: [Route] = []
    var log = Log()
    /// The admin listener: the `admin` block's `listen`, or `--admin`.
    var admin: ListenAddress?
    /// Line of the admin `listen`; 0 when not given or set by `--admin`.
    var adminLine = 0
    /// Line of `admin {`, for "no listen" errors; 0 when there is no block.
    var adminBlockLine = 0
    /// `limit` blocks in declaration order; names are unique.
    var rateLimits: [RateLimit] = []
    /// `trusted_proxies` ranges in order, all lines together; no duplicates.
    var trustedProxies: [IPRange] = []
}
