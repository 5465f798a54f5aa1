#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension Config {
    /// Listen address used when neither a config file nor `--listen` names one.
    public static let defaultListenAddress = ListenAddress(host: "127.0.0.1", port: 8080)

    /// Builds the configuration for a run: reads `overrides.configPath` if given, applies the
    /// flags on top, then validates the result.
    ///
    /// Flag rules: `--listen` replaces the file's listeners; `--workers` replaces `workers`;
    /// `--upstream URL` replaces the servers of the upstream that route `/` names, or, when
    /// there is no `/` route, adds upstream `default` and route `/` to it; `--log-file`
    /// replaces the log `file`; `--log-stdout` turns stdout logging on whatever the file
    /// says; `--admin` replaces the `admin` block's `listen`. Without a file, `--upstream` is
    /// required and listening defaults to ``defaultListenAddress``.
    ///
    /// Besides parsing, it checks that the log file's directory exists (relative paths are
    /// taken from the working directory) and that the admin address is not a public one.
    ///
    /// Call once at boot, on the main thread; it reads the file synchronously.
    /// - Throws: ``ConfigError``: file problems carry the file's path and line; flag problems
    ///   carry ``ConfigError/commandLine``.
    public static func load(overrides: CommandLineOverrides) throws(ConfigError) -> Config {
        var draft: ConfigDraft
        let file: String
        if let path = overrides.configPath {
            draft = try ConfigParser.parse(ConfigFile.readAll(path), file: path)
            file = path
        } else {
            guard overrides.upstreamURL != nil else {
                throw ConfigError(
                    file: ConfigError.commandLine, line: 0,
                    message: "no upstream: pass --upstream URL or --config FILE")
            }
            draft = ConfigDraft()
            draft.listeners = [defaultListenAddress]
            draft.listenerLines = [0]
            file = ConfigError.commandLine
        }
        try draft.apply(overrides)
        return try draft.resolve(file: file, sourcePath: overrides.configPath)
    }

    /// Parses and validates config text as if it were the file `file` (used in error
    /// messages and as ``sourcePath``). No flags are applied. Validation is the same as
    /// ``load(overrides:)``'s, including the check that the log file's directory exists.
    /// - Throws: ``ConfigError`` with `file` and the offending line.
    public static func parse(text: String, file: String) throws(ConfigError) -> Config {
        let draft = try ConfigParser.parse(Array(text.utf8), file: file)
        return try draft.resolve(file: file, sourcePath: file)
    }
}

extension ConfigDraft {
    /// Applies command-line flags. Values were already checked by the flag parser; they are
    /// checked again here because ``CommandLineOverrides`` can be built in code.
    mutating func apply(_ overrides: CommandLineOverrides) throws(ConfigError) {
        func flagError(_ message: String) -> ConfigError {
            ConfigError(file: ConfigError.commandLine, line: 0, message: message)
        }
        if !overrides.listeners.isEmpty {
            listeners = overrides.listeners
            listenerLines = Array(repeating: 0, count: listeners.count)
            listenersFromFlag = true
        }
        if let path = overrides.logFile {
            // Checked, like a file's `file`, in resolve(); an empty path cannot be a file.
            guard !path.isEmpty else { throw flagError("--log-file needs a PATH") }
            log.file = path
            log.fileLine = 0
        }
        if overrides.logStdout {
            log.stdout = true
        }
        if let address = overrides.admin {
            admin = address
            adminLine = 0
        }
        if let workers = overrides.workers {
            guard Config.workerRange.contains(workers) else {
                throw flagError("--workers must be a whole number from 1 to 256, got '\(workers)'")
            }
            self.workers = workers
        }
        guard let url = overrides.upstreamURL else { return }
        let server = try ConfigError.locating(file: ConfigError.commandLine, line: 0, prefix: "--upstream: ") {
            () throws(ConfigValueError) in try ConfigValues.upstreamURL(url)
        }
        if let root = routes.first(where: { $0.prefix == "/" }) {
            // A "/" route naming no or an unknown upstream is left alone: resolve() reports it
            // with its line, which is more useful than guessing what was meant.
            if let index = upstreams.firstIndex(where: { $0.name == root.upstream }) {
                // Every server line goes; the pool keys stay.
                upstreams[index].servers = [UpstreamServerConfig(scheme: server.scheme, host: server.host, port: server.port)]
                // The file's `server` line no longer says where the name came from.
                keyLines["upstream.\(upstreams[index].name).server"] = nil
            }
            return
        }
        let name = "default"
        if let existing = upstreams.first(where: { $0.name == name }) {
            throw flagError(
                "--upstream would add upstream '\(name)' for route '/', but line \(existing.line) already declares an upstream named '\(name)'; add 'route / { upstream \(name) }' or rename it"
            )
        }
        upstreams.append(
            Upstream(name: name, line: 0, servers: [UpstreamServerConfig(scheme: server.scheme, host: server.host, port: server.port)]))
        routes.append(Route(prefix: "/", line: 0, upstream: name))
    }

