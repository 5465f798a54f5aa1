import Foundation
import Glibc
import Synchronization
import Testing
@testable import SluiceCore

@Suite struct CompletionWriterTests {
    /// Fast turns so the tests finish quickly; warnings still rate-limited.
    static let options = CompletionWriterOptions(fsyncIntervalMilliseconds: 5, wakeIntervalMilliseconds: 2, batchRecords: 64,
                                                 retryIntervalMilliseconds: 5)

    /// The request ids of a file's lines, checking each line is a whole JSON object.
    static func requestIDs(ofFile path: String) -> [String] {
        LogTestSupport.lines(ofFile: path).map { line in
            let object = LogTestSupport.jsonObject(line)
            #expect(object != nil, "not a JSON object: \(line.prefix(200))")
            return object?["request_id"] as? String ?? "<invalid>"
        }
    }

    @Test func writesEveryRecordAsOneJSONLine() throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let path = directory + "/completions.log"
        let queue = CompletionQueue(producers: 2, capacity: 4096)
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: path)], options: Self.options)
        try writer.start()
        let count = 1500
        LogTestSupport.onThreads(2) { worker in
            let ring = queue.producer(worker)
            for sequence in 0..<count {
                var record = LogTestSupport.record(worker: worker, sequence: sequence)
                record.error = sequence % 7 == 0 ? "odd \"bytes\" \u{01}\n" : nil
                _ = LogTestSupport.offerRetrying(ring, record)
            }
        }
        #expect(writer.stop(flushWithin: 5000))
        let ids = Self.requestIDs(ofFile: path)
        #expect(ids.count == 2 * count)
        #expect(Set(ids).count == 2 * count)
        for worker in 0..<2 {
            #expect(ids.filter { $0.hasPrefix("w\(worker)-") } == (0..<count).map { "w\(worker)-\($0)" }, "per-loop order kept")
        }
        #expect(queue.writtenCount == 2 * count)

        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o640 & ~Self.umaskValue())
    }

    static func umaskValue() -> mode_t {
        let value = umask(0o022)
        umask(value)
        return value
    }

    @Test func stopFlushesWhatIsQueued() throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let path = directory + "/completions.log"
        let queue = CompletionQueue(producers: 1, capacity: 10_000)
        // A long wake interval: only `stop` can make the writer notice these records in time.
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: path)],
                                          options: CompletionWriterOptions(wakeIntervalMilliseconds: 60_000))
        try writer.start()
        for sequence in 0..<5000 { #expect(queue.offer(LogTestSupport.record(worker: 0, sequence: sequence), worker: 0)) }
        let started = LogTestSupport.monotonicMilliseconds()
        #expect(writer.stop(flushWithin: 10_000))
        #expect(LogTestSupport.monotonicMilliseconds() - started < 5000, "stop wakes the writer instead of waiting out its sleep")
        #expect(Self.requestIDs(ofFile: path) == (0..<5000).map { "w0-\($0)" })
        #expect(writer.stop(flushWithin: 0), "a second stop returns the first result")
    }

    @Test func fileAndStreamGetTheSameLines() throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let path = directory + "/completions.log"
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        // Drain the pipe on a thread, as a container runtime reads stdout.
        let readEnd = ends[0]
        let collected = Mutex<[UInt8]>([])
        let reader = LogTestSupport.spawn {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(readEnd, $0.baseAddress, $0.count) }
                if count <= 0 { return }
                collected.withLock { $0 += buffer[0..<count] }
            }
        }
        let queue = CompletionQueue(producers: 1, capacity: 4096)
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: path), .stream(fd: ends[1], name: "pipe")],
                                          options: Self.options)
        try writer.start()
        for sequence in 0..<2000 { _ = LogTestSupport.offerRetrying(queue.producer(0), LogTestSupport.record(worker: 0, sequence: sequence)) }
        #expect(writer.stop(flushWithin: 5000))
        close(ends[1])
        ends[1] = -1
        LogTestSupport.join(reader)
        let fileText = String(decoding: LogTestSupport.contents(ofFile: path) ?? [], as: UTF8.self)
        let pipeText = collected.withLock { String(decoding: $0, as: UTF8.self) }
        #expect(fileText == pipeText)
        #expect(fileText.split(separator: "\n").count == 2000)
    }

    /// logrotate moves the file, then SIGHUP → `reopen()`; meanwhile the loops keep offering.
    /// The two files together hold every record exactly once, and each line is whole.
    @Test func reopenWhileProducersRunLosesAndDuplicatesNothing() throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let path = directory + "/completions.log"
        let rotated = path + ".1"
        let queue = CompletionQueue(producers: 2, capacity: 1024)
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: path)], options: Self.options)
        try writer.start()
        let perProducer = 20_000
        let rotatedFlag = Atomic<Bool>(false)
        let rotation = LogTestSupport.spawn {
            // Rotate once the writer has written something, while producers wait at their halfway
            // mark (so the rotation surely falls inside the stream however threads are scheduled).
            _ = LogTestSupport.waitUntil(milliseconds: 30_000) { queue.writtenCount > 1000 }
            #expect(rename(path, rotated) == 0)
            writer.reopen()
            rotatedFlag.store(true, ordering: .releasing)
        }
        LogTestSupport.onThreads(2) { worker in
            let ring = queue.producer(worker)
            for sequence in 0..<perProducer {
                if sequence == perProducer / 2 {
                    while !rotatedFlag.load(ordering: .acquiring) { sched_yield() }
                }
                _ = LogTestSupport.offerRetrying(ring, LogTestSupport.record(worker: worker, sequence: sequence))
            }
        }
        LogTestSupport.join(rotation)
        #expect(writer.stop(flushWithin: 5000))

        let old = Self.requestIDs(ofFile: rotated)
        let new = Self.requestIDs(ofFile: path)
        #expect(!old.isEmpty && !new.isEmpty, "both files got records")
        let all = old + new
        #expect(all.count == 2 * perProducer)
        #expect(Set(all).count == 2 * perProducer, "no record twice")
        for worker in 0..<2 {
            #expect(all.filter { $0.hasPrefix("w\(worker)-") } == (0..<perProducer).map { "w\(worker)-\($0)" },
                    "old file then new file is the producer's order")
        }
    }

    /// A reopen that cannot open the path (its directory is gone) keeps the old descriptor:
    /// records keep going to the file logrotate moved, none are lost.
    @Test func failedReopenKeepsWritingToTheOldFile() throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let logDirectory = directory + "/logs"
        #expect(mkdir(logDirectory, 0o755) == 0)
        let path = logDirectory + "/completions.log"
        let moved = directory + "/moved.log"
        let queue = CompletionQueue(producers: 1, capacity: 1024)
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: path)], options: Self.options)
        try writer.start()
        for sequence in 0..<100 { _ = LogTestSupport.offerRetrying(queue.producer(0), LogTestSupport.record(worker: 0, sequence: sequence)) }
        #expect(LogTestSupport.waitUntil { queue.writtenCount == 100 })
        #expect(rename(path, moved) == 0)
        #expect(rmdir(logDirectory) == 0)
        writer.reopen()
        for sequence in 100..<200 { _ = LogTestSupport.offerRetrying(queue.producer(0), LogTestSupport.record(worker: 0, sequence: sequence)) }
        #expect(writer.stop(flushWithin: 5000))
        #expect(Self.requestIDs(ofFile: moved) == (0..<200).map { "w0-\($0)" })
    }

    /// A FIFO nobody reads: the writer stops making progress, but offers stay instant, the excess
    /// is dropped and counted, and `stop` gives up at its deadline instead of hanging.
    @Test(arguments: [false, true])
    func blockedSinkNeverBlocksProducers(openedByWriter: Bool) throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let fifo = directory + "/fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        // The reader end exists (so opening for writing succeeds) but is never read.
        let reader = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        #expect(reader >= 0)
        defer { close(reader) }
        let sink: CompletionSink
        var blockingWriteEnd: Int32 = -1
        if openedByWriter {
            sink = .file(path: fifo) // the writer opens it non-blocking
        } else {
            blockingWriteEnd = open(fifo, O_WRONLY | O_CLOEXEC) // a blocking descriptor, like an inherited stdout
            #expect(blockingWriteEnd >= 0)
            sink = .stream(fd: blockingWriteEnd, name: "fifo")
        }
        defer { if blockingWriteEnd >= 0 { close(blockingWriteEnd) } }

        let queue = CompletionQueue(producers: 1, capacity: 128)
        let writer = try CompletionWriter(queue: queue, sinks: [sink], options: Self.options)
        try writer.start()
        let ring = queue.producer(0)
        var refused = 0
        var slowest: Int64 = 0
        for sequence in 0..<20_000 {
            let started = LogTestSupport.monotonicMilliseconds()
            if !ring.offer(LogTestSupport.record(worker: 0, sequence: sequence)) { refused += 1 }
            slowest = max(slowest, LogTestSupport.monotonicMilliseconds() - started)
        }
        #expect(slowest < 1000, "an offer never waits for the sink (a blocking write would hang here)")
        #expect(refused > 0)
        #expect(queue.droppedCount == refused)
        #expect(queue.writtenCount + queue.pendingCount < 20_000 - refused + 1)

        let stopping = LogTestSupport.monotonicMilliseconds()
        #expect(!writer.stop(flushWithin: 100), "nothing can flush into a FIFO nobody reads")
        #expect(LogTestSupport.monotonicMilliseconds() - stopping < 3000, "stop is bounded by its deadline")
        // What did reach the FIFO is whole lines.
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(reader, $0.baseAddress, $0.count) }
        #expect(count > 0)
        let text = String(decoding: buffer[0..<max(0, count)], as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.last == "", "ends at a line boundary")
        #expect(lines.dropLast().allSatisfy { LogTestSupport.jsonObject(String($0)) != nil })
    }

    /// /dev/full fails every write with ENOSPC: the writer reports and retries, never crashes,
    /// and the loops' records are dropped and counted once the queue is full.
    @Test func failingSinkIsRetriedAndDropsAreCounted() throws {
        let queue = CompletionQueue(producers: 1, capacity: 64)
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: "/dev/full")], options: Self.options)
        try writer.start()
        var refused = 0
        for sequence in 0..<1000 where !queue.offer(LogTestSupport.record(worker: 0, sequence: sequence), worker: 0) { refused += 1 }
        #expect(refused >= 1000 - 64 - 64, "at most a queue and a batch are held back")
        #expect(queue.droppedCount == refused)
        #expect(queue.writtenCount == 0)
        #expect(!writer.stop(flushWithin: 50))
    }

    /// A FIFO with no reader at start-up cannot be opened (ENXIO); that is not an error: the
    /// writer opens it once a reader appears and writes what was queued.
    @Test func sinkWithoutReaderIsOpenedLater() throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let fifo = directory + "/fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        let queue = CompletionQueue(producers: 1, capacity: 64)
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: fifo)], options: Self.options)
        try writer.start()
        for sequence in 0..<10 { #expect(queue.offer(LogTestSupport.record(worker: 0, sequence: sequence), worker: 0)) }
        let reader = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        #expect(reader >= 0)
        defer { close(reader) }
        #expect(LogTestSupport.waitUntil { queue.writtenCount == 10 })
        #expect(writer.stop(flushWithin: 1000))
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(reader, $0.baseAddress, $0.count) }
        let ids = String(decoding: buffer[0..<max(0, count)], as: UTF8.self).split(separator: "\n")
            .map { LogTestSupport.jsonObject(String($0))?["request_id"] as? String }
        #expect(ids == (0..<10).map { "w0-\($0)" })
    }

    @Test func unopenableFileFailsStartUp() {
        #expect(throws: CompletionLogError.self) {
            _ = try CompletionWriter(queue: CompletionQueue(producers: 1, capacity: 4), sinks: [.file(path: "/nonexistent-dir/x.log")])
        }
    }

    @Test func pipeWritesStopAtLineBoundaries() throws {
        // A blocking pipe sink gets at most PIPE_BUF per write, cut after a newline, so another
        // writer on the same pipe (OpLog on stderr 2>&1) cannot land inside a record.
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]) }
        let readEnd = ends[0]
        // Each write is atomic and ends after a newline, so whatever a read returns does too.
        let readsEndingMidLine = Atomic<Int>(0)
        let bytesRead = Atomic<Int>(0)
        let reader = LogTestSupport.spawn {
            var buffer = [UInt8](repeating: 0, count: 1 << 17)
            while true {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(readEnd, $0.baseAddress, $0.count) }
                if count <= 0 { return }
                if buffer[count - 1] != UInt8(ascii: "\n") { readsEndingMidLine.wrappingAdd(1, ordering: .relaxed) }
                bytesRead.wrappingAdd(count, ordering: .relaxed)
            }
        }
        let queue = CompletionQueue(producers: 1, capacity: 4096)
        let writer = try CompletionWriter(queue: queue, sinks: [.stream(fd: ends[1], name: "pipe")], options: Self.options)
        try writer.start()
        var expectedBytes = 0
        for sequence in 0..<3000 {
            let record = LogTestSupport.record(worker: 0, sequence: sequence)
            expectedBytes += record.jsonLine.utf8.count
            _ = LogTestSupport.offerRetrying(queue.producer(0), record)
        }
        #expect(writer.stop(flushWithin: 5000))
        close(ends[1])
        LogTestSupport.join(reader)
        #expect(queue.writtenCount == 3000)
        #expect(bytesRead.load(ordering: .relaxed) == expectedBytes)
        #expect(readsEndingMidLine.load(ordering: .relaxed) == 0)
    }

    @Test(arguments: [
        (10, 10), // short enough: all of it
        (4096, 4096),
        (5000, 4000), // cut after the last newline within PIPE_BUF
    ])
    func pipeChunksEndAfterANewline(length: Int, expected: Int) {
        var bytes = [UInt8](repeating: UInt8(ascii: "x"), count: 5000)
        bytes[3999] = UInt8(ascii: "\n")
        bytes[1999] = UInt8(ascii: "\n")
        #expect(bytes.withUnsafeBytes { WriterSyscall.pipeChunkLength($0, from: 0, upTo: length) } == expected)
        let noNewline = [UInt8](repeating: 0, count: 9000)
        #expect(noNewline.withUnsafeBytes { WriterSyscall.pipeChunkLength($0, from: 100, upTo: 8900) } == 4096,
                "a line longer than PIPE_BUF is written in PIPE_BUF pieces")
    }
}
