import CSluiceLinux
import Glibc

/// One thin function per system call: errno is read immediately, EINTR retried (never for close),
/// EAGAIN returned as `.wouldBlock`, anything else thrown as `SystemError`.
public enum Syscall {
    /// A non-blocking, close-on-exec TCP socket.
    public static func tcpSocket(family: Int32) throws(SystemError) -> FileDescriptor {
        let fd = Glibc.socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure("socket") }
        return FileDescriptor(rawValue: fd)
    }

    public static func setOption(_ fd: Int32, level: Int32, name: Int32, value: Int32) throws(SystemError) {
        var value = value
        guard setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else { throw failure("setsockopt") }
    }

    /// Disables Nagle: every write leaves at once, which is the point of an SSE proxy.
    public static func setNoDelay(_ fd: Int32) {
        _ = try? setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
    }

    public static func bind(_ fd: Int32, _ address: SocketAddress) throws(SystemError) {
        let result = address.withSockAddr { Glibc.bind(fd, $0, $1) }
        guard result == 0 else { throw failure("bind") }
    }

    public static func listen(_ fd: Int32, backlog: Int32) throws(SystemError) {
        guard Glibc.listen(fd, backlog) == 0 else { throw failure("listen") }
    }

    /// Accepts one connection as non-blocking and close-on-exec, with the peer address. The caller
    /// wraps the returned fd in a `FileDescriptor` at once (a tuple cannot hold a non-copyable value).
    public static func accept(_ fd: Int32) throws(SystemError) -> IOResult<(fd: Int32, peer: SocketAddress)> {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let client = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    accept4(fd, $0, &length, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
                }
            }
            if client >= 0 { return .processed((client, SocketAddress(storage: storage, length: length))) }
            switch Glibc.errno {
            case EINTR: continue
            // The peer gave up before we accepted: not our failure, try the next one.
            case ECONNABORTED, EPROTO: continue
            case EAGAIN: return .wouldBlock
            default: throw failure("accept4")
            }
        }
    }

    /// Starts a non-blocking connect: `.processed` when it completed at once, `.wouldBlock` while in progress.
    public static func connect(_ fd: Int32, _ address: SocketAddress) throws(SystemError) -> IOResult<Void> {
        while true {
            let result = address.withSockAddr { Glibc.connect(fd, $0, $1) }
            if result == 0 { return .processed(()) }
            switch Glibc.errno {
            case EINTR: continue
            case EINPROGRESS, EAGAIN: return .wouldBlock
            default: throw failure("connect")
            }
        }
    }

    /// The pending error of a socket (SO_ERROR), 0 when a connect succeeded.
    public static func pendingError(_ fd: Int32) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) == 0 else { return Glibc.errno }
        return value
    }

    public static func localAddress(_ fd: Int32) throws(SystemError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard result == 0 else { throw failure("getsockname") }
        return SocketAddress(storage: storage, length: length)
    }

    /// Reads into `buffer`; `.processed(0)` is end of stream.
    @inline(__always)
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        while true {
            let count = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if count >= 0 { return .processed(count) }
            switch Glibc.errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default: throw failure("read")
            }
        }
    }

    /// Writes up to two regions in one call (a head and a body slice), without SIGPIPE.
    @inline(__always)
    public static func write(_ fd: Int32, _ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        var vectors = (
            iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress), iov_len: first.count),
            iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress), iov_len: second.count)
        )
        let vectorCount: Int = first.count == 0 || second.count == 0 ? 1 : 2
        return try withUnsafeMutablePointer(to: &vectors) { pointer throws(SystemError) -> IOResult<Int> in
            try pointer.withMemoryRebound(to: iovec.self, capacity: 2) { iov throws(SystemError) -> IOResult<Int> in
                var message = msghdr()
                message.msg_iov = first.count == 0 ? iov + 1 : iov
                message.msg_iovlen = vectorCount
                while true {
                    let count = sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
                    if count >= 0 { return .processed(count) }
                    switch Glibc.errno {
                    case EINTR: continue
                    case EAGAIN: return .wouldBlock
                    default: throw failure("sendmsg")
                    }
                }
            }
        }
    }

    /// Half-closes the write side so the peer sees our FIN while we still drain its bytes.
    public static func shutdownWrite(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// Closes with an RST instead of a FIN (SO_LINGER 0), so a peer can tell an aborted response from a finished one.
    public static func setAbortOnClose(_ fd: Int32) {
        var option = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
    }

    /// Raises the soft open-file limit to the hard limit (nginx's worker_rlimit_nofile), returning the new soft limit.
    @discardableResult
    public static func raiseOpenFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(clamping: limit.rlim_cur)
    }

    /// Milliseconds on the monotonic clock.
    @inline(__always)
    public static func monotonicMilliseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }

    /// Microseconds on the monotonic clock: the resolution of the completion record's times.
    @inline(__always)
    public static func monotonicMicroseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1_000_000 + Int64(time.tv_nsec) / 1000
    }

    /// Nanoseconds on the monotonic clock.
    @inline(__always)
    public static func monotonicNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    /// Fills a value with kernel randomness (getrandom), for seeds.
    public static func randomSeed() -> UInt64 {
        var seed: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &seed) { getrandom($0.baseAddress, 8, 0) }
        return seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed
    }

    /// Makes allocations of 64 KiB and more (the pooled stream buffers) come from mmap, so a buffer
    /// the pool frees goes back to the kernel at once instead of staying in the heap's resident set.
    public static func configureAllocator() {
        _ = mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    }

    /// Ignores SIGPIPE process-wide: a peer that vanished must be an EPIPE, not a crash.
    public static func ignoreSIGPIPE() {
        signal(SIGPIPE, SIG_IGN)
    }
}

extension ByteBuffer {
    /// Reads from `fd` into the free space.
    @inline(__always)
    public func read(from fd: Int32) throws(SystemError) -> IOResult<Int> {
        let result = try withWritableRawBytes { (space) throws(SystemError) -> IOResult<Int> in
            try Syscall.read(fd, into: space)
        }
        if case .processed(let count) = result { commitWrite(count) }
        return result
    }
}

/// Writes `first[firstRange]` then `second[secondRange]` (readable-relative ranges) in one syscall; returns bytes written.
@inline(__always)
public func writePair(_ fd: Int32, _ first: ByteBuffer?, _ firstRange: Range<Int>, _ second: ByteBuffer?, _ secondRange: Range<Int>) throws(SystemError) -> IOResult<Int> {
    let empty = UnsafeRawBufferPointer(start: nil, count: 0)
    guard let first, !firstRange.isEmpty else {
        guard let second, !secondRange.isEmpty else { return .processed(0) }
        return try second.withReadableRawBytes(from: secondRange.lowerBound, to: secondRange.upperBound) { (b) throws(SystemError) -> IOResult<Int> in
            try Syscall.write(fd, b, empty)
        }
    }
    return try first.withReadableRawBytes(from: firstRange.lowerBound, to: firstRange.upperBound) { (a) throws(SystemError) -> IOResult<Int> in
        guard let second, !secondRange.isEmpty else { return try Syscall.write(fd, a, empty) }
        return try second.withReadableRawBytes(from: secondRange.lowerBound, to: secondRange.upperBound) { (b) throws(SystemError) -> IOResult<Int> in
            try Syscall.write(fd, a, b)
        }
    }
}

extension Syscall {
    /// Whether `path` names a directory (following links); start-up and reload only.
    public static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }

    /// Sleeps the calling thread (writer, resolver and signal threads only, never a loop).
    public static func sleep(milliseconds: Int) {
        var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && Glibc.errno == EINTR { request = remaining }
    }
}
