import Testing
@testable import SluiceCore

private final class Entry: TimerHeapElement {
    let name: String
    var timerIndex = -1
    var timerDeadline: Int64 = 0
    init(_ name: String) { self.name = name }
}

@Suite struct TimerHeapTests {
    @Test func popsInDeadlineOrderOnlyWhenDue() {
        var heap = TimerHeap<Entry>()
        let entries = [("c", 30), ("a", 10), ("d", 40), ("b", 20)].map { (Entry($0.0), Int64($0.1)) }
        for (entry, deadline) in entries { heap.schedule(entry, at: deadline) }
        #expect(heap.popDue(now: 5) == nil)
        var order: [String] = []
        while let entry = heap.popDue(now: 100) { order.append(entry.name) }
        #expect(order == ["a", "b", "c", "d"])
        #expect(entries.allSatisfy { $0.0.timerIndex == -1 })
    }

    @Test func rescheduleMovesAnEntryBothWays() {
        var heap = TimerHeap<Entry>()
        let a = Entry("a"), b = Entry("b"), c = Entry("c")
        heap.schedule(a, at: 10)
        heap.schedule(b, at: 20)
        heap.schedule(c, at: 30)
        heap.schedule(a, at: 50)
        heap.schedule(c, at: 5)
        #expect(heap.count == 3, "rescheduling never duplicates an entry")
        #expect(heap.nextDeadline == 5)
        #expect(heap.popDue(now: 100) === c)
        #expect(heap.popDue(now: 100) === b)
        #expect(heap.popDue(now: 100) === a)
    }

    @Test func removeFromTheMiddleKeepsOrder() {
        var heap = TimerHeap<Entry>()
        let entries = (0..<50).map { Entry("\($0)") }
        for (position, entry) in entries.enumerated() { heap.schedule(entry, at: Int64((position * 37) % 50)) }
        for entry in entries where Int(entry.name)! % 3 == 0 { heap.remove(entry) }
        heap.remove(entries[0])
        var last: Int64 = -1
        var count = 0
        while let entry = heap.popDue(now: 1000) {
            #expect(entry.timerDeadline >= last)
            #expect(Int(entry.name)! % 3 != 0)
            last = entry.timerDeadline
            count += 1
        }
        #expect(count == 33)
    }
}

@Suite struct RegistrationTableTests {
    @Test func staleTokensAreDropped() {
        var table = RegistrationTable<String>(initialCapacity: 4)
        let first = table.register(7, "first")
        #expect(table.owner(for: first) == "first")
        table.unregister(7)
        #expect(table.owner(for: first) == nil)
        let second = table.register(7, "second")
        #expect(second != first, "a reused fd gets a new generation")
        #expect(table.owner(for: first) == nil, "an event queued for the old connection must not reach the new one")
        #expect(table.owner(for: second) == "second")
    }

    @Test func growsForLargeDescriptors() {
        var table = RegistrationTable<Int>(initialCapacity: 2)
        let token = table.register(5000, 1)
        #expect(table.owner(for: token) == 1)
    }
}
