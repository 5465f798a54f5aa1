import Glibc

/// One active health check of one server: a connect, TLS when the server speaks it, one request, and the status
/// line of the answer, all within `timeout`. Blocking, with poll on a non-blocking socket and one deadline: the
/// health-check thread only (``HealthChecker``), never a loop.
struct HealthProbe {
    let address: SocketAddress
    /// The server's client context (an https server), and the name sent as SNI and verified.
    let tls: TLSContext?
    let tlsHost: String
    let request: [UInt8]
    /// Milliseconds for the whole probe.
    let timeout: Int
    let expect: ClosedRange<Int>

    /// What a probe found: `detail` says what failed, for the operator log ("connect refused", "status 503").
    struct Outcome: Equatable {
        var passed: Bool
        var detail: String
    }

    /// The request a probe sends: no body, no keep-alive (a probe's connection is never reused).
    static func request(_ check: HealthCheckConfig, authority: String) -> [UInt8] {
        Array("\(check.method) \(check.path) HTTP/1.1\r\nHost: \(authority)\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n".utf8)
    }

    /// The most response bytes read for a status line (an interim head before it included); a server that sends
    /// more without one fails the probe.
    static let maxResponseBytes = 8_192

    /// Connects, sends, reads up to the final status line. Never throws: every failure is an outcome.
    func run() -> Outcome {
        let deadline = Syscall.monotonicMilliseconds() + Int64(timeout)
        do throws(Failure) {
            let socket: FileDescriptor
            do throws(SystemError) { socket = try Syscall.tcpSocket(family: address.family) } catch { throw .failed(error.description) }
            try connect(socket.rawValue, deadline: deadline)
            var engine: TLSEngine?
            if let tls {
                do throws(TLSError) { engine = try TLSEngine(client: tls, host: tlsHost) } catch { throw .failed("TLS: \(error.description)") }
            }
            let channel = Channel(fd: socket.rawValue, engine: engine, deadline: deadline)
            try channel.send(request)
            var received: [UInt8] = []
            while true {
                switch Self.parseStatus(received) {
                case .status(let status):
                    return Outcome(passed: expect.contains(status), detail: "status \(status)")
                case .invalid(let reason):
                    return Outcome(passed: false, detail: reason)
                case .needMore:
                    guard try channel.receive(into: &received, upTo: Self.maxResponseBytes - received.count) else {
                        return Outcome(passed: false, detail: received.isEmpty ? "closed without answering" : "closed in the status line")
                    }
                }
            }
        } catch {
            switch error {
            case .timedOut: return Outcome(passed: false, detail: "timed out after \(timeout) ms")
            case .failed(let reason): return Outcome(passed: false, detail: reason)
            }
        }
    }

    private func connect(_ fd: Int32, deadline: Int64) throws(Failure) {
        let started: IOResult<Void>
        do throws(SystemError) { started = try Syscall.connect(fd, address) } catch { throw Self.connectFailure(error.errno) }
        guard case .wouldBlock = started else { return }
        try Self.wait(fd, for: .writable, until: deadline)
        let code = Syscall.pendingError(fd)
        if code != 0 { throw Self.connectFailure(code) }
    }

    private static func connectFailure(_ code: Int32) -> Failure {
        code == ECONNREFUSED ? .failed("connect refused") : .failed(SystemError(call: "connect", errno: code).description)
    }

    /// Why a probe stopped early.
    enum Failure: Error {
        /// The deadline passed while waiting on the socket.
        case timedOut
        /// The connect, TLS or the connection failed, in words for the log.
        case failed(String)
    }

    /// Waits until `fd` is ready or throws `.timedOut` at `deadline`.
    fileprivate static func wait(_ fd: Int32, for ready: Syscall.Readiness, until deadline: Int64) throws(Failure) {
        let left = deadline - Syscall.monotonicMilliseconds()
        guard left > 0, Syscall.waitReady(fd, for: ready, milliseconds: left) else { throw .timedOut }
    }

    // MARK: - Status line

    /// What the bytes received so far say.
    enum StatusParse: Equatable {
        case needMore
        /// The final status (after any interim 1xx responses).
        case status(Int)
        /// Not an HTTP/1.x answer, or no status line within `limit` bytes.
        case invalid(String)
    }

    /// Reads the final status from the start of a response: `HTTP/1.x SSS[ reason]` (RFC 9112 §4), after any
    /// interim responses (100 Continue, 103 Early Hints), whose heads end at an empty line. A pure function of
    /// the bytes so far; called again with more bytes after `.needMore`. Bytes that cannot begin a status line
    /// are refused at once rather than waited on until the deadline.
    static func parseStatus(_ bytes: [UInt8], limit: Int = maxResponseBytes) -> StatusParse {
        let tooLong = StatusParse.invalid("no status line in the first \(limit) bytes")
        var start = 0
        while true {
            guard let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) else {
                guard Self.canBeginStatusLine(bytes[start...]) else { return .invalid("not an HTTP/1.x response") }
                return bytes.count >= limit ? tooLong : .needMore
            }
            let line = bytes[start..<newline].last == UInt8(ascii: "\r") ? bytes[start..<newline - 1] : bytes[start..<newline]
            guard let status = Self.statusCode(line) else { return .invalid("not an HTTP/1.x response") }
            guard (100...199).contains(status), status != 101 else { return .status(status) }
            guard let end = Self.endOfHead(bytes, after: newline) else { return bytes.count >= limit ? tooLong : .needMore }
            start = end
        }
    }

    private static let versionPrefix = Array("HTTP/1.".utf8)

    private static func canBeginStatusLine(_ partial: ArraySlice<UInt8>) -> Bool {
        zip(partial, versionPrefix).allSatisfy { $0 == $1 }
    }

    /// The status code of `HTTP/1.D SSS` followed by the end of the line or a space; nil for anything else.
    private static func statusCode(_ line: ArraySlice<UInt8>) -> Int? {
        let line = Array(line)
        guard line.count >= 12, line.starts(with: versionPrefix), isDigit(line[7]), line[8] == UInt8(ascii: " "),
              line[9...11].allSatisfy(isDigit), line.count == 12 || line[12] == UInt8(ascii: " ") else { return nil }
        return line[9...11].reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    /// The index after the empty line that ends a head whose first line ends at `newline`; nil when not there yet.
    private static func endOfHead(_ bytes: [UInt8], after newline: Int) -> Int? {
        var lineStart = newline + 1
        while let end = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) {
            if end == lineStart || (end == lineStart + 1 && bytes[lineStart] == UInt8(ascii: "\r")) { return end + 1 }
            lineStart = end + 1
        }
        return nil
    }
}

