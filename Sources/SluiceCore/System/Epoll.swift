import CSluiceLinux
import Glibc

/// What epoll reported for one registration.
public struct ReadyEvent {
    /// The fd and the generation it was registered with (see `Registration`).
    public let token: UInt64
    public let readable: Bool
    public let writable: Bool
    /// The peer closed its side (EPOLLRDHUP) or the socket failed (EPOLLHUP/EPOLLERR).
    public let hangup: Bool
    public let error: Bool
}

/// An epoll instance with a preallocated event array. Sockets are registered once, edge-triggered, for
/// input, output and peer hang-up, so forwarding never calls epoll_ctl: a paused direction simply is not
/// read, and its kernel buffer filling up pushes back on the peer through TCP flow control.
public final class Epoll {
    private let fd: FileDescriptor
    private let events: UnsafeMutablePointer<epoll_event>
    public let capacity: Int

    public init(capacity: Int = 512) throws(SystemError) {
        let raw = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard raw >= 0 else { throw failure("epoll_create1") }
        fd = FileDescriptor(rawValue: raw)
        self.capacity = capacity
        events = .allocate(capacity: capacity)
    }

    deinit { events.deallocate() }

    /// Registers a socket edge-triggered for in, out and hang-up.
    public func addEdgeTriggered(_ socket: Int32, token: UInt64) throws(SystemError) {
        try control(EPOLL_CTL_ADD, socket, events: EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue, token: token)
    }

    /// Registers an fd level-triggered for input only (listeners, eventfd).
    public func addReadable(_ socket: Int32, token: UInt64) throws(SystemError) {
        try control(EPOLL_CTL_ADD, socket, events: EPOLLIN.rawValue, token: token)
    }

    /// Stops watching an fd (before it is closed, or to pause a listener).
    public func remove(_ socket: Int32) {
        var event = epoll_event()
        _ = epoll_ctl(fd.rawValue, EPOLL_CTL_DEL, socket, &event)
    }

    private func control(_ operation: Int32, _ socket: Int32, events mask: UInt32, token: UInt64) throws(SystemError) {
        var event = epoll_event()
        event.events = mask
        event.data.u64 = token
        guard epoll_ctl(fd.rawValue, operation, socket, &event) == 0 else { throw failure("epoll_ctl") }
    }

    /// Waits up to `timeoutMilliseconds` (-1 = forever) and returns how many events are ready.
    public func wait(timeoutMilliseconds: Int32) -> Int {
        while true {
            let count = epoll_wait(fd.rawValue, events, Int32(capacity), timeoutMilliseconds)
            if count >= 0 { return Int(count) }
            if Glibc.errno == EINTR { return 0 }
            preconditionFailure("epoll_wait: \(Glibc.errno)")
        }
    }

    /// The `index`th ready event of the last `wait`.
    @inline(__always)
    public func event(at index: Int) -> ReadyEvent {
        let raw = events[index]
        let mask = raw.events
        return ReadyEvent(
            token: raw.data.u64,
            readable: mask & EPOLLIN.rawValue != 0,
            writable: mask & EPOLLOUT.rawValue != 0,
            hangup: mask & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue) != 0,
            error: mask & EPOLLERR.rawValue != 0
        )
    }
}

/// An eventfd another thread can signal to wake a loop out of epoll_wait.
public final class WakeupFD: @unchecked Sendable {
    // @unchecked: the fd is written by other threads (signal) and read by the owning loop; eventfd is thread-safe.
    public let rawValue: Int32

    public init() throws(SystemError) {
        let raw = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        guard raw >= 0 else { throw failure("eventfd") }
        rawValue = raw
    }

    deinit { _ = Glibc.close(rawValue) }

    public func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(rawValue, &one, 8)
    }

    public func drain() {
        var value: UInt64 = 0
        _ = Glibc.read(rawValue, &value, 8)
    }
}
