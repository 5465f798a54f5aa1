import Foundation
import Testing
@testable import SluiceCore

/// The test PKI, made once per test process by `make-test-certificates.sh` (the openssl command).
enum TestPKI {
    static let directory: String = {
        let dir = NSTemporaryDirectory() + "sluice-tls-tests-\(getpid())"
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        let script = parts.joined(separator: "/") + "/SluiceIntegrationTests/make-test-certificates.sh"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script, dir]
        try! process.run()
        process.waitUntilExit()
        precondition(process.terminationStatus == 0, "make-test-certificates.sh failed")
        return dir
    }()

    static func path(_ name: String) -> String { directory + "/" + name }

    static func server(_ name: String = "server", key: String? = nil) throws -> TLSContext {
        try TLSContext.server(TLSServerConfig(certificateFile: path(name + ".pem"), keyFile: path((key ?? name) + ".key")))
    }

    static func client(verify: Bool = true) throws -> TLSContext {
        try TLSContext.client(TLSClientConfig(caFile: path("ca.pem"), verify: verify))
    }
}

/// Moves ciphertext between two engines in pieces of at most `piece` bytes, as a socket pair would.
private func shuttle(_ from: TLSEngine, _ to: TLSEngine, piece: Int) -> Int {
    var moved = 0
    while from.hasPendingOutput {
        let count = from.withPendingOutput { output in
            to.withReceiveSpace { space -> Int in
                let count = min(output.count, space.count, piece)
                guard count > 0, let target = space.baseAddress, let source = output.baseAddress else { return 0 }
                target.copyMemory(from: source, byteCount: count)
                return count
            }
        }
        guard count > 0 else { break }
        to.received(count)
        from.sent(count)
        moved += count
    }
    return moved
}

/// Runs both sides until neither has anything to move; returns what each read as plaintext.
private func converse(client: TLSEngine, server: TLSEngine, clientSends: [UInt8], serverSends: [UInt8],
                      piece: Int) -> (clientGot: [UInt8], serverGot: [UInt8], clientStep: TLSStep?, serverStep: TLSStep?) {
    var clientGot: [UInt8] = [], serverGot: [UInt8] = []
    var clientOffset = 0, serverOffset = 0
    var lastClient: TLSStep?, lastServer: TLSStep?
    var buffer = [UInt8](repeating: 0, count: 4096)
    for _ in 0..<10_000 {
        var progress = false
        for (engine, isClient) in [(client, true), (server, false)] {
            let outgoing = isClient ? clientSends : serverSends
            var offset = isClient ? clientOffset : serverOffset
            if offset < outgoing.count {
                let step = outgoing[offset...].withUnsafeBytes { engine.write($0) }
                if case .bytes(let n) = step, n > 0 { offset += n; progress = true }
                if case .failed = step { if isClient { lastClient = step } else { lastServer = step } }
            }
            let step = buffer.withUnsafeMutableBytes { engine.read(into: $0) }
            if case .bytes(let n) = step, n > 0 {
                if isClient { clientGot += buffer[0..<n] } else { serverGot += buffer[0..<n] }
                progress = true
            }
            if case .bytes = step {} else if case .wantRead = step {} else {
                if isClient { lastClient = step } else { lastServer = step }
            }
            if isClient { clientOffset = offset } else { serverOffset = offset }
        }
        if shuttle(client, server, piece: piece) > 0 { progress = true }
        if shuttle(server, client, piece: piece) > 0 { progress = true }
        if !progress { break }
    }
    return (clientGot, serverGot, lastClient, lastServer)
}

