/// Everything a loop needs from the configuration, resolved once at start-up (addresses looked up,
/// route prefixes as bytes) so the data path never touches strings or Foundation. A class, immutable:
/// sessions read it per request without copying its arrays, and a reload swaps in a new one.
public final class ProxySettings: Sendable {
    public struct Upstream: Sendable {
        public var name: String
        /// Its servers, kept current by the resolver thread, and how they share requests.
        public var pool: UpstreamPool
        /// The servers as configured ("host:port", space-separated), for logs and error bodies.
        public var display: String
        /// Idle connections kept per worker per server.
        public var maxIdleConnections: Int
        /// The Host field an https upstream gets: its first server's name (and port when not 443).
        public var hostHeader: [UInt8]?
        /// `host[:port]` of the first server: the Host of a request that came without one (HTTP/1.0).
        public var authority: [UInt8]
        /// `affinity header NAME`'s name as bytes (lowercase); nil for other keys or none.
        public var affinityHeader: [UInt8]?
        /// A route uses it: only then are its names looked up, and only then does an unresolved one hold back
        /// `/readyz`.
        public var routed: Bool
    }

    public struct Route: Sendable {
        public var prefix: [UInt8]
        public var upstreamIndex: Int
        public var timeouts: Timeouts
        public var maxRequestBody: Int64
        public var captureRequestBytes: Int
        public var captureResponseBytes: Int
        /// Rate-limit rules applied in order, indices into `rateLimitRules`.
        public var limits: [Int]
        /// One of the rules has a token budget, charged from the usage responses report.
        public var chargesTokens: Bool
        /// `inject_usage on` (see `RouteConfig.injectUsage`).
        public var injectUsage: Bool
        /// `websocket on` (see `RouteConfig.websocket`).
        public var websocket: Bool
        /// Where the metrics count this route (nil: out of slots, counted as no route).
        public var metricsSlot: Int?
    }

    public let upstreams: [Upstream]
    /// Longest prefix first.
    public let routes: [Route]
    /// Timeouts of the client side before a route is known.
    public let timeouts: Timeouts
    public let httpLimits: HTTPLimits
    public let highWatermark: Int
    public let lowWatermark: Int
    /// The rules' key sources, by rule index.
    public let rateLimitRules: [RateLimitRuleConfig]
    /// Peers whose X-Forwarded-For is believed for `key client`.
    public let trustedProxies: [IPRange]
    /// Shared by every loop: one key's budget is the same whichever loop serves it.
    public let rateLimiter: RateLimiter?
    /// Where the metrics count each rule's rejections, by rule index.
    public let ruleMetricsSlots: [Int?]
    /// Completion records keep the query string.
    public let includeQueryInLog: Bool
    /// JSON request bodies up to this size are read for `model` and `stream`.
    public let requestBodyScanLimit: Int

    /// The certificate of `listen ... tls` listeners; loaded afresh by each reload.
    public let serverTLS: TLSContext?
    /// Milliseconds a TLS client has to finish its handshake.
    public let handshakeTimeout: Int
    /// Open client connections at which new ones make room by closing an idle one, or get a 503; 0 = no limit.
    public let maxConnections: Int

    /// Every pooled buffer has this size: it holds a whole request or response head, or a full queue.
    public var bufferCapacity: Int { max(highWatermark, httpLimits.maxHeadBytes) + 1024 }

