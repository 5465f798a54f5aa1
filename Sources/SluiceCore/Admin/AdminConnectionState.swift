/// The admin listener's bounds: what one client, or many, can hold. A value so tests can shrink it.
struct AdminLimits: Sendable, Equatable {
    /// From accept to the end of the request head. A total, not a per-byte allowance: a client dribbling a
    /// byte now and then gains nothing by it (a kubelet probe or a Prometheus scrape sends its head at once).
    var headTimeoutMilliseconds: Int64 = 5_000
    /// From the first byte of the response to its last: a scraper that stops reading a large `/metrics`
    /// body gives its slot back after this.
    var writeTimeoutMilliseconds: Int64 = 10_000
    /// Open admin connections; the next accept closes one (see `AdminConnectionState.victim`). Probes and
    /// scrapes need a handful; the cap bounds the memory and descriptors a flood can take here.
    var maxConnections: Int = 64
    /// Bytes of one request head (a probe's is under 200, Prometheus's under 1 KiB); a longer head gets 431.
    var maxHeadBytes: Int = 8192
    /// How long `POST /reload` waits for the reload to finish before answering that it is still running. A
    /// reload takes milliseconds unless a name lookup hangs; the bound keeps such a connection from holding its
    /// slot for good.
    var answerTimeoutMilliseconds: Int64 = 60_000
}

/// What the admin listener serves for a complete head, or instead of one.
enum AdminReply: Equatable {
    /// A parsed request: the router answers it.
    case route(AdminRequest)
    /// A malformed head, with the parser's message (400).
    case badRequest(String)
    /// The head outgrew `AdminLimits.maxHeadBytes` (431).
    case headTooLarge
}

/// The parts of a request head the router looks at.
struct AdminRequest: Equatable {
    var method: HTTPMethod
    /// The target without its query.
    var path: String
    /// The head announces a body (a non-zero Content-Length, or chunked); it is never read.
    var hasBody = false
}

/// What the shell learned from the socket about the request head, for `AdminConnectionState.received`.
enum AdminHeadProgress: Equatable {
    /// Not complete yet; `bufferFull` when the head buffer has no room for more.
    case incomplete(bufferFull: Bool)
    case complete(AdminRequest)
    /// The parser rejected the head, with its message.
    case malformed(String)
}

/// Why an admin connection ended; the debug line names every reason but `answered`.
enum AdminCloseReason: String, Equatable {
    /// The whole response was written (every response says `Connection: close`).
    case answered
    /// End of stream before a complete head.
    case peerClosed = "peer_closed"
    /// No complete head within `headTimeoutMilliseconds` of the accept (slow loris, or connected and silent).
    case headTimeout = "head_timeout"
    /// The response was not taken within `writeTimeoutMilliseconds` (a client that does not read).
    case writeTimeout = "write_timeout"
    /// Closed to make room for a new connection at `maxConnections`.
    case evicted
    /// A read or write failed (reset by the peer).
    case failed
}

/// One admin connection's life, decided without sockets or clocks (STYLE habit 1): the shell
/// (`AdminLoop`) feeds in what happened, with the time, and carries out the returned action. One request
/// per connection, answered with `Connection: close`, so there is no keep-alive state.
struct AdminConnectionState: Equatable {
    enum Phase: Equatable {
        /// Accepted; reading the request head until `deadline` (accept + head timeout).
        case readingHead
        /// Writing the response until `deadline` (response start + write timeout); nothing more is read.
        case writing
        /// The answer comes from another thread (`POST /reload`), until `deadline` (head + answer timeout);
        /// nothing is read or written meanwhile.
        case awaitingAnswer
        /// Over; the shell closes the socket.
        case closed(AdminCloseReason)
    }

    enum Action: Equatable {
        /// Nothing to do until the socket is ready again or a deadline passes.
        case wait
        /// Render this reply and start writing it.
        case respond(AdminReply)
        /// Close the socket.
        case close(AdminCloseReason)
        /// The awaited answer did not come in time: write the overdue response instead (now `writing`).
        case answerOverdue
    }

