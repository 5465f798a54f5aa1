/// One socket side's read gate, the same type for the client and the upstream: why reads from that side are paused
/// (haproxy's named blocking flags, `mux_h1-t.h`), and the watermark hysteresis on the queue those reads feed
/// (swift-nio's `PendingWritesManager`): the state changes only when a watermark is crossed, so a queue hovering at
/// one mark does not flap. Reads resume when no reason is left. One byte per side: the marks are the session's.
struct ReadGate {
    /// Why reads are paused. Further reasons (an admission verdict pending on a shared store, a tunnel's peer still
    /// connecting) join this set with the states that need them.
    struct Reasons: OptionSet {
        let rawValue: UInt8
        /// The queue towards the other side is at or above the high watermark.
        static let peerQueueFull = Reasons(rawValue: 1 << 0)
    }

    /// The queue sizes at which reads pause (`high`) and resume (`low`, strictly below).
    struct Watermarks {
        let high: Int
        let low: Int

        init(high: Int, low: Int) {
            precondition(low < high, "the low watermark is below the high one")
            self.high = high
            self.low = low
        }
    }

    /// A watermark crossing.
    enum Change: Equatable {
        case paused
        case resumed
    }

    private(set) var reasons: Reasons = []

    /// Reads may proceed.
    var isOpen: Bool { reasons.isEmpty }

    /// The queue this side's reads feed now holds `queued` bytes: pause at the high watermark, resume at the low one.
    /// Returns the crossing, if this call made one.
    mutating func queueChanged(to queued: Int, _ marks: Watermarks) -> Change? {
        if queued >= marks.high { return reasons.insert(.peerQueueFull).inserted ? .paused : nil }
        if queued <= marks.low { return reasons.remove(.peerQueueFull) != nil ? .resumed : nil }
        return nil
    }
}
