import Glibc

// The demo backend's only kernel calls. It lives outside SluiceCore so that it
// builds alone, which is why it has its own small wrappers instead of
// SluiceCore's System/ folder. Sockets here are blocking, one thread each:
// this is the demo's origin, not the proxy's hot path.

/// A failed system call made while setting up or serving the demo backend.
public struct DemoBackendError: Error, CustomStringConvertible, Sendable {
    /// The call that failed and what it was for, e.g. `bind(127.0.0.1:8080)`.
    public let call: String
    /// The `errno` value, or nil when the failure has no errno (a resolver error).
    public let errno: Int32?
    /// The error text: `strerror(errno)` or the resolver's message.
    public let reason: String

    /// Records `call` together with the current text for `errno`.
    init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
        self.reason = String(cString: strerror(errno))
    }

    /// Records a failure that carries its own message instead of an errno.
    init(call: String, reason: String) {
        self.call = call
        self.errno = nil
        self.reason = reason
    }

    /// `bind(127.0.0.1:8080): Address already in use (errno 98)`.
    public var description: String {
        if let errno { return "\(call): \(reason) (errno \(errno))" }
        return "\(call): \(reason)"
    }
}

/// Linux's `POLLRDHUP` (asm-generic/poll.h). Swift's Glibc module is built
/// without `_GNU_SOURCE`, so the constant is not imported.
private let pollReadHangup: Int16 = 0x2000

/// How long a connection may sit idle between requests, or stall a blocking
/// send, before its thread gives up; bounds the threads a vanished peer pins.
let demoSocketIdleTimeoutSeconds = 60

/// Namespace for the blocking socket calls. Each wrapper reads `errno` at once
/// and retries `EINTR`.
enum DemoSocket {
    /// Resolves `host`, then creates, binds and listens on a close-on-exec TCP
    /// socket with `SO_REUSEADDR`.
    ///
    /// - Returns: the listening fd and the port the kernel bound (useful when
    ///   `port` is 0).
    /// - Throws: `DemoBackendError` naming the call, the address and the errno text.
    static func listen(host: String, port: UInt16) throws(DemoBackendError) -> (fd: Int32, port: UInt16) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let gaiStatus = getaddrinfo(host, String(port), &hints, &list)
        guard gaiStatus == 0, let first = list else {
            throw DemoBackendError(call: "getaddrinfo(\(host))", reason: String(cString: gai_strerror(gaiStatus)))
        }
        defer { freeaddrinfo(list) }
        let info = first.pointee
        let label = "\(host):\(port)"