    /// Checks everything that spans lines and builds the immutable ``Config``.
    /// - Throws: ``ConfigError`` with `file`; line 0 for "missing" errors that have no line.
    func resolve(file: String, sourcePath: String?) throws(ConfigError) -> Config {
        func fail(_ line: Int, _ message: String) -> ConfigError {
            ConfigError(file: file, line: line, message: message)
        }
        if listeners.isEmpty {
            throw fail(0, "no listener: add 'listen ADDRESS' (e.g. 'listen 127.0.0.1:8080') or pass --listen")
        }
        var resolvedUpstreams: [UpstreamConfig] = []
        for upstream in upstreams {
            resolvedUpstreams.append(try upstream.resolve(file: file, resolveAtStart: resolveAtStart))
        }
        let resolvedRateLimits = try resolveRateLimits(file: file)
        let names = Set(upstreams.map(\.name))
        var resolvedRoutes: [RouteConfig] = []
        for route in routes {
            guard let upstream = route.upstream else {
                throw fail(route.line, "route '\(route.prefix)' has no 'upstream': add e.g. 'upstream NAME' inside the block")
            }
            guard names.contains(upstream) else {
                let hint = names.isEmpty ? " (no upstream blocks are declared)" : ConfigValues.didYouMean(upstream, among: upstreams.map(\.name))
                throw fail(route.upstreamLine, "route '\(route.prefix)' names unknown upstream \(ConfigValues.quoted(upstream))\(hint)")
            }
            var merged = timeouts
            for (key, milliseconds) in route.timeoutOverrides {
                key.apply(milliseconds, to: &merged)
            }
            var limitIndices: [Int] = []
            for reference in route.limits {
                // Names are unique (checked at parse time), so the first match is the rule.
                guard let index = rateLimits.firstIndex(where: { $0.name == reference.name }) else {
                    let hint =
                        rateLimits.isEmpty
                        ? " (no limit blocks are declared)" : ConfigValues.didYouMean(reference.name, among: rateLimits.map(\.name))
                    throw fail(reference.line, "route '\(route.prefix)' names unknown limit \(ConfigValues.quoted(reference.name))\(hint)")
                }
                limitIndices.append(index)
            }
            resolvedRoutes.append(
                RouteConfig(
                    prefix: route.prefix, upstream: upstream, timeouts: merged,
                    maxRequestBody: route.maxRequestBody ?? limits.maxRequestBody,
                    captureRequestBytes: route.captureRequestBytes,
                    captureResponseBytes: route.captureResponseBytes, limits: limitIndices, injectUsage: route.injectUsage,
                    websocket: route.websocket))
        }
        if upstreams.isEmpty {
            throw fail(0, "no upstream: add a block 'upstream NAME { server URL }'")
        }
        if routes.isEmpty {
            throw fail(0, "no route: add a block 'route / { upstream NAME }'")
        }
        let resolvedLog = try resolveLog(file: file)
        try checkAdmin(file: file)
        if limits.lowWatermark >= limits.highWatermark {
            // Equal watermarks would lose the hysteresis: reads would pause and resume on
            // every byte around the mark.
            throw fail(
                lowWatermarkLine > 0 ? lowWatermarkLine : highWatermarkLine,
                "low_watermark (\(limits.lowWatermark) bytes) must be below high_watermark (\(limits.highWatermark) bytes)")
        }
        var config = Config(
            workers: workers ?? Config.defaultWorkerCount(),
            listeners: listeners,
            upstreams: resolvedUpstreams,
            routes: resolvedRoutes,
            timeouts: timeouts,
            limits: limits,
            log: resolvedLog,
            admin: admin,
            sourcePath: sourcePath,
            rateLimits: resolvedRateLimits,
            trustedProxies: trustedProxies,
            drainTimeout: drainTimeout,
            tlsListeners: tlsListeners,
            tls: try resolveTLS(file: file))
        config.keyLines = keyLines
        if let tls { config.keyLines["tls"] = tls.line }
        for upstream in upstreams { config.keyLines["upstream.\(upstream.name)"] = upstream.line }
        return config
    }

