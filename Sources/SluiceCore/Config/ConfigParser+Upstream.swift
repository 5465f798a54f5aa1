/// The directives of an `upstream` block: its servers, their connections, and the pool keys (balance, affinity,
/// health, retries) that fill ``ConfigDraft/Upstream/pool``. Checks that span lines (duplicate servers, one
/// scheme, not every server a backup, eject times) wait for ``ConfigDraft/resolve(file:sourcePath:)``.
/// Internal rather than private only because ``ConfigParser/directive(_:values:line:)`` dispatches here.
extension ConfigParser {
    /// Largest `max_idle`: far above any sane pool, low enough to catch a stray digit.
    static let maximumIdleConnections = 65_536
    /// Largest server `weight`: a 1000:1 split is already more than any fleet of mixed GPUs needs.
    static let maximumWeight = 1_000
    /// Largest server `max_streams` (0 = no cap): a stray digit, not a real replica's concurrency.
    static let maximumServerStreams = 1_000_000
    /// Largest `max_fails`.
    static let maximumFails = 1_000
    /// Largest `retries`: each retry is another server's prefill, and the budget caps them anyway.
    static let maximumRetries = 10
    /// Largest `retry_body_limit`: the kept body is held per exchange until its response starts.
    static let maximumRetryBodyLimit = 64 << 20
    /// Largest `affinity_load_factor`: far past the point where the bound stops mattering.
    static let maximumAffinityLoadFactor = 100.0

    /// The options that may follow a `server` URL, in the order messages list them.
    static let serverOptions = ["weight", "max_streams", "backup"]
    /// The options that may follow `health_check METHOD PATH`.
    static let healthCheckOptions = ["every", "timeout", "expect"]
    /// The `affinity` kinds.
    static let affinityKinds = ["header", "json", "prompt"]

