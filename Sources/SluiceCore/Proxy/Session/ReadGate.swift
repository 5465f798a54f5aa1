/// One socket side's read gate, the same type for the client and the upstream: why reads from that side are paused
/// (haproxy's named blocking flags, `mux_h1-t.h`), and the watermark hysteresis on the queue those reads feed
/// (swift-nio's `PendingWritesManager`): the state changes only when a watermark is crossed, so a queue hovering at
/// one mark does not flap. Reads resume when no reason is left.
struct ReadGate {
    /// Why reads are paused. Further reasons (an admission verdict pending on a shared store, a tunnel's peer still
    /// connecting) join this set with the states that need them.
    struct Reasons: OptionSet {
        let rawValue: UInt8
        /// The queue towards the other side is at or above the high watermark.
        static let peerQueueFull = Reasons(rawValue: 1 << 0)
    }

    /// A watermark crossing.
    enum Change: Equatable {
        case paused
        case resumed
    }

    private(set) var reasons: Reasons = []
    let highWatermark: Int
    let lowWatermark: Int

    init(highWatermark: Int, lowWatermark: Int) {
        precondition(lowWatermark < highWatermark, "the low watermark is below the high one")
        self.highWatermark = highWatermark
        self.lowWatermark = lowWatermark
    }

    /// Reads may proceed.
    var isOpen: Bool { reasons.isEmpty }

    /// The queue this side's reads feed now holds `queued` bytes: pause at the high watermark, resume at the low one.
    /// Returns the crossing, if this call made one.
    mutating func queueChanged(to queued: Int) -> Change? {
        if queued >= highWatermark { return reasons.insert(.peerQueueFull).inserted ? .paused : nil }
        if queued <= lowWatermark { return reasons.remove(.peerQueueFull) != nil ? .resumed : nil }
        return nil
    }
}
