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

    /// The write(2) the writer uses for records; a seam so tests can make a sink fail partway.
    typealias WriteFunction = @Sendable (_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int

    /// write(2) itself.
    static let systemWrite: WriteFunction = { fd, bytes, count in Glibc.write(fd, bytes, count) }

    /// fstat(2): the file's identity, link count and size and whether it is a regular file; nil
    /// on failure.
    static func status(fd: Int32) -> (identity: FileIdentity, links: UInt64, size: Int64, regular: Bool)? {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return (FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)), UInt64(info.st_nlink),
                Int64(info.st_size), (info.st_mode & S_IFMT) == S_IFREG)
    }

    /// stat(2) of `path`: its identity, or nil with errno set.
    static func identity(path: String) -> FileIdentity? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// True when the regular file open as `fd` (named `path`) is not empty and its last byte is
    /// not a newline: a run that ended mid-write (a full disk, a crash) left a partial record,
    /// and the next record must not be glued to it. Reads through a separate read-only open of
    /// `path` (the sink is write-only), checked to be the same file; false when it cannot tell.
    static func endsInsideALine(fd: Int32, path: String) -> Bool {
        guard let own = status(fd: fd), own.regular, own.size > 0 else { return false }
        let reader = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard reader >= 0 else { return false }
        defer { close(reader) }
        guard let theirs = status(fd: reader), theirs.identity == own.identity else { return false }
        var last: UInt8 = 0
        var count: Int
        repeat { count = pread(reader, &last, 1, off_t(own.size - 1)) } while count < 0 && errno == EINTR
        return count == 1 && last != UInt8(ascii: "\n")
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

    // MARK: Regular files only (issue 12, item 13)

    /// The file ends inside a line (found on open, or a fragment that could not be cut): a `\n`
    /// goes out before the next record, so no record is ever glued to a fragment.
    var lineBreakPending = false
    /// The open file's identity, compared with the path's at most once per check interval.
    var identity: FileIdentity?
    var lastIdentityCheck: Int64 = 0
    /// When the path was first seen gone while the open file still had a name (``LogFileFate/movedAway``).
    var movedAwaySince: Int64?
    /// Records written since the last identity check: the most a deletion can have lost.
    var recordsSinceCheck = 0
    /// Partial records cut from the file (or left as a fragment) since the last warning about it.
    var partialRecords = 0
    var partialBytes = 0
    var lastPartialWarning: Int64 = Int64.min / 2

    var ownsFD: Bool { if case .file = sink { true } else { false } }

    var path: String? { if case .file(let path) = sink { path } else { nil } }

    init(sink: CompletionSink, fd: Int32) {
        self.sink = sink
        self.fd = fd
        classify(now: WriterClock.milliseconds())
    }

    /// Takes stock of a freshly opened descriptor: its kind, its identity, and whether it ends
    /// inside a line (warned here, once per open; the `\n` is written before the next record).
    mutating func classify(now: Int64) {
        guard fd >= 0 else { return }
        let status = WriterSyscall.status(fd: fd)
        regularFile = status?.regular ?? false
        boundedWrites = !regularFile
        identity = regularFile ? status?.identity : nil
        lastIdentityCheck = now
        movedAwaySince = nil
        recordsSinceCheck = 0
        lineBreakPending = false
        if regularFile, let path, WriterSyscall.endsInsideALine(fd: fd, path: path) {
            lineBreakPending = true
            OpLog.warn("completion log file does not end with a newline (a partial record from an earlier run); "
                       + "starting on a new line", ["sink": .string(sink.name)])
        }
    }
}

/// File sinks: opening, reopening, following the path, cutting partial records and syncing, on
/// the writer thread.
extension WriterLoop {
    // MARK: Files

    /// Replaces each file sink's descriptor with a fresh open of its path. The new file is opened
    /// before the old one is closed, so a failed open keeps the old descriptor (writing into the
    /// rotated file loses nothing) and is retried.
    func reopenFiles(_ now: Int64) {
        var allReopened = true
        for index in sinks.indices where sinks[index].ownsFD {
            if !reopen(sink: index, now: now, failure: "completion log reopen failed") { allReopened = false }
        }
        reopenPending = !allReopened
        nextReopenAttempt = now + Int64(options.retryIntervalMilliseconds)
    }

