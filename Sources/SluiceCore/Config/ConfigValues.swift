#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Parsers for the value types that appear in the config file and in flags. Each returns the
/// value or throws a ``ConfigValueError`` whose message quotes the input and names the
/// expected form; callers add the file and line.
enum ConfigValues {
    /// Longest accepted duration: 168h (a week). Bounds deadline arithmetic on the monotonic
    /// clock so `now + timeout` can never overflow, and catches unit slips like `300h`.
    static let maximumDurationMilliseconds = 168 * 3_600_000

    /// Parses `500ms`, `10s`, `5m`, `1h` or `off` into milliseconds (`off` is 0).
    static func duration(_ text: String) throws(ConfigValueError) -> Int {
        if text == "off" { return 0 }
        let expected = "expected a whole number with a unit (500ms, 10s, 5m, 1h) or off"
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let unit = text.dropFirst(digits.count)
        if digits.isEmpty {
            throw ConfigValueError("bad duration \(quoted(text)): \(expected)")
        }
        if unit.isEmpty {
            throw ConfigValueError("duration needs a unit: \(quoted(text)) (use ms, s, m or h, e.g. \(digits)s)")
        }
        if unit.first == "." || unit.first == "," {
            throw ConfigValueError("bad duration \(quoted(text)): use a whole number, e.g. 1500ms instead of 1.5s")
        }
        let multiplier: Int
        switch unit {
        case "ms": multiplier = 1
        case "s": multiplier = 1_000
        case "m": multiplier = 60_000
        case "h": multiplier = 3_600_000
        default:
            throw ConfigValueError("bad duration \(quoted(text)): unknown unit \(quoted(String(unit))) (use ms, s, m or h)")
        }
        // Int(_:) returns nil on overflow; either way the value is far beyond the maximum.
        guard let count = Int(digits), count <= maximumDurationMilliseconds / multiplier else {
            throw ConfigValueError("duration \(quoted(text)) is too large (maximum 168h)")
        }
        return count * multiplier
    }

    /// Parses a byte size: `512`, `64k`, `10m`, `1g` (binary multiples, either case).
    static func size(_ text: String) throws(ConfigValueError) -> Int64 {
        let expected = "expected bytes (512) or a whole number with k, m or g (64k, 10m, 1g)"
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let unit = text.dropFirst(digits.count)
        if digits.isEmpty {
            throw ConfigValueError("bad size \(quoted(text)): \(expected)")
        }
        let shift: Int64
        switch unit {
        case "": shift = 0
        case "k", "K": shift = 10
        case "m", "M": shift = 20
        case "g", "G": shift = 30
        default:
            throw ConfigValueError("bad size \(quoted(text)): \(expected)")
        }
        guard let count = Int64(digits), count <= Int64.max >> shift else {
            throw ConfigValueError("size \(quoted(text)) is too large")
        }
        return count << shift
    }

    /// Whether `text` is one or more ASCII digits: `Int(_:)` alone would accept a sign.
    static func isDecimal(_ text: some StringProtocol) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    /// Parses a whole number in `range`, naming `what` in the error.
    static func integer(_ text: String, in range: ClosedRange<Int>, what: String) throws(ConfigValueError) -> Int {
        guard isDecimal(text), let value = Int(text), range.contains(value) else {
            throw ConfigValueError("\(what) must be a whole number from \(range.lowerBound) to \(range.upperBound), got \(quoted(text))")
        }
        return value
    }

    /// Accepted spellings of a boolean, true forms first; lower case only, like `off` and
    /// `auto` elsewhere, so one file never mixes `On` and `on`.
    static let booleanForms: [(text: String, value: Bool)] = [
        ("on", true), ("off", false), ("true", true), ("false", false), ("yes", true), ("no", false),
    ]

    /// Parses `on`/`off`, `true`/`false` or `yes`/`no`, naming `what` in the error. `extraForms`
    /// are other words the caller handles itself (e.g. `auto`), listed in the error only.
    static func boolean(_ text: String, what: String, extraForms: [String] = []) throws(ConfigValueError) -> Bool {
        if let form = booleanForms.first(where: { $0.text == text }) { return form.value }
        let forms = extraForms + booleanForms.map(\.text)
        let list = forms.dropLast().joined(separator: ", ") + " or " + forms[forms.count - 1]
        throw ConfigValueError("\(what) must be \(list), got \(quoted(text))\(didYouMean(text, among: forms))")
    }

    /// Parses a size (see ``size(_:)``) that must lie in `range`; the error names `what` and
    /// shows the bounds both with a unit and in bytes.
    static func size(_ text: String, in range: ClosedRange<Int>, what: String) throws(ConfigValueError) -> Int {
        let bounds = "from \(sizeText(range.lowerBound)) to \(sizeText(range.upperBound))"
        let bytes = "\(range.lowerBound) to \(range.upperBound) bytes"
        let value: Int64
        do throws(ConfigValueError) {
            value = try size(text)
        } catch {
            throw ConfigValueError("\(error.message); \(what) must be \(bounds)")
        }
        guard value >= Int64(range.lowerBound), value <= Int64(range.upperBound) else {
            throw ConfigValueError("\(what) must be \(bounds) (\(bytes)), got \(quoted(text))")
        }
        return Int(value)
    }

