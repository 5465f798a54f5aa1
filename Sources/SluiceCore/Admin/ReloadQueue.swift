/// What asked for a reload.
public enum ReloadTrigger: String, Sendable, Equatable {
    /// SIGHUP (`kill -HUP`, `sluice reload --pid`).
    case signal
    /// `POST /reload` on the admin listener (`sluice reload --admin`).
    case admin
}

/// Why a reload did not apply, as the reloader reports it.
public struct ReloadFailure: Sendable, Equatable {
    /// What is wrong, with its place when one is known: `proxy.conf:12: unknown key 'conect' …`.
    public var error: String
    /// The file and line to blame; nil and 0 when no line is (an address in use, a name that does not resolve).
    public var file: String?
    public var line: Int
    /// Whether the configuration itself is at fault (a parse error, a certificate that does not load), as opposed
    /// to what it asks of the host (an address in use). Picks the HTTP status of `POST /reload`: 422 or 500.
    public var isConfiguration: Bool

    public init(error: String, file: String? = nil, line: Int = 0, isConfiguration: Bool) {
        self.error = error
        self.file = file
        self.line = line
        self.isConfiguration = isConfiguration
    }
}

/// What one reload did, as the reloader reports it.
public enum ReloadAttempt: Sendable, Equatable {
    /// The new configuration is in force for new exchanges; `kept` names each setting left at its running value
    /// because it needs a restart.
    case applied(kept: [String])
    /// The running configuration stays.
    case failed(ReloadFailure)
}

/// One reload that ran: what `POST /reload` answers and `GET /reload-status` shows as `last`.
public struct ReloadOutcome: Sendable, Equatable {
    /// The reload's number: 1 for the first since start-up, counting failed ones.
    public var reload: Int
    /// The configuration generation in force afterwards: 1 is the start-up file, each applied reload adds one.
    public var generation: Int
    /// The first request this reload served.
    public var trigger: ReloadTrigger
    /// How many requests it served: more than 1 when requests arrived while another reload ran (they are
    /// coalesced into this one, see `ReloadQueue`).
    public var requests: Int
    /// When it finished, RFC 3339 UTC.
    public var time: String
    public var durationMilliseconds: Int
    public var attempt: ReloadAttempt

    /// The outcome as a JSON object. Applied: `kept` (restart-only settings left as they were). Failed: `error`
    /// (`file:line: message` when a line is known), and `file` and `line` when they are.
    public var json: String {
        var text = "{\"reload\":\(reload),\"result\":"
        switch attempt {
        case .applied: text += "\"applied\""
        case .failed: text += "\"failed\""
        }
        text += ",\"generation\":\(generation),\"trigger\":\"\(trigger.rawValue)\",\"requests\":\(requests),\"time\":"
        OpLog.appendQuoted(time, to: &text)
        text += ",\"duration_ms\":\(durationMilliseconds)"
        switch attempt {
        case .applied(let kept):
            text += ",\"kept\":"
            OpLog.render(.strings(kept), to: &text)
        case .failed(let failure):
            text += ",\"error\":"
            OpLog.appendQuoted(failure.error, to: &text)
            if let file = failure.file {
                text += ",\"file\":"
                OpLog.appendQuoted(file, to: &text)
            }
            if failure.line > 0 { text += ",\"line\":\(failure.line)" }
        }
        return text + "}"
    }
}

/// Serializes reloads and coalesces the requests that arrive meanwhile, decided without threads or clocks
/// (STYLE habit 1): `ReloadCoordinator` feeds requests and results in and carries out the returned batches.
///
/// One reload runs at a time. A request that arrives while one runs is not folded into it: that reload may have
/// read the file before the edit the request is about. It waits for the next reload, which starts as soon as the
/// running one ends and serves every request queued by then, so a burst costs at most two reloads and every
/// requester is answered by a reload that read the file after it asked.
public struct ReloadQueue: Sendable, Equatable {
    /// The requests one reload serves.
    public struct Batch: Sendable, Equatable {
        /// The reload's number (`ReloadOutcome.reload`).
        public var reload: Int
        /// The first request's trigger.
        public var trigger: ReloadTrigger
        /// Requests served, waiting or not.
        public var requests: Int
        /// Who waits for the outcome (admin connections), in arrival order; a signal waits for nothing.
        public var waiters: [UInt64]
    }

