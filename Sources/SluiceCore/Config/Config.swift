#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The proxy's whole configuration, resolved and validated: every default is filled in and
/// every cross-reference (route → upstream) has been checked.
///
/// Built once at boot by ``Config/load(overrides:)`` or ``Config/parse(text:file:)`` and then
/// shared read-only by all worker threads, so it is a plain `Sendable` value.
public struct Config: Sendable, Equatable {
    /// Number of worker threads (one event loop each), 1...256. Defaults to the number of online CPUs.
    public var workers: Int
    /// Addresses to accept client connections on; never empty once loaded.
    public var listeners: [ListenAddress]
    /// Upstreams in declaration order; names are unique. A route refers to one by name
    /// (``upstreamIndex(named:)`` turns the name into an index once, at boot).
    public var upstreams: [UpstreamConfig]
    /// Routes sorted longest prefix first (stable for equal lengths), so that the first match
    /// (`ProxySettings.routeIndex(forPath:)`) is the most specific one. Re-sorted whenever assigned.
    public var routes: [RouteConfig] {
        didSet { Self.sortLongestPrefixFirst(&routes) }
    }
    /// Global timeouts; routes carry their own merged copy in ``RouteConfig/timeouts``.
    public var timeouts: Timeouts
    /// Global body and buffering limits.
    public var limits: Limits
    /// Completion log: sinks, side-queue capacity and what a record may contain.
    public var log: LogConfig
    /// Address of the admin listener serving `GET /metrics`, or nil for none (no `admin`
    /// block and no `--admin`). The loader rejects one equal to, or overlapping, one of
    /// ``listeners``, so `/metrics` is never served to clients.
    public var admin: ListenAddress?
    /// The file this configuration came from, or nil when it was built from flags alone.
    public var sourcePath: String?
    /// Rate-limit rules (`limit NAME { }` blocks) in declaration order; names are unique and
    /// routes refer to them by index (``RouteConfig/limits``).
    public var rateLimits: [RateLimitRuleConfig]
    /// Peers whose `X-Forwarded-For` is believed when keying `key client` rules (see
    /// ``ForwardedFor``); empty means the connection's peer is always the client.
    public var trustedProxies: [IPRange]
    /// Milliseconds SIGTERM lets exchanges in flight run before aborting them; 0 aborts at once.
    public var drainTimeout: Int
    /// Listeners that terminate TLS (`listen ADDRESS tls`), with ``tls``'s certificate.
    public var tlsListeners: Set<ListenAddress>
    /// The `tls` block; required when ``tlsListeners`` is not empty.
    public var tls: TLSServerConfig?
    /// Where the keys that name files and cipher lists were written (`tls.certificate`,
    /// `upstream.NAME.tls_ca_file`, ...), for errors found only when OpenSSL loads them; empty without a file.
    public var keyLines: [String: Int] = [:]

    /// Five minutes: long enough for a reasoning model's answer, short of common grace periods' ceilings.
    public static let defaultDrainTimeout = 300_000

    /// Creates a configuration from already-validated parts. `routes` is sorted longest
    /// prefix first; nothing else is checked (the parser is where validation lives).
    public init(
        workers: Int = Config.defaultWorkerCount(),
        listeners: [ListenAddress],
        upstreams: [UpstreamConfig],
        routes: [RouteConfig],
        timeouts: Timeouts = Timeouts(),
        limits: Limits = Limits(),
        log: LogConfig = LogConfig(),
        admin: ListenAddress? = nil,
        sourcePath: String? = nil,
        rateLimits: [RateLimitRuleConfig] = [],
        trustedProxies: [IPRange] = [],
        drainTimeout: Int = Config.defaultDrainTimeout,
        tlsListeners: Set<ListenAddress> = [],
        tls: TLSServerConfig? = nil
    ) {
        var sorted = routes
        Self.sortLongestPrefixFirst(&sorted)
        self.workers = workers
        self.listeners = listeners
        self.upstreams = upstreams
        self.routes = sorted
        self.timeouts = timeouts
        self.limits = limits
        self.log = log
        self.admin = admin
        self.drainTimeout = drainTimeout
        self.tlsListeners = tlsListeners
        self.tls = tls
        self.sourcePath = sourcePath
        self.rateLimits = rateLimits
        self.trustedProxies = trustedProxies
    }

