import Synchronization

/// One worker: an epoll loop on its own thread that accepts on its listeners (duplicates of one socket per address) and owns
/// every client session it accepted and their upstream connections, so the data path takes no locks.
///
/// A turn: wait (bounded by the next timer), dispatch ready events, run sessions that yielded last
/// turn, fire due timers. Timers are a heap of sessions keyed by their next deadline; forwarding only
/// writes activity times, and a due entry recomputes its real deadline (see `ClientSession.timerFired`).
public final class ProxyLoop {
    /// What an epoll token refers to.
    enum Owner {
        case listener(Listener)
        case client(ClientSession)
        case upstream(UpstreamConnection)
        case wakeup
    }

    /// What another thread asks of the loop; applied at the start of its next turn.
    enum Command: Sendable {
        /// Stop accepting, close idle connections, let exchanges in flight finish (see `beginDrain`).
        case drain
        /// Another loop at `max_connections` (`limit`) admitted a connection over it after claiming one of this
        /// loop's idle connections (`AdmissionPeers`): close the oldest idle one.
        case evictIdle(limit: Int)
        /// Use `settings` for new exchanges; start accepting on `addListeners` (bound, listening sockets the loop
        /// now owns) and close `removeListeners` (fds of this loop's listeners).
        case reload(ProxySettings, addListeners: [(fd: Int32, tls: Bool)], removeListeners: [Int32])
        /// Another loop accepted a connection and hands it to this less loaded one (`AdmissionPeers.lessLoaded`).
        case adopt(fd: Int32, peer: SocketAddress, tls: Bool)
    }

    final class Listener {
        let fd: FileDescriptor
        let rawFD: Int32
        /// Connections accepted here start with a TLS handshake.
        let tls: Bool
        /// After EMFILE/ENFILE the listener leaves epoll until this time (loop ms), so accept does not spin.
        var pausedUntil: Int64 = 0

        init(rawFD: Int32, tls: Bool) {
            self.rawFD = rawFD
            self.tls = tls
            fd = FileDescriptor(rawValue: rawFD)
        }
    }

    // MARK: immutable
    public let index: Int
    /// This loop's counters; only this loop writes them, the admin thread reads them.
    let metrics: LoopMetrics
    /// This loop's end of the completion-log queue; nil when no sink is configured.
    let completions: CompletionRing?
    /// Client connections of all loops, for `max_connections`.
    private let connections: ConnectionCount

    // MARK: loop thread only
    /// For new exchanges; sessions keep the one their exchange began with.
    private(set) var settings: ProxySettings
    /// SIGTERM arrived: no new connections, no keep-alive.
    private(set) var isDraining = false
    let epoll: Epoll
    var table = RegistrationTable<Owner>()
    private var timers = TimerHeap<ClientSession>()
    private var listeners: [Listener] = []
    private var posted: [ClientSession] = []
    /// The batch being run; swapped with `posted` so neither array is ever shared (a shared array
    /// would be copied, i.e. allocated, on the next append).
    private var running: [ClientSession] = []
    /// Idle keep-alive connections by upstream and server.
    var pools: UpstreamIdlePools
    let bufferPool: BufferPool
    let splicePipes = SplicePipePool()
    private var parserPool: [HeadParsers] = []
    private var requestObservers: [RequestObserver] = []
    private var responseObservers: [ResponseObserver] = []
    /// The monotonic clock, read once per wakeup, in microseconds: the completion record's times.
    private(set) var nowMicroseconds: Int64
    var now: Int64 { nowMicroseconds / 1000 } // milliseconds: deadlines and timers
    var randomState: UInt64
    private var lastHousekeeping: Int64 = 0
    private var lastAcceptWarning: Int64 = -100_000
    /// Some listener is out of epoll after an accept failure.
    private var acceptPaused = false
    private(set) var sessionCount = 0 {
        didSet { publishedSessions.store(sessionCount, ordering: .relaxed) }
    }
    /// Client connections with no request under way, oldest first: at `max_connections` the oldest makes room.
    var idle = IdleConnections<ClientSession>()