    mutating func upstream(_ name: String, values: [String], index: Int, line: ConfigLine) throws(ConfigError) {
        let upstreamName = draft.upstreams[index].name
        if ConfigUpstreamTLSKey(rawValue: name) != nil {
            if draft.upstreams[index].tlsLine == 0 { draft.upstreams[index].tlsLine = line.number }
            draft.keyLines["upstream.\(upstreamName).\(name)"] = line.number
        }
        if let key = ConfigUpstreamPoolKey(rawValue: name) {
            return try pool(key, values: values, index: index, line: line)
        }
        switch name {
        case "server":
            draft.upstreams[index].servers.append(try server(values, line: line))
            // The first server's line stands for the upstream where no server line is at hand.
            if draft.keyLines["upstream.\(upstreamName).server"] == nil {
                draft.keyLines["upstream.\(upstreamName).server"] = line.number
            }
        case "resolve_at_start":
            draft.upstreams[index].resolveAtStart = try resolveAtStart(values, line: line)
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

    /// `server URL [weight N] [max_streams N] [backup]`, options in any order, each at most once.
    private func server(_ values: [String], line: ConfigLine) throws(ConfigError) -> UpstreamServerConfig {
        guard let url = values.first else {
            throw error(line, "missing value: 'server' needs URL, e.g. 'server http://127.0.0.1:8000' (options: weight N, max_streams N, backup)")
        }
        let address = try value(line) { () throws(ConfigValueError) in try ConfigValues.upstreamURL(url) }
        var server = UpstreamServerConfig(scheme: address.scheme, host: address.host, port: address.port, line: line.number)
        var given: Set<String> = []
        var position = 1
        while position < values.count {
            let option = values[position]
            guard Self.serverOptions.contains(option) else {
                if option.contains("://") {
                    throw error(line, "one server per line: write 'server \(option)' on a line of its own")
                }
                throw error(
                    line,
                    "unknown server option \(ConfigValues.quoted(option)): expected weight N, max_streams N or backup\(ConfigValues.didYouMean(option, among: Self.serverOptions))")
            }
            guard given.insert(option).inserted else {
                throw error(line, "'\(option)' is given twice on this server line")
            }
            position += 1
            if option == "backup" {
                server.backup = true
                continue
            }
            guard position < values.count else {
                let example = option == "weight" ? "2" : "32"
                throw error(line, "missing value: '\(option)' needs N, e.g. 'server \(url) \(option) \(example)'")
            }
            let text = values[position]
            position += 1
            if option == "weight" {
                server.weight = try value(line) { () throws(ConfigValueError) in
                    try ConfigValues.integer(text, in: 1...Self.maximumWeight, what: "weight")
                }
            } else {
                server.maxStreams = try value(line) { () throws(ConfigValueError) in
                    try ConfigValues.integer(text, in: 0...Self.maximumServerStreams, what: "max_streams")
                }
            }
        }
        return server
    }

    /// A key of ``ConfigUpstreamPoolKey``.
    private mutating func pool(_ key: ConfigUpstreamPoolKey, values: [String], index: Int, line: ConfigLine) throws(ConfigError) {
        let name = key.rawValue
        switch key {
        case .balance:
            let text = try single(values, for: name, expected: "least_streams, round_robin or random", usage: "balance least_streams", line: line)
            guard let policy = BalancePolicy(rawValue: text) else {
                let forms = BalancePolicy.allCases.map(\.rawValue)
                throw error(
                    line,
                    "balance must be least_streams, round_robin or random, got \(ConfigValues.quoted(text))\(ConfigValues.didYouMean(text, among: forms))")
            }
            draft.upstreams[index].pool.balance = policy
        case .affinity:
            draft.upstreams[index].pool.affinity = try affinity(values, line: line)
        case .affinityLoadFactor:
            let text = try single(values, for: name, expected: "a decimal number above 1", usage: "affinity_load_factor 1.25", line: line)
            guard let factor = ConfigValues.decimal(text), factor > 1, factor <= Self.maximumAffinityLoadFactor else {
                throw error(line, "affinity_load_factor must be a decimal number above 1 and at most 100, e.g. 1.25, got \(ConfigValues.quoted(text))")
            }
            draft.upstreams[index].pool.affinityLoadFactor = factor
        case .maxFails:
            let text = try single(values, for: name, expected: "N (0 = off)", usage: "max_fails 3", line: line)
            draft.upstreams[index].pool.passiveHealth.maxFails = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.integer(text, in: 0...Self.maximumFails, what: name)
            }
        case .failWindow:
            draft.upstreams[index].pool.passiveHealth.failWindow = try positiveDuration(values, for: name, usage: "fail_window 10s", line: line)
        case .ejectTime:
            draft.upstreams[index].pool.passiveHealth.ejectTime = try positiveDuration(values, for: name, usage: "eject_time 10s", line: line)
            draft.upstreams[index].ejectTimeLine = line.number
        case .maxEjectTime:
            draft.upstreams[index].pool.passiveHealth.maxEjectTime = try positiveDuration(values, for: name, usage: "max_eject_time 300s", line: line)
            draft.upstreams[index].maxEjectTimeLine = line.number
        case .healthCheck:
            draft.upstreams[index].pool.healthCheck = try healthCheck(values, line: line)
        case .retries:
            let text = try single(values, for: name, expected: "N (0 = none)", usage: "retries 2", line: line)
            draft.upstreams[index].pool.retry.retries = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.integer(text, in: 0...Self.maximumRetries, what: name)
            }
        case .retryOn:
            draft.upstreams[index].pool.retry.retryOn = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.retryConditions(values)
            }
        case .retryBodyLimit:
            let text = try single(values, for: name, expected: "SIZE", usage: "retry_body_limit 1m", line: line)
            draft.upstreams[index].pool.retry.retryBodyLimit = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.size(text, in: 0...Self.maximumRetryBodyLimit, what: name)
            }
        case .retryRatio:
            let text = try single(values, for: name, expected: "PERCENT", usage: "retry_ratio 20%", line: line)
            draft.upstreams[index].pool.retry.retryRatio = try value(line) { () throws(ConfigValueError) in
                try ConfigValues.percentage(text, what: name)
            }
        }
    }

    /// A duration above 0 (`fail_window`, `eject_time`, `max_eject_time`): for these `off` would mean nothing.
    private func positiveDuration(_ values: [String], for name: String, usage: String, line: ConfigLine) throws(ConfigError) -> Int {
        let text = try single(values, for: name, expected: "DURATION", usage: usage, line: line)
        let milliseconds = try value(line) { () throws(ConfigValueError) in try ConfigValues.duration(text) }
        guard milliseconds > 0 else {
            throw error(line, "\(name) must be above 0, got \(ConfigValues.quoted(text)) (to turn passive ejection off, write 'max_fails 0')")
        }
        return milliseconds
    }

    /// `affinity header NAME`, `affinity json PATH` or `affinity prompt SIZE`.
    private func affinity(_ values: [String], line: ConfigLine) throws(ConfigError) -> AffinityKey {
        guard let kind = values.first else {
            throw error(line, "missing value: 'affinity' needs header NAME, json PATH or prompt SIZE, e.g. 'affinity header x-session-id'")
        }
        guard let form = Self.affinityForms[kind] else {
            throw error(
                line,
                "bad affinity \(ConfigValues.quoted(kind)): expected header NAME, json PATH or prompt SIZE\(ConfigValues.didYouMean(kind, among: Self.affinityKinds))")
        }
        guard values.count == 2 else {
            throw error(
                line,
                values.count < 2
                    ? "missing value: 'affinity \(kind)' needs \(form.what), e.g. 'affinity \(kind) \(form.usage)'"
                    : "too many values for 'affinity \(kind)': expected one \(form.what), got \(values.count - 1)")
        }
        let text = values[1]
        switch kind {
        case "header":
            return .header(try value(line) { () throws(ConfigValueError) in try ConfigValues.headerName(text) })
        case "json":
            return .json(try value(line) { () throws(ConfigValueError) in try ConfigValues.jsonPath(text) })
        default:  // "prompt"
            return .prompt(bytes: try value(line) { () throws(ConfigValueError) in
                try ConfigValues.size(text, in: 1...AffinityKey.bodyReadLimit, what: "affinity prompt")
            })
        }
    }

    /// What each `affinity` kind takes, and an example.
    private static let affinityForms: [String: (what: String, usage: String)] = [
        "header": ("NAME", "x-session-id"), "json": ("PATH", "metadata.user_id"), "prompt": ("SIZE", "2k"),
    ]

    /// `health_check METHOD PATH [every DURATION] [timeout DURATION] [expect STATUS[-STATUS]]`, options in any order,
    /// each at most once; the timeout must be below the interval.
    private func healthCheck(_ values: [String], line: ConfigLine) throws(ConfigError) -> HealthCheckConfig {
        let usage = "health_check GET /health every 5s timeout 2s expect 200"
        guard values.count >= 2 else {
            throw error(line, "missing value: 'health_check' needs METHOD PATH, e.g. '\(usage)'")
        }
        let method = values[0]
        guard method == "GET" || method == "HEAD" else {
            throw error(
                line,
                "health_check method must be GET or HEAD, got \(ConfigValues.quoted(method))\(ConfigValues.didYouMean(method, among: ["GET", "HEAD"]))")
        }
        var check = HealthCheckConfig(method: method, path: try value(line) { () throws(ConfigValueError) in
            try ConfigValues.healthCheckPath(values[1])
        })
        var given: Set<String> = []
        var position = 2
        while position < values.count {
            let option = values[position]
            guard Self.healthCheckOptions.contains(option) else {
                throw error(
                    line,
                    "unknown health_check option \(ConfigValues.quoted(option)): expected every DURATION, timeout DURATION or expect STATUS"
                        + ConfigValues.didYouMean(option, among: Self.healthCheckOptions))
            }
            guard given.insert(option).inserted else {
                throw error(line, "'\(option)' is given twice on this health_check line")
            }
            guard position + 1 < values.count else {
                throw error(line, "missing value: '\(option)' needs \(option == "expect" ? "STATUS or LOW-HIGH" : "DURATION"), e.g. '\(usage)'")
            }
            let text = values[position + 1]
            position += 2
            if option == "expect" {
                check.expect = try value(line) { () throws(ConfigValueError) in try ConfigValues.statusRange(text) }
                continue
            }
            let milliseconds = try value(line) { () throws(ConfigValueError) in try ConfigValues.duration(text) }
            guard milliseconds > 0 else {
                throw error(line, "health_check \(option) must be above 0, got \(ConfigValues.quoted(text)) (to stop probing, remove the line)")
            }
            if option == "every" { check.interval = milliseconds } else { check.timeout = milliseconds }
        }
        guard check.timeout < check.interval else {
            func source(_ option: String, _ milliseconds: Int) -> String {
                ConfigValues.durationText(milliseconds) + (given.contains(option) ? "" : ", the default")
            }
            throw error(
                line,
                "health_check timeout (\(source("timeout", check.timeout))) must be below its interval (every \(source("every", check.interval)))")
        }
        return check
    }
}
