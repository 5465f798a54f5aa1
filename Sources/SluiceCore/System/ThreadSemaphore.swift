import Glibc

/// A counting semaphore for a thread that sleeps until another hands it work (the reload thread). Not for loop
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

    /// Blocks until a unit is available and takes it; EINTR is retried.
    public func wait() {
        while sem_wait(semaphore) != 0 && Glibc.errno == EINTR {}
    }
}