    /// Index into ``upstreams`` of the upstream called `name`, or nil. Meant for boot time
    /// (resolving each route's ``RouteConfig/upstream`` once), not for the request path.
    public func upstreamIndex(named name: String) -> Int? {
        upstreams.firstIndex { $0.name == name }
    }

    /// Valid range of ``workers``; 256 bounds the per-worker tables and threads we create.
    public static let workerRange: ClosedRange<Int> = 1...256

    /// Number of online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`), clamped to ``workerRange``.
    /// Falls back to 1 if the kernel does not say.
    public static func defaultWorkerCount() -> Int {
        let online = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        return min(max(online, workerRange.lowerBound), workerRange.upperBound)
    }

    /// Stable sort by descending prefix length in bytes: equal-length prefixes cannot both
    /// match one path unless equal, and duplicates are rejected at parse time.
    private static func sortLongestPrefixFirst(_ routes: inout [RouteConfig]) {
        let isSorted = zip(routes, routes.dropFirst()).allSatisfy {
            $0.prefix.utf8.count >= $1.prefix.utf8.count
        }
        if isSorted { return }  // also stops didSet work when nothing changed order
        routes = routes.enumerated()
            .sorted { lhs, rhs in
                let (l, r) = (lhs.element.prefix.utf8.count, rhs.element.prefix.utf8.count)
                return l != r ? l > r : lhs.offset < rhs.offset
            }
            .map(\.element)
    }
}

/// An address to listen on. `host` is an IPv4 literal, an IPv6 literal (stored without
/// brackets) or a name resolved at bind time; `port` 0 asks the kernel for an ephemeral port.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// IPv4 or IPv6 literal (no brackets) or host name.
    public var host: String
    /// TCP port; 0 means ephemeral.
    public var port: UInt16

    /// Creates an address from its parts; no validation (see ``ListenAddress/init(parsing:)``).
    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `127.0.0.1:8080`, `[::1]:8080`, `:8080` (all IPv4 interfaces) or `localhost:8080`.
    /// - Throws: ``ConfigError`` with file "command line" and line 0; the file parser wraps
    ///   the same check with its own file and line.
    public init(parsing text: String) throws(ConfigError) {
        self = try ConfigError.locating(file: ConfigError.commandLine, line: 0) { () throws(ConfigValueError) in
            try ConfigValues.listenAddress(text)
        }
    }

    /// `host:port`, with brackets around IPv6 literals so the result parses back.
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// How sluice talks to an upstream.
public enum UpstreamScheme: String, Sendable, Hashable {
    /// Plain HTTP/1.1 over TCP.
    case http
    /// HTTP/1.1 over TLS.
    case https

    /// Port used when the URL names none: 80 or 443.
    public var defaultPort: UInt16 {
        switch self {
        case .http: 80
        case .https: 443
        }
    }
}

/// One named upstream: its servers, how requests are shared among them, and their connection pools.
public struct UpstreamConfig: Sendable, Equatable, CustomStringConvertible {
    /// Name that routes refer to; unique within a ``Config``.
    public var name: String
    /// The `server` lines, in order; never empty.
    public var servers: [UpstreamServerConfig]
    /// Idle keep-alive connections kept per worker per server; 0 disables pooling.
    public var maxIdleConnections: Int
    /// Milliseconds between lookups of a host name; 0 looks it up only at start-up and reload.
    public var resolveInterval: Int
    /// What a name that does not resolve at start-up (or reload) does to it.
    public var resolveAtStart: ResolveAtStart
    /// Verification settings of the `https` servers; nil when every server is `http`.
    public var tls: TLSClientConfig?
    /// Balancing, affinity, health and retries.
    public var pool: UpstreamPoolConfig

