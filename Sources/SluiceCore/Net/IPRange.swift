/// An IPv4 or IPv6 CIDR range, e.g. `10.0.0.0/8` or `::1/128`: a `trusted_proxies` entry.
///
/// IPv4 ranges match IPv4 peers however they arrived (plain or IPv4-mapped on a dual-stack
/// socket), because ``IPAddress`` stores IPv4 mapped; `::/0` matches every address.
public struct IPRange: Sendable, Hashable, CustomStringConvertible {
    /// The first address of the range (no bits set past the prefix).
    public let network: IPAddress
    /// Leading bits that must match, in the 128-bit space (IPv4 prefixes are offset by 96).
    let maskBits: Int

    /// A range from a network address and a prefix length in that address's family (0-32
    /// for IPv4, 0-128 for IPv6). Nil when the length is out of range or the address has
    /// bits set past the prefix (`10.0.0.1/8`).
    public init?(network: IPAddress, prefixLength: Int) {
        let maximum = network.isIPv4 ? 32 : 128
        guard (0...maximum).contains(prefixLength) else { return nil }
        self.init(network: network, maskBits: network.isIPv4 ? 96 + prefixLength : prefixLength)
    }

    /// A range from a network address and a prefix length in the 128-bit space, which is how
    /// IPv6 text such as `::ffff:10.0.0.0/104` is written. Nil as for ``init(network:prefixLength:)``.
    init?(network: IPAddress, maskBits: Int) {
        guard (0...128).contains(maskBits) else { return nil }
        let mask = Self.mask(maskBits)
        guard network.high & ~mask.high == 0, network.low & ~mask.low == 0 else { return nil }
        self.network = network
        self.maskBits = maskBits
    }

    /// The prefix length in the family of ``network``: 0-32 for IPv4, 0-128 for IPv6.
    public var prefixLength: Int {
        network.isIPv4 && maskBits >= 96 ? maskBits - 96 : maskBits
    }

    /// Whether `address` lies in the range.
    @inline(__always)
    public func contains(_ address: IPAddress) -> Bool {
        let mask = Self.mask(maskBits)
        return address.high & mask.high == network.high && address.low & mask.low == network.low
    }

    /// Whether the IPv4 address with these 4 network-order bytes (`sin_addr`) is in the range.
    public func contains(ipv4 bytes: some Collection<UInt8>) -> Bool {
        bytes.count == 4 && IPAddress(bytes: bytes).map(contains) == true
    }

    /// Whether the IPv6 address with these 16 network-order bytes (`sin6_addr`) is in the range.
    public func contains(ipv6 bytes: some Collection<UInt8>) -> Bool {
        bytes.count == 16 && IPAddress(bytes: bytes).map(contains) == true
    }

    /// `10.0.0.0/8`, `2001:db8::/32`.
    public var description: String {
        if network.isIPv4 && maskBits >= 96 { return "\(network)/\(prefixLength)" }
        return "\(network.ipv6Text)/\(maskBits)"
    }

    /// The mask with the first `bits` of 128 set.
    @inline(__always)
    static func mask(_ bits: Int) -> (high: UInt64, low: UInt64) {
        let high: UInt64 = bits >= 64 ? .max : (bits == 0 ? 0 : .max << UInt64(64 - bits))
        let low: UInt64 = bits <= 64 ? 0 : (bits >= 128 ? .max : .max << UInt64(128 - bits))
        return (high, low)
    }
}
