/// The arithmetic of one token bucket, exact in integers: GCRA (the generic cell rate
/// algorithm of ATM, RFC 2381 / ITU-T I.371) with the theoretical arrival time kept as a
/// rational number of nanoseconds.
///
/// A bucket refills `count` units per `periodNanoseconds` up to `capacity`. Instead of a level
/// and a last-refill time, its state is the time at which it will be full again (the TAT):
/// taking `n` units pushes that time `n × period / count` later. The "debt" at `now`,
///
///     D = (TAT − now) × count        (in units of ns × count; D ≤ 0 means full)
///
/// is an integer because the TAT's fractional nanoseconds are stored as a numerator over
/// `count` (``RateBucketState/fraction``). So `10/s` refills one unit every 100 ms exactly and
/// `3/s` every 333 333 333⅓ ns, with no floating-point drift however long it runs. Products like
/// `capacity × period` exceed 64 bits (a trillion tokens per hour is 3.6 × 10²⁴), so the
/// arithmetic is done in `Int128`; the stored state stays two `Int64`s.
///
/// In those units one unit costs `P = periodNanoseconds` and the bucket holds `C × P`:
/// - level (units available) = `C − max(D, 0) / P`;
/// - a request may take one unit when `max(D, 0) ≤ (C − 1) × P` (level ≥ 1);
/// - a tokens budget admits while `D < C × P` (balance > 0; it may go negative when usage is
///   charged after the fact, which is debt: `D > C × P`).
///
/// Clocks: `now` is any monotonic nanosecond count, identical across threads. The limiter never
/// passes a reading older than one it already used on the same state (callers read the clock,
/// then wait for the lock), so a debt here never includes time that has not passed.
struct RateBucket: Sendable, Equatable {
    /// Units added per period.
    let count: Int64
    /// The period in nanoseconds.
    let periodNanoseconds: Int64
    /// Most units held at once (the burst).
    let capacity: Int64
    /// `P`: the cost of one unit in ns × count.
    let unit: Int128
    /// `C × P`: the debt at which the bucket is empty.
    let full: Int128
    /// Largest debt kept: 2⁶² ns (146 years) of refill. Beyond it, charges are dropped, so the
    /// TAT always fits in an `Int64`.
    let maximumDebt: Int128

    /// A bucket of `count` per `periodNanoseconds` holding at most `capacity`; all three ≥ 1.
    init(count: Int64, periodNanoseconds: Int64, capacity: Int64) {
        precondition(count >= 1 && periodNanoseconds >= 1 && capacity >= 1, "rate parameters must be positive")
        self.count = count
        self.periodNanoseconds = periodNanoseconds
        self.capacity = capacity
        unit = Int128(periodNanoseconds)
        full = Int128(capacity) * Int128(periodNanoseconds)
        maximumDebt = Int128(count) << 62
    }

    /// The bucket for a configured rate.
    init(_ rate: RateLimitRate) {
        let (period, overflow) = rate.periodMilliseconds.multipliedReportingOverflow(by: 1_000_000)
        precondition(!overflow, "rate period too long")
        self.init(count: rate.count, periodNanoseconds: period, capacity: rate.burst)
    }

    /// The debt `D` of `state` at `now` (negative when the bucket has been full for a while).
    @inline(__always)
    func debt(_ state: RateBucketState, now: Int64) -> Int128 {
        (Int128(state.tat) - Int128(now)) * Int128(count) + Int128(state.fraction)
    }

    /// The state whose debt at `now` is `debt`, clamped to 0 (full: older credit is worth
    /// nothing) and ``maximumDebt``.
    @inline(__always)
    func state(debt: Int128, now: Int64) -> RateBucketState {
        let clamped = min(max(debt, 0), maximumDebt)
        let whole = clamped / Int128(count)  // ≤ 2^62, fits
        let (tat, overflow) = now.addingReportingOverflow(Int64(whole))
        return RateBucketState(tat: overflow ? .max : tat, fraction: Int64(clamped % Int128(count)))
    }

    /// Whether one unit may be taken at this debt (level ≥ 1).
    @inline(__always)
    func canTakeOne(debt: Int128) -> Bool {
        max(debt, 0) <= full - unit
    }

    /// Whether the balance is positive at this debt (the tokens admission test).
    @inline(__always)
    func hasPositiveBalance(debt: Int128) -> Bool {
        debt < full
    }

    /// The debt after taking `units` (≥ 0).
    @inline(__always)
    func taking(_ units: Int64, debt: Int128) -> Int128 {
        max(debt, 0) + Int128(units) * unit
    }

    /// Whole units available now, 0 when empty or in debt.
    func remaining(debt: Int128) -> Int64 {
        let level = full - max(debt, 0)
        return level <= 0 ? 0 : Int64(level / unit)
    }

    /// Nanoseconds until the bucket is full again (0 when it is).
    func nanosecondsUntilFull(debt: Int128) -> Int64 {
        Self.clamp(Self.ceilingDivide(max(debt, 0), Int128(count)))
    }

    /// Nanoseconds until one unit may be taken (0 when it may now).
    func nanosecondsUntilOne(debt: Int128) -> Int64 {
        let excess = max(debt, 0) - (full - unit)
        return excess <= 0 ? 0 : Self.clamp(Self.ceilingDivide(excess, Int128(count)))
    }

    /// Nanoseconds until the balance is positive (0 when it is): the first instant at which
    /// `D < C × P`, one nanosecond past the instant the balance reaches exactly zero.
    func nanosecondsUntilPositive(debt: Int128) -> Int64 {
        let excess = debt - full
        return excess < 0 ? 0 : Self.clamp(excess / Int128(count) + 1)
    }

    /// Seconds for which a full-to-empty drain refills: the IETF `w` (time window) that, with
    /// quota `capacity`, describes both the burst and the sustained rate. At least 1.
    var windowSeconds: Int64 {
        max(1, Self.clamp(Self.ceilingDivide(full, Int128(count) * 1_000_000_000)))
    }

    /// Whether `state` is full at `now` (its TAT is not in the future).
    @inline(__always)
    static func isFull(_ state: RateBucketState, now: Int64) -> Bool {
        state.tat < now || (state.tat == now && state.fraction == 0)
    }

    /// ⌈a / b⌉ for a ≥ 0, b > 0.
    @inline(__always)
    static func ceilingDivide(_ a: Int128, _ b: Int128) -> Int128 {
        (a + b - 1) / b
    }

    /// `value` saturated to `Int64`.
    @inline(__always)
    static func clamp(_ value: Int128) -> Int64 {
        value > Int128(Int64.max) ? .max : (value < Int128(Int64.min) ? .min : Int64(value))
    }

    /// Whole seconds for a wait of `nanoseconds`, rounded up; 0 only for no wait.
    static func seconds(ceilingOf nanoseconds: Int64) -> Int64 {
        nanoseconds <= 0 ? 0 : Int64(ceilingDivide(Int128(nanoseconds), 1_000_000_000))
    }
}

/// The stored state of one bucket: its theoretical arrival time `tat + fraction / count` ns.
struct RateBucketState: Sendable, Equatable {
    /// Whole nanoseconds of the TAT.
    var tat: Int64
    /// Fractional part of the TAT, as a numerator over the bucket's count, `0..<count`.
    var fraction: Int64

    /// A full bucket as of `now`.
    @inline(__always)
    static func full(at now: Int64) -> RateBucketState {
        RateBucketState(tat: now, fraction: 0)
    }
}
