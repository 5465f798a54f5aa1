/// A config file as written: values are parsed and individually valid, cross-references
/// (route → upstream, watermark order, "at least one of") are not yet checked. Line numbers
/// are kept so those later checks can still point at the right line.
struct ConfigDraft: Equatable {
    /// An `upstream NAME { }` block.
    struct Upstream: Equatable {
        var name: String
        /// Line of `upstream NAME {`; 0 when added by `--upstream`.
        var line: Int
        var server: ConfigValues.Server?
        var maxIdle = UpstreamConfig.defaultMaxIdleConnections
        var resolveInterval = UpstreamConfig.defaultResolveInterval
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

/// Turns the lines of a config file into a ``ConfigDraft``, reporting the first problem with
/// its line. Single pass, one line at a time; besides the draft, the state carried between
/// lines is the open block and the first line of each name seen (for duplicate errors).
struct ConfigParser {
    /// Name used in errors (the path as the user gave it).
    let file: String
    /// Everything read so far.
    private(set) var draft = ConfigDraft()
    private var context = ConfigContext.top
    /// Line of the `{` that opened the current block (0 at the top level).
    private var openLine = 0
    /// First line of each key in the current block, for duplicate errors; `listen` is exempt.
    private var seenInBlock: [String: Int] = [:]
    private var seenAtTop: [String: Int] = [:]
    /// First line of each `timeouts` / `limits` block, for duplicate errors.
    private var singletonBlockLines: [ConfigBlockKind: Int] = [:]
    /// First line of each listen address, upstream name and route prefix. Dictionaries, not
    /// scans of the draft: a 1 MiB file can declare ~90k routes.
    private var listenLines: [ListenAddress: Int] = [:]
    private var upstreamLines: [String: Int] = [:]
    private var routeLines: [String: Int] = [:]
    private var rateLimitLines: [String: Int] = [:]
    private var trustedProxyLines: [IPRange: Int] = [:]

    /// Parses a whole file.
    /// - Throws: ``ConfigError`` with `file` and the line of the first problem.
    static func parse(_ bytes: [UInt8], file: String) throws(ConfigError) -> ConfigDraft {
        var parser = ConfigParser(file: file)
        for line in try ConfigLexer.lines(bytes, file: file) {
            try parser.consume(line)
        }
        try parser.finish()
        return parser.draft
    }

    /// A parser at the top of an empty file; feed it with ``consume(_:)``, end with ``finish()``.
    init(file: String) {
        self.file = file
    }

    /// Handles one line: closes, opens or fills a block.
    /// - Throws: ``ConfigError`` at `line` for structure, key or value problems.
    mutating func consume(_ line: ConfigLine) throws(ConfigError) {
        let tokens = line.tokens
        if tokens == ["}"] {
            guard context != .top else { throw error(line, "stray '}' with no open block") }
            context = .top
            openLine = 0
            seenInBlock = [:]
            return
        }
        if tokens.contains("}") {
            throw error(line, "'}' must be alone on its line")
        }
        let opensBlock = tokens.last == "{"
        let words = Array(tokens.dropLast(opensBlock ? 1 : 0))
        if words.isEmpty || words[0] == "{" {
            throw error(line, "'{' must follow a block name on the same line, e.g. 'route / {'")
        }
        if words.contains("{") {
            throw error(line, "'{' must be the last thing on its line")
        }
        let name = words[0]
        let values = Array(words.dropFirst())
        if let kind = ConfigBlockKind(rawValue: name), opensBlock || context == .top {
            try openBlock(kind, values: values, line: line)
        } else if opensBlock {
            try rejectUnknownBlock(name, line: line)
        } else {
            try directive(name, values: values, line: line)
        }
    }

    /// Checks for a block left open at the end of the file.
    mutating func finish() throws(ConfigError) {
        if context != .top {
            throw ConfigError(
                file: file, line: openLine,
                message: "unclosed block: \(contextName) opened here has no closing '}'")
        }
    }