    /// `16m`, `64k`, `1000`: the shortest exact spelling of `bytes` as the config writes it.
    static func sizeText(_ bytes: Int) -> String {
        for (shift, unit) in [(30, "g"), (20, "m"), (10, "k")] where bytes != 0 && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift)\(unit)"
        }
        return "\(bytes)"
    }

    /// Parses a listen address: `HOST:PORT`, `[IPV6]:PORT` or `:PORT` (= 0.0.0.0). Port 0 is
    /// allowed (ephemeral).
    static func listenAddress(_ text: String) throws(ConfigValueError) -> ListenAddress {
        do throws(ConfigValueError) {
            if text.contains("://") { throw ConfigValueError("a listen address has no scheme") }
            let parts = try splitHostPort(text)
            guard let portText = parts.port else { throw ConfigValueError("missing port") }
            let port = try self.port(portText, allowZero: true)
            if parts.host.isEmpty {
                // ":8080" means every IPv4 interface, as in Go's net.Listen.
                if parts.bracketed { throw ConfigValueError("empty IPv6 address") }
                return ListenAddress(host: "0.0.0.0", port: port)
            }
            try validateHost(parts.host, bracketed: parts.bracketed)
            return ListenAddress(host: parts.host, port: port)
        } catch {
            throw ConfigValueError(
                "bad listen address \(quoted(text)): \(error.message) (expected HOST:PORT, [IPv6]:PORT or :PORT, e.g. 127.0.0.1:8080)")
        }
    }

    /// An upstream server parsed from `http://HOST[:PORT]` or `https://HOST[:PORT]`.
    struct Server: Equatable {
        var scheme: UpstreamScheme
        var host: String
        var port: UInt16
    }

    /// Parses an upstream URL. A trailing `/` is tolerated; any other path, a query, a
    /// fragment or user info is rejected because the request path is forwarded unchanged.
    static func upstreamURL(_ text: String) throws(ConfigValueError) -> Server {
        do throws(ConfigValueError) {
            guard let schemeEnd = text.firstRange(of: "://") else { throw ConfigValueError("missing scheme") }
            let schemeText = text[..<schemeEnd.lowerBound].lowercased()
            guard let scheme = UpstreamScheme(rawValue: schemeText) else {
                throw ConfigValueError("unsupported scheme \(quoted(schemeText)), use http or https")
            }
            let rest = text[schemeEnd.upperBound...]
            let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
            let authority = String(rest[..<authorityEnd])
            let tail = rest[authorityEnd...]
            if !tail.isEmpty && tail != "/" {
                throw ConfigValueError(
                    "must not have a path, query or fragment, found \(quoted(String(tail))); routes forward the request path unchanged")
            }
            if authority.contains("@") { throw ConfigValueError("user info is not supported") }
            let parts = try splitHostPort(authority)
            if parts.host.isEmpty { throw ConfigValueError("missing host") }
            try validateHost(parts.host, bracketed: parts.bracketed)
            let port = try parts.port.map { (text: String) throws(ConfigValueError) in try self.port(text, allowZero: false) }
            return Server(scheme: scheme, host: parts.host, port: port ?? scheme.defaultPort)
        } catch {
            throw ConfigValueError(
                "bad upstream URL \(quoted(text)): \(error.message) (expected http://HOST[:PORT] or https://HOST[:PORT], e.g. http://127.0.0.1:8000)")
        }
    }

    /// Host and optional port text, with IPv6 brackets removed.
    struct HostPort {
        var host: String
        var port: String?
        /// Whether the host was written in brackets (and so must be IPv6).
        var bracketed: Bool
    }

    /// Splits `host[:port]` / `[v6][:port]` without validating either part.
    static func splitHostPort(_ text: String) throws(ConfigValueError) -> HostPort {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw ConfigValueError("missing ']' after IPv6 address")
            }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let after = text[text.index(after: close)...]
            if after.isEmpty { return HostPort(host: host, port: nil, bracketed: true) }
            guard after.first == ":" else {
                throw ConfigValueError("expected ':' after ']', found \(quoted(String(after)))")
            }
            return HostPort(host: host, port: String(after.dropFirst()), bracketed: true)
        }
        let colons = text.count(where: { $0 == ":" })
        if colons > 1 {
            throw ConfigValueError("IPv6 addresses need brackets, e.g. [::1]:8080")
        }
        guard let colon = text.firstIndex(of: ":") else {
            return HostPort(host: text, port: nil, bracketed: false)
        }
        return HostPort(
            host: String(text[..<colon]), port: String(text[text.index(after: colon)...]), bracketed: false)
    }

    /// Parses a decimal TCP port.
    static func port(_ text: String, allowZero: Bool) throws(ConfigValueError) -> UInt16 {
        let low = allowZero ? 0 : 1
        guard isDecimal(text), let value = Int(text), value >= low, value <= 65_535 else {
            if text.isEmpty { throw ConfigValueError("missing port after ':'") }
            throw ConfigValueError("bad port \(quoted(text)), expected \(low)-65535")
        }
        return UInt16(value)
    }

    /// Checks that `host` is an IPv6 literal (when bracketed), a dotted-quad IPv4 literal, or
    /// a DNS name. Names are resolved later, at bind or connect time.
    static func validateHost(_ host: String, bracketed: Bool) throws(ConfigValueError) {
        if bracketed {
            guard isIPv6(host) else { throw ConfigValueError("bad IPv6 address \(quoted(host))") }
            return
        }
        let bytes = Array(host.utf8)
        let digitsAndDots = bytes.allSatisfy { $0 == UInt8(ascii: ".") || ($0 >= 0x30 && $0 <= 0x39) }
        if digitsAndDots {
            // All digits and dots can only be meant as IPv4; reject "1.2.3" or "01.2.3.4"
            // rather than let a resolver guess (inet_aton reads "010" as octal).
            guard isIPv4(bytes) else {
                throw ConfigValueError("bad IPv4 address \(quoted(host)), expected four numbers 0-255 like 127.0.0.1")
            }
            return
        }
        guard isHostName(bytes) else {
            throw ConfigValueError("bad host name \(quoted(host)), expected letters, digits, '-' and '.'")
        }
    }

    /// Strict dotted quad: four decimal parts 0-255, no leading zeros.
    static func isIPv4(_ bytes: [UInt8]) -> Bool {
        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        return parts.allSatisfy { part in
            guard (1...3).contains(part.count) else { return false }
            if part.count > 1 && part.first == UInt8(ascii: "0") { return false }
            let value = part.reduce(0) { $0 * 10 + Int($1 - 0x30) }
            return value <= 255
        }
    }

    /// IPv6 literal, as accepted by `inet_pton` (no zone index).
    static func isIPv6(_ host: String) -> Bool {
        guard !host.isEmpty, host.utf8.count <= 45 else { return false }
        var storage = in6_addr()
        return inet_pton(AF_INET6, host, &storage) == 1
    }

    /// DNS name: dot-separated labels of 1-63 letters, digits, `-` or `_` (the latter for
    /// container service names), not starting or ending with `-`, at most 253 bytes.
    static func isHostName(_ bytes: [UInt8]) -> Bool {
        guard !bytes.isEmpty, bytes.count <= 253 else { return false }
        let labels = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            guard (1...63).contains(label.count), label.first != UInt8(ascii: "-"),
                label.last != UInt8(ascii: "-")
            else { return false }
            return label.allSatisfy(isNameByte)
        }
    }

    /// ASCII letter, digit, `-` or `_`: the bytes of host labels and upstream names.
    static func isNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
            true
        default: false
        }
    }

    /// Whether `name` is a valid upstream name: 1-64 of letters, digits, `_`, `-`, `.`.
    static func isUpstreamName(_ name: String) -> Bool {
        guard (1...64).contains(name.utf8.count) else { return false }
        return name.utf8.allSatisfy { isNameByte($0) || $0 == UInt8(ascii: ".") }
    }

    /// Longest text shown when quoting user input in a message; a megabyte-long token must
    /// not become a megabyte-long error line.
    static let maximumQuotedLength = 60

    /// `'text'` for messages: control characters escaped as `\xNN`, cut to
    /// ``maximumQuotedLength`` characters with a trailing `…`.
    static func quoted(_ text: String) -> String {
        var out = "'"
        var count = 0
        for scalar in text.unicodeScalars {
            if count == maximumQuotedLength {
                out += "…"
                break
            }
            count += 1
            if scalar.value < 0x20 || scalar.value == 0x7F {
                let hex = String(scalar.value, radix: 16, uppercase: true)
                out += "\\x" + (hex.count < 2 ? "0" + hex : hex)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out + "'"
    }

    /// The candidate closest to `word` by edit distance (case-insensitive), if it is close
    /// enough to be a plausible typo: at most 1 edit for short words, a third of the length
    /// for longer ones. Ties go to the earlier candidate.
    static func suggestion(for word: String, among candidates: [String]) -> String? {
        let longest = candidates.map(\.utf8.count).max() ?? 0
        // Skip absurdly long words: the distance is O(n·m) and they are not typos anyway.
        guard word.utf8.count <= 2 * longest + 2 else { return nil }
        let typed = Array(word.lowercased().utf8)
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(typed, Array(candidate.lowercased().utf8))
            let allowed = max(1, candidate.utf8.count / 3)
            if distance <= allowed, distance < (best?.distance ?? .max) {
                best = (candidate, distance)
            }
        }
        return best?.candidate
    }

    /// Optimal string alignment distance (Levenshtein plus adjacent transpositions, so
    /// `wokrers` → `workers` counts as one typo).
    static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous2 = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                var value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    value = min(value, previous2[j - 2] + 1)
                }
                current[j] = value
            }
            (previous2, previous, current) = (previous, current, previous2)
        }
        return previous[b.count]
    }

    /// ` (did you mean 'x'?)` or the empty string.
    static func didYouMean(_ word: String, among candidates: [String]) -> String {
        suggestion(for: word, among: candidates).map { " (did you mean '\($0)'?)" } ?? ""
    }
}