    /// Default ``maxIdleConnections``: 256 idle sockets per worker per upstream. A burst of streams that finds
    /// a pooled connection skips the connect and the backend's accept (on a busy backend host, milliseconds of
    /// first-byte latency; over TLS a handshake more), and LLM traffic comes in bursts of hundreds of concurrent
    /// streams: with 64, 200 streams starting together opened 136 new connections after every burst. HAProxy
    /// and Envoy keep every idle connection by default; nginx keeps what `keepalive` says.
    public static let defaultMaxIdleConnections = 256
    /// Default ``resolveInterval``: a hosted API that moves is followed within half a minute.
    public static let defaultResolveInterval = 30_000

    /// Creates an upstream from its parts; no validation.
    public init(
        name: String, servers: [UpstreamServerConfig],
        maxIdleConnections: Int = UpstreamConfig.defaultMaxIdleConnections,
        resolveInterval: Int = UpstreamConfig.defaultResolveInterval,
        resolveAtStart: ResolveAtStart = .retry,
        tls: TLSClientConfig? = nil,
        pool: UpstreamPoolConfig = UpstreamPoolConfig()
    ) {
        precondition(!servers.isEmpty, "an upstream has at least one server")
        self.name = name
        self.servers = servers
        self.maxIdleConnections = maxIdleConnections
        self.resolveInterval = resolveInterval
        self.resolveAtStart = resolveAtStart
        self.tls = tls ?? (servers.contains { $0.scheme == .https } ? TLSClientConfig() : nil)
        self.pool = pool
    }

    /// An upstream of one server (`--upstream`, tests).
    public init(
        name: String, scheme: UpstreamScheme, host: String, port: UInt16,
        maxIdleConnections: Int = UpstreamConfig.defaultMaxIdleConnections,
        resolveInterval: Int = UpstreamConfig.defaultResolveInterval,
        resolveAtStart: ResolveAtStart = .retry,
        tls: TLSClientConfig? = nil
    ) {
        self.init(name: name, servers: [UpstreamServerConfig(scheme: scheme, host: host, port: port)],
                  maxIdleConnections: maxIdleConnections, resolveInterval: resolveInterval, resolveAtStart: resolveAtStart, tls: tls)
    }

    /// The servers as URLs, e.g. `http://127.0.0.1:8000` (for logs and `sluice check`).
    public var description: String {
        servers.map(\.description).joined(separator: " ")
    }
}

/// `resolve_at_start`: what start-up (and a reload) does when a routed upstream's host name does not resolve.
public enum ResolveAtStart: String, Sendable, Equatable, CaseIterable {
    /// Start anyway and look the name up again in the background (1 s, doubling up to `resolve_interval`); its
    /// routes answer 502 `upstream_unresolved` and `/readyz` 503 until it resolves. A pod whose backend Service is
    /// not there yet starts and turns ready, instead of crash-looping.
    case retry
    /// Refuse to start (a reload keeps the running configuration), as a missing name always did before.
    case required
}

/// Timeouts in milliseconds; 0 means the timer is off.
public struct Timeouts: Sendable, Equatable {
    /// The whole request head must arrive within this after the first byte (slowloris).
    public var clientHeader = 10_000
    /// Longest gap between two reads of a request body.
    public var clientBodyIdle = 60_000
    /// How long an idle keep-alive client connection is kept open between requests.
    public var clientKeepAlive = 60_000
    /// No write progress to the client for this long closes it and its upstream.
    public var clientWrite = 60_000
    /// TCP (and TLS) connect to an upstream.
    public var upstreamConnect = 5_000
    /// From request sent to first response byte; reasoning models may think for minutes.
    public var upstreamFirstByte = 300_000
    /// Longest gap between two reads from the upstream once the response started.
    public var upstreamIdle = 300_000
    /// Cap on the whole exchange; off by default because streams may legitimately be long.
    public var total = 0
    /// How long an idle pooled upstream connection is kept before closing it.
    public var upstreamPoolIdle = 90_000
    /// A tunnel (WebSocket) with no byte either way for this long is closed.
    public var tunnelIdle = 3_600_000

