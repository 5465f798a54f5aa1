/// One admin connection: its socket, the head read so far and the response being written. Admin thread only.
final class AdminConnection {
    let fd: FileDescriptor
    let peer: SocketAddress
    var state: AdminConnectionState
    /// The request head, from its first byte (the parser is restartable over the same bytes plus more).
    let head: ByteBuffer
    var parser = RequestHeadParser()
    /// The rendered response and how much of it the kernel has taken.
    var response: [UInt8] = []
    var written = 0

    init(fd: consuming FileDescriptor, peer: SocketAddress, now: Int64, limits: AdminLimits) {
        self.fd = fd
        self.peer = peer
        state = AdminConnectionState(acceptedAt: now, limits: limits)
        head = ByteBuffer(capacity: limits.maxHeadBytes)
    }
}

/// The admin listener's event loop: one thread, one epoll, non-blocking sockets, at most
/// `limits.maxConnections` connections, each bounded in time by `AdminConnectionState`. It shares nothing
/// with the proxy loops but the metrics (atomics it reads) and readiness (an atomic flag), so it cannot slow
/// the data path, and the data path cannot slow it.
///
/// A turn: wait (bounded by the earliest connection deadline), accept, read heads and write responses as the
/// sockets allow, then end what passed its deadline. Connections are few (the cap), so deadlines are found
/// by a scan instead of a timer heap.
final class AdminLoop {
    private enum Owner {
        case listener
        case connection(AdminConnection)
        /// `answers` has outcomes for connections awaiting a reload.
        case answers
    }

    private static let acceptsPerWakeup = 64
    /// After EMFILE/ENFILE the listener leaves epoll this long, so accept does not spin.
    private static let acceptBackoffMilliseconds: Int64 = 100

    // MARK: admin thread only (after the handoff)
    private let listener: FileDescriptor
    private let epoll: Epoll
    private var table = RegistrationTable<Owner>(initialCapacity: 256)
    /// Open connections in accept order; `limits.maxConnections` at most.
    private var open: [AdminConnection] = []
    private let limits: AdminLimits
    private let metrics: MetricsRegistry
    private let readiness: Readiness
    private let reloads: ReloadCoordinator
    /// Outcomes handed over by the reload thread.
    private let answers: AdminAnswers
    /// Connections awaiting a reload's outcome, by ticket.
    private var awaiting: [UInt64: AdminConnection] = [:]
    private var nextTicket: UInt64 = 1
    private var now: Int64
    /// When the paused listener goes back into epoll; nil while it is in.
    private var listenerPausedUntil: Int64?
    private var lastAcceptWarning: Int64 = -100_000

    /// Takes ownership of `listener` (bound, listening, non-blocking).
    init(listener: consuming FileDescriptor, metrics: MetricsRegistry, readiness: Readiness, reloads: ReloadCoordinator,
         limits: AdminLimits) throws(SystemError) {
        self.listener = listener
        epoll = try Epoll(capacity: 128)
        self.metrics = metrics
        self.readiness = readiness
        self.reloads = reloads
        answers = try AdminAnswers()
        self.limits = limits
        now = Syscall.monotonicMilliseconds()
        try epoll.addReadable(self.listener.rawValue, token: table.register(self.listener.rawValue, .listener))
        try epoll.addReadable(answers.wakeup.rawValue, token: table.register(answers.wakeup.rawValue, .answers))
    }

    /// Serves for the life of the process, on the calling thread.
    func run() -> Never {
        while true {
            let count = epoll.wait(timeoutMilliseconds: waitTimeout())
            now = Syscall.monotonicMilliseconds()
            for position in 0..<count {
                let event = epoll.event(at: position)
                switch table.owner(for: event.token) {
                case .listener: acceptAll()
                case .connection(let connection): serve(connection)
                case .answers: deliverAnswers()
                case nil: break  // closed earlier in this batch
                }
            }
            expire()
            resumeListenerIfDue()
        }
    }

    /// Until the earliest deadline (a connection's, or the paused listener's), at most a second.
    private func waitTimeout() -> Int32 {
        var earliest = now + 1000
        for connection in open { earliest = min(earliest, connection.state.deadline) }
        if let resume = listenerPausedUntil { earliest = min(earliest, resume) }
        return Int32(clamping: max(0, earliest - Syscall.monotonicMilliseconds()))
    }

