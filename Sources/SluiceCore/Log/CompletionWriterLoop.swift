import Glibc

/// The writer thread's state and turn; created on and owned by that thread (members without
/// `private` are shared with the file-sink extension in CompletionFileSink.swift, same thread).
final class WriterLoop {
    /// What a write attempt achieved.
    private enum Progress {
        /// The whole batch is in the sink.
        case done
        /// The sink takes no more bytes now (EAGAIN or not writable); poll it.
        case blocked
        /// A write failed with an error; retry after the retry interval.
        case failed
    }

    let queue: CompletionQueue
    let options: CompletionWriterOptions
    let control: WriterControl
    var sinks: [SinkState]
    var batch: [UInt8] = []
    /// Records rendered into `batch` and not yet written to every sink.
    var batchCount = 0
    /// Records of `batch` already counted as written (every sink took them whole) while a sink was blocked.
    var batchCounted = 0
    var reopenPending = false
    var nextReopenAttempt: Int64 = 0
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
            followFilePaths(now)

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
                    queue.noteWritten(batchCount - batchCounted)
                    batchCount = 0
                    batchCounted = 0
                } else {
                    // A blocked pipe may hold part of the batch: the records every sink took whole count now, so
                    // the written counter matches what a reader of the sink can see.
                    let whole = recordsEverywhere()
                    if whole > batchCounted {
                        queue.noteWritten(whole - batchCounted)
                        batchCounted = whole
                    }
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
            // The batch's records that every sink already has are not lost; those some sink
            // lacks are (a whole record each: a partial one was cut or finished).
            let everywhere = batchCount == 0 ? 0 : recordsEverywhere()
            let left = batchCount - everywhere + queue.pendingCount
            OpLog.warn("completion log not flushed at shutdown", ["unwritten_records": .int(left)])
        }
        for sink in sinks where sink.ownsFD && sink.fd >= 0 { close(sink.fd) }
        control.flushedAll.store(flushed, ordering: .releasing)
    }

    /// How many of the batch's records every sink has taken whole.
    private func recordsEverywhere() -> Int {
        batch.withUnsafeBytes { bytes in
            sinks.map { RecordBoundary.count(in: bytes, from: 0, to: min($0.written, bytes.count)) }.min() ?? 0
        }
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
        var failure = writeLineBreakIfPending(sink: index)
        if failure != 0 { progress = .failed }
        let writeBytes = options.writeFunction
        batch.withUnsafeBytes { bytes in
            while written < total && failure == 0 {
                var length = total - written
                if bounded {
                    guard WriterSyscall.writable(fd) else {
                        progress = .blocked
                        return
                    }
                    length = WriterSyscall.pipeChunkLength(bytes, from: written, upTo: length)
                }
                let result = writeBytes(fd, bytes.baseAddress! + written, length)
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
        if written > sinks[index].written {
            sinks[index].unsynced = true
            if sinks[index].regularFile { // only files are followed (and can be deleted under us)
                let from = sinks[index].written
                sinks[index].recordsSinceCheck += batch.withUnsafeBytes { RecordBoundary.count(in: $0, from: from, to: written) }
            }
        }
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
            cutPartialRecord(sink: index, now: now)
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

    // MARK: Warnings

    func warn(sink index: Int, now: Int64, message: String) {
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
