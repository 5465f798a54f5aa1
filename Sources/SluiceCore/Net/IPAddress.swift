/// An IPv4 or IPv6 address as a 128-bit number, parsed and printed without the C library.
///
/// IPv4 addresses are stored in their IPv4-mapped IPv6 form (`::ffff:a.b.c.d`, RFC 4291
/// §2.5.5.2). A dual-stack listener reports IPv4 peers in that form, so storing both the same
/// way means one client has one rate-limit key and IPv4 ranges match it however it arrived.
///
/// Lives in Net/ (standard library only), shared by RateLimit/ (client keys built from `X-Forwarded-For` text on the
/// request path) and Config/ (`trusted_proxies`), so neither of those imports the other.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// Bits 127...64 of the address (the first 8 bytes in network order, as a number).
    public let high: UInt64
    /// Bits 63...0 of the address (the last 8 bytes in network order, as a number).
    public let low: UInt64

    /// `low` of an IPv4-mapped address without its IPv4 part: `::ffff:0:0`.
    static let mappedPrefix: UInt64 = 0xFFFF_0000_0000

    /// An address from its two 64-bit halves (IPv6 numbering).
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// An IPv4 address from its 32-bit number, e.g. `0x7F00_0001` for 127.0.0.1.
    public init(ipv4: UInt32) {
        self.init(high: 0, low: Self.mappedPrefix | UInt64(ipv4))
    }

    /// An address from raw network-order bytes: 4 for IPv4 (`sin_addr`), 16 for IPv6
    /// (`sin6_addr`). Nil for any other count.
    public init?(bytes: some Collection<UInt8>) {
        var value: (high: UInt64, low: UInt64) = (0, 0)
        var count = 0
        for byte in bytes {
            guard count < 16 else { return nil }
            value.high = value.high << 8 | value.low >> 56
            value.low = value.low << 8 | UInt64(byte)
            count += 1
        }
        switch count {
        case 4: self.init(ipv4: UInt32(truncatingIfNeeded: value.low))
        case 16: self.init(high: value.high, low: value.low)
        default: return nil
        }
    }

    /// Parses `text`: a strict dotted quad (four decimal parts 0-255, no leading zeros, as
    /// the config's listen addresses) or an IPv6 literal in RFC 4291 §2.2 text form (with
    /// `::` and an optional dotted-quad tail; no brackets, no zone index). Nil otherwise.
    public init?(parsing text: some Collection<UInt8>) {
        let bytes = Array(text)
        if let v4 = Self.parseIPv4(bytes[...]) {
            self.init(ipv4: v4)
        } else if let v6 = Self.parseIPv6(bytes[...]) {
            self.init(high: v6.high, low: v6.low)
        } else {
            return nil
        }
    }

    /// Parses `text`; see ``init(parsing:)-(Collection<UInt8>)``.
    public init?(_ text: String) {
        self.init(parsing: text.utf8)
    }

    /// Whether this is an IPv4 address (stored IPv4-mapped).
    public var isIPv4: Bool {
        high == 0 && low >> 32 == 0xFFFF
    }

    /// The IPv4 address as a number, or nil for an IPv6 address.
    public var ipv4: UInt32? {
        isIPv4 ? UInt32(truncatingIfNeeded: low) : nil
    }

    /// The 16 network-order bytes of the (IPv6 or IPv4-mapped) address.
    public var bytes: [UInt8] {
        (0..<16).map { index in
            let word = index < 8 ? high : low
            return UInt8(truncatingIfNeeded: word >> (UInt64(7 - index % 8) * 8))
        }
    }

    /// Dotted quad for IPv4, RFC 5952 text for IPv6 (lower case, longest zero run as `::`).
    public var description: String {
        if let v4 = ipv4 { return Self.dottedQuad(v4) }
        return ipv6Text
    }

    /// The address in IPv6 text even when it is IPv4-mapped (`::ffff:10.0.0.1`).
    var ipv6Text: String {
        let groups = (0..<8).map { index -> UInt16 in
            let word = index < 4 ? high : low
            return UInt16(truncatingIfNeeded: word >> (UInt64(3 - index % 4) * 16))
        }
        if isIPv4, let v4 = ipv4 { return "::ffff:" + Self.dottedQuad(v4) }
        // RFC 5952 §4.2: compress the longest run of two or more zero groups, the first on ties.
        var best = (start: -1, count: 0)
        var index = 0
        while index < 8 {
            guard groups[index] == 0 else {
                index += 1
                continue
            }
            var end = index
            while end < 8, groups[end] == 0 { end += 1 }
            if end - index > best.count, end - index >= 2 { best = (index, end - index) }
            index = end
        }
        func hex(_ range: Range<Int>) -> String {
            range.map { String(groups[$0], radix: 16) }.joined(separator: ":")
        }
        if best.start < 0 { return hex(0..<8) }
        return hex(0..<best.start) + "::" + hex((best.start + best.count)..<8)
    }

    static func dottedQuad(_ value: UInt32) -> String {
        "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }

    // MARK: Parsing

    /// Strict dotted quad, or nil.
    static func parseIPv4(_ bytes: ArraySlice<UInt8>) -> UInt32? {
        var result: UInt32 = 0
        var parts = 0
        var index = bytes.startIndex
        while index <= bytes.endIndex {
            let start = index
            var value: UInt32 = 0
            while index < bytes.endIndex, let digit = decimal(bytes[index]) {
                value = value * 10 + UInt32(digit)
                index += 1
                // More than 3 digits or above 255: not an octet (and no overflow possible).
                if index - start > 3 || value > 255 { return nil }
            }
            let length = index - start
            guard length > 0, length == 1 || bytes[start] != UInt8(ascii: "0") else { return nil }
            result = result << 8 | value
            parts += 1
            if index == bytes.endIndex { break }
            guard parts < 4, bytes[index] == UInt8(ascii: ".") else { return nil }
            index += 1
            if index == bytes.endIndex { return nil }  // trailing dot
        }
        return parts == 4 ? result : nil
    }

    /// RFC 4291 §2.2 text (forms 1-3), or nil. At most one `::`; a dotted-quad tail counts
    /// as two groups; eight groups without `::`, at most seven with it.
    static func parseIPv6(_ bytes: ArraySlice<UInt8>) -> (high: UInt64, low: UInt64)? {
        let colon = UInt8(ascii: ":")
        guard bytes.count >= 2, bytes.count <= 45 else { return nil }  // 45: longest valid form
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var compressed = false
        var index = bytes.startIndex
        if bytes[index] == colon {
            // A leading colon is only valid as half of "::".
            guard bytes[index + 1] == colon else { return nil }
            compressed = true
            index += 2
        }
        while index < bytes.endIndex {
            let start = index
            var value: UInt32 = 0
            while index < bytes.endIndex, index - start < 5, let digit = hexadecimal(bytes[index]) {
                value = value << 4 | UInt32(digit)
                index += 1
            }
            if index < bytes.endIndex, bytes[index] == UInt8(ascii: ".") {
                // The dotted-quad tail: must run to the end and leave room for two groups.
                guard let v4 = parseIPv4(bytes[start...]) else { return nil }
                for group in [UInt16(v4 >> 16), UInt16(truncatingIfNeeded: v4)] {
                    if compressed { tail.append(group) } else { head.append(group) }
                }
                index = bytes.endIndex
                break
            }
            guard index > start, index - start <= 4 else { return nil }
            if compressed { tail.append(UInt16(value)) } else { head.append(UInt16(value)) }
            guard head.count + tail.count <= 8 else { return nil }
            if index == bytes.endIndex { break }
            guard bytes[index] == colon else { return nil }
            index += 1
            guard index < bytes.endIndex else { return nil }  // a trailing single colon
            if bytes[index] == colon {
                guard !compressed else { return nil }  // a second "::"
                compressed = true
                index += 1
            }
        }
        let groups = head.count + tail.count
        guard compressed ? groups <= 7 : groups == 8 else { return nil }
        let all = head + [UInt16](repeating: 0, count: 8 - groups) + tail
        var high: UInt64 = 0
        var low: UInt64 = 0
        for group in all[0..<4] { high = high << 16 | UInt64(group) }
        for group in all[4..<8] { low = low << 16 | UInt64(group) }
        return (high, low)
    }

    @inline(__always)
    static func decimal(_ byte: UInt8) -> UInt8? {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") ? byte - UInt8(ascii: "0") : nil
    }

    @inline(__always)
    static func hexadecimal(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
