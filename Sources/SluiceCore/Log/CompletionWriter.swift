import CSluiceLinux
import Glibc
import Synchronization

// The writer thread calls Glibc directly rather than through System/: its needs (open for append,
// fsync, poll on a sink, a joinable thread) are its own, and it runs off the data path, so nothing
// here touches a loop. Foundation would be allowed here but is not needed.

/// Where completion records go.
public enum CompletionSink: Sendable, Equatable {
    /// A file opened for append (created 0640), reopened by ``CompletionWriter/reopen()``.
    case file(path: String)
    /// A descriptor the process already has, such as stdout; never closed or reopened.
    case stream(fd: Int32, name: String)

    /// Standard output, the Kubernetes convention.
    public static var standardOutput: CompletionSink { .stream(fd: 1, name: "stdout") }

    var name: String {
        switch self {
        case .file(let path): path
        case .stream(_, let name): name
        }
    }
}

/// Tuning of the writer thread; the defaults suit production.
public struct CompletionWriterOptions: Sendable {
    /// How often file sinks are fsync'd while records arrive; 0 never (the kernel flushes
    /// on its own schedule).
    public var fsyncIntervalMilliseconds: Int
    /// How long the writer sleeps when the queue is empty. Producers never wake it (that would
    /// cost a loop a syscall per record), so this bounds how stale the log can be.
    public var wakeIntervalMilliseconds: Int
    /// Most records rendered and written per batch.
    public var batchRecords: Int
    /// A batch stops growing past this many bytes (records with captured bodies are large).
    public var batchBytes: Int
    /// Wait before retrying a sink that failed with an error (not merely full).
    public var retryIntervalMilliseconds: Int
    /// Least time between two warnings of the same kind on stderr.
    public var warningIntervalMilliseconds: Int
    /// How often a file sink's path is compared with the open file (`tail -F`), so a deleted or
    /// replaced log is noticed and reopened; 0 never. A stat and an fstat per file per check.
    public var fileCheckIntervalMilliseconds: Int
    /// How long a file moved away and not replaced keeps receiving records (they are in the moved
    /// file, nothing is lost) before its path is created again; long enough for a rotator to
    /// create the new file itself and send SIGHUP.
    public var movedAwayGraceMilliseconds: Int
    /// The write(2) used for records; tests inject one that fails partway.
    var writeFunction: WriterSyscall.WriteFunction = WriterSyscall.systemWrite

    public init(fsyncIntervalMilliseconds: Int = 1000, wakeIntervalMilliseconds: Int = 20, batchRecords: Int = 1024,
                batchBytes: Int = 1 << 20, retryIntervalMilliseconds: Int = 200, warningIntervalMilliseconds: Int = 10_000,
                fileCheckIntervalMilliseconds: Int = 1000, movedAwayGraceMilliseconds: Int = 5000) {
        self.fsyncIntervalMilliseconds = fsyncIntervalMilliseconds
        self.wakeIntervalMilliseconds = wakeIntervalMilliseconds
        self.batchRecords = batchRecords
        self.batchBytes = batchBytes
        self.retryIntervalMilliseconds = retryIntervalMilliseconds
        self.warningIntervalMilliseconds = warningIntervalMilliseconds
        self.fileCheckIntervalMilliseconds = fileCheckIntervalMilliseconds
        self.movedAwayGraceMilliseconds = movedAwayGraceMilliseconds
    }
}

/// A sink could not be set up at start-up.
public struct CompletionLogError: Error, CustomStringConvertible, Sendable {
    public var call: String
    public var path: String
    public var errno: Int32

    public var description: String { "\(call) \(path): \(String(cString: strerror(errno)))" }
}

/// The thread that drains ``CompletionQueue`` into the sinks.
///
/// Each turn it takes a batch of records, renders them as JSON lines into one buffer and writes
/// that buffer to every sink before taking the next batch; the batch counts in
/// ``CompletionQueue/writtenCount`` once every sink has all of it. A sink that fails
/// (ENOSPC, EPIPE, EIO) or stops taking bytes (a full pipe, a FIFO nobody reads) holds the batch
/// back and is retried; the loops are unaffected, since they only ever touch their ring: the
/// records pile up there and are then dropped and counted. A file never keeps a partial record:
/// one cut short by a failed write is truncated away and retried whole, a file found ending
/// inside a line gets a `\n` first, and a log file deleted or replaced under the writer is
/// noticed within ``CompletionWriterOptions/fileCheckIntervalMilliseconds`` and reopened. Failures and drops are reported on
/// stderr through ``OpLog``, each kind at most once per ``CompletionWriterOptions/warningIntervalMilliseconds``.
///
/// Lifecycle: `init` (opens the sinks, may throw) → ``start()`` → any number of ``reopen()`` →
/// ``stop(flushWithin:)``. All public methods may be called from any thread. A started writer
/// runs until `stop`, even if the object is released.
public final class CompletionWriter: Sendable {
    public let queue: CompletionQueue
    public let sinks: [CompletionSink]
    public let options: CompletionWriterOptions

    private let control: WriterControl
    /// Descriptors opened by `init`, handed to the thread by `start`.
    private let initialFDs: [Int32]
    private let thread = Locked<WriterThreadState>(.notStarted)

