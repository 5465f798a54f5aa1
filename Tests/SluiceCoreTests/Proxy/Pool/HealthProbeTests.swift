import Glibc
import Synchronization
import Testing

@testable import SluiceCore

/// One probe against a loopback origin of one connection: what it sends, and the outcome for each way a server
/// answers or fails to.
@Suite struct HealthProbeTests {
    private static let check = HealthCheckConfig(method: "GET", path: "/health", timeout: 2_000)

    private static func probe(port: UInt16, tls: TLSContext? = nil, tlsHost: String = "localhost", timeout: Int = 2_000) -> HealthProbe {
        HealthProbe(address: SocketAddress(numericHost: "127.0.0.1", port: port)!, tls: tls, tlsHost: tlsHost,
                    request: HealthProbe.request(check, authority: "127.0.0.1:\(port)"), timeout: timeout, expect: 200...299)
    }

    @Test(arguments: [("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true, "status 200"),
                      ("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", false, "status 503"),
                      ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", true, "status 204"),
                      ("SSH-2.0-OpenSSH_9.6\r\n", false, "not an HTTP/1.x response"),
                      ("HTTP/1.1 200", false, "closed in the status line"),
                      ("", false, "closed without answering")])
    func aPlainServerAnswers(_ row: (reply: String, passed: Bool, detail: String)) throws {
        let origin = try ProbeOrigin(reply: Array(row.reply.utf8))
        let outcome = Self.probe(port: origin.port).run()
        #expect(outcome == HealthProbe.Outcome(passed: row.passed, detail: row.detail))
        #expect(String(decoding: origin.finish(), as: UTF8.self)
                    == "GET /health HTTP/1.1\r\nHost: 127.0.0.1:\(origin.port)\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n")
    }

    @Test func aServerThatNeverAnswersTimesOut() throws {
        let origin = try ProbeOrigin(reply: nil)
        let started = Syscall.monotonicMilliseconds()
        #expect(Self.probe(port: origin.port, timeout: 150).run() == HealthProbe.Outcome(passed: false, detail: "timed out after 150 ms"))
        let took = Syscall.monotonicMilliseconds() - started
        #expect(took >= 140 && took < 1_000, "\(took) ms")
        _ = origin.finish()
    }

    @Test func aClosedPortIsRefused() throws {
        let port = try ProbeOrigin(reply: nil).finish(returningPort: true)
        #expect(Self.probe(port: port).run() == HealthProbe.Outcome(passed: false, detail: "connect refused"))
    }

    @Test func anHTTPSServerIsProbedOverTLS() throws {
        let origin = try ProbeOrigin(reply: Array("HTTP/1.1 200 OK\r\n\r\n".utf8), tls: TestPKI.server())
        #expect(Self.probe(port: origin.port, tls: try TestPKI.client()).run() == HealthProbe.Outcome(passed: true, detail: "status 200"))
        #expect(String(decoding: origin.finish(), as: UTF8.self).hasPrefix("GET /health HTTP/1.1\r\n"))
    }

    @Test func aCertificateForAnotherNameFailsTheProbe() throws {
        let origin = try ProbeOrigin(reply: Array("HTTP/1.1 200 OK\r\n\r\n".utf8), tls: TestPKI.server())
        let outcome = Self.probe(port: origin.port, tls: try TestPKI.client(), tlsHost: "other.example").run()
        #expect(!outcome.passed && outcome.detail.hasPrefix("TLS: certificate verify failed"), "\(outcome.detail)")
        _ = origin.finish()
    }

    @Test func aPlainServerOnAnHTTPSLineFailsTheProbe() throws {
        let origin = try ProbeOrigin(reply: Array("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n".utf8), readsOnce: true)
        let outcome = Self.probe(port: origin.port, tls: try TestPKI.client()).run()
        #expect(!outcome.passed && outcome.detail.hasPrefix("TLS: "), "\(outcome.detail)")
        _ = origin.finish()
    }
}

/// A loopback origin for probes, on a thread of its own: it accepts `connections` connections one after the
/// other, reads each request head (through a server `TLSEngine` when given a context; or whatever the first read
/// gets, `readsOnce`), answers `reply` and closes. With no reply it never accepts: the kernel completes the
/// connect and nobody answers.
final class ProbeOrigin: @unchecked Sendable {
    // @unchecked: `received` is written by the origin thread before it posts `done`, read after the wait; the
    // counters are atomic.
    let port: UInt16
    private let listener: Int32
    private var received: [UInt8] = []
    private let done = ThreadSemaphore()
    private let serving: Bool
    private let answered = Atomic<Int>(0)
    /// `finish` was called: the origin stops waiting for connections.
    private let closing = Atomic<Bool>(false)