    // MARK: Blocks

    private mutating func openBlock(_ kind: ConfigBlockKind, values: [String], line: ConfigLine) throws(ConfigError) {
        let opensBlock = line.tokens.last == "{"
        if context != .top {
            throw error(
                line,
                "blocks do not nest: '\(kind.rawValue)' inside \(contextName) (missing '}' for the block opened on line \(openLine)?)"
            )
        }
        if !opensBlock {
            // `limit NAME` is also the route directive that applies a rule: say so at the top level.
            let hint = kind == .limit ? " (inside a route block, 'limit NAME' applies a rule)" : ""
            throw error(line, "'\(kind.rawValue)' starts a block: write '\(kind.usage)' with the '{' on the same line\(hint)")
        }
        switch kind {
        case .timeouts, .limits, .log, .admin, .tls:
            if !values.isEmpty {
                throw error(line, "'\(kind.rawValue)' takes no value: write '\(kind.usage)'")
            }
            if let first = singletonBlockLines[kind] {
                throw error(line, "duplicate '\(kind.rawValue)' block (first opened on line \(first)); use one block")
            }
            singletonBlockLines[kind] = line.number
            switch kind {
            case .timeouts: context = .timeouts
            case .limits: context = .limits
            case .log: context = .log
            case .admin:
                context = .admin
                draft.adminBlockLine = line.number
            case .tls:
                context = .tls
                draft.tls = ConfigDraft.TLS(line: line.number)
            case .upstream, .route, .limit: preconditionFailure("named blocks are opened below")
            }
        case .upstream:
            let name = try single(values, for: "upstream", expected: "NAME", usage: kind.usage, line: line)
            guard ConfigValues.isUpstreamName(name) else {
                throw error(line, "bad upstream name \(ConfigValues.quoted(name)): use 1-64 letters, digits, '_', '-' or '.'")
            }
            if let first = upstreamLines[name] {
                throw error(line, "duplicate upstream '\(name)' (first declared on line \(first))")
            }
            upstreamLines[name] = line.number
            draft.upstreams.append(ConfigDraft.Upstream(name: name, line: line.number))
            context = .upstream(index: draft.upstreams.count - 1)
        case .route:
            let prefix = try single(values, for: "route", expected: "PREFIX", usage: kind.usage, line: line)
            if let problem = Self.routePrefixProblem(prefix) {
                throw error(line, "bad route prefix \(ConfigValues.quoted(prefix)): \(problem)")
            }
            if let first = routeLines[prefix] {
                throw error(line, "duplicate route '\(prefix)' (first declared on line \(first))")
            }
            routeLines[prefix] = line.number
            draft.routes.append(ConfigDraft.Route(prefix: prefix, line: line.number))
            context = .route(index: draft.routes.count - 1)
        case .limit:
            let name = try single(values, for: "limit", expected: "NAME", usage: kind.usage, line: line)
            // Same rule as upstream names: the name goes into a quoted RateLimit-Policy string
            // and a JSON message, so it stays plain.
            guard ConfigValues.isUpstreamName(name) else {
                throw error(line, "bad limit name \(ConfigValues.quoted(name)): use 1-64 letters, digits, '_', '-' or '.'")
            }
            if let first = rateLimitLines[name] {
                throw error(line, "duplicate limit '\(name)' (first declared on line \(first))")
            }
            rateLimitLines[name] = line.number
            draft.rateLimits.append(ConfigDraft.RateLimit(name: name, line: line.number))
            context = .limit(index: draft.rateLimits.count - 1)
        }
        openLine = line.number
        seenInBlock = [:]
    }

