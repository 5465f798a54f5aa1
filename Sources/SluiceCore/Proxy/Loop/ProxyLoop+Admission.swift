import Synchronization

/// `max_connections` fairness: the loop's idle connections, oldest first (`IdleConnections`), and how one is closed
/// to admit a new connection at the cap, on this loop or, through `AdmissionPeers`, on another. Loop thread only,
/// except where a function says any thread.
extension ProxyLoop {
    /// Idle connections looked at per accept, at most: entries that went stale are dropped on the way, so the
    /// cost per accept stays bounded however the list was left.
    static let evictionCandidatesPerAccept = 16

    /// Closes this loop's oldest idle client connection to make room under `limit`; false when none is idle.
    /// A connection with a request under way (head partly read, exchange, lingering) is never one: those left the
    /// idle phase, and a listed one found out of it is only unlisted here. Bytes already waiting in its socket
    /// (a request about to be read, or a TLS handshake going on) make a connection the newest instead.
    func evictIdleConnection(limit: Int) -> Bool {
        var looked = 0
        while idle.oldest >= 0 && looked < ProxyLoop.evictionCandidatesPerAccept {
            looked += 1
            let fd = idle.oldest
            let since = idle.idleSince(fd) ?? now
            guard let session = idle.element(fd) else { break }
            unlistIdle(fd)
            guard session.phase == .idle else { continue }
            if case .processed(1)? = try? Syscall.peekByte(fd) {
                listIdle(fd, session)
                continue
            }
            metrics.countIdleEviction()
            OpLog.debug("idle connection closed to make room at max_connections",
                        ["worker": .int(index), "max_connections": .int(limit), "idle_ms": .int(Int(now - since))])
            session.close()
            return true
        }
        return false
    }

    /// `session` finished an exchange and waits for the next request: it becomes the newest idle connection.
    func sessionBecameIdle(_ session: ClientSession) {
        listIdle(session.clientFD, session)
    }

    /// `session` read the first byte of a request: it is no longer idle.
    func sessionLeftIdle(_ session: ClientSession) {
        if idle.element(session.clientFD) === session { unlistIdle(session.clientFD) }
    }

    /// Lists `session` (on `fd`) as the newest idle connection, and publishes the count to the other loops.
    func listIdle(_ fd: Int32, _ session: ClientSession) {
        let before = idle.count
        idle.append(fd, session, now: now)
        idleAvailable.wrappingAdd(idle.count - before, ordering: .relaxed)
    }

    func unlistIdle(_ fd: Int32) {
        let before = idle.count
        idle.remove(fd)
        idleAvailable.wrappingAdd(idle.count - before, ordering: .relaxed)
    }

    /// Connections this loop serves or is about to adopt, for `AdmissionPeers.lessLoaded` (any thread).
    var load: Int { publishedSessions.load(ordering: .relaxed) + pendingAdoptions.load(ordering: .relaxed) }

    /// Idle connections another loop may claim (any thread).
    var unclaimedIdleCount: Int { idleAvailable.load(ordering: .relaxed) }

    /// Takes one of this loop's idle connections for another loop at the cap (any thread); false when none is left.
    func claimIdleConnection() -> Bool {
        var current = idleAvailable.load(ordering: .relaxed)
        while current > 0 {
            let (exchanged, original) = idleAvailable.compareExchange(expected: current, desired: current - 1, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }
}
