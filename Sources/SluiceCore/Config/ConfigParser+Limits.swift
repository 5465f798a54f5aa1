/// The directives of the `limits` block (connection and size limits, watermarks) and of the
/// `limit NAME` rate-limit blocks. Internal rather than private only because
/// ``ConfigParser/directive(_:values:line:)`` in ConfigParser.swift dispatches here.
extension ConfigParser {
    mutating func limit(_ name: String, values: [String], line: ConfigLine) throws(ConfigError) {
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

    /// A directive of a `limit` block.
    mutating func rateLimit(_ name: String, values: [String], index: Int, line: ConfigLine) throws(ConfigError) {
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
}
