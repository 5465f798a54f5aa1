/// A loop's upstream connections: opening one to a chosen server, and keeping idle ones per server for reuse.
extension ProxyLoop {
    /// Opens a non-blocking connection to `server` of upstream `upstreamIndex` of `settings`, and registers it.
    func openUpstream(to server: PoolServer, _ upstreamIndex: Int, of settings: ProxySettings) throws(SystemError) -> UpstreamConnection {
        var tls: TLSEngine?
        if let context = server.tls {
            // Creating an SSL fails only when memory does.
            guard let engine = try? TLSEngine(client: context, host: server.tlsHost) else {
                throw SystemError(call: "SSL_new", reason: "out of memory")
            }
            tls = engine
        }
        let fd = try Syscall.tcpSocket(family: server.address.family)
        let raw = fd.rawValue
        Syscall.setNoDelay(raw)
        let state: IOResult<Void>
        do { state = try Syscall.connect(raw, server.address) } catch {
            throw SystemError(call: "connect to \(server.address)", errno: error.errno)
        }
        let connection = UpstreamConnection(fd: fd, server: server, upstreamIndex: upstreamIndex, settings: settings, tls: tls)
        if case .wouldBlock = state {
            connection.readable = false
            connection.writable = false
        } else {
            connection.connected = true
        }
        do {
            try epoll.addEdgeTriggered(raw, token: table.register(raw, .upstream(connection)))
        } catch {
            table.unregister(raw)
            throw error
        }
        return connection
    }

    /// An idle connection to `server` of upstream `upstreamIndex` of `settings`; nil when none is pooled or a
    /// reload replaced `settings` (the pools then hold the new settings' upstreams).
    func takePooledUpstream(to server: PoolServer, _ upstreamIndex: Int, of settings: ProxySettings) -> UpstreamConnection? {
        guard settings === self.settings else { return nil }
        // Most recently used first: it is the least likely to have been closed by the server.
        while let connection = pools.take(upstreamIndex, slot: server.slot) {
            guard !connection.hangup, connection.isOpen, !server.isRetired else {
                closeUpstream(connection)
                continue
            }
            connection.reused = true
            connection.writable = true
            return connection
        }
        return nil
    }

    func poolUpstream(_ connection: UpstreamConnection) {
        connection.session = nil
        guard connection.settings === settings, !isDraining, !connection.server.isRetired else { return closeUpstream(connection) }
        let limit = settings.upstreams[connection.upstreamIndex].maxIdleConnections
        guard limit > 0 else { return closeUpstream(connection) }
        connection.idleSince = now
        if let evicted = pools.put(connection, limit: limit) { closeUpstream(evicted) }
    }

    /// An idle pooled connection became readable or hung up: the server closed it or sent bytes it
    /// should not have; either way it can no longer be reused.
    func pooledUpstreamEvent(_ connection: UpstreamConnection, _ event: ReadyEvent) {
        guard event.readable || event.hangup || event.error else { return }
        if connection.settings === settings { pools.remove(connection) }
        closeUpstream(connection)
    }

    /// Closes an upstream connection now (not pooled): cancelling the request it carried.
    func closeUpstream(_ connection: UpstreamConnection) {
        connection.session = nil
        guard connection.isOpen else { return }
        table.unregister(connection.rawFD)
        connection.fd = nil
    }
}

/// A loop's idle keep-alive connections, by upstream and by server (``PoolServer/slot``), oldest first. Owned by
/// one loop thread.
struct UpstreamIdlePools {
    private var byUpstream: [[[UpstreamConnection]]]

    init(upstreamCount: Int) {
        byUpstream = Array(repeating: [], count: upstreamCount)
    }

    /// The newest idle connection to the server in `slot`.
    mutating func take(_ upstream: Int, slot: Int) -> UpstreamConnection? {
        guard slot < byUpstream[upstream].count else { return nil }
        return byUpstream[upstream][slot].popLast()
    }

    /// Keeps `connection`; returns the server's oldest one when it already had `limit`.
    mutating func put(_ connection: UpstreamConnection, limit: Int) -> UpstreamConnection? {
        let upstream = connection.upstreamIndex, slot = connection.server.slot
        if slot >= byUpstream[upstream].count {
            byUpstream[upstream].append(contentsOf: repeatElement([], count: slot + 1 - byUpstream[upstream].count))
        }
        let evicted = byUpstream[upstream][slot].count >= limit ? byUpstream[upstream][slot].removeFirst() : nil
        byUpstream[upstream][slot].append(connection)
        return evicted
    }

    mutating func remove(_ connection: UpstreamConnection) {
        let upstream = connection.upstreamIndex, slot = connection.server.slot
        guard slot < byUpstream[upstream].count, let position = byUpstream[upstream][slot].firstIndex(where: { $0 === connection }) else { return }
        byUpstream[upstream][slot].remove(at: position)
    }

    /// Takes out the connections idle since before `cutoff`, handing each to `close`.
    mutating func expire(idleSince cutoff: Int64, _ close: (UpstreamConnection) -> Void) {
        for upstream in byUpstream.indices {
            for slot in byUpstream[upstream].indices {
                while let oldest = byUpstream[upstream][slot].first, oldest.idleSince <= cutoff {
                    byUpstream[upstream][slot].removeFirst()
                    close(oldest)
                }
            }
        }
    }

    /// Empties every pool, returning what it held.
    mutating func removeAll() -> [UpstreamConnection] {
        defer { byUpstream = Array(repeating: [], count: byUpstream.count) }
        return byUpstream.flatMap { $0.flatMap { $0 } }
    }
}
