import Glibc

/// A value guarded by a pthread mutex, for the few places threads share state (the rate limiter's shards,
/// a loop's mailbox, the reload state, metric names): never on the per-chunk path.
///
/// Why not `Synchronization.Mutex`: on Linux it is a futex the thread sanitizer cannot see, so every access
/// under it is reported as a race, and `--sanitize=thread` (a CI step) would drown real races in false ones.
/// pthread mutexes are what TSan understands, and cost the same uncontended (a futex underneath too).
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched inside `withLock`, under `mutex`.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        self.value = value
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value while holding the lock (any thread; not reentrant).
    ///
    /// Why a non-throwing overload beside the typed-throws one: Swift 6.3's optimizer miscompiles the typed-throws
    /// version, specialized with `E == Never`, when `Result` is returned indirectly (a `SocketAddress`): the caller's
    /// `self` register came back clobbered and the loop crashed on its next method call (release builds only; found
    /// by the allocation test, which runs the release binary). Non-throwing bodies resolve here instead.
    public func withLock<Result>(_ body: (inout Value) -> Result) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body(&value)
    }

    /// Runs a throwing `body` with the value while holding the lock (any thread; not reentrant).
    public func withLock<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
