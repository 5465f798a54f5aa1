/// A loop's idle client connections (accepted with no request byte yet, or kept alive between requests) in the
/// order they became idle, so that at `max_connections` the oldest can be closed to admit a new one (HAProxy and
/// nginx reclaim idle connections the same way) and a flood of idle connections cannot lock clients out.
///
/// An intrusive doubly linked list over fd-indexed arrays: appending, moving to the end, removing and finding the
/// oldest are O(1) and allocate nothing, except that the arrays grow (doubling) the first time a higher fd is seen,
/// which happens at accept only, like `RegistrationTable`. An element is linked at most once. Entries may go
/// stale (a connection that started a request stays listed until it is looked at); the owner checks an entry
/// before acting on it. Owned by one loop thread.
struct IdleConnections<Element: AnyObject> {
    private static var none: Int32 { -1 }
    private static var unlinked: Int64 { Int64.min }

    private var previous: [Int32]
    private var next: [Int32]
    /// When each linked fd became idle; `unlinked` when it is not in the list.
    private var since: [Int64]
    private var elements: [Element?]
    /// The fd that has been idle longest; -1 when the list is empty.
    private(set) var oldest: Int32 = -1
    private var newest: Int32 = -1
    private(set) var count = 0

    init(initialCapacity: Int = 1024) {
        previous = Array(repeating: Self.none, count: initialCapacity)
        next = Array(repeating: Self.none, count: initialCapacity)
        since = Array(repeating: Self.unlinked, count: initialCapacity)
        elements = Array(repeating: nil, count: initialCapacity)
    }

    /// `fd` is in the list.
    func contains(_ fd: Int32) -> Bool {
        let index = Int(fd)
        return index >= 0 && index < since.count && since[index] != Self.unlinked
    }

    /// What was listed with `fd`; nil when it is not in the list.
    func element(_ fd: Int32) -> Element? { contains(fd) ? elements[Int(fd)] : nil }

    /// When `fd` became idle; nil when it is not in the list.
    func idleSince(_ fd: Int32) -> Int64? { contains(fd) ? since[Int(fd)] : nil }

    /// Lists `element` (on `fd`) as the newest idle connection, idle since `now`; one already listed moves to the end.
    mutating func append(_ fd: Int32, _ element: Element, now: Int64) {
        let index = Int(fd)
        precondition(index >= 0, "a negative fd")
        if index >= since.count { grow(toInclude: index) }
        if contains(fd) { remove(fd) }
        since[index] = now
        elements[index] = element
        previous[index] = newest
        next[index] = Self.none
        if newest >= 0 { next[Int(newest)] = fd } else { oldest = fd }
        newest = fd
        count += 1
    }

    /// Takes `fd` out of the list; nothing when it is not listed.
    mutating func remove(_ fd: Int32) {
        guard contains(fd) else { return }
        let index = Int(fd)
        let before = previous[index], after = next[index]
        if before >= 0 { next[Int(before)] = after } else { oldest = after }
        if after >= 0 { previous[Int(after)] = before } else { newest = before }
        since[index] = Self.unlinked
        elements[index] = nil
        previous[index] = Self.none
        next[index] = Self.none
        count -= 1
    }

    /// The listed fds from oldest to newest (for tests and debugging; allocates).
    var order: [Int32] {
        var out: [Int32] = []
        var fd = oldest
        while fd >= 0 {
            out.append(fd)
            fd = next[Int(fd)]
        }
        return out
    }

    private mutating func grow(toInclude index: Int) {
        let added = max(index + 1 - since.count, since.count)
        previous.append(contentsOf: repeatElement(Self.none, count: added))
        next.append(contentsOf: repeatElement(Self.none, count: added))
        since.append(contentsOf: repeatElement(Self.unlinked, count: added))
        elements.append(contentsOf: repeatElement(nil, count: added))
    }
}