    private func rejectUnknownBlock(_ name: String, line: ConfigLine) throws(ConfigError) {
        if context != .top {
            throw error(line, "blocks do not nest: '\(name) {' inside \(contextName) (missing '}' for the block opened on line \(openLine)?)")
        }
        if ConfigTopLevelKey(rawValue: name) != nil {
            throw error(line, "'\(name)' is a directive, not a block: remove the '{'")
        }
        if let kind = ConfigBlockKind.allCases.first(where: { $0.keys.contains(name) }) {
            throw error(line, "'\(name)' is a key, not a block; it belongs inside \(kind.home)")
        }
        let blocks = ConfigBlockKind.allCases.map(\.rawValue)
        throw error(line, "unknown block \(ConfigValues.quoted(name))\(ConfigValues.didYouMean(name, among: blocks))")
    }

    /// Why `prefix` cannot be a route prefix, or nil when it can. Prefixes are compared with
    /// the raw request path bytes, so anything that cannot appear there would never match.
    static func routePrefixProblem(_ prefix: String) -> String? {
        guard prefix.hasPrefix("/") else { return "must start with '/'" }
        for byte in prefix.utf8 {
            if byte >= 0x80 { return "must be ASCII; percent-encode other characters as clients send them" }
            if byte == UInt8(ascii: "?") { return "must not contain '?'; routes match the path, not the query" }
        }
        return nil
    }

    // MARK: Directives

    private mutating func directive(_ name: String, values: [String], line: ConfigLine) throws(ConfigError) {
        guard context.keys.contains(name) else { try rejectUnknownKey(name, line: line) }
        // Only the top-level `listen` and `trusted_proxies` and a route's `limit` repeat; the
        // admin block takes one address.
        let repeats =
            context == .top ? ConfigTopLevelKey(rawValue: name)?.repeats == true : (context.block == .route && name == "limit")
        if !repeats {
            if context == .top {
                if let first = seenAtTop[name] { throw duplicate(name, first: first, line: line) }
                seenAtTop[name] = line.number
            } else {
                if let first = seenInBlock[name] { throw duplicate(name, first: first, line: line) }
                seenInBlock[name] = line.number
            }
        }
        switch context {
        case .top:
            try topLevel(name, values: values, line: line)
        case .timeouts:
            let text = try single(values, for: name, expected: "DURATION", usage: "\(name) 10s", line: line)
            let milliseconds = try value(line) { () throws(ConfigValueError) in try ConfigValues.duration(text) }
            // The guard above ensures `name` is a ConfigTimeoutKey here.
            ConfigTimeoutKey(rawValue: name)?.apply(milliseconds, to: &draft.timeouts)
        case .limits:
            try limit(name, values: values, line: line)
        case .upstream(let index):
            try upstream(name, values: values, index: index, line: line)
        case .route(let index):
            try route(name, values: values, index: index, line: line)
        case .log:
            try log(name, values: values, line: line)
        case .admin:  // the guard above leaves only "listen"
            let text = try single(values, for: name, expected: "ADDRESS", usage: "listen 127.0.0.1:9901", line: line)
            draft.admin = try value(line) { () throws(ConfigValueError) in try ConfigValues.listenAddress(text) }
            draft.adminLine = line.number
        case .limit(let index):
            try rateLimit(name, values: values, index: index, line: line)
        case .tls:
            try tls(name, values: values, line: line)
        }
    }

    private mutating func tls(_ name: String, values: [String], line: ConfigLine) throws(ConfigError) {
        guard var block = draft.tls else { preconditionFailure("tls keys come only inside the tls block") }
        defer { draft.tls = block }
        draft.keyLines["tls.\(name)"] = line.number
        switch ConfigTLSKey(rawValue: name) {
        case .certificate:
            block.certificate = try single(values, for: name, expected: "PATH", usage: "certificate /etc/sluice/tls/chain.pem", line: line)
        case .key:
            block.key = try single(values, for: name, expected: "PATH", usage: "key /etc/sluice/tls/key.pem", line: line)
        case .minVersion:
            let text = try single(values, for: name, expected: "1.2 or 1.3", usage: "min_version 1.2", line: line)
            guard let version = TLSVersion(rawValue: text) else {
                throw error(line, "min_version must be 1.2 or 1.3, got \(ConfigValues.quoted(text))")
            }
            block.minVersion = version
        case .ciphers:
            block.ciphers = try single(values, for: name, expected: "an OpenSSL cipher list", usage: "ciphers ECDHE+AESGCM", line: line)
        case .ciphersuites:
            block.ciphersuites = try single(values, for: name, expected: "an OpenSSL ciphersuite list",
                                                 usage: "ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", line: line)
        case .handshakeTimeout:
            let text = try single(values, for: name, expected: "DURATION", usage: "handshake_timeout 10s", line: line)
            block.handshakeTimeout = try value(line) { () throws(ConfigValueError) in try ConfigValues.duration(text) }
        case nil:
            preconditionFailure("directive() admits only tls keys here")
        }
    }

