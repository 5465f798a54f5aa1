import Synchronization

/// The bounded side queue between the loops and the completion-log writer.
///
/// One single-producer/single-consumer ring per loop, so producers never contend with each
/// other: a loop's ``CompletionRing/offer(_:)`` touches only its own ring, moves the record into
/// a preallocated slot and publishes it with one release store (about 30 ns in a release build),
/// and never blocks, never allocates and never makes a syscall. When its ring is full the record is dropped and counted. The writer thread
/// drains all rings with ``drain(upTo:_:)``.
///
/// Capacity is split evenly between the rings: loops are balanced by the kernel's
/// `SO_REUSEPORT` hashing, and a shared ring would need a contended tail.
public final class CompletionQueue: Sendable {
    /// The per-loop rings, indexed by worker.
    public let rings: [CompletionRing]
    /// Total records the rings can hold.
    public let capacity: Int

    // MARK: Writer thread writes, anyone reads
    private let written = Atomic<Int>(0)

    /// Creates `producers` rings sharing `capacity` records (each ring holds at least one).
    /// Slot memory is allocated here, once; pages are touched only as records arrive.
    public init(producers: Int, capacity: Int = 65_536) {
        precondition(producers > 0 && capacity > 0)
        let perRing = max(1, capacity / producers)
        rings = (0..<producers).map { _ in CompletionRing(capacity: perRing) }
        self.capacity = perRing * producers
    }

    /// The ring owned by loop `worker`. Only that loop's thread may call `offer` on it.
    public func producer(_ worker: Int) -> CompletionRing { rings[worker] }

    /// Hands `record` to ring `worker`'s queue; false if it was full (the record was dropped and
    /// counted). Owning loop's thread only; never blocks.
    @inline(__always)
    public func offer(_ record: consuming CompletionRecord, worker: Int) -> Bool {
        rings[worker].offer(record)
    }

    /// Records dropped because a ring was full.
    public var droppedCount: Int { rings.reduce(0) { $0 + $1.droppedCount } }
    /// Records accepted by `offer`.
    public var enqueuedCount: Int { rings.reduce(0) { $0 + $1.enqueuedCount } }
    /// Records the writer has written to every sink.
    public var writtenCount: Int { written.load(ordering: .relaxed) }
    /// Records accepted and not yet taken by the writer (a snapshot; producers may add more).
    public var pendingCount: Int { rings.reduce(0) { $0 + $1.pendingCount } }

    /// Takes up to `limit` records, oldest first within each ring, passing each to `body`
    /// before its slot is released; `body` returns false to stop after the record it was given.
    /// Returns how many records were taken.
    ///
    /// Writer thread only (one consumer). Rings are visited in turn from a rotating start, each
    /// taking at most an equal share of `limit` per visit, so a busy loop cannot starve the
    /// others; visits continue until `limit` is reached or every ring is empty.
    public func drain(upTo limit: Int, _ body: (borrowing CompletionRecord) -> Bool) -> Int {
        var taken = 0
        let share = max(1, limit / rings.count)
        var emptyInARow = 0
        var keepGoing = true
        var index = drainStart.load(ordering: .relaxed)
        while keepGoing && taken < limit && emptyInARow < rings.count {
            let got = rings[index].drain(upTo: min(share, limit - taken), keepGoing: &keepGoing, body)
            taken += got
            emptyInARow = got == 0 ? emptyInARow + 1 : 0
            index = index + 1 == rings.count ? 0 : index + 1
        }
        drainStart.store(index, ordering: .relaxed)
        return taken
    }

    /// Counts records the writer has finished writing. Writer thread only.
    func noteWritten(_ count: Int) {
        written.store(written.load(ordering: .relaxed) &+ count, ordering: .relaxed)
    }

    // MARK: Writer thread only
    /// The ring `drain` visits first; an atomic only so the class stays `Sendable` without
    /// `@unchecked`.
    private let drainStart = Atomic<Int>(0)
}

/// Padding between fields written by different threads, so that a producer's stores do not
/// invalidate the cache line the consumer reads and the other way round ("false sharing").
/// 64 bytes is the line size of current x86-64 and most arm64 cores.
typealias CompletionRingPad = (Int, Int, Int, Int, Int, Int, Int, Int)

/// One loop's single-producer/single-consumer ring of records.
///
/// `tail` counts records ever offered and `head` records ever taken; both only grow, so
/// `tail - head` is the fill level and `index & mask` the slot (capacity rounded up to a power
/// of two for the mask, with the exact capacity enforced on the counts). The producer publishes
/// a slot with a release store of `tail`, the consumer frees it with a release store of `head`;
/// each side reads the other's counter with acquire, and only when its cached copy says the ring
/// is full (producer) or empty (consumer), so the common case touches no shared cache line.
public final class CompletionRing: @unchecked Sendable {
    // @unchecked: `slots` is written by the producer only at indices in [head, head+capacity) it
    // has not published yet and read/deinitialized by the consumer only at indices in
    // [head, tail) it has seen published; the acquire/release pairs on `tail` and `head` order
    // those accesses. Each plain `var` below is touched by exactly one thread, named in its MARK.