    // MARK: - Accepting

    private func acceptAll() {
        for _ in 0..<Self.acceptsPerWakeup {
            let result: IOResult<(fd: Int32, peer: SocketAddress)>
            do { result = try Syscall.accept(listener.rawValue) } catch {
                pauseListener(error)
                return
            }
            guard case .processed(let accepted) = result else { return }
            let connection = AdminConnection(fd: FileDescriptor(rawValue: accepted.fd), peer: accepted.peer, now: now, limits: limits)
            if open.count >= limits.maxConnections, let index = AdminConnectionState.victim(open.map(\.state)) {
                let victim = open[index]
                OpLog.debug("admin connection limit reached; closing the oldest connection to make room",
                            ["limit": .int(limits.maxConnections), "closed_peer": .string(victim.peer.description),
                             "closed_phase": .string(victim.state.phase == .readingHead ? "reading_head" : "writing"),
                             "new_peer": .string(accepted.peer.description)])
                carryOut(victim.state.evict(), victim)
            }
            let raw = connection.fd.rawValue
            do { try epoll.addEdgeTriggered(raw, token: table.register(raw, .connection(connection))) } catch {
                table.unregister(raw)
                continue  // dropping the connection closes its socket
            }
            open.append(connection)
            // Edge-triggered: an ADD on a socket whose head already arrived reports it in the next wait, so
            // nothing is read here.
        }
    }

    /// Out of descriptors or memory: stop accepting for a moment (the connections already open go on).
    private func pauseListener(_ error: SystemError) {
        if now - lastAcceptWarning >= 10_000 {
            lastAcceptWarning = now
            OpLog.warn("admin accept failed; pausing the admin listener", ["error": .string(error.description),
                                                                           "retry_ms": .int(Int(Self.acceptBackoffMilliseconds))])
        }
        epoll.remove(listener.rawValue)
        listenerPausedUntil = now + Self.acceptBackoffMilliseconds
    }

    private func resumeListenerIfDue() {
        guard let resume = listenerPausedUntil, resume <= now else { return }
        listenerPausedUntil = nil
        let raw = listener.rawValue
        do { try epoll.addReadable(raw, token: table.register(raw, .listener)) } catch {
            listenerPausedUntil = now + Self.acceptBackoffMilliseconds
        }
    }

    // MARK: - Serving

    /// Any readiness: read the head while it is being read, write the response once there is one. Sockets
    /// are edge-triggered, so each side is worked until the kernel says EAGAIN.
    private func serve(_ connection: AdminConnection) {
        switch connection.state.phase {
        case .readingHead: readHead(connection)
        case .writing: flush(connection)
        case .awaitingAnswer, .closed: break
        }
    }

    private func readHead(_ connection: AdminConnection) {
        while connection.state.phase == .readingHead {
            guard connection.head.writableCount > 0 else {
                carryOut(connection.state.received(.incomplete(bufferFull: true), now: now), connection)
                return
            }
            let result: IOResult<Int>
            do { result = try connection.head.read(from: connection.fd.rawValue) } catch {
                carryOut(connection.state.failed(), connection)
                return
            }
            guard case .processed(let count) = result else { return }
            if count == 0 {
                carryOut(connection.state.peerClosed(), connection)
                return
            }
            carryOut(connection.state.received(progress(connection), now: now), connection)
        }
    }

    /// Parses the head read so far.
    private func progress(_ connection: AdminConnection) -> AdminHeadProgress {
        let result = connection.head.withReadableSpan { connection.parser.parse($0) }
        switch result {
        case .needMore:
            return .incomplete(bufferFull: connection.head.writableCount == 0)
        case .failed(let error, _):
            return .malformed(error.message)
        case .complete:
            let head = connection.parser.head
            let target = connection.head.withReadableSpan { span in String(decoding: head.target.map { span[$0] }, as: UTF8.self) }
            let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
            let hasBody = head.framing != .none && head.framing != .contentLength(0)
            return .complete(AdminRequest(method: head.method, path: path, hasBody: hasBody))
        }
    }

