/// The blocks of the config file; the raw value is the word that opens one.
enum ConfigBlockKind: String, CaseIterable {
    /// `timeouts { ... }`: global timeouts, at most once.
    case timeouts
    /// `limits { ... }`: global body and watermark limits, at most once.
    case limits
    /// `upstream NAME { ... }`: a pool of backend servers and how requests are shared among them.
    case upstream
    /// `route PREFIX { ... }`: which upstream serves a path prefix, plus overrides.
    case route
    /// `log { ... }`: completion-log sinks and record contents, at most once.
    case log
    /// `admin { ... }`: the metrics listener, at most once; absent means no admin listener.
    case admin
    /// `limit NAME { ... }`: a named rate-limit rule that routes apply with `limit NAME`.
    case limit
    /// `tls { ... }`: certificate and protocol settings of `listen ... tls` listeners, at most once.
    case tls

    /// Keys allowed inside this block, in the order the example file documents them.
    var keys: [String] {
        switch self {
        case .timeouts: ConfigTimeoutKey.allCases.map(\.rawValue)
        case .limits: ConfigLimitKey.allCases.map(\.rawValue)
        case .upstream:
            ["server"] + ConfigUpstreamPoolKey.allCases.map(\.rawValue) + ["max_idle", "resolve_interval", "resolve_at_start"]
                + ConfigUpstreamTLSKey.allCases.map(\.rawValue)
        case .route:
            ["upstream"] + ConfigTimeoutKey.allCases.filter(\.isRouteOverridable).map(\.rawValue) + ["max_request_body"]
                + ConfigCaptureKey.allCases.map(\.rawValue) + ["limit", ConfigRouteKey.injectUsage.rawValue, ConfigRouteKey.websocket.rawValue]
        case .log: ConfigLogKey.allCases.map(\.rawValue)
        case .admin: ["listen"]
        case .limit: ConfigRateLimitKey.allCases.map(\.rawValue)
        case .tls: ConfigTLSKey.allCases.map(\.rawValue)
        }
    }

    /// Where a key of this block belongs, for "wrong block" messages.
    var home: String {
        switch self {
        case .timeouts: "the 'timeouts' block"
        case .limits: "the 'limits' block"
        case .upstream: "an 'upstream' block"
        case .route: "a 'route' block"
        case .log: "the 'log' block"
        case .admin: "the 'admin' block"
        case .limit: "a 'limit' block"
        case .tls: "the 'tls' block"
        }
    }

    /// How to open this block, for messages.
    var usage: String {
        switch self {
        case .timeouts: "timeouts {"
        case .limits: "limits {"
        case .upstream: "upstream NAME {"
        case .route: "route PREFIX {"
        case .log: "log {"
        case .admin: "admin {"
        case .limit: "limit NAME {"
        case .tls: "tls {"
        }
    }
}

/// Keys of the `tls` block.
enum ConfigTLSKey: String, CaseIterable {
    /// `certificate PATH`: PEM certificate chain (server first).
    case certificate
    /// `key PATH`: PEM private key.
    case key
    /// `min_version 1.2|1.3`.
    case minVersion = "min_version"
    /// `ciphers LIST`: TLS 1.2 cipher list.
    case ciphers
    /// `ciphersuites LIST`: TLS 1.3 ciphersuites.
    case ciphersuites
    /// `handshake_timeout DURATION`.
    case handshakeTimeout = "handshake_timeout"
}

/// The keys of an `upstream` block that set its ``UpstreamPoolConfig``.
enum ConfigUpstreamPoolKey: String, CaseIterable {
    /// `balance least_streams|round_robin|random`.
    case balance
    /// `affinity header NAME|json PATH|prompt SIZE`.
    case affinity
    /// `affinity_load_factor X`.
    case affinityLoadFactor = "affinity_load_factor"
    /// `max_fails N`: failures within `fail_window` that eject a server; 0 turns passive ejection off.
    case maxFails = "max_fails"
    /// `fail_window DURATION`.
    case failWindow = "fail_window"
    /// `eject_time DURATION`: the first ejection's length.
    case ejectTime = "eject_time"
    /// `max_eject_time DURATION`: where the doubling stops.
    case maxEjectTime = "max_eject_time"
    /// `health_check METHOD PATH [every DURATION] [timeout DURATION] [expect STATUS[-STATUS]]`.
    case healthCheck = "health_check"
    /// `retries N`.
    case retries
    /// `retry_on CONDITION...|off`.
    case retryOn = "retry_on"
    /// `retry_body_limit SIZE`.
    case retryBodyLimit = "retry_body_limit"
    /// `retry_ratio PERCENT`.
    case retryRatio = "retry_ratio"
}

