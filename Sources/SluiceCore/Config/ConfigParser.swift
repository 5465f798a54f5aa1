/// Turns the lines of a config file into a ``ConfigDraft``, reporting the first problem with
/// its line. Single pass, one line at a time; besides the draft, the state carried between
/// lines is the open block and the first line of each name seen (for duplicate errors).
struct ConfigParser {
    /// Name used in errors (the path as the user gave it).
    let file: String
    /// Everything read so far. Settable inside the module only because the block directives
    /// in ConfigParser+Blocks.swift and ConfigParser+Limits.swift fill it.
    var draft = ConfigDraft()
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
        // Only the top-level `listen` and `trusted_proxies`, a route's `limit` and an upstream's `server`
        // repeat; the admin block takes one address.
        let repeats =
            context == .top
            ? ConfigTopLevelKey(rawValue: name)?.repeats == true
            : (context.block == .route && name == "limit") || (context.block == .upstream && name == "server")
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
        case .resolveAtStart:
            draft.resolveAtStart = try resolveAtStart(values, line: line)
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
                message += " (routes may override only upstream_first_byte, upstream_idle, total, tunnel_idle and max_request_body)"
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

    /// The single value of a directive, or an error for none or several. (This and ``value(_:_:)``
    /// and ``error(_:_:)`` are internal for the directives in ConfigParser+*.swift.)
    func single(
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
    func value<T>(_ line: ConfigLine, _ parse: () throws(ConfigValueError) -> T) throws(ConfigError) -> T {
        try ConfigError.locating(file: file, line: line.number, parse)
    }

    /// An error at `line` of this file.
    func error(_ line: ConfigLine, _ message: String) -> ConfigError {
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
