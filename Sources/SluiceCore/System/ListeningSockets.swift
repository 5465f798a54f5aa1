import Glibc

/// Listening sockets that no other process can share.
///
/// Why not one SO_REUSEPORT socket per worker: the kernel lets any socket with SO_REUSEPORT and the same
/// effective uid join the group, so a second sluice (or anything else the same user runs) could bind the
/// same address, start, and take half of the new connections without an error anywhere. A probe bind
/// without SO_REUSEPORT before the real ones narrows that to a race but does not close it, and clearing
/// SO_REUSEPORT on a bound socket does not stop joiners (the kernel caches the bucket's reuse state).
///
/// So each address gets exactly one socket, bound without SO_REUSEPORT: a bind on an address anyone holds
/// fails with EADDRINUSE (exact, no window), and while sluice holds it nobody can bind it. Each worker gets
/// its own descriptor for that socket (`duplicate`), so it owns and closes it like before; the socket stays
/// listening until the last worker closes its descriptor.
///
/// The cost is in balance. Every worker's epoll watches the one accept queue (level-triggered, no
/// EPOLLEXCLUSIVE, whose wake-one order piles connections on one worker), so each connection wakes the
/// waiting workers and the first to run accepts it: a busy worker, not in epoll_wait, takes none, which
/// suits long streams. When all are idle the split is the scheduler's: with 2 workers on 2 CPUs (release
/// build, accept4 counted per thread with perf), 600 sequential connects split 33/67 to 49/51 and 600
/// concurrent ones 36/64 to 46/54, where SO_REUSEPORT's 4-tuple hash gave 49/51 to 51/49 in both cases.
/// With the workers busy (8 clients fetching 1 MB bodies over 320 fresh connections) it was 43/57 to
/// 50/50, against 48/52 to 50/50 for SO_REUSEPORT.
extension Syscall {
    /// A non-blocking, close-on-exec listening TCP socket on `address` that nothing else can share.
    /// SO_REUSEADDR lets a restart bind while old connections sit in TIME_WAIT; it never lets a second
    /// socket bind next to a listening one.
    /// - Throws: `SystemError` from socket, bind or listen; `errno == EADDRINUSE` when any socket of any
    ///   process is bound to the address (or a wildcard or specific address overlapping it).
    public static func exclusiveListeningSocket(_ address: SocketAddress, backlog: Int32 = 4096) throws(SystemError) -> FileDescriptor {
        let fd = try tcpSocket(family: address.family)
        try setOption(fd.rawValue, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
        if address.family == AF_INET6 {
            try setOption(fd.rawValue, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, value: 1)
        }
        try bind(fd.rawValue, address)
        try listen(fd.rawValue, backlog: backlog)
        return fd
    }

    /// A second close-on-exec descriptor for the socket `fd` refers to (fcntl F_DUPFD_CLOEXEC): both share
    /// one accept queue and one O_NONBLOCK flag; the socket closes with the last descriptor.
    /// - Throws: `SystemError` (EMFILE when out of descriptors).
    public static func duplicate(_ fd: Int32) throws(SystemError) -> FileDescriptor {
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { throw failure("fcntl(F_DUPFD_CLOEXEC)") }
        return FileDescriptor(rawValue: copy)
    }
}