@Suite("TLSEngine")
struct TLSEngineTests {
    @Test("handshake and data both ways, ciphertext moved whole and in small pieces", arguments: [1, 7, 100, 1 << 20])
    func exchange(piece: Int) throws {
        let client = try TLSEngine(client: TestPKI.client(), host: "localhost")
        let server = try TLSEngine(server: TestPKI.server())
        let request = Array("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
        let response = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 * 7) }  // several records
        let result = converse(client: client, server: server, clientSends: request, serverSends: response, piece: piece)
        #expect(result.serverGot == request)
        #expect(result.clientGot == response)
        #expect(client.isEstablished && server.isEstablished)
        #expect(client.negotiatedProtocol == "http/1.1" && server.negotiatedProtocol == "http/1.1")
    }

    @Test("an IP address is verified against the certificate's IP names")
    func ipAddressHost() throws {
        let client = try TLSEngine(client: TestPKI.client(), host: "127.0.0.1")
        let server = try TLSEngine(server: TestPKI.server())
        let result = converse(client: client, server: server, clientSends: [1, 2, 3], serverSends: [], piece: 1 << 20)
        #expect(result.serverGot == [1, 2, 3])
    }

    @Test("verification failures name the reason", arguments: [
        ("wronghost", "localhost", "hostname mismatch"),
        ("expired", "localhost", "certificate has expired"),
        ("selfsigned", "localhost", "self-signed certificate"),
        ("server", "other.example", "hostname mismatch"),
    ])
    func verificationFailures(certificate: String, host: String, reason: String) throws {
        let client = try TLSEngine(client: TestPKI.client(), host: host)
        let server = try TLSEngine(server: TestPKI.server(certificate))
        let result = converse(client: client, server: server, clientSends: [1], serverSends: [], piece: 1 << 20)
        #expect(result.serverGot.isEmpty)
        guard case .failed(let text) = result.clientStep else {
            Issue.record("client did not fail: \(String(describing: result.clientStep))")
            return
        }
        #expect(text == "certificate verify failed: \(reason)")
    }

    @Test("verification off accepts an untrusted certificate")
    func verificationOff() throws {
        let client = try TLSEngine(client: TestPKI.client(verify: false), host: "localhost")
        let server = try TLSEngine(server: TestPKI.server("selfsigned"))
        let result = converse(client: client, server: server, clientSends: [9], serverSends: [], piece: 1 << 20)
        #expect(result.serverGot == [9])
    }

    @Test("a key that does not match the certificate names both files, blaming the key")
    func keyMismatch() {
        #expect {
            try TestPKI.server("server", key: "other")
        } throws: { error in
            guard let error = error as? TLSError else { return false }
            let text = error.description
            return text.contains(TestPKI.path("other.key")) && text.contains(TestPKI.path("server.pem")) && text.contains("does not match")
                && error.key == "key"
        }
    }

    @Test("a file or list that does not load is named, with the key to blame", arguments: [
        (TLSServerConfig(certificateFile: "/nonexistent/cert.pem", keyFile: "server.key"), "/nonexistent/cert.pem", "certificate"),
        (TLSServerConfig(certificateFile: "server.pem", keyFile: "/nonexistent/key.pem"), "/nonexistent/key.pem", "key"),
        (TLSServerConfig(certificateFile: "server.pem", keyFile: "server.key", ciphers: "NO-SUCH"), "NO-SUCH", "ciphers"),
        (TLSServerConfig(certificateFile: "server.pem", keyFile: "server.key", ciphersuites: "TLS_NONE"), "TLS_NONE", "ciphersuites"),
    ])
    func unloadable(config: TLSServerConfig, named: String, key: String) {
        var config = config
        // Relative names are the test PKI's files.
        if !config.certificateFile.hasPrefix("/") { config.certificateFile = TestPKI.path(config.certificateFile) }
        if !config.keyFile.hasPrefix("/") { config.keyFile = TestPKI.path(config.keyFile) }
        #expect {
            try TLSContext.server(config)
        } throws: { error in
            guard let error = error as? TLSError else { return false }
            return error.description.contains(named) && error.key == key
        }
        #expect {
            try TLSContext.client(TLSClientConfig(caFile: "/nonexistent/ca.pem"))
        } throws: { error in (error as? TLSError)?.key == "tls_ca_file" }
    }

    @Test("close_notify ends the peer's reads cleanly")
    func closeNotify() throws {
        let client = try TLSEngine(client: TestPKI.client(), host: "localhost")
        let server = try TLSEngine(server: TestPKI.server())
        _ = converse(client: client, server: server, clientSends: [1], serverSends: [2], piece: 1 << 20)
        server.close()
        _ = shuttle(server, client, piece: 1 << 20)
        var buffer = [UInt8](repeating: 0, count: 64)
        #expect(buffer.withUnsafeMutableBytes { client.read(into: $0) } == .closed)
    }

    @Test("a plain-HTTP request line or other garbage fails the handshake; only a request line is called plain HTTP",
          arguments: [
              ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
              ("POST /v1/chat/completions HTTP/1.1\r\n", true),
              ("OPTIONS * HTTP/1.1\r\n", true),
              ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true),
              ("\u{17}\u{03}\u{03}\u{00}\u{05}hello", false),  // an application-data record before any handshake
              ("get / http/1.1\r\n", false),  // not a method token as any client sends it
              ("\r\n\r\n\r\n", false),
          ])
    func garbage(input: String, plainHTTP: Bool) throws {
        let server = try TLSEngine(server: TestPKI.server())
        let junk = Array(input.utf8)
        server.withReceiveSpace { space in space.copyBytes(from: junk) }
        server.received(junk.count)
        var buffer = [UInt8](repeating: 0, count: 64)
        guard case .failed = buffer.withUnsafeMutableBytes({ server.read(into: $0) }) else {
            Issue.record("garbage was not rejected")
            return
        }
        #expect(server.peerSentPlainHTTP == plainHTTP)
    }

    @Test("a real ClientHello, even arriving a byte at a time, is not taken for plain HTTP")
    func clientHelloIsNotPlainHTTP() throws {
        let client = try TLSEngine(client: TestPKI.client(), host: "localhost")
        let server = try TLSEngine(server: TestPKI.server())
        let result = converse(client: client, server: server, clientSends: Array("ping".utf8), serverSends: [], piece: 1)
        #expect(result.serverGot == Array("ping".utf8))
        #expect(!server.peerSentPlainHTTP)
    }
}