    private mutating func topLevel(_ name: String, values: [String], line: ConfigLine) throws(ConfigError) {
        switch ConfigTopLevelKey(rawValue: name) {
        case .workers:
            let text = try single(values, for: name, expected: "N or auto", usage: "workers 4", line: line)
            if text == "auto" {
                draft.workers = nil
            } else {
                draft.workers = try value(line) { () throws(ConfigValueError) in
                    try ConfigValues.integer(text, in: Config.workerRange, what: "workers")
                }
            }
        case .drainTimeout:
            let text = try single(values, for: name, expected: "a duration", usage: "drain_timeout 300s", line: line)
            draft.drainTimeout = try value(line) { () throws(ConfigValueError) in try ConfigValues.duration(text) }
        case .listen:
            // `listen ADDRESS tls` terminates TLS there (see the `tls` block).
            let terminatesTLS = values.count == 2 && values[1] == "tls"
            if values.count == 2 && !terminatesTLS && !values[1].contains(":") {  // a second address: "too many values" below
                throw error(line, "unexpected \(ConfigValues.quoted(values[1])) after the address: the only option is 'tls' (e.g. 'listen 0.0.0.0:8443 tls')")
            }
            let text = try single(
                Array(values.prefix(terminatesTLS ? 1 : values.count)), for: name, expected: "ADDRESS", usage: "listen 127.0.0.1:8080",
                extraHint: "; repeat 'listen' on separate lines for more addresses", line: line)
            let address = try value(line) { () throws(ConfigValueError) in try ConfigValues.listenAddress(text) }
            if let first = listenLines[address] {
                throw error(line, "duplicate listen address '\(address)' (first on line \(first))")
            }
            listenLines[address] = line.number
            draft.listeners.append(address)
            draft.listenerLines.append(line.number)
            if terminatesTLS { draft.tlsListeners.insert(address) }
        case .trustedProxies:
            if values.isEmpty {
                throw error(
                    line, "missing value: 'trusted_proxies' needs one or more address ranges, e.g. 'trusted_proxies 10.0.0.0/8 ::1/128'")
            }
            for text in values {
                let range = try value(line) { () throws(ConfigValueError) in try ConfigValues.ipRange(text) }
                if let first = trustedProxyLines[range] {
                    let place = first == line.number ? "earlier on this line" : "first on line \(first)"
                    throw error(line, "duplicate trusted proxy range '\(range)' (\(place))")
                }
                trustedProxyLines[range] = line.number
                draft.trustedProxies.append(range)
            }
        case nil:
            preconditionFailure("directive() only dispatches known top-level keys")
        }
    }