    /// Opens `sink`'s path again and swaps the descriptor; returns false (old descriptor kept,
    /// warning `failure`) when the open fails.
    @discardableResult
    func reopen(sink index: Int, now: Int64, failure: String) -> Bool {
        guard let path = sinks[index].path else { return true }
        let fd = WriterSyscall.openForAppend(path)
        guard fd >= 0 else {
            sinks[index].lastError = errno
            sinks[index].failures += 1
            warn(sink: index, now: now, message: failure)
            return false
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
        sinks[index].classify(now: now)
        return true
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
                sinks[index].classify(now: now)
            } else {
                sinks[index].lastError = errno
                sinks[index].failures += 1
                sinks[index].retryAt = now + Int64(options.retryIntervalMilliseconds)
                warn(sink: index, now: now, message: "completion log sink cannot be opened")
            }
        }
    }

    /// Follows each regular file sink's path, as `tail -F` does: at most once per
    /// ``CompletionWriterOptions/fileCheckIntervalMilliseconds``, compares the path's identity
    /// with the open file's, and reopens the path when the file was deleted or replaced (at once)
    /// or moved away and not replaced (after ``CompletionWriterOptions/movedAwayGraceMilliseconds``).
    /// Acts only at a record boundary, so a record is never split between two files.
    func followFilePaths(_ now: Int64) {
        let interval = Int64(options.fileCheckIntervalMilliseconds)
        guard interval > 0 else { return }
        for index in sinks.indices {
            guard let path = sinks[index].path, sinks[index].fd >= 0, sinks[index].regularFile,
                  let identity = sinks[index].identity, now - sinks[index].lastIdentityCheck >= interval,
                  atRecordBoundary(sink: index) else { continue }
            sinks[index].lastIdentityCheck = now
            let links = WriterSyscall.status(fd: sinks[index].fd)?.links ?? 1
            let current = WriterSyscall.identity(path: path)
            let missing = current == nil && (errno == ENOENT || errno == ENOTDIR)
            let fate = LogFileFate.classify(open: identity, openLinks: links, path: current, pathMissing: missing)
            let records = sinks[index].recordsSinceCheck
            sinks[index].recordsSinceCheck = 0
            switch fate {
            case .same, .unknown:
                sinks[index].movedAwaySince = nil
                continue
            case .movedAway:
                let since = sinks[index].movedAwaySince ?? now
                sinks[index].movedAwaySince = since
                guard now - since >= Int64(options.movedAwayGraceMilliseconds) else { continue }
            case .deleted, .replaced:
                break
            }
            let what: String = switch fate {
            case .deleted: "deleted"
            case .replaced: "replaced"
            default: "moved away and not replaced"
            }
            guard reopen(sink: index, now: now, failure: "completion log file \(what), and reopening its path failed") else { continue }
            // A deleted file took with it what was written since the last look (at most `records`:
            // the deletion happened somewhere in that interval).
            OpLog.warn("completion log file \(what); reopened its path",
                       ["sink": .string(sinks[index].sink.name), "fate": .string(what),
                        "records_since_last_check": .int(records), "records_lost_at_most": .int(fate == .deleted ? records : 0)])
        }
    }

    /// True when sink `index` has written no byte of an unfinished record of the batch.
    func atRecordBoundary(sink index: Int) -> Bool {
        let written = sinks[index].written
        return batchCount == 0 || written == 0 || written >= batch.count || batch[written - 1] == UInt8(ascii: "\n")
    }

    /// After a write to a regular file failed partway through a record (ENOSPC, EIO, EFBIG),
    /// cuts the file back to the end of the last whole record and rewinds the batch to it, so the
    /// file never ends inside a record; the record is written whole on a later retry. When the
    /// fragment cannot be cut (truncation failed, or another process appended after it), it is
    /// left on a line of its own: the next record starts after a `\n`.
    func cutPartialRecord(sink index: Int, now: Int64) {
        let written = sinks[index].written
        let boundary = batch.withUnsafeBytes { RecordBoundary.lastEnd(in: $0, before: written) }
        let partial = written - boundary
        guard sinks[index].regularFile, partial > 0 else { return }
        let fd = sinks[index].fd
        let offset = Int64(lseek(fd, 0, SEEK_CUR))
        let size = WriterSyscall.status(fd: fd)?.size ?? -1
        var cut = false
        if let length = RecordBoundary.truncationLength(partialBytes: partial, offset: offset, fileSize: size) {
            var result: Int32
            repeat { result = ftruncate(fd, off_t(length)) } while result < 0 && errno == EINTR
            cut = result == 0
        }
        if !cut { sinks[index].lineBreakPending = true }
        sinks[index].written = boundary
        sinks[index].partialRecords += 1
        sinks[index].partialBytes += partial
        guard now - sinks[index].lastPartialWarning >= Int64(options.warningIntervalMilliseconds) else { return }
        OpLog.warn(cut ? "completion log write failed mid-record; the partial record was cut from the file and will be retried whole"
                       : "completion log write failed mid-record and the fragment could not be cut; the record will be retried on a new line",
                   ["sink": .string(sinks[index].sink.name), "error": .string(WriterSyscall.errorText(sinks[index].lastError)),
                    "partial_records": .int(sinks[index].partialRecords), "partial_bytes": .int(sinks[index].partialBytes)])
        sinks[index].lastPartialWarning = now
        sinks[index].partialRecords = 0
        sinks[index].partialBytes = 0
    }

    /// Writes the `\n` a file ending inside a line needs before the next record. Returns 0 when
    /// done (or not needed), else the errno of the failed write.
    func writeLineBreakIfPending(sink index: Int) -> Int32 {
        guard sinks[index].lineBreakPending else { return 0 }
        var newline = UInt8(ascii: "\n")
        while true {
            let result = options.writeFunction(sinks[index].fd, &newline, 1)
            if result == 1 {
                sinks[index].lineBreakPending = false
                sinks[index].unsynced = true
                return 0
            }
            let code = result < 0 ? errno : ENOSPC
            if code != EINTR { return code }
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