    private(set) var phase: Phase = .readingHead
    /// When the connection was accepted (monotonic ms): eviction closes the oldest first.
    let acceptedAt: Int64
    /// When the current phase must be over (monotonic ms).
    private(set) var deadline: Int64
    private let limits: AdminLimits

    init(acceptedAt now: Int64, limits: AdminLimits) {
        acceptedAt = now
        deadline = now + limits.headTimeoutMilliseconds
        self.limits = limits
    }

    /// New bytes of the head were read and parsed. Anything after the head is never read, so only the
    /// head phase reacts.
    mutating func received(_ progress: AdminHeadProgress, now: Int64) -> Action {
        guard phase == .readingHead else { return .wait }
        let reply: AdminReply
        switch progress {
        case .incomplete(bufferFull: false): return .wait
        case .incomplete(bufferFull: true): reply = .headTooLarge
        case .complete(let request): reply = .route(request)
        case .malformed(let message): reply = .badRequest(message)
        }
        phase = .writing
        deadline = now + limits.writeTimeoutMilliseconds
        return .respond(reply)
    }

    /// The reply routed to an answer from another thread (`POST /reload`): wait for it until `now` + the answer
    /// timeout instead of writing. Only right after `received` returned `.respond`.
    mutating func awaitAnswer(now: Int64) {
        guard phase == .writing else { return }
        phase = .awaitingAnswer
        deadline = now + limits.answerTimeoutMilliseconds
    }

    /// The awaited answer arrived. Returns true when the shell writes it now (the phase is `writing` again);
    /// false when the connection no longer waits (it timed out, or closed).
    mutating func answered(now: Int64) -> Bool {
        guard phase == .awaitingAnswer else { return false }
        phase = .writing
        deadline = now + limits.writeTimeoutMilliseconds
        return true
    }

    /// A read returned end of stream. Once the head is complete the client may half-close and still read
    /// the answer (`printf 'GET ...' | nc -N`), so only a connection still reading its head closes.
    mutating func peerClosed() -> Action {
        guard phase == .readingHead else { return .wait }
        return close(.peerClosed)
    }

    /// A write finished with `remaining` bytes of the response still to go.
    mutating func wrote(remaining: Int) -> Action {
        guard phase == .writing else { return .wait }
        return remaining == 0 ? close(.answered) : .wait
    }

    /// A read or write failed.
    mutating func failed() -> Action {
        if case .closed = phase { return .wait }
        return close(.failed)
    }

    /// The clock moved to `now`: a phase past its deadline ends the connection.
    mutating func tick(now: Int64) -> Action {
        guard now >= deadline else { return .wait }
        switch phase {
        case .readingHead: return close(.headTimeout)
        case .writing: return close(.writeTimeout)
        case .awaitingAnswer:
            phase = .writing
            deadline = now + limits.writeTimeoutMilliseconds
            return .answerOverdue
        case .closed: return .wait
        }
    }

    /// The connection is closed to make room (`victim` chose it).
    mutating func evict() -> Action {
        if case .closed = phase { return .wait }
        return close(.evicted)
    }

    private mutating func close(_ reason: AdminCloseReason) -> Action {
        phase = .closed(reason)
        return .close(reason)
    }

    /// Which of `connections` (open, in any order) to close when one more must be accepted at the cap: the
    /// oldest one still reading its head (a slow loris, or one connected and silent), else the oldest
    /// writing one. The newest arrival is never refused, so clients that hold connections cannot lock out a
    /// probe: they lose their own oldest slot instead, and a probe finishes long before `maxConnections`
    /// newer connections arrive.
    /// - Returns: the index into `connections`, nil when it is empty.
    static func victim(_ connections: [AdminConnectionState]) -> Int? {
        func rank(_ state: AdminConnectionState) -> (Int, Int64) {
            switch state.phase {
            case .readingHead: (0, state.acceptedAt)
            // An operator waiting for a reload ranks with a response being written: both asked properly.
            case .writing, .awaitingAnswer: (1, state.acceptedAt)
            case .closed: (2, state.acceptedAt)
            }
        }
        return connections.indices.min { rank(connections[$0]) < rank(connections[$1]) }
    }
}