    private mutating func limit(_ name: String, values: [String], line: ConfigLine) throws(ConfigError) {
        if name == ConfigLimitKey.maxConnections.rawValue {
            let text = try single(values, for: name, expected: "N", usage: "max_connections 10000", line: line)
            // `auto` states the default: derived from the open-file limit at start-up and on each reload.
            guard text != "auto" else {
                draft.limits.maxConnections = nil
                return
            }
            draft.limits.maxConnections = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.integer(text, in: 0...Limits.maximumConnections, what: name)
            }
            return
        }
        let text = try single(values, for: name, expected: "SIZE", usage: "\(name) 64k", line: line)
        let size = try value(line) { () throws(ConfigValueError) in try ConfigValues.size(text) }
        switch ConfigLimitKey(rawValue: name) {
        case .maxRequestBody:
            draft.limits.maxRequestBody = size
        case .highWatermark, .lowWatermark:
            let range = Int64(Limits.minimumWatermark)...Int64(Limits.maximumWatermark)
            guard range.contains(size) else {
                throw error(line, "\(name) must be from 1k to 64m (1024 to 67108864 bytes), got \(ConfigValues.quoted(text))")
            }
            if name == ConfigLimitKey.highWatermark.rawValue {
                draft.limits.highWatermark = Int(size)
                draft.highWatermarkLine = line.number
            } else {
                draft.limits.lowWatermark = Int(size)
                draft.lowWatermarkLine = line.number
            }
        case .maxConnections, nil:
            preconditionFailure("directive() only dispatches known limits keys; max_connections is read above")
        }
    }

    /// Largest `max_idle`: far above any sane pool, low enough to catch a stray digit.
    static let maximumIdleConnections = 65_536

    private mutating func upstream(_ name: String, values: [String], index: Int, line: ConfigLine) throws(ConfigError) {
        if ConfigUpstreamTLSKey(rawValue: name) != nil {
            if draft.upstreams[index].tlsLine == 0 { draft.upstreams[index].tlsLine = line.number }
            draft.keyLines["upstream.\(draft.upstreams[index].name).\(name)"] = line.number
        }
        switch name {
        case "server":
            let text = try single(values, for: name, expected: "URL", usage: "server http://127.0.0.1:8000", line: line)
            draft.upstreams[index].server = try value(line) { () throws(ConfigValueError) in try ConfigValues.upstreamURL(text) }
        case ConfigUpstreamTLSKey.caFile.rawValue:
            draft.upstreams[index].tls.caFile = try single(values, for: name, expected: "PATH", usage: "tls_ca_file /etc/ssl/my-ca.pem", line: line)
        case ConfigUpstreamTLSKey.caDirectory.rawValue:
            draft.upstreams[index].tls.caDirectory = try single(values, for: name, expected: "PATH", usage: "tls_ca_dir /etc/ssl/my-cas", line: line)
        case ConfigUpstreamTLSKey.serverName.rawValue:
            draft.upstreams[index].tls.serverName = try single(values, for: name, expected: "NAME", usage: "tls_server_name api.example.com", line: line)
        case ConfigUpstreamTLSKey.verify.rawValue:
            let text = try single(values, for: name, expected: "on or off", usage: "tls_verify off", line: line)
            draft.upstreams[index].tls.verify = try value(line) { () throws(ConfigValueError) in try ConfigValues.boolean(text, what: name) }
        case "resolve_interval":
            let text = try single(values, for: name, expected: "DURATION or off", usage: "resolve_interval 30s", line: line)
            draft.upstreams[index].resolveInterval = try value(line) { () throws(ConfigValueError) in try ConfigValues.duration(text) }
        default:  // "max_idle"
            let text = try single(values, for: name, expected: "N", usage: "max_idle 64", line: line)
            draft.upstreams[index].maxIdle = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.integer(text, in: 0...Self.maximumIdleConnections, what: "max_idle")
            }
        }
    }

