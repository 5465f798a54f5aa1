import CSluiceLinux
import Glibc

/// Starts a detached OS thread (pthread) that runs one loop for the life of the process. In System/ because it is a
/// kernel thread's wrapper; the loops themselves know nothing of pthreads.
public enum LoopThread {
    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    public static func spawn(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        let status = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, context)
        guard status == 0 else {
            Unmanaged<Box>.fromOpaque(context).release()
            throw SystemError(call: "pthread_create", errno: status)
        }
        _ = pthread_setname_np(thread, String(name.prefix(15)))
        pthread_detach(thread)
    }
}

extension Syscall {
    /// An identifier of the calling thread, unique among live threads (pthread_self), for ownership checks.
    static func currentThreadID() -> UInt {
        UInt(pthread_self())
    }
}
