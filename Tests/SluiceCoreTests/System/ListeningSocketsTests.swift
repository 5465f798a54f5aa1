import Glibc
import Testing

@testable import SluiceCore

/// Exclusive listening sockets on loopback (real sockets, port 0) and which addresses count as loopback.
@Suite struct ListeningSocketsTests {
    @Test func aSecondBindOnAHeldAddressFailsWithAddressInUse() throws {
        let first = try Syscall.exclusiveListeningSocket(SocketAddress(numericHost: "127.0.0.1", port: 0)!)
        let bound = try Syscall.localAddress(first.rawValue)
        #expect(bound.port != 0)
        do {
            _ = try Syscall.exclusiveListeningSocket(bound)
            Issue.record("a second socket bound \(bound)")
        } catch {
            #expect(error.errno == EADDRINUSE)
        }
        // A wildcard over the same port is refused too.
        do {
            _ = try Syscall.exclusiveListeningSocket(SocketAddress(numericHost: "0.0.0.0", port: bound.port)!)
            Issue.record("a wildcard socket bound next to \(bound)")
        } catch {
            #expect(error.errno == EADDRINUSE)
        }
    }

    @Test func aDuplicateKeepsTheSocketListeningAfterTheOriginalCloses() throws {
        let original = try Syscall.exclusiveListeningSocket(SocketAddress(numericHost: "127.0.0.1", port: 0)!)
        let bound = try Syscall.localAddress(original.rawValue)
        let copy = try Syscall.duplicate(original.rawValue)
        #expect(copy.rawValue != original.rawValue)
        _ = consume original  // closes the original descriptor
        #expect(try Syscall.localAddress(copy.rawValue) == bound)
        let client = try Syscall.tcpSocket(family: AF_INET)
        _ = try Syscall.connect(client.rawValue, bound)
        var accepted: Int32 = -1
        for _ in 0..<200 where accepted < 0 {
            if case .processed(let connection) = try Syscall.accept(copy.rawValue) { accepted = connection.fd } else { Syscall.sleep(milliseconds: 5) }
        }
        #expect(accepted >= 0, "the duplicate accepts on the original's queue")
        if accepted >= 0 { _ = Glibc.close(accepted) }
    }

    @Test(arguments: [
        ("127.0.0.1", true), ("127.1.2.3", true), ("::1", true), ("::ffff:127.0.0.1", true),
        ("0.0.0.0", false), ("::", false), ("10.0.0.1", false), ("128.0.0.1", false), ("::2", false),
        ("fe80::1", false), ("::ffff:10.0.0.1", false),
    ])
    func loopback(_ host: String, _ expected: Bool) {
        #expect(SocketAddress(numericHost: host, port: 9901)!.isLoopback == expected)
    }
}
