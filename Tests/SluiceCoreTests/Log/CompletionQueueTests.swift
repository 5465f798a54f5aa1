import Glibc
import Synchronization
import Testing
@testable import SluiceCore

@Suite struct CompletionQueueTests {
    /// Drains everything, returning (worker, sequence) per record in the order taken.
    static func drainAll(_ queue: CompletionQueue, limit: Int = 1024) -> [(worker: Int, sequence: Int)] {
        var taken: [(worker: Int, sequence: Int)] = []
        while queue.drain(upTo: limit, { record in
            taken.append((record.worker, record.sseEvents))
            return true
        }) > 0 {}
        return taken
    }

    @Test func fullRingRefusesAndCountsEveryDrop() {
        let queue = CompletionQueue(producers: 1, capacity: 8)
        let ring = queue.producer(0)
        for sequence in 0..<8 { #expect(ring.offer(LogTestSupport.record(worker: 0, sequence: sequence))) }
        for sequence in 8..<13 { #expect(!ring.offer(LogTestSupport.record(worker: 0, sequence: sequence))) }
        #expect(queue.droppedCount == 5)
        #expect(queue.enqueuedCount == 8)
        #expect(queue.pendingCount == 8)

        var taken: [Int] = []
        #expect(queue.drain(upTo: 3) { taken.append($0.sseEvents); return true } == 3)
        #expect(taken == [0, 1, 2])
        for sequence in 13..<16 { #expect(ring.offer(LogTestSupport.record(worker: 0, sequence: sequence)), "freed slots are reusable") }
        #expect(!ring.offer(LogTestSupport.record(worker: 0, sequence: 16)))
        #expect(queue.droppedCount == 6)
        #expect(Self.drainAll(queue).map(\.sequence) == [3, 4, 5, 6, 7, 13, 14, 15])
        #expect(queue.pendingCount == 0)
    }

    @Test func capacityIsSplitBetweenProducers() {
        let queue = CompletionQueue(producers: 4, capacity: 10)
        #expect(queue.capacity == 8)
        #expect(queue.rings.map(\.capacity) == [2, 2, 2, 2])
        #expect(CompletionQueue(producers: 3, capacity: 2).capacity == 3, "every ring holds at least one record")
        #expect(CompletionQueue(producers: 1).capacity == 65_536)
    }

    @Test func oddCapacityWrapsInOrder() {
        // 5 is not a power of two: slots are indexed with a mask of 8 while the count stays at 5.
        let queue = CompletionQueue(producers: 1, capacity: 5)
        let ring = queue.producer(0)
        var next = 0
        var expected = 0
        for round in 0..<200 {
            var accepted = 0
            while ring.offer(LogTestSupport.record(worker: 0, sequence: next)) {
                next += 1
                accepted += 1
            }
            #expect(accepted == (round == 0 ? 5 : (round - 1) % 5 + 1), "what the previous round drained")
            let limit = round % 5 + 1
            var taken: [Int] = []
            _ = queue.drain(upTo: limit) { taken.append($0.sseEvents); return true }
            #expect(taken == Array(expected..<expected + limit))
            expected += limit
        }
        #expect(queue.droppedCount == 200)
    }

    @Test func drainStopsWhenTheBodySaysSo() {
        let queue = CompletionQueue(producers: 2, capacity: 20)
        for sequence in 0..<6 {
            #expect(queue.offer(LogTestSupport.record(worker: 0, sequence: sequence), worker: 0))
            #expect(queue.offer(LogTestSupport.record(worker: 1, sequence: sequence), worker: 1))
        }
        var count = 0
        let taken = queue.drain(upTo: 100) { _ in
            count += 1
            return count < 4
        }
        #expect(taken == 4 && count == 4)
        #expect(queue.pendingCount == 8)
        #expect(Self.drainAll(queue).count == 8)
    }

    @Test func drainSharesTheLimitBetweenRings() {
        let queue = CompletionQueue(producers: 2, capacity: 200)
        for sequence in 0..<50 {
            _ = queue.offer(LogTestSupport.record(worker: 0, sequence: sequence), worker: 0)
            _ = queue.offer(LogTestSupport.record(worker: 1, sequence: sequence), worker: 1)
        }
        var workers: [Int] = []
        #expect(queue.drain(upTo: 20) { workers.append($0.worker); return true } == 20)
        #expect(workers.filter { $0 == 0 }.count == 10 && workers.filter { $0 == 1 }.count == 10,
                "a busy ring cannot starve the others")
        // With one ring empty the other gets the whole limit.
        _ = Self.drainAll(queue)
        for sequence in 0..<30 { _ = queue.offer(LogTestSupport.record(worker: 1, sequence: sequence), worker: 1) }
        #expect(queue.drain(upTo: 20) { _ in true } == 20)
    }

    @Test func recordsLeftInTheQueueAreReleased() {
        // Run under --sanitize=address, whose leak check would flag the strings of records left behind.
        let queue = CompletionQueue(producers: 2, capacity: 16)
        for sequence in 0..<12 {
            var record = LogTestSupport.record(worker: sequence % 2, sequence: sequence)
            record.capturedResponseText = String(repeating: "x", count: 100 + sequence) // a heap string
            _ = queue.offer(record, worker: sequence % 2)
        }
        _ = queue.drain(upTo: 3) { _ in true }
        #expect(queue.pendingCount == 9)
    }

    /// Several producer threads against one consumer: every record arrives exactly once and in its
    /// producer's order, however the rings fill and wrap. Run with --sanitize=thread as well.
    @Test func producersOnThreadsDeliverEveryRecordOnceInOrder() {
        let producers = 4
        let perProducer = 20_000
        let queue = CompletionQueue(producers: producers, capacity: 256) // small: rings wrap and fill often
        let refusals = Atomic<Int>(0)
        let consumer = ConsumerLog()
        let finished = Atomic<Int>(0)

        let consumerThread = LogTestSupport.spawn {
            var received = 0
            while received < producers * perProducer {
                let taken = queue.drain(upTo: 97) { record in
                    consumer.append(worker: record.worker, sequence: record.sseEvents)
                    return true
                }
                received += taken
                if taken == 0 { sched_yield() }
            }
        }
        LogTestSupport.onThreads(producers) { worker in
            let ring = queue.producer(worker)
            var refused = 0
            for sequence in 0..<perProducer {
                refused += LogTestSupport.offerRetrying(ring, LogTestSupport.record(worker: worker, sequence: sequence))
            }
            refusals.wrappingAdd(refused, ordering: .relaxed)
            finished.wrappingAdd(1, ordering: .relaxed)
        }
        LogTestSupport.join(consumerThread)

        let byWorker = consumer.sequences(workers: producers)
        for worker in 0..<producers {
            #expect(byWorker[worker] == Array(0..<perProducer), "worker \(worker): each record once, in order")
        }
        #expect(queue.enqueuedCount == producers * perProducer)
        #expect(queue.droppedCount == refusals.load(ordering: .relaxed), "every refused offer is counted as a drop")
        #expect(queue.pendingCount == 0)
    }
}

/// What the consumer thread saw; only the consumer writes it, the test reads it after joining.
private final class ConsumerLog: @unchecked Sendable {
    private var seen: [(Int, Int)] = []

    func append(worker: Int, sequence: Int) { seen.append((worker, sequence)) }

    func sequences(workers: Int) -> [[Int]] {
        var result = [[Int]](repeating: [], count: workers)
        for (worker, sequence) in seen { result[worker].append(sequence) }
        return result
    }
}
