import Foundation
import Glibc
import Synchronization
import Testing
@testable import SluiceCore

/// Issue 12, item 13: the completion log file holds only whole records, one per line, whatever
/// happened to the disk or to the path.
@Suite struct LogFileIntegrityTests {
    static let options = CompletionWriterOptions(fsyncIntervalMilliseconds: 5, wakeIntervalMilliseconds: 2, batchRecords: 64,
                                                 retryIntervalMilliseconds: 5, fileCheckIntervalMilliseconds: 10,
                                                 movedAwayGraceMilliseconds: 100)

    // MARK: Pure decisions

    static let open = FileIdentity(device: 8, inode: 100)

    @Test(arguments: [
        (FileIdentity?.some(FileIdentity(device: 8, inode: 100)), false, UInt64(1), LogFileFate.same),
        (FileIdentity(device: 8, inode: 101), false, 1, .replaced),
        (FileIdentity(device: 9, inode: 100), false, 1, .replaced),
        (FileIdentity(device: 8, inode: 101), false, 0, .replaced),  // deleted, then a new file created
        (nil, true, 0, .deleted),
        (nil, true, 1, .movedAway),
        (nil, true, 2, .movedAway),
        (nil, false, 0, .unknown),                                    // EACCES/EIO: cannot tell
        (nil, false, 1, .unknown),
    ])
    func fate(path: FileIdentity?, pathMissing: Bool, links: UInt64, expected: LogFileFate) {
        #expect(LogFileFate.classify(open: Self.open, openLinks: links, path: path, pathMissing: pathMissing) == expected)
    }

    @Test(arguments: [
        ("", 0, 0), ("{}\n", 3, 3), ("{}\n{\"a\"", 7, 3), ("{}\n{\"a\"", 3, 3), ("{}\n{\"a\"", 2, 0),
        ("{}\n{}\n", 6, 6), ("{}\n{}\n{", 7, 6), ("{", 1, 0), ("{}\n{}\n", 100, 6),
    ])
    func lastRecordEnd(text: String, limit: Int, expected: Int) {
        let bytes = Array(text.utf8)
        #expect(bytes.withUnsafeBytes { RecordBoundary.lastEnd(in: $0, before: limit) } == expected)
    }

    @Test func recordCount() {
        let bytes = Array("{}\n{}\n{\"x\":1}\n{".utf8)
        #expect(bytes.withUnsafeBytes { RecordBoundary.count(in: $0, from: 0, to: bytes.count) } == 3)
        #expect(bytes.withUnsafeBytes { RecordBoundary.count(in: $0, from: 3, to: 6) } == 1)
        #expect(bytes.withUnsafeBytes { RecordBoundary.count(in: $0, from: 4, to: 5) } == 0)
    }

    @Test(arguments: [
        (10, Int64(1000), Int64(1000), Int64?.some(990)),
        (1000, 1000, 1000, 0),
        (0, 1000, 1000, nil),       // nothing partial: nothing to cut
        (10, 1000, 1010, nil),      // someone appended after us: cutting would lose their bytes
        (10, 1000, 995, nil),       // the file shrank under us (truncated by someone): leave it
        (1001, 1000, 1000, nil),    // more partial bytes than the offset: inconsistent, do not cut
    ])
    func truncation(partial: Int, offset: Int64, size: Int64, expected: Int64?) {
        #expect(RecordBoundary.truncationLength(partialBytes: partial, offset: offset, fileSize: size) == expected)
    }

    // MARK: A disk that fills up partway through a record

    /// A write(2) over a disk with `budget` bytes left: writes what fits (a short write), then
    /// fails with ENOSPC, as a full file system does.
    final class Disk: Sendable {
        let budget: Atomic<Int>
        let failures = Atomic<Int>(0)
        init(budget: Int) { self.budget = Atomic(budget) }

        var write: WriterSyscall.WriteFunction {
            { [self] fd, bytes, count in
                let allowed = min(count, budget.load(ordering: .relaxed))
                guard allowed > 0 else {
                    failures.add(1, ordering: .relaxed)
                    errno = ENOSPC
                    return -1
                }
                let result = Glibc.write(fd, bytes, allowed)
                if result > 0 { budget.subtract(result, ordering: .relaxed) }
                return result
            }
        }
    }

    static func renderedLength(_ record: CompletionRecord) -> Int {
        var bytes: [UInt8] = []
        record.writeJSON(into: &bytes)
        return bytes.count
    }

    static func fileSize(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : -1
    }

    static func requestIDs(_ path: String) -> [String] {
        LogTestSupport.lines(ofFile: path).map { line in
            let object = LogTestSupport.jsonObject(line)
            #expect(object != nil, "not a JSON object: \(line.prefix(200))")
            return object?["request_id"] as? String ?? "<invalid>"
        }
    }

