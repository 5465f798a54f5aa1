/// Whether a server takes new streams, decided from what traffic and probes saw of it (a value: the pool holds
/// one per server under a lock, and tests drive it through tables). Times are loop-clock milliseconds.
///
/// - Passive: `maxFails` failures (a connect error, a reset before the response head, a 5xx or 429) within
///   `failWindow` eject the server for `ejectTime`, doubled for every ejection that follows without a success
///   in between, up to `maxEjectTime` (Envoy's outlier detection, nginx's max_fails/fail_timeout).
/// - Active: a failed probe takes the server out until a probe passes; a passing probe also ends a passive
///   ejection, so a backend that came back is used again without waiting for traffic to find it.
struct PassiveHealth: Equatable {
    let config: PassiveHealthConfig
    /// Failures in the current window, and when the window began.
    private(set) var recentFailures = 0
    private(set) var windowStart: Int64 = 0
    /// Ejections since the last success: the next one lasts `ejectTime × 2^ejections`.
    private(set) var ejections = 0
    /// Until when the server is out (0: not ejected).
    private(set) var ejectedUntil: Int64 = 0
    /// The last probe failed.
    private(set) var probeFailing = false

    init(config: PassiveHealthConfig) {
        self.config = config
    }

    /// What changed, for the operator log and the metrics.
    enum Event: Equatable {
        case ejected(until: Int64, ejections: Int)
        case probeFailed
        case probePassed(endedEjection: Bool)
    }

    /// The server takes new streams at `now`.
    func available(now: Int64) -> Bool { !probeFailing && ejectedUntil <= now }

    /// When the server is next available: `Int64.max` while probes fail, 0 when it is.
    var unavailableUntil: Int64 { probeFailing ? .max : ejectedUntil }

    /// Traffic saw the server fail at `now`.
    mutating func failed(now: Int64) -> Event? {
        guard config.maxFails > 0 else { return nil }
        if now - windowStart >= Int64(config.failWindow) || recentFailures == 0 {
            windowStart = now
            recentFailures = 0
        }
        recentFailures += 1
        guard recentFailures >= config.maxFails, ejectedUntil <= now else { return nil }
        let shift = min(ejections, 20)
        let length = min(Int64(config.ejectTime) << shift, Int64(config.maxEjectTime))
        ejections += 1
        ejectedUntil = now + max(length, 1)
        recentFailures = 0
        return .ejected(until: ejectedUntil, ejections: ejections)
    }

    /// Traffic saw the server answer well at `now` (a response head that is not a failure).
    mutating func succeeded(now: Int64) {
        guard ejectedUntil <= now else { return }  // a stream that began before the ejection says nothing new
        recentFailures = 0
        ejections = 0
        ejectedUntil = 0  // over already; cleared so the server is clean again and `succeeded` stops taking the lock
    }

    /// A probe finished at `now`.
    mutating func probed(passed: Bool, now: Int64) -> Event? {
        if passed {
            let wasOut = probeFailing || ejectedUntil > now
            probeFailing = false
            ejectedUntil = 0
            recentFailures = 0
            return wasOut ? .probePassed(endedEjection: true) : nil
        }
        defer { probeFailing = true }
        return probeFailing ? nil : .probeFailed
    }

    /// The upstream no longer has a `health_check` (a reload removed it): a failing probe no longer keeps the server out.
    mutating func probesStopped() {
        probeFailing = false
    }

    /// Whether anything beyond the good-standing state is recorded: `succeeded` need not take the lock otherwise.
    var isClean: Bool { recentFailures == 0 && ejections == 0 && ejectedUntil == 0 && !probeFailing }
}
