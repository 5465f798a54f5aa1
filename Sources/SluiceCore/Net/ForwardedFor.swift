/// Finds the client address to key `key client` rules on, honouring `X-Forwarded-For` only
/// from trusted proxies.
///
/// `X-Forwarded-For` is a list each proxy appends its peer to, so only the right end is
/// trustworthy: an entry is believed only when the hop that wrote it (the entry to its right,
/// or the connection's peer for the last one) is a trusted proxy. The walk therefore starts at
/// the peer and moves left while the current hop is trusted; the first untrusted address is
/// the client (the approach of nginx's `real_ip_recursive on` and Envoy's
/// `xff_num_trusted_hops`). Taking the leftmost entry instead would let any client choose its
/// own key by sending a forged header.
public enum ForwardedFor {
    /// Most list entries examined; a longer chain keys on the hop reached there. Bounds the
    /// work a client can cause with a huge header when all hops are trusted.
    public static let maximumHops = 64

    /// The address to key on.
    ///
    /// - Parameters:
    ///   - peer: the connection's peer address.
    ///   - forwardedFor: the values of every `X-Forwarded-For` field, in the order received
    ///     (several fields form one list, RFC 9110 §5.3).
    ///   - trusted: the ``Config/trustedProxies`` ranges.
    /// - Returns: `peer` when it is not trusted or there is no header; otherwise the rightmost
    ///   entry not in a trusted range; the leftmost entry when every entry is trusted. An entry
    ///   that is not an address (`unknown`, garbage) stops the walk at the trusted hop that
    ///   wrote it, so clients behind a confused proxy share that proxy's budget rather than
    ///   getting unlimited fresh keys. Entries may carry a port (`1.2.3.4:5`, `[::1]:5`) or
    ///   brackets; empty list elements are skipped.
    ///
    /// Pure; callable from any thread. Allocates only when parsing IPv6 entries.
    public static func clientAddress<Field: BidirectionalCollection<UInt8>>(
        peer: IPAddress, forwardedFor: [Field], trusted: [IPRange]
    ) -> IPAddress {
        func isTrusted(_ address: IPAddress) -> Bool {
            trusted.contains { $0.contains(address) }
        }
        guard isTrusted(peer) else { return peer }
        var current = peer
        var hops = 0
        for field in forwardedFor.reversed() {
            var end = field.endIndex
            while true {
                let comma = field[..<end].lastIndex(of: UInt8(ascii: ","))
                let start = comma.map { field.index(after: $0) } ?? field.startIndex
                let element = trimmed(field[start..<end])
                if !element.isEmpty {
                    hops += 1
                    guard hops <= maximumHops, let address = parseElement(element) else { return current }
                    guard isTrusted(address) else { return address }
                    current = address
                }
                guard let comma else { break }
                end = comma
            }
        }
        return current
    }

    /// Parses one list element: an address, optionally bracketed (IPv6) and optionally
    /// followed by `:port`. Nil when it is none of these.
    static func parseElement(_ element: some Sequence<UInt8>) -> IPAddress? {
        let bytes = Array(element)
        if bytes.first == UInt8(ascii: "[") {
            // [v6] or [v6]:port
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else { return nil }
            let rest = bytes[(close + 1)...]
            guard rest.isEmpty || isPort(rest.dropFirst()) && rest.first == UInt8(ascii: ":") else { return nil }
            guard let address = IPAddress.parseIPv6(bytes[1..<close]) else { return nil }
            return IPAddress(high: address.high, low: address.low)
        }
        let colons = bytes.count { $0 == UInt8(ascii: ":") }
        if colons == 1, let colon = bytes.firstIndex(of: UInt8(ascii: ":")) {
            // v4:port (an IPv6 literal has at least two colons).
            guard isPort(bytes[(colon + 1)...]), let v4 = IPAddress.parseIPv4(bytes[..<colon]) else { return nil }
            return IPAddress(ipv4: v4)
        }
        return IPAddress(parsing: bytes)
    }

    /// 1-5 decimal digits.
    private static func isPort(_ bytes: ArraySlice<UInt8>) -> Bool {
        (1...5).contains(bytes.count) && bytes.allSatisfy { IPAddress.decimal($0) != nil }
    }

    /// `bytes` without leading and trailing spaces and tabs (OWS, RFC 9110 §5.6.3).
    private static func trimmed<Bytes: BidirectionalCollection<UInt8>>(_ bytes: Bytes) -> Bytes.SubSequence {
        var slice = bytes[...]
        while let first = slice.first, first == 0x20 || first == 0x09 { slice = slice.dropFirst() }
        while let last = slice.last, last == 0x20 || last == 0x09 { slice = slice.dropLast() }
        return slice
    }
}
