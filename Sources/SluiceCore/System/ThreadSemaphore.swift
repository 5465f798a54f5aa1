import Glibc

/// A counting semaphore for a thread that sleeps until another hands it work (the reload and resolver threads). Not for loop
/// threads: `wait` blocks. A POSIX semaphore rather than a condition variable because a post before the wait is
/// not lost, and the thread sanitizer understands it (see `Locked` on `Synchronization.Mutex`).
public final class ThreadSemaphore: @unchecked Sendable {
    // @unchecked: sem_post and sem_wait are thread-safe; the pointer itself never changes.
    private let semaphore: UnsafeMutablePointer<sem_t>

    public init() {
        semaphore = .allocate(capacity: 1)
        semaphore.initialize(to: sem_t())
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    /// Adds one unit of work (any thread).
    public func post() { sem_post(semaphore) }

    /// Blocks until a unit is available and takes it, or about `milliseconds` passed; returns whether it took a
    /// unit. The deadline is on the wall clock (sem_timedwait's): a clock step lengthens or shortens one wait,
    /// which the callers (sleeps between periodic checks) tolerate.
    @discardableResult
    public func wait(milliseconds: Int64) -> Bool {
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        let nanoseconds = Int64(deadline.tv_nsec) + (milliseconds % 1000) * 1_000_000
        deadline.tv_sec += Int(milliseconds / 1000 + nanoseconds / 1_000_000_000)
        deadline.tv_nsec = Int(nanoseconds % 1_000_000_000)
        while true {
            if sem_timedwait(semaphore, &deadline) == 0 { return true }
            if Glibc.errno != EINTR { return false }
        }
    }

    /// Blocks until a unit is available and takes it; EINTR is retried.
    public func wait() {
        while sem_wait(semaphore) != 0 && Glibc.errno == EINTR {}
    }
}
