/// One of the five timing histograms.
public enum LatencyMetric: Int, Sendable, CaseIterable {
    /// Request forwarded → response head received.
    case ttfb
    /// Request forwarded → first SSE `data:` event, whatever it carried.
    case ttfe
    /// Request forwarded → first output: the first content-bearing SSE event, or a non-SSE body's first byte.
    case ttft
    /// Whole exchange, accept of the request to its last byte or its end.
    case duration
    /// Between two consecutive SSE events of one response.
    case eventGap

    /// Upper bounds of the buckets in microseconds, ascending; `+Inf` is implicit.
    public var bucketBounds: [Int] {
        switch self {
        case .ttfb, .ttfe, .ttft, .duration:
            // From a local origin's few milliseconds to a reasoning model's ten minutes; roughly
            // 1-2.5-5 per decade, which keeps the quantile error small where LLM latencies sit.
            [5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
             1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
             60_000_000, 120_000_000, 300_000_000, 600_000_000]
        case .eventGap:
            // Token streams emit every few to tens of milliseconds; long gaps are stalls.
            [1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
             1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000]
        }
    }

    var metricName: String {
        switch self {
        case .ttfb: "sluice_ttfb_seconds"
        case .ttfe: "sluice_ttfe_seconds"
        case .ttft: "sluice_ttft_seconds"
        case .duration: "sluice_duration_seconds"
        case .eventGap: "sluice_event_gap_seconds"
        }
    }

    var help: String {
        switch self {
        case .ttfb: "Time from forwarding the request to receiving the upstream's response head."
        case .ttfe: "Time from forwarding the request to the first SSE data event."
        case .ttft: "Time from forwarding the request to the first output: a content-bearing SSE event or a body's first byte."
        case .duration: "Duration of exchanges, from the request to the end of the response."
        case .eventGap: "Time between consecutive SSE events of a response."
        }
    }
}

/// Where each counter lives in a loop's ``MetricCells``; the same for every loop, so a scrape can
/// sum the loops cell by cell.
struct MetricsLayout: Sendable {
    /// Status classes of `sluice_requests_total`: 1xx to 5xx, then `none` (no status sent).
    static let statusClasses = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"]

    // Scalars, at fixed indices.
    static let clientBytesReceived = 0
    static let clientBytesSent = 1
    static let upstreamBytesReceived = 2
    static let upstreamBytesSent = 3
    static let backpressurePauses = 4
    static let activeConnections = 5
    static let activeStreams = 6
    static let queuedBytes = 7
    static let overloadRefusals = 8
    static let upstreamReplays = 9
    static let upstreamConnectRetries = 10
    static let idleEvictions = 11
    static let scalarCount = 12

    let routeCount: Int
    let ruleCount: Int
    /// First cell of requests by (route, class); route `routeCount` is "no route matched".
    let requests: Int
    let exchanges: Int
    let rateLimitRejections: Int
    /// First cell of each histogram: its buckets (the last one `+Inf`), then the sum in µs.
    let histograms: [Int]
    let cellCount: Int

    init(routeCount: Int, ruleCount: Int) {
        self.routeCount = routeCount
        self.ruleCount = ruleCount
        var next = Self.scalarCount
        requests = next
        next += (routeCount + 1) * Self.statusClasses.count
        exchanges = next
        next += CompletionRecord.End.allCases.count
        rateLimitRejections = next
        next += ruleCount
        var histograms: [Int] = []
        for metric in LatencyMetric.allCases {
            histograms.append(next)
            next += metric.bucketBounds.count + 2
        }
        self.histograms = histograms
        cellCount = next
    }

    func requestCell(route: Int?, classIndex: Int) -> Int {
        let routeIndex = route.map { $0 >= 0 && $0 < routeCount ? $0 : routeCount } ?? routeCount
        return requests + routeIndex * Self.statusClasses.count + classIndex
    }

    /// 0-4 for 1xx-5xx, 5 for no status (0) or anything outside 100-599.
    @inline(__always)
    static func statusClassIndex(_ status: Int) -> Int {
        status >= 100 && status <= 599 ? status / 100 - 1 : 5
    }
}

/// The counters, gauges and histograms of one loop.
///
/// Every mutating method belongs to the owning loop's thread: each cell has a single writer, which
/// is what makes the lock-free, read-modify-write-free updates of ``MetricCells`` correct. A scrape
/// reads from any thread through ``MetricsRegistry/render()``. No method allocates or blocks.
public final class LoopMetrics: Sendable {
    let layout: MetricsLayout
    let cells: MetricCells
    /// Every histogram's bucket bounds, one after the other (one flat array: no nested array
    /// to retain on the per-event path).
    private let bounds: [Int]
    /// Per histogram: where its bounds start in `bounds`, how many there are, its first cell.
    private let histogramPlaces: [(boundsStart: Int, boundsCount: Int, firstCell: Int)]

    init(layout: MetricsLayout) {
        self.layout = layout
        cells = MetricCells(count: layout.cellCount)
        var bounds: [Int] = []
        var places: [(Int, Int, Int)] = []
        for metric in LatencyMetric.allCases {
            places.append((bounds.count, metric.bucketBounds.count, layout.histograms[metric.rawValue]))
            bounds += metric.bucketBounds
        }
        self.bounds = bounds
        histogramPlaces = places
    }

