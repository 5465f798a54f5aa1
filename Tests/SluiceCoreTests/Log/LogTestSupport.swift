import Foundation
import Glibc
@testable import SluiceCore

/// Helpers for the Log and Metrics tests, in a namespace so that they cannot clash with other
/// folders' tests.
enum LogTestSupport {
    private final class Body: @unchecked Sendable {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    /// Runs `body(index)` on `count` new OS threads (real threads, like the loops, not tasks)
    /// and returns once all have finished.
    static func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        var threads: [pthread_t] = []
        for index in 0..<count {
            let boxed = Unmanaged.passRetained(Body { body(index) }).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, { raw in
                Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
                return nil
            }, boxed)
            precondition(status == 0, "pthread_create failed")
            threads.append(thread)
        }
        for thread in threads { pthread_join(thread, nil) }
    }

    /// Starts `body` on a new OS thread; the returned handle is joined with `join`.
    static func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
        let boxed = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { raw in
            Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, boxed)
        precondition(status == 0, "pthread_create failed")
        return thread
    }

    static func join(_ thread: pthread_t) { pthread_join(thread, nil) }

    /// Polls `condition` every millisecond until it holds or `milliseconds` pass; returns whether
    /// it held. For waiting on the writer thread, which has no completion callback.
    static func waitUntil(milliseconds: Int = 5000, _ condition: () -> Bool) -> Bool {
        let deadline = monotonicMilliseconds() + Int64(milliseconds)
        while !condition() {
            if monotonicMilliseconds() >= deadline { return false }
            var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            nanosleep(&pause, nil)
        }
        return true
    }

    static func monotonicMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    /// A fresh directory under /tmp, removed by `removeDirectory`.
    static func makeTemporaryDirectory() -> String {
        var template = Array("/tmp/sluice-log-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func removeDirectory(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// A started completion writer to `completions.log` in a fresh directory; `remove()` deletes the directory.
    struct FileLog {
        let directory: String
        let path: String
        let queue: CompletionQueue
        let writer: CompletionWriter

        init(capacity: Int = 256, options: CompletionWriterOptions) throws {
            directory = LogTestSupport.makeTemporaryDirectory()
            path = directory + "/completions.log"
            queue = CompletionQueue(producers: 1, capacity: capacity)
            writer = try CompletionWriter(queue: queue, sinks: [.file(path: path)], options: options)
            try writer.start()
        }

        func remove() { LogTestSupport.removeDirectory(directory) }
    }

    /// Offers worker 0's records numbered `sequences` and waits until the writer has taken every record up to
    /// the last of them; false when the queue refused one or the writer did not get there in time.
    static func offerAndWait(_ queue: CompletionQueue, _ sequences: Range<Int>) -> Bool {
        for sequence in sequences where !queue.offer(record(worker: 0, sequence: sequence), worker: 0) { return false }
        return waitUntil { queue.writtenCount == sequences.upperBound }
    }

    /// A record whose identity the tests check: worker `worker`, sequence number `sequence`
    /// (carried in `requestID` and `sseEvents`).
    static func record(worker: Int, sequence: Int) -> CompletionRecord {
        var record = CompletionRecord(timestampMicroseconds: 1_735_689_600_000_000 + Int64(sequence), requestID: "w\(worker)-\(sequence)",
                                      clientAddress: "127.0.0.1:40000", method: "POST", path: "/v1/chat/completions", worker: worker)
        record.route = "/v1"
        record.status = 200
        record.sseEvents = sequence
        record.durationMilliseconds = 1.5
        return record
    }

    /// The bytes of a file, read with open/read: Foundation's `FileManager.contents(atPath:)` leaks its buffer
    /// (LeakSanitizer) when the file changes size while it reads, as a log being written does.
    static func contents(ofFile path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return bytes
    }

    /// The lines of a file, without the trailing empty one.
    static func lines(ofFile path: String) -> [String] {
        guard let data = contents(ofFile: path) else { return [] }
        var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    /// Parses one JSON line into an object, or nil if it is not a JSON object.
    static func jsonObject(_ line: String) -> [String: Any]? {
        guard let data = line.data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else { return nil }
        return object as? [String: Any]
    }

    /// Offers `record` until the ring takes it, counting the refusals (each one is also a drop).
    static func offerRetrying(_ ring: CompletionRing, _ record: CompletionRecord) -> Int {
        var refused = 0
        while !ring.offer(record) {
            refused += 1
            sched_yield()
        }
        return refused
    }
}