/// The TLS keys of an `upstream` block (https upstreams only).
enum ConfigUpstreamTLSKey: String, CaseIterable {
    /// `tls_ca_file PATH`: trusted CAs (PEM bundle) instead of the system store.
    case caFile = "tls_ca_file"
    /// `tls_ca_dir PATH`: trusted CAs (hashed directory) instead of the system store.
    case caDirectory = "tls_ca_dir"
    /// `tls_verify on|off`: off skips certificate and name checks (logged at start-up).
    case verify = "tls_verify"
    /// `tls_server_name NAME`: SNI and the name verified, instead of the server's host.
    case serverName = "tls_server_name"
}

/// Keys allowed outside any block.
enum ConfigTopLevelKey: String, CaseIterable {
    /// `workers N|auto`.
    case workers
    /// `listen ADDRESS`, repeatable.
    case listen
    /// `trusted_proxies RANGE...`, repeatable: peers whose `X-Forwarded-For` is believed.
    case trustedProxies = "trusted_proxies"
    /// `drain_timeout DURATION`: how long SIGTERM waits for exchanges in flight.
    case drainTimeout = "drain_timeout"
    /// `resolve_at_start retry|required`: the default of every upstream block (which may set its own).
    case resolveAtStart = "resolve_at_start"

    /// Whether the key may appear on several lines (each adds to a list).
    var repeats: Bool {
        self == .listen || self == .trustedProxies
    }
}

/// Keys of a `limit` block.
enum ConfigRateLimitKey: String, CaseIterable {
    /// `key client|header NAME|global`: whose budget (``RateLimitRuleConfig/key``).
    case key
    /// `requests N/UNIT [burst B]`: the requests token bucket.
    case requests
    /// `concurrent N`: exchanges in flight per key.
    case concurrent
    /// `tokens N/UNIT`: the LLM-token budget.
    case tokens
}

/// Keys of the `limits` block.
enum ConfigLimitKey: String, CaseIterable {
    /// Largest request body (size); also allowed in routes.
    case maxRequestBody = "max_request_body"
    /// Queue size that pauses reading the other side (size).
    case highWatermark = "high_watermark"
    /// Queue size that resumes reading (size).
    case lowWatermark = "low_watermark"
    /// Open client connections at which new ones get a 503 (count, 0 = no limit).
    case maxConnections = "max_connections"
}

/// Keys of the `log` block.
enum ConfigLogKey: String, CaseIterable {
    /// `file PATH|off`: append records to PATH (``LogConfig/file``).
    case file
    /// `stdout BOOL|auto`: also write records to stdout (``LogConfig/stdout``).
    case stdout
    /// `queue N`: side-queue capacity in records (``LogConfig/queueCapacity``).
    case queue
    /// `fsync DURATION|off`: fsync interval (``LogConfig/fsyncInterval``).
    case fsync
    /// `include_query BOOL`: keep the query string in the logged path (``LogConfig/includeQuery``).
    case includeQuery = "include_query"
    /// `request_body_scan SIZE`: largest request body scanned for model/stream
    /// (``LogConfig/requestBodyScanLimit``).
    case requestBodyScan = "request_body_scan"
}

/// Route keys with a name worth a constant.
enum ConfigRouteKey: String {
    /// `inject_usage on|off`: ask OpenAI-compatible backends for stream usage on the client's behalf and remove
    /// the usage chunk the client did not ask for (issue 12, item 3). Only `off` is accepted until the session
    /// rewrites request bodies.
    case injectUsage = "inject_usage"
    /// `websocket on|off`: forward WebSocket upgrades and tunnel after a 101 (``RouteConfig/websocket``).
    case websocket
}

