import Testing

@testable import SluiceCore

/// Address parsing and printing, ranges, and the X-Forwarded-For walk.
@Suite struct ForwardedForTests {
    @Test(arguments: [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("::", "::"),
        ("::1", "::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:db8::ff00:42:8329"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // RFC 5952 §4.2.3: the first of equal runs
        ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),  // the longest run
        ("1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"),  // a single zero group is not compressed
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
        ("1::", "1::"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
        ("fe80::1:2", "fe80::1:2"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("::FFFF:10.1.2.3", "10.1.2.3"),
        ("::ffff:a01:203", "10.1.2.3"),
        ("::10.1.2.3", "::a01:203"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
        ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
    ])
    func parsesAndPrints(text: String, description: String) throws {
        let address = try #require(IPAddress(text))
        #expect(address.description == description)
        #expect(IPAddress(description) == address)  // the printed form parses back
        #expect(IPAddress(bytes: address.bytes) == address)
    }

    @Test(arguments: [
        "", " ", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.02.3.4", "256.1.1.1", "1.2.3.4 ", " 1.2.3.4", "1..2.3", "1.2.3.", ".1.2.3",
        "1.2.3.-4", "1234.1.1.1", "0x1.1.1.1", ":", ":::", "1:::2", "1::2::3", ":1::", "::1:", "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7", "12345::", "g::1", "::1%eth0", "[::1]", "1:2:3:4:5:6:7:8::", "::1.2.3", "1.2.3.4::",
        "::ffff:1.2.3.4.5", "1:2:3:4:5:6:7:1.2.3.4", "::1.2.3.04", "::ffff:256.0.0.1", "1:2:3:4:5:6:7:8:",
        "localhost", "unknown", "1.2.3.4:80",
    ])
    func rejectsMalformed(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test func fromSocketBytes() {
        #expect(IPAddress(bytes: [127, 0, 0, 1]) == IPAddress(ipv4: 0x7F00_0001))
        #expect(IPAddress(bytes: [127, 0, 0, 1])?.isIPv4 == true)
        #expect(IPAddress(bytes: [127, 0, 0, 1])?.ipv4 == 0x7F00_0001)
        let loopback6 = [UInt8](repeating: 0, count: 15) + [1]
        #expect(IPAddress(bytes: loopback6) == IPAddress("::1"))
        #expect(IPAddress(bytes: loopback6)?.ipv4 == nil)
        #expect(IPAddress(bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 0, 0, 1]) == IPAddress("10.0.0.1"))
        #expect(IPAddress(bytes: [1, 2, 3]) == nil)
        #expect(IPAddress(bytes: [UInt8](repeating: 1, count: 17)) == nil)
        #expect(IPAddress(bytes: []) == nil)
    }

    @Test(arguments: [
        ("10.0.0.0/8", "10.255.1.2", true),
        ("10.0.0.0/8", "11.0.0.0", false),
        ("10.0.0.0/8", "::ffff:10.9.9.9", true),  // IPv4-mapped peer of a dual-stack socket
        ("10.0.0.0/8", "::a09:909", false),
        ("127.0.0.1/32", "127.0.0.1", true),
        ("127.0.0.1/32", "127.0.0.2", false),
        ("0.0.0.0/0", "203.0.113.9", true),
        ("0.0.0.0/0", "2001:db8::1", false),
        ("::/0", "2001:db8::1", true),
        ("::/0", "203.0.113.9", true),
        ("::1/128", "::1", true),
        ("::1/128", "::2", false),
        ("2001:db8::/32", "2001:db8:ffff::1", true),
        ("2001:db8::/32", "2001:db9::1", false),
        ("fd00::/8", "fdff::1", true),
        ("fe80::/10", "febf::1", true),
        ("fe80::/10", "fec0::1", false),
        ("192.168.1.128/25", "192.168.1.200", true),
        ("192.168.1.128/25", "192.168.1.127", false),
        ("2001:db8::8000/113", "2001:db8::ffff", true),
        ("2001:db8::8000/113", "2001:db8::7fff", false),
    ])
    func rangeContains(range: String, address: String, expected: Bool) throws {
        let parsed = try IPRange(parsing: range)
        let ip = try #require(IPAddress(address))
        #expect(parsed.contains(ip) == expected)
        if let v4 = ip.ipv4 {
            let bytes = [UInt8(v4 >> 24), UInt8(v4 >> 16 & 0xFF), UInt8(v4 >> 8 & 0xFF), UInt8(v4 & 0xFF)]
            #expect(parsed.contains(ipv4: bytes) == expected)
        }
        #expect(parsed.contains(ipv6: ip.bytes) == expected)
        #expect(!parsed.contains(ipv4: ip.bytes) && !parsed.contains(ipv6: [1, 2, 3, 4]))
    }

    @Test func rangeInitialiser() throws {
        #expect(IPRange(network: IPAddress("10.0.0.0")!, prefixLength: 8)?.description == "10.0.0.0/8")
        #expect(IPRange(network: IPAddress("10.0.0.1")!, prefixLength: 8) == nil)
        #expect(IPRange(network: IPAddress("10.0.0.0")!, prefixLength: 33) == nil)
        #expect(IPRange(network: IPAddress("::")!, prefixLength: 129) == nil)
        #expect(IPRange(network: IPAddress("::")!, prefixLength: -1) == nil)
        #expect(IPRange(network: IPAddress("2001:db8::")!, prefixLength: 32)?.prefixLength == 32)
    }

    // MARK: The X-Forwarded-For walk

    static let trusted = ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "fd00::/8"].map { try! IPRange(parsing: $0) }

    /// Peer, X-Forwarded-For fields as received, and the client to key on.
    @Test(arguments: [
        // Untrusted peers' headers are ignored: a client cannot choose its key.
        ("203.0.113.5", ["1.2.3.4"], "203.0.113.5"),
        ("203.0.113.5", [], "203.0.113.5"),
        ("fe80::1", ["1.2.3.4"], "fe80::1"),
        // A trusted peer without a header is the client.
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", [""], "10.0.0.1"),
        // The rightmost untrusted entry; anything left of it may be forged.
        ("10.0.0.1", ["1.2.3.4"], "1.2.3.4"),
        ("10.0.0.1", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),
        ("10.0.0.1", ["1.2.3.4, 10.0.0.2"], "1.2.3.4"),
        ("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.0.0.2, 127.0.0.1"], "1.2.3.4"),
        // Several fields are one list, in order.
        ("10.0.0.1", ["6.6.6.6", "1.2.3.4, 10.0.0.2"], "1.2.3.4"),
        ("10.0.0.1", ["1.2.3.4", "10.0.0.3"], "1.2.3.4"),
        ("10.0.0.1", ["1.2.3.4", ""], "1.2.3.4"),
        // Every hop trusted: the leftmost (the originating host is itself internal).
        ("10.0.0.1", ["10.0.0.5, 10.0.0.2"], "10.0.0.5"),
        // Garbage stops the walk at the trusted hop that wrote it.
        ("10.0.0.1", ["unknown, 10.0.0.2"], "10.0.0.2"),
        ("10.0.0.1", ["1.2.3.4, garbage"], "10.0.0.1"),
        ("10.0.0.1", ["[::1"], "10.0.0.1"),
        ("10.0.0.1", ["1.2.3.4:"], "10.0.0.1"),
        ("10.0.0.1", ["1.2.3.4:123456"], "10.0.0.1"),
        ("10.0.0.1", ["[2001:db8::1]x"], "10.0.0.1"),
        // Whitespace and empty list elements (RFC 9110 §5.6.1).
        ("10.0.0.1", [" 1.2.3.4 ,  "], "1.2.3.4"),
        ("10.0.0.1", ["\t1.2.3.4\t,,, 10.0.0.9"], "1.2.3.4"),
        // Ports and brackets as some proxies write them.
        ("10.0.0.1", ["1.2.3.4:5678"], "1.2.3.4"),
        ("10.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.0.0.1", ["[2001:db8::1]"], "2001:db8::1"),
        ("10.0.0.1", ["2001:db8::1"], "2001:db8::1"),
        ("10.0.0.1", ["::ffff:1.2.3.4"], "1.2.3.4"),
        // IPv6 proxies, and an IPv4 proxy seen through a dual-stack socket.
        ("::1", ["2001:db8::7, fd00::1"], "2001:db8::7"),
        ("::ffff:10.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("fd12::1", ["198.51.100.1, ::ffff:10.1.1.1"], "198.51.100.1"),
    ])
    func clientAddress(peer: String, forwardedFor: [String], expected: String) throws {
        let peerAddress = try #require(IPAddress(peer))
        let fromStrings = ForwardedFor.clientAddress(
            peer: peerAddress, forwardedFor: forwardedFor.map(\.utf8), trusted: Self.trusted)
        #expect(fromStrings.description == expected)
        let fromBytes = ForwardedFor.clientAddress(
            peer: peerAddress, forwardedFor: forwardedFor.map { Array($0.utf8) }, trusted: Self.trusted)
        #expect(fromBytes == fromStrings)
    }

    @Test func noTrustedRangesMeansThePeer() {
        let peer = IPAddress("127.0.0.1")!
        #expect(ForwardedFor.clientAddress(peer: peer, forwardedFor: [Array("1.2.3.4".utf8)], trusted: []) == peer)
    }

    /// A header of trusted hops longer than the limit keys on the hop reached, not the far end.
    @Test func walkIsBounded() {
        let chain = ["1.2.3.4"] + Array(repeating: "10.0.0.9", count: ForwardedFor.maximumHops + 5)
        let field = Array(chain.joined(separator: ", ").utf8)
        let client = ForwardedFor.clientAddress(peer: IPAddress("10.0.0.1")!, forwardedFor: [field], trusted: Self.trusted)
        #expect(client == IPAddress("10.0.0.9"))
        let short = Array((["1.2.3.4"] + Array(repeating: "10.0.0.9", count: ForwardedFor.maximumHops - 1)).joined(separator: ",").utf8)
        #expect(ForwardedFor.clientAddress(peer: IPAddress("10.0.0.1")!, forwardedFor: [short], trusted: Self.trusted) == IPAddress("1.2.3.4"))
    }
}