    /// Resolves the host names of the upstreams routes use (blocking getaddrinfo: start-up and reload only, never
    /// on a loop; later lookups, and the retries of a name that did not resolve, are the resolver thread's, see
    /// `RunningProxy.refreshUpstreamAddresses`) and names the routes' and rules' metrics slots in `metrics`. The
    /// rate limiter of `previous` is kept, budgets and all, when the rules did not change; otherwise the new rules
    /// start with full budgets. A name that fails a reload's lookup keeps `previous`'s addresses.
    /// - Throws: a `StartError` at the `server` line of a routed upstream with `resolve_at_start required` whose
    ///   name does not resolve (ending with the resolver's message); a TLS file that does not load.
    public init(config: Config, previous: ProxySettings? = nil, metrics: MetricsRegistry) throws(StartError) {
        var upstreams: [Upstream] = []
        let contexts = try Self.tlsContexts(config)
        let routedNames = Set(config.routes.map(\.upstream))
        let now = Syscall.monotonicMilliseconds()
        for (upstream, tls) in zip(config.upstreams, contexts.upstreams) {
            let routed = routedNames.contains(upstream.name)
            let pool = UpstreamPool(upstream: upstream, tls: tls, lookUp: routed, previous: previous?.upstreams.first { $0.name == upstream.name }?.pool,
                                    now: now)
            if routed, upstream.resolveAtStart == .required {
                for (line, server) in zip(pool.lines, upstream.servers) {
                    guard let reason = line.addresses.unresolvedReason else { continue }
                    let which = upstream.servers.count == 1 ? "upstream '\(upstream.name)'" : "upstream '\(upstream.name)' server \(server.host)"
                    throw StartError("\(which) does not resolve (resolve_at_start required): \(reason)",
                                     file: config.sourcePath, line: server.line > 0 ? server.line : config.serverLine(of: upstream))
                }
            }
            let first = upstream.servers[0]
            upstreams.append(Upstream(name: upstream.name, pool: pool, display: upstream.servers.map(\.hostPort).joined(separator: " "),
                                      maxIdleConnections: upstream.maxIdleConnections,
                                      hostHeader: first.scheme == .https ? Array(first.authority.utf8) : nil,
                                      authority: Array(first.authority.utf8),
                                      affinityHeader: { if case .header(let name) = upstream.pool.affinity { Array(name.lowercased().utf8) } else { nil } }(),
                                      routed: routed))
        }
        serverTLS = contexts.server
        // Read after start-up raised the soft limit to the hard one (`ProxyServer.start`); a reload reads it again.
        maxConnections = config.effectiveMaxConnections(openFileLimit: Syscall.openFileLimit())
        handshakeTimeout = config.tls?.handshakeTimeout ?? TLSServerConfig.defaultHandshakeTimeout
        self.upstreams = upstreams
        let routeSlots = metrics.routeSlots(for: config.routes.map(\.prefix))
        var routes = zip(config.routes, routeSlots).map { route, slot in
            Route(prefix: Array(route.prefix.utf8),
                  upstreamIndex: config.upstreamIndex(named: route.upstream) ?? 0,
                  timeouts: route.timeouts, maxRequestBody: route.maxRequestBody,
                  captureRequestBytes: route.captureRequestBytes, captureResponseBytes: route.captureResponseBytes,
                  limits: route.limits, chargesTokens: route.limits.contains { config.rateLimits[$0].tokens != nil },
                  injectUsage: route.injectUsage, websocket: route.websocket, metricsSlot: slot)
        }
        routes.sort { $0.prefix.count > $1.prefix.count }
        self.routes = routes
        timeouts = config.timeouts
        httpLimits = HTTPLimits()
        highWatermark = config.limits.highWatermark
        lowWatermark = config.limits.lowWatermark
        rateLimitRules = config.rateLimits
        trustedProxies = config.trustedProxies
        let limiter = if let previous, previous.rateLimitRules == config.rateLimits {
            previous.rateLimiter
        } else {
            config.rateLimits.isEmpty ? nil : RateLimiter(rules: config.rateLimits, seed: (Syscall.randomSeed(), Syscall.randomSeed()))
        }
        rateLimiter = limiter
        ruleMetricsSlots = metrics.useRateLimiter(limiter, rules: config.rateLimits.map(\.name))
        includeQueryInLog = config.log.includeQuery
        requestBodyScanLimit = config.log.requestBodyScanLimit
    }

    /// The routed upstreams whose names have not resolved yet: what `/readyz` and the start-up lines report.
    public var unresolvedUpstreams: [UnresolvedUpstream] {
        upstreams.compactMap { upstream in
            guard upstream.routed, let reason = upstream.pool.unresolvedReason else { return nil }
            return UnresolvedUpstream(name: upstream.name, server: upstream.display, reason: reason)
        }
    }

    /// Builds the TLS contexts `config` asks for: the listeners' (certificate and key loaded and matched) and one
    /// per https upstream. `sluice check` calls it too, so bad files are found before a start or a reload.
    /// - Throws: a `StartError` at the line of the key whose file or list failed (the block's line when no one
    ///   key is to blame).
    public static func tlsContexts(_ config: Config) throws(StartError) -> (server: TLSContext?, upstreams: [TLSContext?]) {
        func failure(_ error: TLSError, block: String) -> StartError {
            let line = error.key.flatMap { config.keyLines["\(block).\($0)"] } ?? config.keyLines[block] ?? 0
            return StartError("\(block == "tls" ? "tls" : block.replacing(".", with: " ")): \(error.description)",
                              file: config.sourcePath, line: line)
        }
        var server: TLSContext?
        // The certificate is loaded only when a listener uses it.
        if let tls = config.tls, !config.tlsListeners.isEmpty {
            do throws(TLSError) { server = try TLSContext.server(tls) } catch { throw failure(error, block: "tls") }
        }
        var upstreams: [TLSContext?] = []
        for upstream in config.upstreams {
            guard let tls = upstream.tls else {
                upstreams.append(nil)
                continue
            }
            do throws(TLSError) {
                // OpenSSL accepts a directory that is not there and fails every handshake later: say so now.
                if tls.verify, let directory = tls.caDirectory, !Syscall.isDirectory(directory) {
                    throw TLSError("tls_ca_dir \(directory) is not a readable directory", key: "tls_ca_dir")
                }
                upstreams.append(try TLSContext.client(tls))
            } catch {
                throw failure(error, block: "upstream.\(upstream.name)")
            }
        }
        return (server, upstreams)
    }

    /// The route whose prefix starts `path`, longest first.
    func routeIndex(forPath path: Span<UInt8>) -> Int? {
        outer: for (index, route) in routes.enumerated() where route.prefix.count <= path.count {
            for offset in 0..<route.prefix.count where path[offset] != route.prefix[offset] { continue outer }
            return index
        }
        return nil
    }
}
