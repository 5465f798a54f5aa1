import Testing
@testable import SluiceCore

/// A server engine holds no OpenSSL state until its client's first byte: a bare connect to a TLS listener must not
/// cost the ~55 KB of an SSL and its BIO pair (issue 12, item 5).
@Suite("TLSEngine start")
struct TLSEngineStartTests {
    /// What may happen to a server engine before its client sent anything: none of it starts the engine.
    enum Probe: CaseIterable {
        case read, write, pendingOutput, bufferedInput, established, alpn, closeNotify, sent, received

        func run(_ engine: TLSEngine) -> String {
            switch self {
            case .read:
                var space = [UInt8](repeating: 0, count: 16)
                return "\(space.withUnsafeMutableBytes { engine.read(into: $0) })"
            case .write:
                return "\([UInt8]("x".utf8).withUnsafeBytes { engine.write($0) })"
            case .pendingOutput: return "\(engine.hasPendingOutput)"
            case .bufferedInput: return "\(engine.hasBufferedInput)"
            case .established: return "\(engine.isEstablished)"
            case .alpn: return "\(engine.negotiatedProtocol as Any)"
            case .closeNotify:
                engine.close()
                return "closed"
            case .sent:
                engine.sent(0)
                return "sent"
            case .received:
                engine.received(0)
                return "received"
            }
        }

        var expected: String {
            switch self {
            case .read, .write: "wantRead"
            case .pendingOutput, .bufferedInput, .established: "false"
            case .alpn: "nil"
            case .closeNotify: "closed"
            case .sent: "sent"
            case .received: "received"
            }
        }
    }

    @Test("nothing before the first byte starts a server engine", arguments: Probe.allCases)
    func probesDoNotStart(_ probe: Probe) throws {
        let engine = TLSEngine(server: try TestPKI.server())
        #expect(probe.run(engine) == probe.expected)
        #expect(!engine.isStarted)
    }

    @Test("ciphertext offered starts it, and the handshake then runs as usual")
    func receiveSpaceStarts() throws {
        let server = TLSEngine(server: try TestPKI.server())
        let client = try TLSEngine(client: TestPKI.client(), host: "localhost")
        #expect(client.isStarted)
        var scratch = [UInt8](repeating: 0, count: 64)
        #expect(scratch.withUnsafeMutableBytes { client.read(into: $0) } == .wantRead)  // produces the ClientHello
        var rounds = 0
        while !(server.isEstablished && client.isEstablished) && rounds < 20 {
            rounds += 1
            for (from, to) in [(client, server), (server, client)] {
                while from.hasPendingOutput {
                    let moved = from.withPendingOutput { output in
                        to.withReceiveSpace { space -> Int in
                            let count = min(output.count, space.count)
                            if count > 0 { space.baseAddress!.copyMemory(from: output.baseAddress!, byteCount: count) }
                            return count
                        }
                    }
                    guard moved > 0 else { break }
                    to.received(moved)
                    from.sent(moved)
                }
            }
            _ = scratch.withUnsafeMutableBytes { server.read(into: $0) }
            _ = scratch.withUnsafeMutableBytes { client.read(into: $0) }
        }
        #expect(server.isStarted)
        #expect(server.isEstablished && client.isEstablished)
    }

    @Test("start is idempotent")
    func startTwice() throws {
        let engine = TLSEngine(server: try TestPKI.server())
        #expect(engine.start())
        #expect(engine.start())
        #expect(engine.isStarted)
    }
}