    // MARK: Immutable
    private let slots: UnsafeMutablePointer<CompletionRecord>
    private let mask: Int
    /// Records the ring holds.
    public let capacity: Int

    // MARK: Producer thread writes
    private let padBeforeProducer: CompletionRingPad = (0, 0, 0, 0, 0, 0, 0, 0)
    private let tail = Atomic<Int>(0)
    /// Single writer (the producer), so incremented with a load and a store (see `LoopMetrics`).
    private let dropped = Atomic<Int>(0)
    /// The consumer's `head` as last seen; stale values only make the ring look fuller.
    private var cachedHead = 0
    /// Debug builds trap if a second thread offers: two producers on one ring would overwrite
    /// each other's slots.
    private let producerThread = SingleThreadOwner()

    // MARK: Consumer thread writes
    private let padBeforeConsumer: CompletionRingPad = (0, 0, 0, 0, 0, 0, 0, 0)
    private let head = Atomic<Int>(0)
    /// The producer's `tail` as last seen; stale values only make the ring look emptier.
    private var cachedTail = 0
    private let padAfterConsumer: CompletionRingPad = (0, 0, 0, 0, 0, 0, 0, 0)

    init(capacity: Int) {
        precondition(capacity > 0)
        var slotCount = 1
        while slotCount < capacity { slotCount <<= 1 }
        self.capacity = capacity
        mask = slotCount - 1
        // Uninitialized: the kernel maps the pages lazily, so an idle 65,536-slot queue costs
        // address space, not memory.
        slots = .allocate(capacity: slotCount)
    }

    deinit {
        // Release the strings of records nobody took.
        let end = tail.load(ordering: .acquiring)
        var index = head.load(ordering: .relaxed)
        while index != end {
            (slots + (index & mask)).deinitialize(count: 1)
            index += 1
        }
        slots.deallocate()
    }

    /// Stores `record` for the writer; false if the ring is full, in which case the record is
    /// dropped and counted in ``droppedCount``.
    ///
    /// Owning loop's thread only. Never blocks, allocates or makes a syscall.
    @inline(__always)
    public func offer(_ record: consuming CompletionRecord) -> Bool {
        assert(producerThread.isCurrentThread(), "CompletionRing.offer from a second thread")
        let position = tail.load(ordering: .relaxed) // our own counter: no ordering needed
        if position - cachedHead >= capacity {
            cachedHead = head.load(ordering: .acquiring) // pairs with the consumer's release of the slot
            if position - cachedHead >= capacity {
                dropped.store(dropped.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
                return false
            }
        }
        (slots + (position & mask)).initialize(to: record)
        tail.store(position + 1, ordering: .releasing) // publishes the slot's contents
        return true
    }

    /// Takes up to `limit` records in order, passing each to `body` before freeing its slot;
    /// stops early, setting `keepGoing` to false, when `body` returns false.
    /// Consumer (writer) thread only.
    func drain(upTo limit: Int, keepGoing: inout Bool, _ body: (borrowing CompletionRecord) -> Bool) -> Int {
        let start = head.load(ordering: .relaxed) // our own counter
        if start == cachedTail {
            cachedTail = tail.load(ordering: .acquiring) // pairs with the producer's publish
            if start == cachedTail { return 0 }
        }
        let end = min(cachedTail, start + limit)
        var position = start
        while position < end {
            let slot = slots + (position & mask)
            let more = body(slot.pointee)
            slot.deinitialize(count: 1)
            position += 1
            if !more {
                keepGoing = false
                break
            }
        }
        head.store(position, ordering: .releasing) // hands the slots back to the producer
        return position - start
    }

    /// Records dropped because the ring was full.
    public var droppedCount: Int { dropped.load(ordering: .relaxed) }
    /// Records accepted.
    public var enqueuedCount: Int { tail.load(ordering: .relaxed) }
    /// Records accepted and not yet taken (a snapshot).
    public var pendingCount: Int {
        let taken = head.load(ordering: .relaxed)
        return max(0, tail.load(ordering: .relaxed) - taken)
    }
}

/// Remembers the first thread that asks and answers whether the asking thread is that one; used
/// in `assert`s, so release builds never call it. A thread id may be reused after its thread
/// exits, which can only hide a violation, never report a false one.
struct SingleThreadOwner: ~Copyable, Sendable {
    private let owner = Atomic<UInt>(0)

    init() {}

    func isCurrentThread() -> Bool {
        let current = Syscall.currentThreadID()
        let (claimed, previous) = owner.compareExchange(expected: 0, desired: current, ordering: .relaxed)
        return claimed || previous == current
    }
}