    /// What a request leads to.
    public enum Admission: Sendable, Equatable {
        /// Nothing was running: start this batch now.
        case start(Batch)
        /// A reload is running: the request waits for the next one (`queued` requests wait now, this one included).
        case queued(behind: Int, queued: Int)
        /// Refused: reloads are closed (`close`, sluice is draining).
        case refused
    }

    /// Reloads started since start-up (the running one included).
    public private(set) var started = 0
    /// The configuration generation in force.
    public private(set) var generation = 1
    /// The reload under way.
    public private(set) var running: Batch?
    /// Requests for the reload after `running`.
    public private(set) var queued: Batch?
    /// The last reload that finished.
    public private(set) var last: ReloadOutcome?
    /// False once `close` was called.
    public private(set) var isOpen = true

    public init() {}

    /// A reload is asked for; `waiter` is who wants the outcome, if anyone.
    public mutating func request(_ trigger: ReloadTrigger, waiter: UInt64?) -> Admission {
        guard isOpen else { return .refused }
        let waiters = waiter.map { [$0] } ?? []
        guard let running else {
            started += 1
            let batch = Batch(reload: started, trigger: trigger, requests: 1, waiters: waiters)
            self.running = batch
            return .start(batch)
        }
        if queued == nil {
            queued = Batch(reload: running.reload + 1, trigger: trigger, requests: 0, waiters: [])
        }
        queued!.requests += 1
        queued!.waiters += waiters
        return .queued(behind: running.reload, queued: queued!.requests)
    }

    /// The running reload ended with `attempt`.
    /// - Returns: its outcome, who waited for it, and the next batch to start (the requests queued meanwhile),
    ///   if any; nil outcome when nothing was running.
    public mutating func finished(_ attempt: ReloadAttempt, time: String, durationMilliseconds: Int)
        -> (outcome: ReloadOutcome, waiters: [UInt64], next: Batch?)? {
        guard let batch = running else { return nil }
        if case .applied = attempt { generation += 1 }
        let outcome = ReloadOutcome(reload: batch.reload, generation: generation, trigger: batch.trigger, requests: batch.requests,
                                    time: time, durationMilliseconds: durationMilliseconds, attempt: attempt)
        last = outcome
        running = nil
        guard isOpen, let next = queued else { return (outcome, batch.waiters, nil) }
        queued = nil
        started += 1
        running = next
        return (outcome, batch.waiters, next)
    }

    /// Refuses every later request (sluice is draining).
    /// - Returns: the waiters of the queued batch, which will not run: they are answered at once.
    public mutating func close() -> [UInt64] {
        isOpen = false
        let waiters = queued?.waiters ?? []
        queued = nil
        return waiters
    }

    /// `GET /reload-status`: `generation` in force, `started` (reloads begun; a reload asked for now gets a
    /// larger number), `in_progress`, `queued` (requests waiting for the next reload), `reloadable` (false
    /// without a config file), `pid` (so `sluice reload --pid N --admin ADDR` can tell that both name the same
    /// process) and `last` (the last outcome, null before the first reload).
    public func statusJSON(reloadable: Bool, pid: Int32) -> String {
        "{\"generation\":\(generation),\"started\":\(started),\"in_progress\":\(running != nil),\"queued\":\(queued?.requests ?? 0),"
            + "\"reloadable\":\(reloadable),\"pid\":\(pid),\"last\":\(last?.json ?? "null")}"
    }
}