    /// Creates timeouts, each defaulting to the documented value.
    public init(
        clientHeader: Int = 10_000, clientBodyIdle: Int = 60_000,
        clientKeepAlive: Int = 60_000, clientWrite: Int = 60_000,
        upstreamConnect: Int = 5_000, upstreamFirstByte: Int = 300_000,
        upstreamIdle: Int = 300_000, total: Int = 0, upstreamPoolIdle: Int = 90_000, tunnelIdle: Int = 3_600_000
    ) {
        self.clientHeader = clientHeader
        self.clientBodyIdle = clientBodyIdle
        self.clientKeepAlive = clientKeepAlive
        self.clientWrite = clientWrite
        self.upstreamConnect = upstreamConnect
        self.upstreamFirstByte = upstreamFirstByte
        self.upstreamIdle = upstreamIdle
        self.total = total
        self.upstreamPoolIdle = upstreamPoolIdle
        self.tunnelIdle = tunnelIdle
    }
}

/// Body size and per-direction buffering limits.
public struct Limits: Sendable, Equatable {
    /// Largest accepted request body in bytes; 0 means unlimited.
    public var maxRequestBody: Int64 = 32 << 20
    /// Bytes queued toward one peer at which reading from the other side pauses.
    public var highWatermark = 65_536
    /// Bytes queued at which reading resumes; strictly below ``highWatermark`` (hysteresis).
    public var lowWatermark = 32_768
    /// Open client connections (all workers) at which a new one first closes the oldest idle one, or is answered
    /// 503 and closed when none is idle; 0 = no limit; nil (`auto`, the default) = derived from the open-file
    /// limit by ``ConnectionLimit/defaultMaxConnections(openFileLimit:workers:listeners:pooledPerWorker:)``.
    public var maxConnections: Int?

    /// Largest `max_connections`: far above what any fd limit allows.
    public static let maximumConnections = 10_000_000

    /// Smallest allowed watermark; below this, pausing would thrash on every read.
    public static let minimumWatermark = 1024
    /// Largest allowed watermark: 64 MiB of queued bytes per direction per connection.
    public static let maximumWatermark = 64 << 20

    /// Creates limits, each defaulting to the documented value.
    public init(maxRequestBody: Int64 = 32 << 20, highWatermark: Int = 65_536, lowWatermark: Int = 32_768) {
        self.maxRequestBody = maxRequestBody
        self.highWatermark = highWatermark
        self.lowWatermark = lowWatermark
    }
}

/// One route: requests whose path starts with `prefix` go to upstream `upstream`.
public struct RouteConfig: Sendable, Equatable {
    /// Byte prefix of the request path; starts with `/`.
    public var prefix: String
    /// Name of an upstream in ``Config/upstreams``.
    public var upstream: String
    /// The global timeouts with this route's overrides applied.
    public var timeouts: Timeouts
    /// This route's body limit (the global one unless overridden); 0 means unlimited.
    public var maxRequestBody: Int64
    /// Bytes of the request body kept in this route's completion records, 0...``maximumCaptureBytes``;
    /// 0 (the default) means the body is not captured.
    public var captureRequestBytes: Int
    /// Bytes of response text kept in this route's completion records (for SSE, the
    /// concatenated `data:` payloads), 0...``maximumCaptureBytes``; 0 (the default) means off.
    public var captureResponseBytes: Int
    /// Rate-limit rules applied to this route, as indices into ``Config/rateLimits``, in the
    /// order the route lists them (a request must pass every one); empty means unlimited.
    public var limits: [Int]
    /// `inject_usage on`: streaming chat/completions requests that do not ask for usage are sent with
    /// `stream_options.include_usage`, and the usage-only chunk that brings is removed from their response.
    public var injectUsage: Bool
    /// `websocket on` (the default): a WebSocket upgrade request is forwarded with its Upgrade field and a 101 opens
    /// a tunnel; `off` strips the Upgrade field as for any other protocol.
    public var websocket: Bool