    /// The `tls` block as server settings; a `listen ... tls` needs the block, and the block needs
    /// a certificate and a key. Whether the files load is checked when contexts are built.
    private func resolveTLS(file: String) throws(ConfigError) -> TLSServerConfig? {
        if let first = listeners.first(where: { tlsListeners.contains($0) }), tls == nil {
            let line = listenerLines[listeners.firstIndex(of: first) ?? 0]
            throw ConfigError(file: file, line: line,
                              message: "'listen \(first) tls' needs a 'tls { certificate PATH  key PATH }' block")
        }
        guard let tls else { return nil }
        guard let certificate = tls.certificate else {
            throw ConfigError(file: file, line: tls.line, message: "the 'tls' block has no 'certificate': add e.g. 'certificate /etc/sluice/tls/chain.pem'")
        }
        guard let key = tls.key else {
            throw ConfigError(file: file, line: tls.line, message: "the 'tls' block has no 'key': add e.g. 'key /etc/sluice/tls/key.pem'")
        }
        return TLSServerConfig(certificateFile: certificate, keyFile: key, minVersion: tls.minVersion, ciphers: tls.ciphers,
                               ciphersuites: tls.ciphersuites, handshakeTimeout: tls.handshakeTimeout)
    }

    /// Checks that every `limit` block has a key and at least one limit.
    /// - Throws: ``ConfigError`` at the block's opening line.
    private func resolveRateLimits(file: String) throws(ConfigError) -> [RateLimitRuleConfig] {
        var resolved: [RateLimitRuleConfig] = []
        for rule in rateLimits {
            guard let key = rule.key else {
                throw ConfigError(
                    file: file, line: rule.line,
                    message: "limit '\(rule.name)' has no 'key': add 'key header NAME', 'key client' or 'key global' inside the block")
            }
            if rule.requests == nil && rule.concurrent == nil && rule.tokens == nil {
                throw ConfigError(
                    file: file, line: rule.line,
                    message: "limit '\(rule.name)' sets no limit: add 'requests N/s', 'concurrent N' or 'tokens N/min' inside the block")
            }
            resolved.append(
                RateLimitRuleConfig(
                    name: rule.name, key: key, requests: rule.requests, concurrent: rule.concurrent, tokens: rule.tokens))
        }
        return resolved
    }

    /// Checks the log file's place on disk and resolves `stdout`.
    /// - Throws: ``ConfigError`` at the `file` line, or from the command line for `--log-file`.
    private func resolveLog(file: String) throws(ConfigError) -> LogConfig {
        if let path = log.file, let problem = ConfigFile.logFileProblem(path) {
            throw log.fileLine > 0
                ? ConfigError(file: file, line: log.fileLine, message: problem)
                : ConfigError(file: ConfigError.commandLine, line: 0, message: "--log-file: " + problem)
        }
        return LogConfig(
            file: log.file, stdout: log.stdout, queueCapacity: log.queueCapacity, fsyncInterval: log.fsyncInterval,
            includeQuery: log.includeQuery, requestBodyScanLimit: log.requestBodyScanLimit)
    }

    /// Checks that an `admin` block has a `listen` and that the admin address shares no
    /// socket with a public listener: `/metrics` must never be reachable by clients. (The bind would
    /// fail anyway, each address being one exclusive socket, but as an address in use, not naming the lines.)
    /// - Throws: ``ConfigError`` at the admin `listen` line (naming the public listener's
    ///   line), or from the command line when `--admin` set the address.
    private func checkAdmin(file: String) throws(ConfigError) {
        guard let admin else {
            if adminBlockLine > 0 {
                throw ConfigError(
                    file: file, line: adminBlockLine,
                    message: "the 'admin' block has no 'listen': add e.g. 'listen 127.0.0.1:9901' inside it, or remove the block")
            }
            return
        }
        for (index, listener) in listeners.enumerated() {
            guard let overlap = Self.overlap(admin: admin, public: listener) else { continue }
            let line = index < listenerLines.count ? listenerLines[index] : 0
            let source =
                line > 0
                ? (adminLine > 0 ? "line \(line)" : "line \(line) of \(file)")
                : (listenersFromFlag ? "from --listen" : "the default listener")
            let fix = "give the admin listener its own port so /metrics is never served to clients"
            switch (adminLine > 0, overlap) {
            case (true, .same):
                throw ConfigError(
                    file: file, line: adminLine,
                    message: "admin listen address '\(admin)' is also a public listener (\(source)); \(fix)")
            case (true, .wildcard):
                throw ConfigError(
                    file: file, line: adminLine,
                    message: "admin listen address '\(admin)' overlaps public listener '\(listener)' (\(source)): same port, and a wildcard address covers every interface; \(fix)")
            case (false, .same):
                throw ConfigError(
                    file: ConfigError.commandLine, line: 0,
                    message: "--admin '\(admin)' is also a public listener (\(source)); \(fix)")
            case (false, .wildcard):
                throw ConfigError(
                    file: ConfigError.commandLine, line: 0,
                    message: "--admin '\(admin)' overlaps public listener '\(listener)' (\(source)): same port, and a wildcard address covers every interface; \(fix)")
            }
        }
    }

