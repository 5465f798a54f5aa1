/// An object a `TimerHeap` can schedule: it carries its own position and deadline so rescheduling and
/// removal are O(log n) without a search.
public protocol TimerHeapElement: AnyObject {
    /// Position in the heap, -1 when not scheduled. Only the heap writes it.
    var timerIndex: Int { get set }
    /// The deadline the heap orders by (loop milliseconds). Only the heap writes it.
    var timerDeadline: Int64 { get set }
}

/// A binary min-heap of deadlines, one entry per object, owned by one loop.
///
/// Forwarding never touches it: a connection records activity times in plain fields, and only when its
/// scheduled entry comes due does the loop recompute the real deadline and push the entry later
/// (`schedule` with a later time). Making a deadline earlier (a new phase) is one sift-up.
public struct TimerHeap<Element: TimerHeapElement> {
    private var items: [Element] = []

    public init(reserve: Int = 1024) { items.reserveCapacity(reserve) }

    public var count: Int { items.count }
    /// The earliest deadline, if any.
    public var nextDeadline: Int64? { items.isEmpty ? nil : items[0].timerDeadline }

    /// Schedules `element` at `deadline`, moving it if already scheduled.
    public mutating func schedule(_ element: Element, at deadline: Int64) {
        if element.timerIndex >= 0 {
            let index = element.timerIndex
            let earlier = deadline < element.timerDeadline
            element.timerDeadline = deadline
            if earlier { siftUp(index) } else { siftDown(index) }
        } else {
            element.timerDeadline = deadline
            element.timerIndex = items.count
            items.append(element)
            siftUp(items.count - 1)
        }
    }

    /// Removes `element` if scheduled.
    public mutating func remove(_ element: Element) {
        let index = element.timerIndex
        guard index >= 0 else { return }
        element.timerIndex = -1
        let last = items.removeLast()
        if index < items.count {
            items[index] = last
            last.timerIndex = index
            siftDown(index)
            siftUp(last.timerIndex)
        }
    }

    /// Removes and returns the earliest element if its deadline is at or before `now`.
    public mutating func popDue(now: Int64) -> Element? {
        guard !items.isEmpty, items[0].timerDeadline <= now else { return nil }
        let first = items[0]
        remove(first)
        return first
    }

    private mutating func siftUp(_ start: Int) {
        var index = start
        while index > 0 {
            let parent = (index - 1) / 2
            guard items[index].timerDeadline < items[parent].timerDeadline else { break }
            swapAt(index, parent)
            index = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var index = start
        while true {
            let left = 2 * index + 1
            guard left < items.count else { return }
            var smallest = left
            if left + 1 < items.count, items[left + 1].timerDeadline < items[left].timerDeadline { smallest = left + 1 }
            guard items[smallest].timerDeadline < items[index].timerDeadline else { return }
            swapAt(index, smallest)
            index = smallest
        }
    }

    private mutating func swapAt(_ a: Int, _ b: Int) {
        items.swapAt(a, b)
        items[a].timerIndex = a
        items[b].timerIndex = b
    }
}
