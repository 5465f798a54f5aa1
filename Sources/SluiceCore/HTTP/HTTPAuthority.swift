/// The grammar Host and an absolute-form target's authority share: `uri-host [ ":" port ]` (RFC 9110 §4.2.3,
/// §7.2; RFC 3986 §3.2.2, §3.2.3). One check for both, so a request cannot reach the upstream with an authority
/// through the target that its Host field could not carry.
enum HTTPAuthority {
    /// What `check` found.
    enum Verdict: Equatable {
        case valid
        /// `user:password@` before the host: RFC 9110 §4.2.4 says to treat it as an error (and it must never be logged).
        case userinfo(at: Int)
        case invalid(at: Int)
    }

    /// Checks `bytes[range]`. An empty range is valid (an empty Host says the target has no authority,
    /// RFC 9112 §3.2); the caller rejects an empty target authority itself.
    static func check(_ bytes: Span<UInt8>, _ range: Range<Int>) -> Verdict {
        for offset in range where bytes[offset] == UInt8(ascii: "@") { return .userinfo(at: offset) }
        guard !range.isEmpty else { return .valid }
        var index = range.lowerBound
        if bytes[index] == UInt8(ascii: "[") {
            // IP-literal: hex digits, colons, dots (an embedded IPv4), or IPvFuture's "v" and unreserved bytes.
            index += 1
            while index < range.upperBound, bytes[index] != UInt8(ascii: "]") {
                guard isHostByte(bytes[index]) || bytes[index] == UInt8(ascii: ":") else { return .invalid(at: index) }
                index += 1
            }
            guard index < range.upperBound, index > range.lowerBound + 1 else { return .invalid(at: index) }
            index += 1
        } else {
            while index < range.upperBound, bytes[index] != UInt8(ascii: ":") {
                guard isHostByte(bytes[index]) else { return .invalid(at: index) }
                index += 1
            }
            guard index > range.lowerBound else { return .invalid(at: index) }
        }
        guard index < range.upperBound else { return .valid }
        guard bytes[index] == UInt8(ascii: ":") else { return .invalid(at: index) }
        // port = *DIGIT (RFC 3986 §3.2.3; empty allowed); above 65535 no TCP port is meant.
        var port = 0
        for offset in (index + 1)..<range.upperBound {
            guard HTTPByte.isDigit(bytes[offset]) else { return .invalid(at: offset) }
            port = port * 10 + Int(bytes[offset] - HTTPByte.zero)
            guard port <= 65_535 else { return .invalid(at: offset) }
        }
        return .valid
    }

    /// reg-name and IPv4 bytes: unreserved, pct-encoded's "%" and hex, sub-delims (RFC 3986 §3.2.2).
    private static func isHostByte(_ byte: UInt8) -> Bool {
        HTTPByte.isHostChar(byte) && byte != UInt8(ascii: ":") && byte != UInt8(ascii: "[") && byte != UInt8(ascii: "]")
    }
}
