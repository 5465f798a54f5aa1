/// How a session reads and writes one of its sockets: plain, or through a `TLSEngine`. The session sees plaintext
/// either way, with the same buffers, queues and watermarks, and an upstream read written to the client in the same
/// turn (each TLS `write` is encrypted and sent at once). A value the session keeps per side; loop thread only.
struct Transport {
    /// Why a read or write stopped the connection.
    enum Failure: Error {
        /// The socket failed.
        case socket(SystemError)
        /// The TLS layer failed (handshake, verification, a bad record); the reason in OpenSSL's words.
        case tls(String)

        var description: String {
            switch self {
            case .socket(let error): error.description
            case .tls(let reason): reason
            }
        }
    }

    let fd: Int32
    /// The TLS session over `fd`; nil on a plain connection.
    let tls: TLSEngine?

    /// Ciphertext (a handshake message, an alert, a record) is waiting for the socket to take it.
    var hasPendingOutput: Bool { tls?.hasPendingOutput ?? false }

    /// A read that filled less than the space offered means the socket is drained (nginx ngx_recv.c). Not so over
    /// TLS: a short read of plaintext says nothing about the ciphertext behind it, so TLS reads go on until EAGAIN.
    var shortReadDrainsSocket: Bool { tls == nil }

    /// Reads into `buffer`'s free space. `.processed(0)` is the end of the stream (the socket's EOF, or TLS
    /// close_notify); `.wouldBlock` means the socket has nothing more for now. Over TLS the handshake runs here.
    func read(into buffer: ByteBuffer) throws(Failure) -> IOResult<Int> {
        if let tls { return try Self.read(tls, fd: fd, into: buffer) }
        do throws(SystemError) { return try buffer.read(from: fd) } catch { throw .socket(error) }
    }

    /// Writes `first[firstRange]` then `second[secondRange]` (readable-relative ranges) in one call; returns the
    /// plaintext bytes taken. A result short of the input means the socket is full (or a handshake waits for the peer).
    func write(_ first: ByteBuffer?, _ firstRange: Range<Int>, _ second: ByteBuffer?, _ secondRange: Range<Int>) throws(Failure) -> IOResult<Int> {
        if let tls { return try Self.write(tls, fd: fd, first, firstRange, second, secondRange) }
        do throws(SystemError) { return try writePair(fd, first, firstRange, second, secondRange) } catch { throw .socket(error) }
    }

    /// Sends TLS close_notify, the clean end of a response, as far as the socket takes it now; nothing on plain.
    func closeNotify() {
        guard let tls else { return }
        tls.close()
        _ = try? Self.flush(tls, fd: fd)
    }

    // MARK: - TLS

    /// Sends the engine's pending ciphertext. Returns false if some is left because the socket is full.
    private static func flush(_ engine: TLSEngine, fd: Int32) throws(Failure) -> Bool {
        while engine.hasPendingOutput {
            let result = engine.withPendingOutput { (output) -> Result<IOResult<Int>, SystemError> in
                do throws(SystemError) {
                    return .success(try Syscall.write(fd, output, UnsafeRawBufferPointer(start: nil, count: 0)))
                } catch { return .failure(error) }
            }
            switch result {
            case .failure(let error): throw .socket(error)
            case .success(.wouldBlock): return false
            case .success(.processed(let count)):
                engine.sent(count)
                if count == 0 { return false }
            }
        }
        return true
    }

    /// Reads plaintext, pulling ciphertext from the socket as needed.
    private static func read(_ engine: TLSEngine, fd: Int32, into buffer: ByteBuffer) throws(Failure) -> IOResult<Int> {
        if !engine.isStarted {
            // A server engine gets its OpenSSL state (about 55 KB) only when the client's first byte is in the
            // socket: a bare connect costs no more than on a plain listener (issue 12, item 5).
            let first: IOResult<Int>
            do throws(SystemError) { first = try Syscall.peekByte(fd) } catch { throw .socket(error) }
            guard case .processed(1) = first else { return first }
            guard engine.start() else { throw .tls("cannot create a TLS connection (out of memory)") }
        }
        while true {
            let step = buffer.withWritableRawBytes { engine.read(into: $0) }
            switch step {
            case .bytes(let count):
                buffer.commitWrite(count)
                _ = try flush(engine, fd: fd)  // e.g. a key update's answer
                return .processed(count)
            case .closed:
                return .processed(0)
            case .failed(let reason):
                _ = try? flush(engine, fd: fd)  // the alert, so the peer learns why
                throw .tls(reason)
            case .wantWrite:
                guard try flush(engine, fd: fd) else { return .wouldBlock }
            case .wantRead:
                _ = try flush(engine, fd: fd)  // handshake messages this step produced
                let received = engine.withReceiveSpace { (space) -> Result<IOResult<Int>, SystemError> in
                    guard space.count > 0 else { return .success(.wouldBlock) }
                    do throws(SystemError) { return .success(try Syscall.read(fd, into: space)) } catch { return .failure(error) }
                }
                switch received {
                case .failure(let error): throw .socket(error)
                case .success(.wouldBlock): return .wouldBlock
                case .success(.processed(0)): return .processed(0)
                case .success(.processed(let count)): engine.received(count)
                }
            }
        }
    }

    /// Encrypts and sends; takes nothing while earlier ciphertext is still unsent, so OpenSSL never holds more
    /// than one buffer of it: the session's queue is where waiting bytes stay.
    private static func write(_ engine: TLSEngine, fd: Int32, _ first: ByteBuffer?, _ firstRange: Range<Int>,
                      _ second: ByteBuffer?, _ secondRange: Range<Int>) throws(Failure) -> IOResult<Int> {
        guard try flush(engine, fd: fd) else { return .wouldBlock }
        var taken = 0
        if let first, !firstRange.isEmpty {
            guard try write(engine, fd: fd, first, firstRange, taken: &taken) else { return taken > 0 ? .processed(taken) : .wouldBlock }
        }
        if let second, !secondRange.isEmpty {
            guard try write(engine, fd: fd, second, secondRange, taken: &taken) else { return taken > 0 ? .processed(taken) : .wouldBlock }
        }
        return .processed(taken)
    }

    /// Encrypts and sends `buffer[range]`, adding what was taken to `taken`; false when it stopped short.
    private static func write(_ engine: TLSEngine, fd: Int32, _ buffer: ByteBuffer, _ range: Range<Int>,
                              taken: inout Int) throws(Failure) -> Bool {
        var offset = range.lowerBound
        while offset < range.upperBound {
            let step = buffer.withReadableRawBytes(from: offset, to: range.upperBound) { engine.write($0) }
            switch step {
            case .bytes(let count):
                offset += count
                taken += count
                guard try flush(engine, fd: fd) else { return false }
            case .wantWrite:
                guard try flush(engine, fd: fd) else { return false }
            case .wantRead:
                _ = try flush(engine, fd: fd)
                return false
            case .closed:
                throw .tls("the peer closed the TLS session")
            case .failed(let reason):
                _ = try? flush(engine, fd: fd)
                throw .tls(reason)
            }
        }
        return true
    }
}
