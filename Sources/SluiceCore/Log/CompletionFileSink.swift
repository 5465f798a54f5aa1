import Glibc

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
struct SinkState {
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

/// File sinks: opening, reopening and syncing, on the writer thread.
extension WriterLoop {
    // MARK: Files

    /// Replaces each file sink's descriptor with a fresh open of its path. The new file is opened
    /// before the old one is closed, so a failed open keeps the old descriptor (writing into the
    /// rotated file loses nothing) and is retried.
    func reopenFiles(_ now: Int64) {
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
    func reopenMissingFiles(_ now: Int64) {
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
    func syncFiles(_ now: Int64, force: Bool) {
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
}