/// Per-route capture keys, each a size from 0 to ``RouteConfig/maximumCaptureBytes``.
enum ConfigCaptureKey: String, CaseIterable {
    /// ``RouteConfig/captureRequestBytes``.
    case request = "capture_request"
    /// ``RouteConfig/captureResponseBytes``.
    case response = "capture_response"
}

/// Keys of the `timeouts` block, each a duration; the raw value is the config key.
enum ConfigTimeoutKey: String, CaseIterable {
    /// ``Timeouts/clientHeader``: request head deadline.
    case clientHeader = "client_header"
    /// ``Timeouts/clientBodyIdle``: gap between request body reads.
    case clientBodyIdle = "client_body_idle"
    /// ``Timeouts/clientKeepAlive``: idle client connection between requests.
    case clientKeepAlive = "client_keepalive"
    /// ``Timeouts/clientWrite``: no write progress toward the client.
    case clientWrite = "client_write"
    /// ``Timeouts/upstreamConnect``: TCP/TLS connect.
    case upstreamConnect = "upstream_connect"
    /// ``Timeouts/upstreamFirstByte``: request sent to first response byte; per route.
    case upstreamFirstByte = "upstream_first_byte"
    /// ``Timeouts/upstreamIdle``: gap between upstream reads; per route.
    case upstreamIdle = "upstream_idle"
    /// ``Timeouts/total``: whole exchange; per route.
    case total
    /// ``Timeouts/upstreamPoolIdle``: unused pooled connection lifetime.
    case upstreamPoolIdle = "upstream_pool_idle"
    /// ``Timeouts/tunnelIdle``: no byte either way through a tunnel; per route.
    case tunnelIdle = "tunnel_idle"

    /// Whether a `route` block may override this timeout. Only the ones that describe one
    /// exchange with the upstream can differ per route; client-side and pool timers apply
    /// before a route is known or across routes.
    var isRouteOverridable: Bool {
        switch self {
        case .upstreamFirstByte, .upstreamIdle, .total, .tunnelIdle: true
        default: false
        }
    }

    /// Stores `milliseconds` into the matching field of `timeouts`.
    func apply(_ milliseconds: Int, to timeouts: inout Timeouts) {
        switch self {
        case .clientHeader: timeouts.clientHeader = milliseconds
        case .clientBodyIdle: timeouts.clientBodyIdle = milliseconds
        case .clientKeepAlive: timeouts.clientKeepAlive = milliseconds
        case .clientWrite: timeouts.clientWrite = milliseconds
        case .upstreamConnect: timeouts.upstreamConnect = milliseconds
        case .upstreamFirstByte: timeouts.upstreamFirstByte = milliseconds
        case .upstreamIdle: timeouts.upstreamIdle = milliseconds
        case .total: timeouts.total = milliseconds
        case .upstreamPoolIdle: timeouts.upstreamPoolIdle = milliseconds
        case .tunnelIdle: timeouts.tunnelIdle = milliseconds
        }
    }
}

/// Where the parser is: outside any block, or inside one.
enum ConfigContext: Equatable {
    /// Outside any block.
    case top
    /// Inside `timeouts { }`.
    case timeouts
    /// Inside `limits { }`.
    case limits
    /// Inside `upstream NAME { }`; the index is into ``ConfigDraft/upstreams``.
    case upstream(index: Int)
    /// Inside `route PREFIX { }`; the index is into ``ConfigDraft/routes``.
    case route(index: Int)
    /// Inside `log { }`.
    case log
    /// Inside `admin { }`.
    case admin
    /// Inside `limit NAME { }`; the index is into ``ConfigDraft/rateLimits``.
    case limit(index: Int)
    /// Inside `tls { }`.
    case tls

    /// The block kind, or nil at the top level.
    var block: ConfigBlockKind? {
        switch self {
        case .top: nil
        case .timeouts: .timeouts
        case .limits: .limits
        case .upstream: .upstream
        case .route: .route
        case .log: .log
        case .admin: .admin
        case .limit: .limit
        case .tls: .tls
        }
    }

    /// Keys allowed here.
    var keys: [String] {
        block?.keys ?? ConfigTopLevelKey.allCases.map(\.rawValue)
    }
}