    /// Opens the file sinks (append, created 0640). Throws if one cannot be opened, so a wrong
    /// path fails start-up instead of silently losing the audit log; a FIFO without a reader
    /// (ENXIO) is not an error, the writer keeps trying to open it.
    public init(queue: CompletionQueue, sinks: [CompletionSink], options: CompletionWriterOptions = .init())
        throws(CompletionLogError) {
        self.queue = queue
        self.sinks = sinks
        self.options = options
        var fds: [Int32] = []
        for sink in sinks {
            switch sink {
            case .stream(let fd, _):
                fds.append(fd)
            case .file(let path):
                let fd = WriterSyscall.openForAppend(path)
                if fd < 0 && errno != ENXIO {
                    let failure = CompletionLogError(call: "open", path: path, errno: errno)
                    for (opened, sink) in zip(fds, sinks) where opened >= 0 { if case .file = sink { close(opened) } }
                    throw failure
                }
                fds.append(fd)
            }
        }
        let wake = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        guard wake >= 0 else {
            let failure = CompletionLogError(call: "eventfd", path: "", errno: errno)
            for (opened, sink) in zip(fds, sinks) where opened >= 0 { if case .file = sink { close(opened) } }
            throw failure
        }
        initialFDs = fds
        control = WriterControl(wakeFD: wake)
    }

    deinit {
        // A writer that was never started still owns the files it opened.
        let state = thread.withLock { $0 }
        if case .notStarted = state {
            for (fd, sink) in zip(initialFDs, sinks) where fd >= 0 { if case .file = sink { close(fd) } }
        }
        // The wake-up eventfd closes with `control`, which a still-running thread keeps alive.
    }

    /// Starts the writer thread (named `sluice-log`). Call once.
    public func start() throws(CompletionLogError) {
        let context = WriterContext(queue: queue, sinks: sinks, fds: initialFDs, options: options, control: control)
        let result: Result<pthread_t, CompletionLogError> = thread.withLock { state in
            guard case .notStarted = state else { preconditionFailure("CompletionWriter.start called twice") }
            var handle = pthread_t()
            let box = Unmanaged.passRetained(WriterContextBox(context)).toOpaque()
            let status = pthread_create(&handle, nil, { raw in
                let context = Unmanaged<WriterContextBox>.fromOpaque(raw!).takeRetainedValue().context
                WriterLoop(context).run()
                return nil
            }, box)
            guard status == 0 else {
                Unmanaged<WriterContextBox>.fromOpaque(box).release()
                return .failure(CompletionLogError(call: "pthread_create", path: "", errno: status))
            }
            _ = pthread_setname_np(handle, "sluice-log")
            state = .running(handle)
            return .success(handle)
        }
        if case .failure(let error) = result { throw error }
    }

    /// Asks the writer to reopen file sinks (after logrotate moved them). Safe from any thread,
    /// including right after a SIGHUP was noticed; does not wait. The writer acts between two
    /// batches: every record written before is in the old file, every record after in the new one.
    public func reopen() {
        control.reopenRequested.store(true, ordering: .releasing)
        control.wake()
    }

    /// Writes what is queued, then closes the sinks and ends the thread; waits for it.
    /// Returns true if the queue was empty and every record written when the writer stopped,
    /// false if `flushWithin` ran out first (a sink blocked or failing) or the writer never ran.
    /// Call after the loops have stopped offering records; later calls return the first result.
    @discardableResult
    public func stop(flushWithin milliseconds: Int) -> Bool {
        let handle: pthread_t? = thread.withLock { state in
            if case .running(let handle) = state {
                state = .stopped
                return handle
            }
            return nil
        }
        if let handle {
            control.stopDeadline.store(WriterClock.milliseconds() + Int64(max(0, milliseconds)), ordering: .releasing)
            control.wake()
            pthread_join(handle, nil)
        }
        return control.flushedAll.load(ordering: .acquiring)
    }
}

/// Lifecycle of the writer thread, guarded by a mutex (not on any hot path).
private enum WriterThreadState {
    /// `start` not called yet; `init`'s descriptors are still the writer's to close.
    case notStarted
    /// The thread runs; `stop` joins this handle.
    case running(pthread_t)
    /// `stop` has joined the thread.
    case stopped
}

/// What the callers of ``CompletionWriter`` and the writer thread share.
final class WriterControl: Sendable {
    /// eventfd that cuts the writer's sleep short for `reopen` and `stop`.
    let wakeFD: Int32
    let reopenRequested = Atomic<Bool>(false)
    /// Monotonic milliseconds by which `stop` wants the thread gone; `Int64.max` while running.
    let stopDeadline = Atomic<Int64>(Int64.max)
    /// Set by the thread on exit: everything queued was written.
    let flushedAll = Atomic<Bool>(false)

    init(wakeFD: Int32) { self.wakeFD = wakeFD }

    deinit { close(wakeFD) }

    func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8) // EAGAIN means the counter is already non-zero: awake anyway
    }
}

struct WriterContext: Sendable {
    let queue: CompletionQueue
    let sinks: [CompletionSink]
    let fds: [Int32]
    let options: CompletionWriterOptions
    let control: WriterControl
}

private final class WriterContextBox {
    let context: WriterContext
    init(_ context: WriterContext) { self.context = context }
}

enum WriterClock {
    /// Monotonic milliseconds.
    static func milliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
