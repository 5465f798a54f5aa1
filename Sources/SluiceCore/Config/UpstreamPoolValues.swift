/// Value parsers for the pool keys of an `upstream` block: decimals, percentages, statuses, JSON paths, probe
/// paths and retry conditions. Each throws a ``ConfigValueError`` quoting the input; callers add file and line.
extension ConfigValues {
    /// Largest `affinity json` path, in dotted parts: request bodies nest shallowly, and the scanner looking for
    /// the key keeps one frame per part.
    static let maximumJSONPathComponents = 8
    /// Longest `health_check` path; a probe's request line stays one small write.
    static let maximumHealthCheckPathBytes = 1_024

    /// Parses a plain decimal, `1` or `1.25`: digits, optionally a dot and more digits. `Double(_:)` alone would
    /// also take a sign, an exponent, `inf` and `nan`, none of which a config value means.
    static func decimal(_ text: String) -> Double? {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard isDecimal(parts[0]), parts.count == 1 || isDecimal(parts[1]) else { return nil }
        return Double(text)
    }

    /// Parses a percentage, `20%` or `12.5%`, from 0 to 100, into a fraction (`0.2`), naming `what` in the error.
    static func percentage(_ text: String, what: String) throws(ConfigValueError) -> Double {
        guard text.hasSuffix("%"), let value = decimal(String(text.dropLast())), value <= 100 else {
            throw ConfigValueError("\(what) must be a percentage from 0% to 100%, e.g. 20%, got \(quoted(text))")
        }
        return value / 100
    }

    /// Parses `200` or `200-399`: statuses from 100 to 599, the first not above the second.
    static func statusRange(_ text: String) throws(ConfigValueError) -> ClosedRange<Int> {
        func status(_ part: Substring) -> Int? {
            guard part.utf8.count == 3, isDecimal(part), let value = Int(part), (100...599).contains(value) else { return nil }
            return value
        }
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard let low = status(parts[0]), let high = parts.count == 2 ? status(parts[1]) : low else {
            throw ConfigValueError("bad status \(quoted(text)): expected a status from 100 to 599 or a range such as 200-399")
        }
        guard low <= high else {
            throw ConfigValueError("bad status range \(quoted(text)): \(low) is above \(high)")
        }
        return low...high
    }

    /// Parses a dotted path of object keys, `user` or `metadata.user_id`: 1 to ``maximumJSONPathComponents``
    /// non-empty parts.
    static func jsonPath(_ text: String) throws(ConfigValueError) -> [String] {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        if parts.contains(where: \.isEmpty) {
            throw ConfigValueError("bad JSON path \(quoted(text)): each part between dots must be a key, e.g. metadata.user_id")
        }
        // A key really named "a[0]" is rarer than someone expecting array indexes to work.
        if text.contains(where: { $0 == "[" || $0 == "]" || $0 == "\"" }) {
            throw ConfigValueError(
                "bad JSON path \(quoted(text)): array indexes and quotes are not supported; name object keys, e.g. metadata.user_id")
        }
        if parts.count > maximumJSONPathComponents {
            throw ConfigValueError("JSON path \(quoted(text)) has \(parts.count) parts; at most \(maximumJSONPathComponents)")
        }
        return parts
    }

    /// Parses the path a health probe requests: origin-form, starting with `/`, visible ASCII only (it is sent
    /// as written), at most ``maximumHealthCheckPathBytes``.
    static func healthCheckPath(_ text: String) throws(ConfigValueError) -> String {
        guard text.hasPrefix("/") else {
            throw ConfigValueError("bad health_check path \(quoted(text)): must start with '/', e.g. /health")
        }
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw ConfigValueError(
                "bad health_check path \(quoted(text)): must be ASCII without spaces or control characters; percent-encode other characters")
        }
        guard text.utf8.count <= maximumHealthCheckPathBytes else {
            throw ConfigValueError("health_check path is \(text.utf8.count) bytes long; at most \(maximumHealthCheckPathBytes)")
        }
        return text
    }

    /// The `retry_on` words besides statuses, in the order messages list them.
    static let retryConditionWords: [(word: String, condition: RetryCondition)] = [("connect_error", .connectError), ("reset", .reset)]

    /// Parses the values of `retry_on`: conditions separated by commas and/or spaces (`connect_error, reset, 503`),
    /// each `connect_error`, `reset`, `429` or a status from 500 to 599, each once; or `off` alone (no conditions).
    static func retryConditions(_ values: [String]) throws(ConfigValueError) -> Set<RetryCondition> {
        let words = values.flatMap { $0.split(separator: ",").map(String.init) }
        if words.isEmpty {
            throw ConfigValueError("missing value: 'retry_on' needs conditions or off, e.g. 'retry_on connect_error, reset, 502, 503, 504, 429'")
        }
        if words == ["off"] { return [] }
        if words.contains("off") {
            throw ConfigValueError("retry_on off turns every condition off; it cannot be combined with others")
        }
        let expected = "expected connect_error, reset, 429 or a status from 500 to 599, or off"
        var conditions: Set<RetryCondition> = []
        for word in words {
            let condition: RetryCondition
            if let named = retryConditionWords.first(where: { $0.word == word }) {
                condition = named.condition
            } else if isDecimal(word) {
                guard let status = Int(word), status == 429 || (500...599).contains(status) else {
                    throw ConfigValueError(
                        "retry_on status \(quoted(word)) is not retried: only 429 and 500-599 are (a 4xx is the client's to fix)")
                }
                condition = .status(status)
            } else {
                let hint = didYouMean(word, among: retryConditionWords.map(\.word) + ["off"])
                throw ConfigValueError("bad retry_on condition \(quoted(word)): \(expected)\(hint)")
            }
            guard conditions.insert(condition).inserted else {
                throw ConfigValueError("retry_on lists \(quoted(word)) twice")
            }
        }
        return conditions
    }

    /// `5s`, `500ms`, `2m`: the shortest exact spelling of `milliseconds` as the config writes it.
    static func durationText(_ milliseconds: Int) -> String {
        for (unit, name) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s")] where milliseconds != 0 && milliseconds % unit == 0 {
            return "\(milliseconds / unit)\(name)"
        }
        return milliseconds == 0 ? "off" : "\(milliseconds)ms"
    }
}