    // MARK: Counters (owning loop only)

    /// Counts a finished exchange under its route and the class of the status sent (`status` 0:
    /// none). `route` is the index in ``MetricsRegistry/routes``; nil when no route matched.
    @inline(__always)
    public func countRequest(route: Int?, status: Int) {
        cells.add(layout.requestCell(route: route, classIndex: MetricsLayout.statusClassIndex(status)), 1)
    }

    /// Counts an exchange by how it ended.
    @inline(__always)
    public func countExchange(_ end: CompletionRecord.End) {
        cells.add(layout.exchanges + end.ordinal, 1)
    }

    /// Bytes read from clients.
    @inline(__always)
    public func addClientBytesReceived(_ count: Int) { cells.add(MetricsLayout.clientBytesReceived, count) }
    /// Bytes written to clients.
    @inline(__always)
    public func addClientBytesSent(_ count: Int) { cells.add(MetricsLayout.clientBytesSent, count) }
    /// Bytes read from upstreams.
    @inline(__always)
    public func addUpstreamBytesReceived(_ count: Int) { cells.add(MetricsLayout.upstreamBytesReceived, count) }
    /// Bytes written to upstreams.
    @inline(__always)
    public func addUpstreamBytesSent(_ count: Int) { cells.add(MetricsLayout.upstreamBytesSent, count) }

    /// Counts a request rejected by rate-limit rule `rule` (index in ``MetricsRegistry/rateLimitRules``).
    @inline(__always)
    public func countRateLimitRejection(rule: Int) {
        guard rule >= 0 && rule < layout.ruleCount else { return }
        cells.add(layout.rateLimitRejections + rule, 1)
    }

    /// Counts one pause of upstream reads because the client's queue reached its high watermark.
    @inline(__always)
    public func countBackpressurePause() { cells.add(MetricsLayout.backpressurePauses, 1) }

    /// Counts a connection answered 503 because `max_connections` were open.
    public func countOverloadRefusal() { cells.add(MetricsLayout.overloadRefusals, 1) }

    /// Counts an idle client connection closed to make room for a new one at `max_connections`.
    public func countIdleEviction() { cells.add(MetricsLayout.idleEvictions, 1) }

    /// Counts a request sent again on a fresh connection because the pooled one it met had been closed.
    public func countUpstreamReplay() { cells.add(MetricsLayout.upstreamReplays, 1) }

    /// Counts a connect that failed or timed out and moved on to the upstream's next address.
    public func countUpstreamConnectRetry() { cells.add(MetricsLayout.upstreamConnectRetries, 1) }

    // MARK: Gauges (owning loop only; pass +1/-1 or a byte delta)

    @inline(__always)
    public func addActiveConnections(_ delta: Int) { cells.add(MetricsLayout.activeConnections, delta) }
    /// Open client connections of this loop (any thread).
    public var activeConnections: Int { cells.load(MetricsLayout.activeConnections) }
    @inline(__always)
    public func addActiveStreams(_ delta: Int) { cells.add(MetricsLayout.activeStreams, delta) }
    /// Bytes queued in the loop's buffers waiting for a slow peer.
    @inline(__always)
    public func addQueuedBytes(_ delta: Int) { cells.add(MetricsLayout.queuedBytes, delta) }

    // MARK: Histograms (owning loop only)

    /// Adds one observation, in milliseconds, to `metric`'s histogram. Negative or NaN values
    /// (a clock bug) count as 0.
    @inline(__always)
    public func observe(_ metric: LatencyMetric, milliseconds: Double) {
        let microseconds = milliseconds > 0 ? Int(min(milliseconds * 1000, 9.0e15).rounded()) : 0
        observe(metric, microseconds: microseconds)
    }

    /// Adds one observation in microseconds.
    public func observe(_ metric: LatencyMetric, microseconds: Int) {
        let place = histogramPlaces[metric.rawValue]
        // A linear scan: 16 well-predicted compares beat a binary search's mispredictions.
        var bucket = 0
        while bucket < place.boundsCount && microseconds > bounds[place.boundsStart + bucket] { bucket += 1 }
        cells.add(place.firstCell + bucket, 1) // bucket == boundsCount is +Inf
        cells.add(place.firstCell + place.boundsCount + 1, max(0, microseconds))
    }

    /// Counts a finished exchange from its record: requests by route and status class, exchanges
    /// by end, and the TTFB, TTFE, TTFT and duration histograms (those reached). The inter-event gap
    /// histogram is fed per event by the stream tap instead.
    public func countCompletion(_ record: borrowing CompletionRecord, route: Int?) {
        countRequest(route: route, status: record.status)
        countExchange(record.end)
        if let ttfb = record.ttfbMilliseconds { observe(.ttfb, milliseconds: ttfb) }
        if let ttfe = record.ttfeMilliseconds { observe(.ttfe, milliseconds: ttfe) }
        if let ttft = record.ttftMilliseconds { observe(.ttft, milliseconds: ttft) }
        observe(.duration, milliseconds: record.durationMilliseconds)
    }
}
