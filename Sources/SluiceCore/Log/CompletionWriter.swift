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

    public init(fsyncIntervalMilliseconds: Int = 1000, wakeIntervalMilliseconds: Int = 20, batchRecords: Int = 1024,
                batchBytes: Int = 1 << 20, retryIntervalMilliseconds: Int = 200, warningIntervalMilliseconds: Int = 10_000) {
        self.fsyncIntervalMilliseconds = fsyncIntervalMilliseconds
        self.wakeIntervalMilliseconds = wakeIntervalMilliseconds
        self.batchRecords = batchRecords
        self.batchBytes = batchBytes
        self.retryIntervalMilliseconds = retryIntervalMilliseconds
        self.warningIntervalMilliseconds = warningIntervalMilliseconds
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
/// records pile up there and are then dropped and counted. Failures and drops are reported on
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
private final class WriterControl: Sendable {
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

private struct WriterContext: Sendable {
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

/// The writer's syscalls, one small function each; errno is left for the caller to read.
enum WriterSyscall {
    /// open(2) for appending; returns -1 with errno set on failure. O_NONBLOCK has no effect on
    /// a regular file but keeps a FIFO from blocking the open (ENXIO without a reader) or a write.
    static func openForAppend(_ path: String) -> Int32 {
        var fd: Int32
        repeat {
            fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0o640)
        } while fd < 0 && errno == EINTR
        return fd
    }

    /// Is `fd` a regular file (where a write never waits for a reader)?
    static func isRegularFile(_ fd: Int32) -> Bool {
        var info = stat()
        return fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    /// True if a write to `fd` would not block now (or the fd is in error, which the write reports).
    static func writable(_ fd: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        return poll(&entry, 1, 0) == 1
    }

    static func errorText(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// At most PIPE_BUF bytes, ending after a newline when one is in range, so a line stays
    /// whole even if another writer (OpLog on a shared stderr/stdout pipe) writes in between.
    static func pipeChunkLength(_ bytes: UnsafeRawBufferPointer, from start: Int, upTo length: Int) -> Int {
        let pipeBuffer = 4096 // PIPE_BUF on Linux: the largest write a pipe makes atomically
        if length <= pipeBuffer { return length }
        var end = start + pipeBuffer
        while end > start && bytes[end - 1] != UInt8(ascii: "\n") { end -= 1 }
        return end > start ? end - start : pipeBuffer
    }
}

/// One sink's state on the writer thread.
private struct SinkState {
    let sink: CompletionSink
    /// -1 while a file sink could not be opened.
    var fd: Int32
    /// Not a regular file (a pipe, FIFO, tty or socket): written only after poll says it is
    /// writable and at most PIPE_BUF bytes at a time, cut after a newline. A pipe takes such a
    /// write whole or not at all (pipe(7)), so a blocking descriptor (an inherited stdout) whose
    /// reader stops cannot hang the writer, and a full pipe never holds half a line that another
    /// process writing to the same pipe could split.
    var boundedWrites = false
    var regularFile = false
    /// Bytes of the current batch already written.
    var written = 0
    var unsynced = false
    var lastSync: Int64 = 0
    /// Failures since the last warning.
    var failures = 0
    var lastError: Int32 = 0
    var lastWarning: Int64 = Int64.min / 2
    /// When the sink last stopped taking bytes without an error (EAGAIN); nil while it flows.
    var blockedSince: Int64?
    /// When to retry after an error; nil when the sink is healthy.
    var retryAt: Int64?

    var ownsFD: Bool { if case .file = sink { true } else { false } }

    init(sink: CompletionSink, fd: Int32) {
        self.sink = sink
        self.fd = fd
        classify()
    }

    mutating func classify() {
        guard fd >= 0 else { return }
        regularFile = WriterSyscall.isRegularFile(fd)
        boundedWrites = !regularFile
    }
}

/// The writer thread's state and turn; created on and owned by that thread.
private final class WriterLoop {
    /// What a write attempt achieved.
    private enum Progress {
        /// The whole batch is in the sink.
        case done
        /// The sink takes no more bytes now (EAGAIN or not writable); poll it.
        case blocked
        /// A write failed with an error; retry after the retry interval.
        case failed
    }

    private let queue: CompletionQueue
    private let options: CompletionWriterOptions
    private let control: WriterControl
    private var sinks: [SinkState]
    private var batch: [UInt8] = []
    /// Records rendered into `batch` and not yet written to every sink.
    private var batchCount = 0
    private var reopenPending = false
    private var nextReopenAttempt: Int64 = 0
    private var reportedDrops = 0
    private var lastDropWarning: Int64 = Int64.min / 2
    private var pollSet: [pollfd] = []

    init(_ context: WriterContext) {
        queue = context.queue
        options = context.options
        control = context.control
        sinks = zip(context.sinks, context.fds).map { SinkState(sink: $0, fd: $1) }
        batch.reserveCapacity(options.batchBytes + 64 * 1024)
        pollSet.reserveCapacity(sinks.count + 1)
    }

    func run() {
        // A closed stdout pipe must be an EPIPE for this thread, not a process-killing signal,
        // whatever the process did with SIGPIPE. The signal is thread-directed and stays pending.
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)

        var flushed = false
        while true {
            let now = WriterClock.milliseconds()
            if control.reopenRequested.exchange(false, ordering: .acquiringAndReleasing) {
                reopenPending = true
                nextReopenAttempt = now
            }
            // Between batches only: a batch is never split across the old and the new file.
            if reopenPending && batchCount == 0 && now >= nextReopenAttempt { reopenFiles(now) }
            reopenMissingFiles(now)

            var drainedFull = false
            if batchCount == 0 {
                batch.removeAll(keepingCapacity: true)
                let byteLimit = options.batchBytes
                batchCount = queue.drain(upTo: options.batchRecords) { record in
                    record.writeJSON(into: &batch)
                    return batch.count < byteLimit
                }
                drainedFull = batchCount > 0 && (batchCount == options.batchRecords || batch.count >= byteLimit)
                for index in sinks.indices { sinks[index].written = 0 }
            }
            var waitForSink = false
            if batchCount > 0 {
                var allDone = true
                for index in sinks.indices {
                    switch write(sink: index, now: now) {
                    case .done: break
                    case .blocked, .failed:
                        allDone = false
                        waitForSink = true
                    }
                }
                if allDone {
                    queue.noteWritten(batchCount)
                    batchCount = 0
                }
            }
            syncFiles(now, force: false)
            warnAboutDrops(now)

            let deadline = control.stopDeadline.load(ordering: .acquiring)
            if deadline != Int64.max {
                if batchCount == 0 && queue.pendingCount == 0 {
                    flushed = true
                    break
                }
                if now >= deadline { break }
                if !waitForSink { continue } // keep draining without sleeping until the queue is empty
            } else if drainedFull && !waitForSink {
                continue // more is probably queued: no sleep under load
            }
            var timeout = waitForSink ? sinkWait(now) : options.wakeIntervalMilliseconds
            if deadline != Int64.max { timeout = Int(max(0, min(Int64(timeout), deadline - now))) }
            sleep(milliseconds: timeout, pollBlockedSinks: waitForSink)
        }
        syncFiles(WriterClock.milliseconds(), force: true)
        if !flushed {
            let left = batchCount + queue.pendingCount
            OpLog.warn("completion log not flushed at shutdown", ["unwritten_records": .int(left)])
        }
        for sink in sinks where sink.ownsFD && sink.fd >= 0 { close(sink.fd) }
        control.flushedAll.store(flushed, ordering: .releasing)
    }

    // MARK: Writing

    /// Writes the rest of the batch to sink `index`.
    private func write(sink index: Int, now: Int64) -> Progress {
        if let retryAt = sinks[index].retryAt, now < retryAt { return .failed }
        guard sinks[index].fd >= 0 else { return .failed } // a file that could not be (re)opened yet
        let fd = sinks[index].fd
        let bounded = sinks[index].boundedWrites
        let total = batch.count
        var written = sinks[index].written
        var progress = Progress.done
        var failure: Int32 = 0
        batch.withUnsafeBytes { bytes in
            while written < total {
                var length = total - written
                if bounded {
                    guard WriterSyscall.writable(fd) else {
                        progress = .blocked
                        return
                    }
                    length = WriterSyscall.pipeChunkLength(bytes, from: written, upTo: length)
                }
                let result = Glibc.write(fd, bytes.baseAddress! + written, length)
                if result > 0 {
                    written += result
                    continue
                }
                let code = result < 0 ? errno : EAGAIN
                if code == EINTR { continue }
                if code == EAGAIN {
                    progress = .blocked
                } else {
                    failure = code
                    progress = .failed
                }
                return
            }
        }
        if written > sinks[index].written { sinks[index].unsynced = true }
        sinks[index].written = written
        switch progress {
        case .done:
            if sinks[index].retryAt != nil || sinks[index].blockedSince.map({ now - $0 >= 1000 }) == true {
                OpLog.info("completion log sink writing again", ["sink": .string(sinks[index].sink.name)])
            }
            sinks[index].retryAt = nil
            sinks[index].blockedSince = nil
            sinks[index].failures = 0
        case .blocked:
            let since = sinks[index].blockedSince ?? now
            sinks[index].blockedSince = since
            // A sink briefly full under load is normal; one stuck for a second is worth a line.
            if now - since >= 1000 { warn(sink: index, now: now, message: "completion log sink not accepting writes") }
        case .failed:
            sinks[index].lastError = failure
            sinks[index].failures += 1
            sinks[index].retryAt = now + Int64(options.retryIntervalMilliseconds)
            warn(sink: index, now: now, message: "completion log sink write failed")
        }
        return progress
    }

    /// How long to wait for a sink that holds the batch back: the earliest retry time of a
    /// failed sink, or the wake interval for a blocked one (whose poll ends the wait sooner).
    private func sinkWait(_ now: Int64) -> Int {
        var wait = Int64(options.wakeIntervalMilliseconds)
        var anyBlocked = false
        var earliestRetry = Int64.max
        for sink in sinks where sink.written < batch.count || sink.fd < 0 {
            if let retryAt = sink.retryAt { earliestRetry = min(earliestRetry, retryAt) } else { anyBlocked = true }
        }
        if !anyBlocked && earliestRetry != Int64.max { wait = max(1, earliestRetry - now) }
        return Int(wait)
    }

    /// Sleeps until the timeout, a `reopen`/`stop` wake-up, or (with `pollBlockedSinks`) until a
    /// blocked sink becomes writable.
    private func sleep(milliseconds: Int, pollBlockedSinks: Bool) {
        pollSet.removeAll(keepingCapacity: true)
        pollSet.append(pollfd(fd: control.wakeFD, events: Int16(POLLIN), revents: 0))
        if pollBlockedSinks {
            for sink in sinks where sink.fd >= 0 && sink.retryAt == nil && sink.written < batch.count {
                pollSet.append(pollfd(fd: sink.fd, events: Int16(POLLOUT), revents: 0))
            }
        }
        let ready = poll(&pollSet, nfds_t(pollSet.count), Int32(clamping: milliseconds))
        if ready > 0 && pollSet[0].revents != 0 {
            var counter: UInt64 = 0
            _ = Glibc.read(control.wakeFD, &counter, 8) // resets the eventfd
        }
    }

    // MARK: Files

    /// Replaces each file sink's descriptor with a fresh open of its path. The new file is opened
    /// before the old one is closed, so a failed open keeps the old descriptor (writing into the
    /// rotated file loses nothing) and is retried.
    private func reopenFiles(_ now: Int64) {
        var allReopened = true
        for index in sinks.indices {
            guard case .file(let path) = sinks[index].sink else { continue }
            let fd = WriterSyscall.openForAppend(path)
            guard fd >= 0 else {
                sinks[index].lastError = errno
                sinks[index].failures += 1
                warn(sink: index, now: now, message: "completion log reopen failed")
                allReopened = false
                continue
            }
            let old = sinks[index].fd
            if old >= 0 {
                if options.fsyncIntervalMilliseconds > 0 && sinks[index].unsynced && sinks[index].regularFile { _ = fsync(old) }
                close(old)
            }
            sinks[index].fd = fd
            sinks[index].unsynced = false
            sinks[index].lastSync = now
            sinks[index].retryAt = nil
            sinks[index].blockedSince = nil
            sinks[index].classify()
        }
        reopenPending = !allReopened
        nextReopenAttempt = now + Int64(options.retryIntervalMilliseconds)
    }

    /// Opens file sinks that have no descriptor yet (a FIFO without a reader at start-up, or a
    /// reopen that failed with no old file), between batches and at the retry interval.
    private func reopenMissingFiles(_ now: Int64) {
        for index in sinks.indices where sinks[index].fd < 0 {
            guard case .file(let path) = sinks[index].sink, now >= (sinks[index].retryAt ?? now) else { continue }
            let fd = WriterSyscall.openForAppend(path)
            if fd >= 0 {
                sinks[index].fd = fd
                sinks[index].retryAt = nil
                sinks[index].failures = 0
                sinks[index].classify()
            } else {
                sinks[index].lastError = errno
                sinks[index].failures += 1
                sinks[index].retryAt = now + Int64(options.retryIntervalMilliseconds)
                warn(sink: index, now: now, message: "completion log sink cannot be opened")
            }
        }
    }

    /// fsyncs file sinks written since their last sync, once the interval has passed (or now,
    /// with `force`, at shutdown). Does nothing when the interval is 0.
    private func syncFiles(_ now: Int64, force: Bool) {
        guard options.fsyncIntervalMilliseconds > 0 else { return }
        for index in sinks.indices where sinks[index].unsynced && sinks[index].regularFile && sinks[index].fd >= 0 {
            guard force || now - sinks[index].lastSync >= Int64(options.fsyncIntervalMilliseconds) else { continue }
            if fsync(sinks[index].fd) != 0 {
                sinks[index].lastError = errno
                sinks[index].failures += 1
                warn(sink: index, now: now, message: "completion log fsync failed")
            }
            sinks[index].unsynced = false
            sinks[index].lastSync = now
        }
    }

    // MARK: Warnings

    private func warn(sink index: Int, now: Int64, message: String) {
        guard now - sinks[index].lastWarning >= Int64(options.warningIntervalMilliseconds) else { return }
        let error = sinks[index].lastError == 0 ? "none" : WriterSyscall.errorText(sinks[index].lastError)
        OpLog.warn(message, ["sink": .string(sinks[index].sink.name), "error": .string(error),
                             "failures": .int(sinks[index].failures), "queued_records": .int(queue.pendingCount)])
        sinks[index].lastWarning = now
        sinks[index].failures = 0
    }

    /// At most one warning per interval while records are being dropped, with the count since
    /// the previous warning and the total.
    private func warnAboutDrops(_ now: Int64) {
        let dropped = queue.droppedCount
        guard dropped > reportedDrops, now - lastDropWarning >= Int64(options.warningIntervalMilliseconds) else { return }
        OpLog.warn("completion log queue full, records dropped",
                   ["dropped": .int(dropped - reportedDrops), "dropped_total": .int(dropped)])
        reportedDrops = dropped
        lastDropWarning = now
    }
}