        let fd = socket(info.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DemoBackendError(call: "socket(\(label))", errno: Glibc.errno) }
        do throws(DemoBackendError) {
            try setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1, label: "setsockopt(SO_REUSEADDR)")
            guard bind(fd, info.ai_addr, info.ai_addrlen) == 0 else {
                throw DemoBackendError(call: "bind(\(label))", errno: Glibc.errno)
            }
            guard Glibc.listen(fd, 128) == 0 else {
                throw DemoBackendError(call: "listen(\(label))", errno: Glibc.errno)
            }
            return (fd, try boundPort(fd, label: label))
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
    }

    /// Reads back the port the kernel assigned to a bound socket.
    private static func boundPort(_ fd: Int32, label: String) throws(DemoBackendError) -> UInt16 {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard status == 0 else { throw DemoBackendError(call: "getsockname(\(label))", errno: Glibc.errno) }
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
        default:
            throw DemoBackendError(call: "getsockname(\(label))", reason: "unexpected address family \(storage.ss_family)")
        }
    }

    /// Sets an integer socket option.
    static func setOption(_ fd: Int32, level: Int32, name: Int32, value: Int32, label: String) throws(DemoBackendError) {
        var value = value
        guard setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw DemoBackendError(call: label, errno: Glibc.errno)
        }
    }

    /// What one `accept` call produced.
    enum AcceptResult {
        /// A connection, already close-on-exec, TCP_NODELAY and with timeouts.
        case connection(fd: Int32)
        /// A transient failure (aborted handshake, fd exhaustion): call again.
        case retry(errno: Int32)
        /// The listener was shut down or closed: the accept loop must end.
        case listenerClosed
    }

    /// Blocks in `accept` and prepares the new socket for serving.
    static func accept(_ listenFD: Int32) -> AcceptResult {
        while true {
            let fd = Glibc.accept(listenFD, nil, nil)
            if fd >= 0 {
                prepareConnection(fd)
                return .connection(fd: fd)
            }
            let error = Glibc.errno
            switch error {
            case EINTR:
                continue
            // shutdown(2) on the listener makes a blocked accept fail with
            // EINVAL; that is how stop() wakes this thread.
            case EINVAL, EBADF, ENOTSOCK:
                return .listenerClosed
            default:
                return .retry(errno: error)
            }
        }
    }

    /// Applies per-connection options. Failures are ignored: each only tunes
    /// latency or bounds an idle thread, and the connection still works without it.
    private static func prepareConnection(_ fd: Int32) {
        // Swift's Glibc lacks accept4, so close-on-exec is set afterwards;
        // the demo never forks between the two calls.
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        // Each SSE event must leave at once rather than wait for the previous
        // segment's ACK (Nagle), or the demo would show tokens in clumps.
        try? setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1, label: "TCP_NODELAY")
        var timeout = timeval(tv_sec: demoSocketIdleTimeoutSeconds, tv_usec: 0)
        let size = socklen_t(MemoryLayout<timeval>.size)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, size)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, size)
    }

    /// Receives up to `maximum` bytes and appends them to `buffer`.
    ///
    /// - Returns: the byte count, 0 at EOF, or nil on an error or the idle
    ///   timeout; either way nil means the connection is finished.
    static func receive(_ fd: Int32, appendingTo buffer: inout [UInt8], maximum: Int = 65_536) -> Int? {
        let oldCount = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: maximum))
        while true {
            let n = buffer.withUnsafeMutableBytes { raw in
                recv(fd, raw.baseAddress! + oldCount, maximum, 0)
            }
            if n < 0 && Glibc.errno == EINTR { continue }
            buffer.removeLast(maximum - max(n, 0))
            return n < 0 ? nil : n
        }
    }

    /// Sends all of `bytes`, normally in one `send` call.
    ///
    /// `MSG_NOSIGNAL` turns a write to a closed peer into `EPIPE` instead of a
    /// process-killing SIGPIPE, without touching the process's signal handlers.
    ///
    /// - Returns: false when the peer is gone or the send timed out.
    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if Glibc.errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
    }

    /// Waits up to `milliseconds` for the peer to close or reset the connection.
    ///
    /// Only hang-ups are watched, not readable data: a pipelined request
    /// arriving mid-stream must not end the wait early, and leaving it unread
    /// would otherwise make every later poll return at once.
    ///
    /// - Returns: true if the peer has gone (FIN, RST or a socket error).
    static func peerHungUp(_ fd: Int32, waitingMilliseconds milliseconds: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: pollReadHangup, revents: 0)
        let n = poll(&entry, 1, milliseconds)
        if n < 0 { return Glibc.errno != EINTR }
        return n > 0 && entry.revents & (pollReadHangup | Int16(POLLHUP) | Int16(POLLERR) | Int16(POLLNVAL)) != 0
    }

    /// Closes after a response that ends the connection, without losing it.
    ///
    /// Closing a socket that still has unread request bytes makes the kernel
    /// send RST, which can destroy the response before the client reads it
    /// (RFC 9112 §9.6). So: half-close, drain briefly, then close.
    static func lingeringClose(_ fd: Int32) {
        _ = shutdown(fd, Int32(SHUT_WR))
        var drain = [UInt8]()
        var drained = 0
        while drained < 1 << 20 {
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 1_000) > 0 else { break }
            drain.removeAll(keepingCapacity: true)
            guard let n = receive(fd, appendingTo: &drain), n > 0 else { break }
            drained += n
        }
        _ = Glibc.close(fd)
    }
}