    /// Largest capture per direction: 16 MiB. A capture is held in memory until the exchange
    /// ends and then copied into a record, so it bounds per-exchange memory and record size.
    public static let maximumCaptureBytes = 16 << 20

    /// Creates a route from its parts; no validation.
    public init(
        prefix: String, upstream: String, timeouts: Timeouts = Timeouts(), maxRequestBody: Int64 = Limits().maxRequestBody,
        captureRequestBytes: Int = 0, captureResponseBytes: Int = 0, limits: [Int] = [], injectUsage: Bool = false,
        websocket: Bool = true
    ) {
        self.prefix = prefix
        self.upstream = upstream
        self.timeouts = timeouts
        self.maxRequestBody = maxRequestBody
        self.captureRequestBytes = captureRequestBytes
        self.captureResponseBytes = captureResponseBytes
        self.limits = limits
        self.injectUsage = injectUsage
        self.websocket = websocket
    }
}

/// The completion log: where records go, how many may wait for the writer thread, and what a
/// record may contain.
public struct LogConfig: Sendable, Equatable {
    /// File the records are appended to as JSON lines (reopened on SIGHUP), or nil for none.
    /// A relative path is relative to the working directory; its directory existed at load.
    public var file: String?
    /// Whether records are also written to stdout. Resolved at init: an explicit value wins,
    /// otherwise on exactly when there is no ``file``. Not re-resolved when ``file`` changes.
    public var stdout: Bool
    /// Records the side queue holds, within ``queueCapacityRange``; when it is full a record
    /// is dropped and counted rather than blocking a loop.
    public var queueCapacity: Int
    /// Milliseconds between `fsync`s of ``file``; 0 leaves flushing to the kernel.
    public var fsyncInterval: Int
    /// Whether the logged path keeps its query string (off: queries can carry secrets).
    public var includeQuery: Bool
    /// Largest JSON request body scanned for `model` and `stream`, in bytes,
    /// 0...``maximumRequestBodyScanLimit``; 0 means never scan.
    public var requestBodyScanLimit: Int

    /// Default ``queueCapacity``: 65,536 records.
    public static let defaultQueueCapacity = 65_536
    /// Valid ``queueCapacity`` values. 16Mi records bounds the queue's preallocated slots.
    public static let queueCapacityRange: ClosedRange<Int> = 1...16_777_216
    /// Default ``fsyncInterval``: 1 s, so a crash loses at most about a second of records.
    public static let defaultFsyncInterval = 1_000
    /// Default ``requestBodyScanLimit``: 1 MiB, larger than almost any prompt sent as text.
    public static let defaultRequestBodyScanLimit = 1 << 20
    /// Largest ``requestBodyScanLimit``: 64 MiB (twice the default body limit); scanning
    /// more costs CPU for a field that comes early in practice.
    public static let maximumRequestBodyScanLimit = 64 << 20

    /// Creates a log configuration, each value defaulting to the documented one; `stdout`
    /// nil means "on when `file` is nil".
    public init(
        file: String? = nil, stdout: Bool? = nil,
        queueCapacity: Int = LogConfig.defaultQueueCapacity,
        fsyncInterval: Int = LogConfig.defaultFsyncInterval,
        includeQuery: Bool = false,
        requestBodyScanLimit: Int = LogConfig.defaultRequestBodyScanLimit
    ) {
        self.file = file
        self.stdout = stdout ?? (file == nil)
        self.queueCapacity = queueCapacity
        self.fsyncInterval = fsyncInterval
        self.includeQuery = includeQuery
        self.requestBodyScanLimit = requestBodyScanLimit
    }
}