/// A probe's connection: plain, or through a client `TLSEngine` whose ciphertext is moved here with blocking
/// waits (what `Transport` does for the loops, event-driven).
private struct Channel {
    let fd: Int32
    let engine: TLSEngine?
    let deadline: Int64

    private static var none: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: nil, count: 0) }

    /// Sends all of `bytes` (over TLS, the handshake first).
    func send(_ bytes: [UInt8]) throws(HealthProbe.Failure) {
        var offset = 0
        while offset < bytes.count {
            if let engine {
                switch bytes.withUnsafeBytes({ engine.write(UnsafeRawBufferPointer(rebasing: $0[offset...])) }) {
                case .bytes(let count):
                    offset += count
                    try flush(engine)
                case .wantWrite:
                    try flush(engine)
                case .wantRead:
                    try flush(engine)
                    guard try pull(engine) else { throw .failed("closed during the TLS handshake") }
                case .closed:
                    throw .failed("the server closed the TLS session")
                case .failed(let reason):
                    try? flush(engine)  // the alert, so the server's log says why
                    throw .failed("TLS: \(reason)")
                }
                continue
            }
            let written = bytes.withUnsafeBytes { all -> Result<IOResult<Int>, SystemError> in
                do throws(SystemError) {
                    return .success(try Syscall.write(fd, UnsafeRawBufferPointer(rebasing: all[offset...]), Self.none))
                } catch { return .failure(error) }
            }
            switch written {
            case .failure(let error): throw .failed(error.description)
            case .success(.processed(let count)): offset += count
            case .success(.wouldBlock): try HealthProbe.wait(fd, for: .writable, until: deadline)
            }
        }
    }

    /// Appends what arrives next (at most `limit` bytes, at least one) to `received`; false at the end of the stream.
    func receive(into received: inout [UInt8], upTo limit: Int) throws(HealthProbe.Failure) -> Bool {
        var chunk = [UInt8](repeating: 0, count: max(1, min(limit, 4_096)))
        while true {
            if let engine {
                switch chunk.withUnsafeMutableBytes({ engine.read(into: $0) }) {
                case .bytes(let count):
                    received += chunk[..<count]
                    try flush(engine)
                    return true
                case .wantRead:
                    try flush(engine)
                    guard try pull(engine) else { return false }
                case .wantWrite:
                    try flush(engine)
                case .closed:
                    return false
                case .failed(let reason):
                    throw .failed("TLS: \(reason)")
                }
                continue
            }
            let read = chunk.withUnsafeMutableBytes { space -> Result<IOResult<Int>, SystemError> in
                do throws(SystemError) { return .success(try Syscall.read(fd, into: space)) } catch { return .failure(error) }
            }
            switch read {
            case .failure(let error): throw .failed(error.description)
            case .success(.processed(0)): return false
            case .success(.processed(let count)):
                received += chunk[..<count]
                return true
            case .success(.wouldBlock): try HealthProbe.wait(fd, for: .readable, until: deadline)
            }
        }
    }

    /// Sends the engine's pending ciphertext, waiting while the socket is full.
    private func flush(_ engine: TLSEngine) throws(HealthProbe.Failure) {
        while engine.hasPendingOutput {
            let written = engine.withPendingOutput { output -> Result<IOResult<Int>, SystemError> in
                do throws(SystemError) { return .success(try Syscall.write(fd, output, Self.none)) } catch { return .failure(error) }
            }
            switch written {
            case .failure(let error): throw .failed(error.description)
            case .success(.processed(let count)): engine.sent(count)
            case .success(.wouldBlock): try HealthProbe.wait(fd, for: .writable, until: deadline)
            }
        }
    }

    /// Moves ciphertext from the socket into the engine, waiting for some; false at the end of the stream.
    private func pull(_ engine: TLSEngine) throws(HealthProbe.Failure) -> Bool {
        while true {
            let read = engine.withReceiveSpace { space -> Result<IOResult<Int>, SystemError>? in
                guard space.count > 0 else { return nil }
                do throws(SystemError) { return .success(try Syscall.read(fd, into: space)) } catch { return .failure(error) }
            }
            switch read {
            // The engine holds a full buffer it has not decrypted: it cannot be waiting on the socket.
            case nil: throw .failed("TLS: the engine's input buffer is full")
            case .failure(let error)?: throw .failed(error.description)
            case .success(.processed(0))?: return false
            case .success(.processed(let count))?:
                engine.received(count)
                return true
            case .success(.wouldBlock)?: try HealthProbe.wait(fd, for: .readable, until: deadline)
            }
        }
    }
}
