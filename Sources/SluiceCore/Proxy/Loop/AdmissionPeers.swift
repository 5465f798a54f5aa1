/// The loops of one proxy, for `max_connections`: a loop at the cap with no idle connection of its own has another
/// loop close one of its idle connections instead (a flood's idle connections land on every worker, a legitimate
/// client on any one). Each loop publishes how many idle connections it has that nobody has claimed yet; a claim
/// takes one, and the claimed loop closes its oldest idle connection in its next turn (`ProxyLoop.Command.evictIdle`).
/// Any thread; used only at the cap, never per chunk.
final class AdmissionPeers: Sendable {
    /// Strong, not weak: a weak reference gives the loop a side table, and every retain and release of the loop (a
    /// dozen per request on its own thread) then takes the runtime's slow path, about 1,500 instructions per request
    /// (callgrind, `wrk` on `/small`). The cycle this makes (loop → connection count → peers → loop) is broken by
    /// `leave` at the end of the loop's `run`.
    private struct Entry {
        let loop: ProxyLoop
    }

    private let entries = Locked<[Entry]>([])

    /// `loop` starts taking part (its init).
    func join(_ loop: ProxyLoop) {
        entries.withLock { $0.append(Entry(loop: loop)) }
    }

    /// `loop` stopped (the end of its `run`).
    func leave(_ loop: ProxyLoop) {
        entries.withLock { $0.removeAll { $0.loop === loop } }
    }

    /// The loop with the fewest connections (open, plus handed to it and not adopted yet) when it has fewer than
    /// `asking`, with one more counted as on its way there; nil when `asking` is as little loaded as any. The caller
    /// then sends it `.adopt`. Once per accepted connection, never per chunk.
    func lessLoaded(than asking: ProxyLoop) -> ProxyLoop? {
        entries.withLock { entries -> ProxyLoop? in
            var best: ProxyLoop?
            var bestLoad = asking.load
            for entry in entries {
                let loop = entry.loop
                guard loop !== asking else { continue }
                let load = loop.load
                if load < bestLoad {
                    best = loop
                    bestLoad = load
                }
            }
            best?.pendingAdoptions.wrappingAdd(1, ordering: .relaxed)
            return best
        }
    }

    /// Claims an idle connection of the loop, other than `asking`, with the most unclaimed ones; nil when no other
    /// loop has one. The caller then sends that loop `.evictIdle`.
    func claimIdleConnection(besides asking: ProxyLoop) -> ProxyLoop? {
        entries.withLock { entries -> ProxyLoop? in
            var best: ProxyLoop?
            var bestCount = 0
            for entry in entries {
                let loop = entry.loop
                guard loop !== asking else { continue }
                let count = loop.unclaimedIdleCount
                if count > bestCount {
                    best = loop
                    bestCount = count
                }
            }
            guard let best, best.claimIdleConnection() else { return nil }
            return best
        }
    }
}