    @Test(arguments: [0, 1, 2])
    func fullDiskNeverLeavesAPartialRecord(wholeRecordsThatFit: Int) throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let path = directory + "/completions.log"
        let length = Self.renderedLength(LogTestSupport.record(worker: 0, sequence: 0))
        // Room for some whole records and half of the next one.
        let disk = Disk(budget: wholeRecordsThatFit * length + length / 2)
        var options = Self.options
        options.writeFunction = disk.write
        let queue = CompletionQueue(producers: 1, capacity: 64)
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: path)], options: options)
        try writer.start()
        for sequence in 0..<5 { #expect(queue.offer(LogTestSupport.record(worker: 0, sequence: sequence), worker: 0)) }
        #expect(LogTestSupport.waitUntil { disk.failures.load(ordering: .relaxed) >= 3 })
        // The half record written before ENOSPC was cut: the file ends after the last whole record.
        let size = Self.fileSize(path)
        #expect(size >= 0 && size % length == 0, "file size \(size) is not a whole number of \(length)-byte records")
        #expect(Self.requestIDs(path) == (0..<size / max(1, length)).map { "w0-\($0)" })
        // The whole records on disk count as written, the cut one does not.
        #expect(LogTestSupport.waitUntil { queue.writtenCount == wholeRecordsThatFit }, "written \(queue.writtenCount)")
        // Space comes back: every record lands whole, once, in order.
        disk.budget.store(Int.max / 2, ordering: .relaxed)
        #expect(LogTestSupport.waitUntil { queue.writtenCount == 5 })
        #expect(writer.stop(flushWithin: 1000))
        #expect(Self.requestIDs(path) == (0..<5).map { "w0-\($0)" })
        #expect(queue.droppedCount == 0)
    }

    /// Shutting down while the disk is still full: whatever could not be written is reported as
    /// unwritten (stop returns false), and the file still ends at a record boundary.
    @Test func shutdownOnAFullDiskEndsAtARecordBoundary() throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let path = directory + "/completions.log"
        let length = Self.renderedLength(LogTestSupport.record(worker: 0, sequence: 0))
        let disk = Disk(budget: length + length / 3)
        var options = Self.options
        options.writeFunction = disk.write
        let queue = CompletionQueue(producers: 1, capacity: 64)
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: path)], options: options)
        try writer.start()
        for sequence in 0..<3 { #expect(queue.offer(LogTestSupport.record(worker: 0, sequence: sequence), worker: 0)) }
        #expect(LogTestSupport.waitUntil { disk.failures.load(ordering: .relaxed) >= 1 })
        #expect(!writer.stop(flushWithin: 50))
        #expect(Self.fileSize(path) == length)
        #expect(Self.requestIDs(path) == ["w0-0"])
    }

    // MARK: A file that ends inside a line

    @Test(arguments: [
        ("{\"request_id\":\"w9-frag", ["{\"request_id\":\"w9-frag"]),  // a fragment: kept, on its own line
        ("{\"request_id\":\"w9-0\"}\n", ["{\"request_id\":\"w9-0\"}"]), // whole: no blank line added
        ("", []),                                                        // empty: nothing added
        ("x", ["x"]),
    ])
    func recordsStartOnAFreshLine(existing: String, keptLines: [String]) throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let path = directory + "/completions.log"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(existing.utf8)))
        let queue = CompletionQueue(producers: 1, capacity: 64)
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: path)], options: Self.options)
        try writer.start()
        #expect(LogTestSupport.offerAndWait(queue, 0..<3))
        #expect(writer.stop(flushWithin: 1000))
        let lines = LogTestSupport.lines(ofFile: path)
        #expect(Array(lines.prefix(keptLines.count)) == keptLines)
        let ours = lines.dropFirst(keptLines.count).map { LogTestSupport.jsonObject($0)?["request_id"] as? String }
        #expect(ours == (0..<3).map { "w0-\($0)" })
    }

    /// The `\n` itself meets a full disk: it is retried like a record, and no record is written
    /// before it.
    @Test func lineBreakOnAFullDiskIsRetriedFirst() throws {
        let directory = LogTestSupport.makeTemporaryDirectory()
        defer { LogTestSupport.removeDirectory(directory) }
        let path = directory + "/completions.log"
        #expect(FileManager.default.createFile(atPath: path, contents: Data("{\"frag".utf8)))
        let disk = Disk(budget: 0)
        var options = Self.options
        options.writeFunction = disk.write
        let queue = CompletionQueue(producers: 1, capacity: 64)
        let writer = try CompletionWriter(queue: queue, sinks: [.file(path: path)], options: options)
        try writer.start()
        #expect(queue.offer(LogTestSupport.record(worker: 0, sequence: 0), worker: 0))
        #expect(LogTestSupport.waitUntil { disk.failures.load(ordering: .relaxed) >= 2 })
        #expect(LogTestSupport.lines(ofFile: path) == ["{\"frag"])
        disk.budget.store(Int.max / 2, ordering: .relaxed)
        #expect(LogTestSupport.waitUntil { queue.writtenCount == 1 })
        #expect(writer.stop(flushWithin: 1000))
        let lines = LogTestSupport.lines(ofFile: path)
        #expect(lines.count == 2 && lines.first == "{\"frag")
        #expect(LogTestSupport.jsonObject(lines.last ?? "")?["request_id"] as? String == "w0-0")
    }

    // MARK: Following the path

    /// Offers records one at a time until one lands in `path` (the writer has moved to the new
    /// file), then `more` after it; returns how many were offered in all.
    static func offerUntilOneLands(in path: String, queue: CompletionQueue, from first: Int, more: Int) -> Int {
        var next = first
        let landed = LogTestSupport.waitUntil(milliseconds: 5000) {
            if queue.writtenCount == next - 0 {
                _ = queue.offer(LogTestSupport.record(worker: 0, sequence: next), worker: 0)
                next += 1
            }
            return !LogTestSupport.lines(ofFile: path).isEmpty
        }
        #expect(landed, "no record reached the new file at \(path)")
        for _ in 0..<more {
            #expect(queue.offer(LogTestSupport.record(worker: 0, sequence: next), worker: 0))
            next += 1
        }
        #expect(LogTestSupport.waitUntil { queue.writtenCount == next })
        return next
    }

    /// A file replaced under the writer (renamed away and created anew, as a log shipper or
    /// logrotate does, without SIGHUP): the writer follows the path; every record is in one of
    /// the two files, whole and once.
    @Test func replacedFileIsFollowed() throws {
        let log = try LogTestSupport.FileLog(options: Self.options)
        defer { log.remove() }
        let (path, queue, writer) = (log.path, log.queue, log.writer)
        #expect(LogTestSupport.offerAndWait(queue, 0..<3))
        #expect(rename(path, path + ".1") == 0)
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let total = Self.offerUntilOneLands(in: path, queue: queue, from: 3, more: 3)
        #expect(writer.stop(flushWithin: 1000))
        let old = Self.requestIDs(path + ".1")
        let new = Self.requestIDs(path)
        #expect(old + new == (0..<total).map { "w0-\($0)" }, "nothing lost, nothing twice, in order")
        #expect(new.count >= 4)
    }

    /// A file deleted under the writer: the path is created again and later records land in it.
    @Test func deletedFileIsRecreated() throws {
        let log = try LogTestSupport.FileLog(options: Self.options)
        defer { log.remove() }
        let (path, queue, writer) = (log.path, log.queue, log.writer)
        #expect(LogTestSupport.offerAndWait(queue, 0..<3))
        #expect(unlink(path) == 0)
        // Recreated even with no traffic: the check runs on every writer turn.
        #expect(LogTestSupport.waitUntil { Self.fileSize(path) == 0 })
        #expect(LogTestSupport.offerAndWait(queue, 3..<6))
        #expect(writer.stop(flushWithin: 1000))
        #expect(Self.requestIDs(path) == (3..<6).map { "w0-\($0)" })
    }

    /// Moved away and not replaced: records keep going to the moved file (nothing lost) for the
    /// grace period, then the path is created again.
    @Test func movedAwayFileIsRecreatedAfterTheGracePeriod() throws {
        let log = try LogTestSupport.FileLog(options: Self.options)
        defer { log.remove() }
        let (path, queue, writer) = (log.path, log.queue, log.writer)
        #expect(LogTestSupport.offerAndWait(queue, 0..<1))
        let moved = LogTestSupport.monotonicMilliseconds()
        #expect(rename(path, path + ".1") == 0)
        #expect(LogTestSupport.waitUntil { Self.fileSize(path) >= 0 })
        #expect(LogTestSupport.monotonicMilliseconds() - moved >= 90, "recreated before the grace period")
        let total = Self.offerUntilOneLands(in: path, queue: queue, from: 1, more: 2)
        #expect(writer.stop(flushWithin: 1000))
        #expect(Self.requestIDs(path + ".1") + Self.requestIDs(path) == (0..<total).map { "w0-\($0)" })
    }

    /// SIGHUP-style reopen and path following together: still one record per line, none lost.
    @Test func reopenRequestStillWorks() throws {
        let log = try LogTestSupport.FileLog(options: Self.options)
        defer { log.remove() }
        let (path, queue, writer) = (log.path, log.queue, log.writer)
        #expect(LogTestSupport.offerAndWait(queue, 0..<1))
        #expect(rename(path, path + ".1") == 0)
        writer.reopen()
        #expect(LogTestSupport.waitUntil { Self.fileSize(path) >= 0 })
        #expect(LogTestSupport.offerAndWait(queue, 1..<2))
        #expect(writer.stop(flushWithin: 1000))
        #expect(Self.requestIDs(path + ".1") == ["w0-0"])
        #expect(Self.requestIDs(path) == ["w0-1"])
    }
}
