/// Value parsers for the rate-limit directives: rates, header names and address ranges.
extension ConfigValues {
    /// Rate units and their periods in milliseconds, in the order messages list them.
    static let rateUnits: [(unit: String, milliseconds: Int64)] = [("s", 1_000), ("min", 60_000), ("h", 3_600_000)]

    /// Parses `N/s`, `N/min` or `N/h` with `N` from 1 to `maximum`; `what` names the
    /// directive in the range error.
    static func rate(_ text: String, maximum: Int64, what: String) throws(ConfigValueError) -> (count: Int64, periodMilliseconds: Int64) {
        let expected = "expected N/s, N/min or N/h, e.g. '10/s'"
        guard let slash = text.firstIndex(of: "/") else {
            throw ConfigValueError("bad rate \(quoted(text)): \(expected)")
        }
        let digits = text[..<slash]
        let unit = String(text[text.index(after: slash)...])
        guard isDecimal(digits) else {
            throw ConfigValueError("bad rate \(quoted(text)): the count before '/' must be a whole number; \(expected)")
        }
        guard let period = rateUnits.first(where: { $0.unit == unit })?.milliseconds else {
            let hint = didYouMean(unit, among: rateUnits.map(\.unit) + ["m"]).replacing("'m'", with: "'min'")
            throw ConfigValueError("bad rate \(quoted(text)): unknown unit \(quoted(unit)) (use s, min or h)\(hint)")
        }
        // Int64(_:) is nil on overflow; either way the count is far beyond the maximum.
        guard let count = Int64(digits), (1...maximum).contains(count) else {
            throw ConfigValueError("\(what) must be from 1 to \(maximum) per period, got \(quoted(text))")
        }
        return (count, period)
    }

    /// Parses an HTTP field name (an RFC 9110 §5.6.2 token, at most 256 bytes) and returns
    /// it in lower case, the form header lookups compare against.
    static func headerName(_ text: String) throws(ConfigValueError) -> String {
        guard (1...256).contains(text.utf8.count), text.utf8.allSatisfy(isTokenByte) else {
            throw ConfigValueError("bad header name \(quoted(text)): expected a field name such as authorization or x-api-key")
        }
        return text.lowercased()
    }

    /// `tchar` of RFC 9110 §5.6.2.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        isNameByte(byte) || Array("!#$%&'*+.^`|~".utf8).contains(byte)
    }

    /// Parses `10.0.0.0/8`, `2001:db8::/32`, or a lone address (a /32 or /128 range).
    static func ipRange(_ text: String) throws(ConfigValueError) -> IPRange {
        let expected = "expected an IPv4 or IPv6 address with an optional /PREFIX, e.g. 10.0.0.0/8 or ::1/128"
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parsing: parts[0].utf8) else {
            throw ConfigValueError("bad address range \(quoted(text)): \(expected)")
        }
        // The prefix counts bits of the address as written: IPv6 text (even of an
        // IPv4-mapped address) takes 0-128, a dotted quad 0-32.
        let isIPv6Text = parts[0].contains(":")
        let maximum = isIPv6Text ? 128 : 32
        var prefix = maximum
        if parts.count == 2 {
            guard isDecimal(parts[1]), parts[1].utf8.count <= 3, let value = Int(parts[1]), value <= maximum else {
                throw ConfigValueError("bad prefix length in \(quoted(text)): \(isIPv6Text ? "IPv6" : "IPv4") prefixes are 0-\(maximum)")
            }
            prefix = value
        }
        let bits = isIPv6Text ? prefix : 96 + prefix
        guard let range = IPRange(network: address, maskBits: bits) else {
            // Only remaining failure: address bits set past the prefix. Say which network was meant.
            let mask = IPRange.mask(bits)
            let network = IPAddress(high: address.high & mask.high, low: address.low & mask.low)
            let written = isIPv6Text ? network.ipv6Text : network.description
            throw ConfigValueError("\(quoted(text)) has address bits set past the /\(prefix) prefix; write '\(written)/\(prefix)'")
        }
        return range
    }
}

// Parsing lives with the configuration (Net/ knows nothing of config errors, so Config depends on Net, never back).
extension IPRange {
    /// Parses `10.0.0.0/8`, `::1/128` or a single address (`/32` or `/128` implied).
    /// - Throws: ``ConfigError`` with file "command line" and line 0; the file parser wraps
    ///   the same check with its own file and line.
    public init(parsing text: String) throws(ConfigError) {
        self = try ConfigError.locating(file: ConfigError.commandLine, line: 0) { () throws(ConfigValueError) in
            try ConfigValues.ipRange(text)
        }
    }
}