    /// How an admin address collides with a public one.
    enum Overlap {
        /// Same host as written and same port.
        case same
        /// Same port, and one side is a wildcard (`0.0.0.0`, `::`) covering the other.
        case wildcard
    }

    /// Whether `admin` and `public` would share a socket, or nil when they cannot.
    ///
    /// Port 0 (ephemeral) never collides. `::` covers every address (dual-stack is the
    /// Linux default); `0.0.0.0` covers IPv4 literals and host names. Other host names are
    /// compared as written (case-insensitively), since resolving them is a bind-time matter.
    static func overlap(admin: ListenAddress, public: ListenAddress) -> Overlap? {
        guard admin.port != 0, admin.port == `public`.port else { return nil }
        if admin.host.lowercased() == `public`.host.lowercased() { return .same }
        func covers(_ wildcard: String, _ other: String) -> Bool {
            switch wildcard {
            case "::": true
            case "0.0.0.0": !other.contains(":")  // IPv4 literal or name, not IPv6
            default: false
            }
        }
        return covers(admin.host, `public`.host) || covers(`public`.host, admin.host) ? .wildcard : nil
    }
}

/// Reads a config file with plain POSIX calls.
///
/// Departure from STYLE.md ("System/ holds the only files that call the kernel"): this runs
/// once at boot on the main thread, and going through System/ would tie Config/ to a folder
/// with non-blocking, event-loop-oriented wrappers; Foundation's file APIs on Linux would lose
/// the errno text the error message needs.
enum ConfigFile {
    /// Largest config file accepted. Real ones are a few KiB; this stops `--config /dev/zero`
    /// or a mistyped path to a log file from eating memory.
    static let maximumBytes = 1 << 20

    /// What is wrong with `path` as a log file to create or append to, or nil when nothing
    /// is visibly wrong: its directory must exist, and the path must not be a directory.
    /// Permissions are not checked: `sluice check` may run as another user than the proxy.
    /// Relative paths are taken from the working directory, as the writer will open them.
    static func logFileProblem(_ path: String) -> String? {
        if path.hasSuffix("/") {
            return "log file \(ConfigValues.quoted(path)) names a directory; give a file path, e.g. \(ConfigValues.quoted(path + "completions.jsonl"))"
        }
        let directory: String
        if let slash = path.lastIndex(of: "/") {
            directory = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            directory = "."
        }
        let relative = path.hasPrefix("/") ? "" : " (relative to the working directory \(ConfigValues.quoted(workingDirectory())))"
        var info = stat()
        if stat(directory, &info) != 0 {
            let code = errno
            if code == ENOENT {
                return "directory \(ConfigValues.quoted(directory)) does not exist\(relative); create it or fix the log file path"
            }
            if code == ENOTDIR {
                return "directory \(ConfigValues.quoted(directory)) does not exist: part of its path is a file\(relative); fix the log file path"
            }
            return "cannot check directory \(ConfigValues.quoted(directory)): \(String(cString: strerror(code)))"
        }
        if info.st_mode & S_IFMT != S_IFDIR {
            return "\(ConfigValues.quoted(directory)) is not a directory\(relative); fix the log file path"
        }
        if stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR {
            return "log file \(ConfigValues.quoted(path)) is a directory\(relative); give a file path inside it"
        }
        return nil
    }

    /// The working directory, for messages about relative paths; "?" if the kernel will not say.
    private static func workingDirectory() -> String {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let found = buffer.withUnsafeMutableBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { getcwd($0.baseAddress, $0.count) != nil }
        }
        guard found else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Reads the whole file at `path`.
    /// - Throws: ``ConfigError`` (line 0) with the errno text, or when the file is too large.
    static func readAll(_ path: String) throws(ConfigError) -> [UInt8] {
        func fail(_ message: String) -> ConfigError {
            ConfigError(file: path, line: 0, message: message)
        }
        func errnoText(_ code: Int32) -> String {
            String(cString: strerror(code))
        }
        var descriptor: Int32
        repeat {
            descriptor = open(path, O_RDONLY | O_CLOEXEC)
        } while descriptor < 0 && errno == EINTR
        if descriptor < 0 {
            throw fail("cannot open: \(errnoText(errno))")
        }
        defer { _ = close(descriptor) }  // close never retries: the fd is gone even on EINTR
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                throw fail("cannot read: \(errnoText(code))")
            }
            if count == 0 { return contents }
            contents += chunk[..<count]
            if contents.count > maximumBytes {
                throw fail("file is larger than \(maximumBytes >> 20) MiB; is this the right file?")
            }
        }
    }
}