    init(reply: [UInt8]?, tls: TLSContext? = nil, readsOnce: Bool = false, connections: Int = 1) throws {
        let socket = try Syscall.exclusiveListeningSocket(SocketAddress(numericHost: "127.0.0.1", port: 0)!, backlog: 8)
        port = try Syscall.localAddress(socket.rawValue).port
        listener = socket.releaseRawValue()
        serving = reply != nil
        guard let reply else { return }
        try LoopThread.spawn(name: "probe-origin") { [self] in
            for _ in 0..<connections {
                received = []
                guard serve(reply: reply, tls: tls, readsOnce: readsOnce) else { break }
                answered.add(1, ordering: .relaxed)
            }
            done.post()
        }
    }

    /// Connections answered so far (any thread).
    var served: Int { answered.load(ordering: .relaxed) }

    /// Waits for the origin (bounded), closes the listener, and returns what it read.
    @discardableResult
    func finish() -> [UInt8] {
        closing.store(true, ordering: .relaxed)
        if serving { done.wait(milliseconds: 5_000) }
        Glibc.close(listener)
        return received
    }

    /// Closes at once and returns the port, now closed.
    func finish(returningPort: Bool) -> UInt16 {
        finish()
        return port
    }

    /// Serves one connection; false when none came.
    private func serve(reply: [UInt8], tls: TLSContext?, readsOnce: Bool) -> Bool {
        var ready = false
        for _ in 0..<100 where !ready && !closing.load(ordering: .relaxed) {
            ready = Syscall.waitReady(listener, for: .readable, milliseconds: 50)
        }
        guard ready, case .processed(let accepted)? = try? Syscall.accept(listener) else { return false }
        let connection = FileDescriptor(rawValue: accepted.fd)
        let fd = connection.rawValue
        let engine = tls.map { TLSEngine(server: $0) }
        let end: [UInt8] = Array("\r\n\r\n".utf8)
        var chunk = [UInt8](repeating: 0, count: 4_096)
        while !received.indices.contains(where: { received[$0...].starts(with: end) }) && !(readsOnce && !received.isEmpty) {
            if let engine {
                switch chunk.withUnsafeMutableBytes({ engine.read(into: $0) }) {
                case .bytes(let count): received += chunk[..<count]
                case .wantRead:
                    Self.flush(engine, fd)  // the handshake's answer, before waiting for the client's next flight
                    guard Self.pull(engine, fd) else { return true }
                case .wantWrite: Self.flush(engine, fd)
                case .closed, .failed: return true
                }
                continue
            }
            guard Syscall.waitReady(fd, for: .readable, milliseconds: 5_000),
                  case .processed(let count)? = try? chunk.withUnsafeMutableBytes({ try Syscall.read(fd, into: $0) }), count > 0 else { return true }
            received += chunk[..<count]
        }
        if let engine {
            _ = reply.withUnsafeBytes { engine.write($0) }
            Self.flush(engine, fd)
        } else if !reply.isEmpty {
            _ = try? reply.withUnsafeBytes { try Syscall.write(fd, $0, UnsafeRawBufferPointer(start: nil, count: 0)) }
        }
        return true
    }

    private static func flush(_ engine: TLSEngine, _ fd: Int32) {
        while engine.hasPendingOutput {
            let count = engine.withPendingOutput { output in
                (try? Syscall.write(fd, output, UnsafeRawBufferPointer(start: nil, count: 0))).flatMap { (result: IOResult<Int>) -> Int? in
                    if case .processed(let count) = result { count } else { nil }
                }
            }
            guard let count else {
                guard Syscall.waitReady(fd, for: .writable, milliseconds: 5_000) else { return }
                continue
            }
            engine.sent(count)
        }
    }

    private static func pull(_ engine: TLSEngine, _ fd: Int32) -> Bool {
        guard Syscall.waitReady(fd, for: .readable, milliseconds: 5_000) else { return false }
        let count = engine.withReceiveSpace { space in
            (try? Syscall.read(fd, into: space)).flatMap { (result: IOResult<Int>) -> Int? in
                if case .processed(let count) = result { count } else { -1 }
            }
        }
        guard let count, count != 0 else { return false }
        if count > 0 { engine.received(count) }
        return true
    }
}