    private func carryOut(_ action: AdminConnectionState.Action, _ connection: AdminConnection) {
        switch action {
        case .wait:
            break
        case .respond(let reply):
            if case .route(let request) = reply, let route = AdminReloadRoutes.route(request, status: { reloads.statusJSON }) {
                switch route {
                case .respond(let response): write(response, to: connection)
                case .startReload: startReload(connection)
                }
                return
            }
            write(AdminRoutes.response(to: reply, readiness: readiness.report, metrics: { metrics.render() }), to: connection)
        case .answerOverdue:
            awaiting = awaiting.filter { $0.value !== connection }
            write(AdminReloadRoutes.overdue(afterMilliseconds: limits.answerTimeoutMilliseconds), to: connection)
        case .close(let reason):
            close(connection, reason)
        }
    }

    private func write(_ response: AdminResponse, to connection: AdminConnection) {
        connection.response = response.bytes
        connection.written = 0
        flush(connection)
    }

    // MARK: - Reloads

    /// `POST /reload`: the connection waits, neither read nor written, until the reload thread hands its outcome
    /// over through `answers`, or its answer deadline passes.
    private func startReload(_ connection: AdminConnection) {
        let ticket = nextTicket
        nextTicket += 1
        let answers = answers
        let admission = reloads.request(.admin) { outcome in answers.post(ticket, outcome) }
        guard admission == .accepted else {
            write(AdminReloadRoutes.response(refused: admission), to: connection)
            return
        }
        connection.state.awaitAnswer(now: now)
        awaiting[ticket] = connection
    }

    /// Writes each outcome the reload thread handed over to the connection awaiting it (one that timed out or
    /// closed meanwhile is gone from `awaiting`).
    private func deliverAnswers() {
        answers.wakeup.drain()
        for (ticket, outcome) in answers.take() {
            guard let connection = awaiting.removeValue(forKey: ticket), connection.state.answered(now: now) else { continue }
            write(AdminReloadRoutes.response(to: outcome), to: connection)
        }
    }

    /// Writes what the socket takes; a client that does not read leaves the rest for the next writable
    /// event, or for the write deadline.
    private func flush(_ connection: AdminConnection) {
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        while connection.written < connection.response.count {
            let result: IOResult<Int>
            do {
                result = try connection.response.withUnsafeBytes { (bytes) throws(SystemError) -> IOResult<Int> in
                    try Syscall.write(connection.fd.rawValue, UnsafeRawBufferPointer(rebasing: bytes[connection.written...]), empty)
                }
            } catch {
                carryOut(connection.state.failed(), connection)
                return
            }
            guard case .processed(let count) = result else { break }
            connection.written += count
        }
        carryOut(connection.state.wrote(remaining: connection.response.count - connection.written), connection)
    }

    /// Ends connections past their deadline.
    private func expire() {
        for connection in open where connection.state.deadline <= now {
            carryOut(connection.state.tick(now: now), connection)
        }
    }

    /// Unregisters and forgets `connection`; its socket closes as the last reference goes.
    private func close(_ connection: AdminConnection, _ reason: AdminCloseReason) {
        let raw = connection.fd.rawValue
        epoll.remove(raw)
        table.unregister(raw)
        open.removeAll { $0 === connection }
        // An evicted connection may await a reload: its outcome, when it comes, finds no one.
        awaiting = awaiting.filter { $0.value !== connection }
        if reason != .answered {
            OpLog.debug("admin connection closed", ["reason": .string(reason.rawValue), "peer": .string(connection.peer.description),
                                                   "age_ms": .int(Int(now - connection.state.acceptedAt))])
        }
    }
}

/// Reload outcomes on their way from the reload thread to the admin loop: a locked list and an eventfd that wakes
/// the loop. Any thread posts; the admin thread takes.
final class AdminAnswers: Sendable {
    let wakeup: WakeupFD
    private let posted = Locked<[(UInt64, ReloadOutcome?)]>([])

    init() throws(SystemError) { wakeup = try WakeupFD() }

    /// Hands `outcome` over for the connection holding `ticket` (any thread).
    func post(_ ticket: UInt64, _ outcome: ReloadOutcome?) {
        posted.withLock { $0.append((ticket, outcome)) }
        wakeup.signal()
    }

    /// Everything posted so far (admin thread).
    func take() -> [(UInt64, ReloadOutcome?)] {
        posted.withLock { list in
            defer { list.removeAll() }
            return list
        }
    }
}
