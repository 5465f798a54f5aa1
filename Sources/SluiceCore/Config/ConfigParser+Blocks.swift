/// The directives of the `tls`, `route` and `log` blocks (the `upstream` block's are in
/// ConfigParser+Upstream.swift), each writing its block's part of ``ConfigParser/draft``.
/// Internal rather than private only because ``ConfigParser/directive(_:values:line:)`` in
/// ConfigParser.swift dispatches here.
extension ConfigParser {
    mutating func tls(_ name: String, values: [String], line: ConfigLine) throws(ConfigError) {
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

    /// The value of `resolve_at_start`, at the top level or in an upstream block.
    func resolveAtStart(_ values: [String], line: ConfigLine) throws(ConfigError) -> ResolveAtStart {
        let text = try single(values, for: "resolve_at_start", expected: "retry or required", usage: "resolve_at_start required", line: line)
        guard let mode = ResolveAtStart(rawValue: text) else {
            throw error(line, "resolve_at_start must be retry or required, got \(ConfigValues.quoted(text))")
        }
        return mode
    }

    mutating func route(_ name: String, values: [String], index: Int, line: ConfigLine) throws(ConfigError) {
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
            draft.routes[index].injectUsage = try value(line) { () throws(ConfigValueError) in try ConfigValues.boolean(text, what: name) }
        case ConfigRouteKey.websocket.rawValue:
            let text = try single(values, for: name, expected: "on or off", usage: "\(name) on", line: line)
            draft.routes[index].websocket = try value(line) { () throws(ConfigValueError) in try ConfigValues.boolean(text, what: name) }
        default:  // an overridable timeout
            let text = try single(values, for: name, expected: "DURATION", usage: "\(name) 600s", line: line)
            let milliseconds = try value(line) { () throws(ConfigValueError) in try ConfigValues.duration(text) }
            if let key = ConfigTimeoutKey(rawValue: name) {
                draft.routes[index].timeoutOverrides[key] = milliseconds
            }
        }
    }

    mutating func log(_ name: String, values: [String], line: ConfigLine) throws(ConfigError) {
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
}
