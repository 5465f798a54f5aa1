/// Runs reloads one at a time on their own thread, for SIGHUP and `POST /reload` alike, and keeps what
/// `GET /reload-status` reports. The order of requests and outcomes is `ReloadQueue`'s; this class adds the
/// lock, the thread and the answers.
///
/// Why a thread of its own: a reload reads files and looks up names (getaddrinfo blocks), which neither the admin
/// loop (probes would wait) nor the signal thread (SIGTERM would wait behind a slow lookup) should do.
public final class ReloadCoordinator: Sendable {
    /// Reloads the configuration for `batch` (on the reload thread) and logs its outcome.
    public typealias Perform = @Sendable (ReloadQueue.Batch) -> ReloadAttempt
    /// Receives the outcome of the reload that served a request, on the reload thread; nil when the request was
    /// dropped unserved (sluice began draining while it was queued).
    public typealias Answer = @Sendable (ReloadOutcome?) -> Void

    /// What became of a request.
    public enum Admission: Sendable, Equatable {
        /// A reload will serve it; the answer, if one was given, is called once with its outcome.
        case accepted
        /// There is nothing to re-read: sluice runs without a config file.
        case unavailable
        /// sluice is draining: no reload runs any more.
        case draining
    }

    private struct State {
        var queue = ReloadQueue()
        var answers: [UInt64: Answer] = [:]
        var nextWaiter: UInt64 = 1
        /// Set by `enable`; nil while sluice runs without a config file.
        var enabled = false
        /// The batch the reload thread takes next.
        var next: ReloadQueue.Batch?
    }

    private let state = Locked(State())
    private let work = ThreadSemaphore()

    public init() {}

    /// Starts the reload thread, which calls `perform` for each reload. Called once, by a process that has a
    /// config file to re-read; until then every request is `unavailable`.
    /// - Throws: `SystemError` when the thread cannot be started.
    public func enable(_ perform: @escaping Perform) throws(SystemError) {
        try LoopThread.spawn(name: "sluice-reload") { [self] in run(perform) }
        state.withLock { $0.enabled = true }
    }

    /// Asks for a reload (any thread). Returns at once; `answer`, when given and the request is accepted, is
    /// called when the reload that serves it has finished.
    public func request(_ trigger: ReloadTrigger, answer: Answer? = nil) -> Admission {
        let result = state.withLock { state -> (Admission, ReloadQueue.Admission?) in
            guard state.enabled else { return (.unavailable, nil) }
            var waiter: UInt64?
            if let answer {
                let id = state.nextWaiter
                state.nextWaiter += 1
                state.answers[id] = answer
                waiter = id
            }
            let admission = state.queue.request(trigger, waiter: waiter)
            switch admission {
            case .start(let batch): state.next = batch
            case .queued: break
            case .refused:
                if let waiter { state.answers[waiter] = nil }
                return (.draining, admission)
            }
            return (.accepted, admission)
        }
        switch result.1 {
        case .start?:
            work.post()
        case .queued(let behind, let queued)?:
            // Not folded into the running reload: it may have read the file before the edit this request is about.
            OpLog.info("reload requested while one runs; it runs next, once that one ends",
                       ["trigger": .string(trigger.rawValue), "running_reload": .int(behind), "queued_requests": .int(queued)])
        case .refused?, nil:
            break
        }
        return result.0
    }

    /// Refuses every later request and drops the queued ones (their answers get nil); a reload under way
    /// finishes. Called when draining begins: nothing is reloaded into loops that are closing.
    public func close() {
        let dropped = state.withLock { state -> [Answer] in
            state.queue.close().compactMap { state.answers.removeValue(forKey: $0) }
        }
        dropped.forEach { $0(nil) }
    }

    /// The body of `GET /reload-status` (`ReloadQueue.statusJSON`).
    public var statusJSON: String {
        state.withLock { $0.queue.statusJSON(reloadable: $0.enabled, pid: Syscall.processID()) }
    }

    /// The reload thread: sleeps until a batch is handed over, runs it and, while requests queued meanwhile,
    /// the next one.
    private func run(_ perform: Perform) {
        while true {
            work.wait()
            var batch = state.withLock { state -> ReloadQueue.Batch? in
                defer { state.next = nil }
                return state.next
            }
            while let current = batch {
                let began = Syscall.monotonicMilliseconds()
                let attempt = perform(current)
                let duration = Int(Syscall.monotonicMilliseconds() - began)
                let finished = state.withLock { state -> (ReloadOutcome, [Answer], ReloadQueue.Batch?)? in
                    guard let (outcome, waiters, next) = state.queue.finished(attempt, time: OpLog.timestamp(),
                                                                                durationMilliseconds: duration)
                    else { return nil }
                    return (outcome, waiters.compactMap { state.answers.removeValue(forKey: $0) }, next)
                }
                guard let (outcome, answers, next) = finished else { break }
                answers.forEach { $0(outcome) }
                batch = next
            }
        }
    }
}
