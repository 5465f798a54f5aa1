/// fd-indexed table of what owns each registered fd, with a generation per slot so an event queued for
/// an fd that was closed and reused in the same epoll batch is recognised as stale and dropped
/// (swift-nio's SelectorRegistrationID). Owned by one loop thread.
public struct RegistrationTable<Owner> {
    private struct Slot {
        var generation: UInt32 = 0
        var owner: Owner?
    }

    private var slots: [Slot]

    public init(initialCapacity: Int = 1024) {
        slots = Array(repeating: Slot(), count: initialCapacity)
    }

    /// Records `owner` for `fd` and returns the epoll token (generation << 32 | fd).
    public mutating func register(_ fd: Int32, _ owner: Owner) -> UInt64 {
        let index = Int(fd)
        if index >= slots.count {
            // Growth happens at accept time only, never while forwarding.
            slots.append(contentsOf: repeatElement(Slot(), count: max(index + 1 - slots.count, slots.count)))
        }
        slots[index].generation &+= 1
        slots[index].owner = owner
        return UInt64(slots[index].generation) << 32 | UInt64(UInt32(bitPattern: fd))
    }

    /// Forgets `fd`; later events carrying its old token are stale.
    public mutating func unregister(_ fd: Int32) {
        let index = Int(fd)
        guard index < slots.count else { return }
        slots[index].owner = nil
        slots[index].generation &+= 1
    }

    /// Every registered owner, e.g. to close all connections at shutdown.
    public func owners() -> [Owner] {
        slots.compactMap(\.owner)
    }

    /// The owner for an epoll token, or nil when the token is stale.
    @inline(__always)
    public func owner(for token: UInt64) -> Owner? {
        let index = Int(UInt32(truncatingIfNeeded: token))
        guard index < slots.count, slots[index].generation == UInt32(truncatingIfNeeded: token >> 32) else { return nil }
        return slots[index].owner
    }
}