    // MARK: any thread
    private let wakeup: WakeupFD
    private let stopRequested = Atomic<Bool>(false)
    private let commands = Locked<[Command]>([])
    private let drainedFlag = Atomic<Bool>(false)
    /// This loop's idle connections that no other loop has claimed (`AdmissionPeers`): the owner adds and removes
    /// as its idle list changes, a claim takes one.
    let idleAvailable = Atomic<Int>(0)
    /// `sessionCount` for the other loops, and connections handed to this loop not adopted yet (`AdmissionPeers`).
    let publishedSessions = Atomic<Int>(0)
    let pendingAdoptions = Atomic<Int>(0)

    /// Creates a loop that takes ownership of `listeners` (bound, listening, non-blocking sockets).
    init(index: Int, settings: ProxySettings, listeners: [(fd: Int32, tls: Bool)], metrics: LoopMetrics,
                completions: CompletionRing?, connections: ConnectionCount = ConnectionCount()) throws(SystemError) {
        self.connections = connections
        self.index = index
        self.settings = settings
        self.metrics = metrics
        self.completions = completions
        epoll = try Epoll()
        wakeup = try WakeupFD()
        bufferPool = BufferPool(bufferCapacity: settings.bufferCapacity, prewarmed: ProxyLoop.buffersKeptAfterTrim)
        pools = UpstreamIdlePools(upstreamCount: settings.upstreams.count)
        nowMicroseconds = Syscall.monotonicMicroseconds()
        randomState = Syscall.randomSeed()
        for listener in listeners { try addListener(listener.fd, tls: listener.tls) }
        try epoll.addReadable(wakeup.rawValue, token: table.register(wakeup.rawValue, .wakeup))
        connections.peers.join(self)
    }

    private func addListener(_ raw: Int32, tls: Bool) throws(SystemError) {
        let listener = Listener(rawFD: raw, tls: tls)
        listeners.append(listener)
        try epoll.addReadable(raw, token: table.register(raw, .listener(listener)))
    }

    private func closeListener(_ listener: Listener) {
        // Explicitly: the workers hold duplicates of one listening socket, and epoll keeps a registration alive
        // while any descriptor of the socket is open, so closing ours alone would leave it firing here.
        epoll.remove(listener.rawFD)
        table.unregister(listener.rawFD)
        listeners.removeAll { $0 === listener }  // the Listener's FileDescriptor closes the socket
    }

    /// Queues `command` for the loop (any thread).
    func send(_ command: Command) {
        commands.withLock { $0.append(command) }
        wakeup.signal()
    }

    /// Set (any thread can read it) once a draining loop has no connection left.
    public var isDrained: Bool { drainedFlag.load(ordering: .acquiring) }

    private func runCommands() {
        let pending = commands.withLock { queued -> [Command] in
            defer { queued.removeAll() }
            return queued
        }
        for command in pending {
            switch command {
            case .drain:
                beginDrain()
            case .evictIdle(let limit):
                if !isDraining { _ = evictIdleConnection(limit: limit) }
                // The claim took one from the published count and the eviction (if any) another: one comes back.
                idleAvailable.wrappingAdd(1, ordering: .relaxed)
            case .reload(let newSettings, let added, let removed):
                applyReload(newSettings, addListeners: added, removeListeners: removed)
            case .adopt(let fd, let peer, let tls):
                pendingAdoptions.wrappingSubtract(1, ordering: .relaxed)
                adopt(fd, peer: peer, tls: tls)
            }
        }
    }

    private func beginDrain() {
        guard !isDraining else { return }
        isDraining = true
        // Connections the kernel already completed are taken first: closing the socket would reset them, and their
        // clients may have sent a request (each is then served with Connection: close, see ClientSession.beginDrain).
        // Closing the sockets then refuses new connections (once every worker has closed its duplicate).
        for listener in listeners where listener.pausedUntil == 0 {
            accept(listener, upTo: ProxyLoop.drainAcceptLimit)
        }
        for listener in listeners { closeListener(listener) }
        acceptPaused = false
        closePooledUpstreams()
        for owner in table.owners() {
            if case .client(let session) = owner { session.beginDrain() }
        }
        noteIfDrained()
    }