    private mutating func route(_ name: String, values: [String], index: Int, line: ConfigLine) throws(ConfigError) {
        switch name {
        case "upstream":
            let text = try single(values, for: name, expected: "NAME", usage: "upstream llm", line: line)
            draft.routes[index].upstream = text
            draft.routes[index].upstreamLine = line.number
        case ConfigLimitKey.maxRequestBody.rawValue:
            let text = try single(values, for: name, expected: "SIZE", usage: "\(name) 10m", line: line)
            draft.routes[index].maxRequestBody = try value(line) { () throws(ConfigValueError) in try ConfigValues.size(text) }
        case ConfigCaptureKey.request.rawValue, ConfigCaptureKey.response.rawValue:
            let text = try single(values, for: name, expected: "SIZE", usage: "\(name) 64k", line: line)
            let bytes = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.size(text, in: 0...RouteConfig.maximumCaptureBytes, what: name)
            }
            if name == ConfigCaptureKey.request.rawValue {
                draft.routes[index].captureRequestBytes = bytes
            } else {
                draft.routes[index].captureResponseBytes = bytes
            }
        case "limit":
            let text = try single(
                values, for: name, expected: "NAME", usage: "limit per_user",
                extraHint: "; repeat 'limit' on separate lines to apply several rules", line: line)
            if let first = draft.routes[index].limits.first(where: { $0.name == text }) {
                throw error(line, "limit '\(text)' is already applied in route '\(draft.routes[index].prefix)' (line \(first.line))")
            }
            draft.routes[index].limits.append(ConfigDraft.LimitReference(name: text, line: line.number))
        case ConfigRouteKey.injectUsage.rawValue:
            let text = try single(values, for: name, expected: "on or off", usage: "\(name) off", line: line)
            let on = try value(line) { () throws(ConfigValueError) in try ConfigValues.boolean(text, what: name) }
            // Refused rather than accepted and ignored: a route that says `on` would believe its clients get
            // usage injected while nothing changes (the session does not hold and rewrite bodies yet).
            if on {
                throw error(line, "'\(name) on' is not implemented yet: sluice does not rewrite request bodies; "
                            + "remove the line or write '\(name) off' (token budgets already charge an estimate "
                            + "when a stream reports no usage)")
            }
        default:  // an overridable timeout
            let text = try single(values, for: name, expected: "DURATION", usage: "\(name) 600s", line: line)
            let milliseconds = try value(line) { () throws(ConfigValueError) in try ConfigValues.duration(text) }
            if let key = ConfigTimeoutKey(rawValue: name) {
                draft.routes[index].timeoutOverrides[key] = milliseconds
            }
        }
    }

    private mutating func log(_ name: String, values: [String], line: ConfigLine) throws(ConfigError) {
        switch ConfigLogKey(rawValue: name) {
        case .file:
            let text = try single(
                values, for: name, expected: "PATH or off", usage: "file /var/log/sluice/completions.jsonl",
                extraHint: " (paths cannot contain spaces)", line: line)
            // `off` is the default spelled out, as nginx's `access_log off`; a file really
            // named "off" is written ./off. The directory is checked in resolve(), after flags.
            draft.log.file = text == "off" ? nil : text
            draft.log.fileLine = line.number
        case .stdout:
            let text = try single(values, for: name, expected: "on, off or auto", usage: "stdout on", line: line)
            if text == "auto" {
                draft.log.stdout = nil
            } else {
                draft.log.stdout = try value(line) { () throws(ConfigValueError) in
                    try ConfigValues.boolean(text, what: name, extraForms: ["auto"])
                }
            }
        case .queue:
            let text = try single(values, for: name, expected: "N (records)", usage: "queue 65536", line: line)
            draft.log.queueCapacity = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.integer(text, in: LogConfig.queueCapacityRange, what: name)
            }
        case .fsync:
            let text = try single(values, for: name, expected: "DURATION or off", usage: "fsync 1s", line: line)
            draft.log.fsyncInterval = try value(line) { () throws(ConfigValueError) in try ConfigValues.duration(text) }
        case .includeQuery:
            let text = try single(values, for: name, expected: "on or off", usage: "\(name) off", line: line)
            draft.log.includeQuery = try value(line) { () throws(ConfigValueError) in try ConfigValues.boolean(text, what: name) }
        case .requestBodyScan:
            let text = try single(values, for: name, expected: "SIZE", usage: "\(name) 1m", line: line)
            draft.log.requestBodyScanLimit = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.size(text, in: 0...LogConfig.maximumRequestBodyScanLimit, what: name)
            }
        case nil:
            preconditionFailure("directive() only dispatches known log keys")
        }
    }

    /// A directive of a `limit` block.
    private mutating func rateLimit(_ name: String, values: [String], index: Int, line: ConfigLine) throws(ConfigError) {
        switch ConfigRateLimitKey(rawValue: name) {
        case .key:
            let forms = ["client", "header", "global"]
            guard let kind = values.first else {
                throw error(line, "missing value: 'key' needs client, header NAME or global, e.g. 'key header authorization'")
            }
            switch kind {
            case "client", "global":
                if values.count > 1 {
                    throw error(line, "too many values for 'key \(kind)': it takes nothing after '\(kind)'")
                }
                draft.rateLimits[index].key = kind == "client" ? .client : .global
            case "header":
                guard values.count == 2 else {
                    throw error(
                        line,
                        values.count < 2
                            ? "missing value: 'key header' needs a header name, e.g. 'key header x-api-key'"
                            : "too many values for 'key header': expected one header name, got \(values.count - 1)")
                }
                let header = try value(line) { () throws(ConfigValueError) in try ConfigValues.headerName(values[1]) }
                draft.rateLimits[index].key = .header(header)
            default:
                throw error(
                    line,
                    "bad key \(ConfigValues.quoted(kind)): expected client, header NAME or global\(ConfigValues.didYouMean(kind, among: forms))")
            }
        case .requests:
            guard let text = values.first else {
                throw error(line, "missing value: 'requests' needs N/s, N/min or N/h, e.g. 'requests 10/s burst 20'")
            }
            let rate = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.rate(text, maximum: RateLimitRuleConfig.maximumRequests, what: "requests")
            }
            var burst: Int64?
            if values.count > 1 {
                guard values[1] == "burst" else {
                    throw error(
                        line,
                        "unexpected \(ConfigValues.quoted(values[1])) after the rate: write 'requests \(text) burst N'\(ConfigValues.didYouMean(values[1], among: ["burst"]))")
                }
                guard values.count == 3 else {
                    throw error(
                        line,
                        values.count == 2
                            ? "missing value: 'burst' needs N, e.g. 'requests \(text) burst 20'"
                            : "too many values for 'requests': expected 'requests N/UNIT [burst N]'")
                }
                burst = try value(line) { () throws(ConfigValueError) in
                    Int64(try ConfigValues.integer(values[2], in: 1...Int(RateLimitRuleConfig.maximumRequests), what: "burst"))
                }
            }
            draft.rateLimits[index].requests = RateLimitRate(count: rate.count, periodMilliseconds: rate.periodMilliseconds, burst: burst)
        case .concurrent:
            let text = try single(values, for: name, expected: "N", usage: "concurrent 4", line: line)
            draft.rateLimits[index].concurrent = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.integer(text, in: 1...RateLimitRuleConfig.maximumConcurrent, what: "concurrent")
            }
        case .tokens:
            let text = try single(
                values, for: name, expected: "N/s, N/min or N/h", usage: "tokens 100000/min",
                extraHint: " (token budgets take no burst: the budget is the burst)", line: line)
            let rate = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.rate(text, maximum: RateLimitRuleConfig.maximumTokens, what: "tokens")
            }
            draft.rateLimits[index].tokens = RateLimitRate(count: rate.count, periodMilliseconds: rate.periodMilliseconds)
        case nil:
            preconditionFailure("directive() only dispatches known limit keys")
        }
    }

    // MARK: Errors

    /// Throws the best message for a key not allowed here: wrong block, or unknown with a
    /// suggestion.
    private func rejectUnknownKey(_ name: String, line: ConfigLine) throws(ConfigError) -> Never {
        var homes: [String] = []
        if context != .top, ConfigTopLevelKey(rawValue: name) != nil { homes.append("at the top level, outside any block") }
        for kind in ConfigBlockKind.allCases where kind != context.block && kind.keys.contains(name) {
            homes.append("in " + kind.home)
        }
        // A block name that is also a key elsewhere (`limit`) gets the "belongs in" message.
        if let kind = ConfigBlockKind(rawValue: name), context != .top, homes.isEmpty {
            // e.g. "route /x" inside a block without "{": most likely a missing "}".
            throw error(
                line, "'\(kind.rawValue)' cannot appear inside \(contextName): blocks do not nest (missing '}' for the block opened on line \(openLine)?)")
        }
        if !homes.isEmpty {
            var message = "key '\(name)' is not allowed \(contextLocation); it belongs \(homes.joined(separator: " or "))"
            if context.block == .route, ConfigTimeoutKey(rawValue: name) != nil {
                message += " (routes may override only upstream_first_byte, upstream_idle, total and max_request_body)"
            }
            throw error(line, message)
        }
        var candidates = context.keys
        if context == .top { candidates += ConfigBlockKind.allCases.map(\.rawValue) }
        var hint = ConfigValues.didYouMean(name, among: candidates)
        if hint.isEmpty {
            // A typo of a key that lives elsewhere: "client_heder" at the top level.
            hint = Self.elsewhereHint(for: name, excluding: context)
        }
        throw error(line, "unknown key \(ConfigValues.quoted(name)) \(contextLocation)\(hint)")
    }

    /// ` (did you mean 'k' in the 'timeouts' block?)` for the closest key of another
    /// context, or the empty string.
    private static func elsewhereHint(for name: String, excluding context: ConfigContext) -> String {
        var homes: [(key: String, home: String)] = []
        if context != .top {
            homes += ConfigTopLevelKey.allCases.map { ($0.rawValue, "at the top level") }
        }
        for kind in ConfigBlockKind.allCases where kind != context.block {
            homes += kind.keys.map { ($0, "in " + kind.home) }
        }
        guard let key = ConfigValues.suggestion(for: name, among: homes.map(\.key)),
            let home = homes.first(where: { $0.key == key })?.home
        else { return "" }
        return " (did you mean '\(key)' \(home)?)"
    }

    /// The single value of a directive, or an error for none or several.
    private func single(
        _ values: [String], for name: String, expected: String, usage: String,
        extraHint: String = "", line: ConfigLine
    ) throws(ConfigError) -> String {
        if values.isEmpty {
            throw error(line, "missing value: '\(name)' needs \(expected), e.g. '\(usage)'")
        }
        if values.count > 1 {
            throw error(line, "too many values for '\(name)': expected one \(expected), got \(values.count)\(extraHint)")
        }
        return values[0]
    }

    private func duplicate(_ name: String, first: Int, line: ConfigLine) -> ConfigError {
        let location = context == .top ? "" : " in \(contextName)"
        return error(line, "duplicate '\(name)'\(location) (first set on line \(first))")
    }

    /// Runs a value parser, attaching this file and line to its error.
    private func value<T>(_ line: ConfigLine, _ parse: () throws(ConfigValueError) -> T) throws(ConfigError) -> T {
        try ConfigError.locating(file: file, line: line.number, parse)
    }

    private func error(_ line: ConfigLine, _ message: String) -> ConfigError {
        ConfigError(file: file, line: line.number, message: message)
    }

    /// Where the parser is, with its preposition: "at the top level", "in upstream 'llm'".
    private var contextLocation: String {
        context == .top ? "at the top level" : "in \(contextName)"
    }

    /// The current block as named in messages: "the 'timeouts' block", "upstream 'llm'".
    private var contextName: String {
        switch context {
        case .top: "the top level"
        case .timeouts: "the 'timeouts' block"
        case .limits: "the 'limits' block"
        case .upstream(let index): "upstream '\(draft.upstreams[index].name)'"
        case .route(let index): "route '\(draft.routes[index].prefix)'"
        case .log: "the 'log' block"
        case .admin: "the 'admin' block"
        case .limit(let index): "limit '\(draft.rateLimits[index].name)'"
        case .tls: "the 'tls' block"
        }
    }
}