    private func applyReload(_ newSettings: ProxySettings, addListeners added: [(fd: Int32, tls: Bool)], removeListeners removed: [Int32]) {
        settings = newSettings
        // Pooled connections index the old upstream table; exchanges in flight keep theirs until they end.
        closePooledUpstreams()
        pools = UpstreamIdlePools(upstreamCount: newSettings.upstreams.count)
        for listener in listeners where removed.contains(listener.rawFD) {
            // As on drain: connections the kernel already completed are served, not reset by the close.
            if listener.pausedUntil == 0 { accept(listener, upTo: ProxyLoop.drainAcceptLimit) }
            closeListener(listener)
        }
        for (raw, tls) in added {
            if isDraining {
                Syscall.close(raw)
                continue
            }
            do { try addListener(raw, tls: tls) } catch {
                OpLog.error("cannot watch a new listener", ["worker": .int(index), "error": .string(error.description)])
            }
        }
    }

    private func closePooledUpstreams() {
        for connection in pools.removeAll() { closeUpstream(connection) }
    }

    private func noteIfDrained() {
        if isDraining && sessionCount == 0 { drainedFlag.store(true, ordering: .releasing) }
    }

    /// Asks the loop to stop (any thread): it closes its listeners and connections, recording
    /// exchanges in flight as `drain`, and `run` returns.
    public func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        wakeup.signal()
    }

    /// Runs the loop on the calling thread until `requestStop`.
    public func run() {
        prewarm()
        while !stopRequested.load(ordering: .acquiring) {
            let count = epoll.wait(timeoutMilliseconds: waitTimeout())
            nowMicroseconds = Syscall.monotonicMicroseconds()
            for position in 0..<count {
                dispatch(epoll.event(at: position))
            }
            runPosted()
            runTimers()
            if now - lastHousekeeping >= 1000 || (acceptPaused && now >= earliestAcceptResume()) {
                housekeeping()
            }
        }
        for owner in table.owners() {
            switch owner {
            case .client(let session): session.shutDown()
            case .upstream(let connection): closeUpstream(connection)
            case .listener(let listener): table.unregister(listener.rawFD)
            case .wakeup: break
            }
        }
        listeners.removeAll()
        connections.peers.leave(self)
    }

    private func waitTimeout() -> Int32 {
        if !posted.isEmpty { return 0 }
        var timeout: Int64 = 1000
        if let deadline = timers.nextDeadline { timeout = min(timeout, max(0, deadline - Syscall.monotonicMilliseconds())) }
        if acceptPaused { timeout = min(timeout, max(0, earliestAcceptResume() - now)) }
        return Int32(timeout)
    }

    @inline(__always)
    private func dispatch(_ event: ReadyEvent) {
        guard let owner = table.owner(for: event.token) else { return }
        switch owner {
        case .client(let session):
            session.clientEvent(event)
        case .upstream(let connection):
            if let session = connection.session {
                session.upstreamEvent(event, connection)
            } else {
                pooledUpstreamEvent(connection, event)
            }
        case .listener(let listener):
            accept(listener, upTo: ProxyLoop.acceptsPerWakeup)
        case .wakeup:
            wakeup.drain()
            runCommands()
        }
    }

    // MARK: - Accepting

    /// Connections taken per listener wakeup; each goes to the least loaded loop (see `accept`), so a burst is
    /// spread however the wakeups fall.
    private static let acceptsPerWakeup = 16
    /// On drain, at most this many connections of the backlog are taken before the listeners close.
    private static let drainAcceptLimit = 1024
    private static let acceptBackoffMilliseconds: Int64 = 100

    /// Accepts up to `count` connections.
    private func accept(_ listener: Listener, upTo count: Int) {
        let raw = listener.rawFD
        for _ in 0..<count {
            let result: IOResult<(fd: Int32, peer: SocketAddress)>
            do { result = try Syscall.accept(raw) } catch {
                acceptFailed(listener, error)
                return
            }
            guard case .processed(let accepted) = result else { return }
            Syscall.setNoDelay(accepted.fd)
            // One accept queue wakes whichever worker runs first, and on 2 CPUs one can take a whole burst of long
            // streams: each connection goes to the loop with the fewest (Envoy's exact balance), never while draining.
            if !isDraining, let target = connections.peers.lessLoaded(than: self) {
                target.send(.adopt(fd: accepted.fd, peer: accepted.peer, tls: listener.tls))
                continue
            }
            adopt(accepted.fd, peer: accepted.peer, tls: listener.tls)
        }
    }

    /// Makes a session of an accepted connection, here or handed over by another loop, and admits it under
    /// `max_connections`.
    private func adopt(_ rawClient: Int32, peer: SocketAddress, tls: Bool) {
        let session: ClientSession
        if tls {
            // settings.serverTLS exists whenever a listener terminates TLS (the config requires the block).
            // The engine allocates OpenSSL's state only when the client's first byte arrives (`Transport.read`).
            guard let context = settings.serverTLS else {
                Syscall.close(rawClient)
                return
            }
            session = ClientSession(loop: self, fd: FileDescriptor(rawValue: rawClient), peer: peer, tls: TLSEngine(server: context))
        } else {
            session = ClientSession(loop: self, fd: FileDescriptor(rawValue: rawClient), peer: peer)
        }
        do {
            try epoll.addEdgeTriggered(rawClient, token: table.register(rawClient, .client(session)))
        } catch {
            // Counted in first, so that close() gives back exactly what it takes (the slot, the gauge, the count).
            sessionCount += 1
            metrics.addActiveConnections(1)
            _ = connections.admit(limit: 0)
            session.close()
            return
        }
        sessionCount += 1
        metrics.addActiveConnections(1)
        scheduleTimer(session, at: now + Int64(settings.timeouts.clientHeader > 0 ? settings.timeouts.clientHeader : 60_000))
        let limit = settings.maxConnections
        // At max_connections an idle connection makes room (the evicted one's slot is free before the second
        // admit); only with none idle on this loop is the new one refused: a 503 at once, then a lingering
        // close (the refusal is not counted). Another loop may take the freed slot first; then it is a 503.
        if connections.admit(limit: limit) || (evictIdleConnection(limit: limit) && connections.admit(limit: limit)) {
            listIdle(rawClient, session)
        } else if let owner = connections.peers.claimIdleConnection(besides: self) {
            // Another worker holds idle connections: this one is admitted over the cap, and that worker closes
            // its oldest idle one in its next turn, which brings the count back.
            _ = connections.admit(limit: 0)
            owner.send(.evictIdle(limit: limit))
            listIdle(rawClient, session)
        } else {
            session.refuseOverCapacity(limit: limit)
        }
        // Handed over after this loop began draining: served like any connection that arrived just before.
        if isDraining { session.beginDrain() }
    }

    /// Out of descriptors or memory: stop accepting for a moment and keep serving what we have.
    private func acceptFailed(_ listener: Listener, _ error: SystemError) {
        if now - lastAcceptWarning >= 1000 {
            lastAcceptWarning = now
            OpLog.warn("accept failed; pausing the listener", ["worker": .int(index), "error": .string(error.description),
                                                              "retry_ms": .int(Int(ProxyLoop.acceptBackoffMilliseconds))])
        }
        epoll.remove(listener.rawFD)
        listener.pausedUntil = now + ProxyLoop.acceptBackoffMilliseconds
        acceptPaused = true
    }

    /// The earliest time a paused listener may accept again.
    private func earliestAcceptResume() -> Int64 {
        var earliest = Int64.max
        for listener in listeners where listener.pausedUntil != 0 { earliest = min(earliest, listener.pausedUntil) }
        return earliest
    }

    private func housekeeping() {
        lastHousekeeping = now
        bufferPool.trim(keep: ProxyLoop.buffersKeptAfterTrim)
        // One loop sweeps the shared limiter's idle keys; the others would only contend for its locks.
        if index == 0 { _ = settings.rateLimiter?.sweep(nowNanoseconds: Int64(Syscall.monotonicNanoseconds())) }
        if acceptPaused {
            acceptPaused = false
            for listener in listeners where listener.pausedUntil != 0 {
                guard listener.pausedUntil <= now else {
                    acceptPaused = true
                    continue
                }
                listener.pausedUntil = 0
                _ = try? epoll.addReadable(listener.rawFD, token: table.register(listener.rawFD, .listener(listener)))
            }
        }
        let idleLimit = Int64(settings.timeouts.upstreamPoolIdle)
        guard idleLimit > 0 else { return }
        pools.expire(idleSince: now - idleLimit) { closeUpstream($0) }
    }

    // MARK: - Sessions

    /// Runs `session` again next turn (it yielded after its round budget).
    func post(_ session: ClientSession) {
        guard !session.isPosted else { return }
        session.isPosted = true
        posted.append(session)
    }

    private func runPosted() {
        guard !posted.isEmpty else { return }
        swap(&posted, &running)
        for session in running {
            session.isPosted = false
            if session.phase != .closed { session.drive() }
        }
        running.removeAll(keepingCapacity: true)
    }

    private func runTimers() {
        while let session = timers.popDue(now: now) {
            session.timerFired()
        }
    }

    func scheduleTimer(_ session: ClientSession, at deadline: Int64) {
        guard deadline != Int64.max else {
            timers.remove(session)
            return
        }
        // Moving an entry later is deferred: the due entry reschedules itself, so forwarding costs nothing here.
        if session.timerIndex < 0 || deadline < session.timerDeadline {
            timers.schedule(session, at: deadline)
        }
    }

    func sessionClosed(_ session: ClientSession) {
        if !session.refusedOverCapacity { connections.release() }
        if idle.element(session.clientFD) === session { unlistIdle(session.clientFD) }
        timers.remove(session)
        table.unregister(session.clientFD)
        sessionCount -= 1
        metrics.addActiveConnections(-1)
        noteIfDrained()
    }

    /// Lends a reset pair of head parsers.
    func takeParsers() -> HeadParsers {
        let parsers = parserPool.popLast() ?? HeadParsers(limits: settings.httpLimits)
        parsers.request.reset()
        parsers.response.reset()
        return parsers
    }

    func giveParsers(_ parsers: HeadParsers) {
        if parserPool.count < ProxyLoop.maxPooledParsers { parserPool.append(parsers) }
    }

    /// Head parsers carry 100-field tables (about 7.5 KiB a pair): a burst of connections must not
    /// leave thousands of them pooled, so the pool keeps what a few dozen concurrent heads need.
    private static let maxPooledParsers = 64
    /// Observers are about 1 KiB; more of them are kept, since every active stream borrows one.
    private static let maxPooledObservers = 1024
    /// Free buffers a loop keeps however long it is quiet (and makes at start): enough for a few dozen streams
    /// to start at once without an mmap or a page fault.
    private static let buffersKeptAfterTrim = 32

    /// Lends a reset request observer; one that captures is made for the exchange and not pooled
    /// (capture is a rare per-route audit option, so its allocation is accepted there).
    func takeRequestObserver(capture: Int) -> RequestObserver {
        let observer = capture == 0 ? requestObservers.popLast() : nil
        let lent = observer ?? RequestObserver(limits: settings.httpLimits, scanLimit: settings.requestBodyScanLimit, capture: capture)
        lent.chunks.reset()
        lent.tap.reset()
        return lent
    }

    func giveRequestObserver(_ observer: RequestObserver) {
        if !observer.capturing && requestObservers.count < ProxyLoop.maxPooledObservers { requestObservers.append(observer) }
    }

    /// Lends a response observer reset for a body of `kind`; `readsUsage` as for `ResponseTap.reset`.
    func takeResponseObserver(kind: ResponseTap.Kind, readsUsage: Bool, capture: Int) -> ResponseObserver {
        let observer = capture == 0 ? responseObservers.popLast() : nil
        let lent = observer ?? ResponseObserver(limits: settings.httpLimits, capture: capture)
        lent.chunks.reset()
        lent.tap.reset(kind: kind, readsUsage: readsUsage)
        return lent
    }

    func giveResponseObserver(_ observer: ResponseObserver) {
        if !observer.capturing && responseObservers.count < ProxyLoop.maxPooledObservers { responseObservers.append(observer) }
    }

    /// A cheap per-loop random stream (wyrand) for request ids; not for secrets.
    func nextRandom() -> UInt64 {
        ServerChooser.next(&randomState)
    }
}
