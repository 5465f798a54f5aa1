/// One of the timing histograms without labels. TTFT, labelled by route and model, is in ``ModelSeriesLayout``.
public enum LatencyMetric: Int, Sendable, CaseIterable {
    /// Request forwarded → response head received.
    case ttfb
    /// Request forwarded → first SSE `data:` event, whatever it carried.
    case ttfe
    /// Whole exchange, accept of the request to its last byte or its end.
    case duration
    /// Between two consecutive SSE events of one response.
    case eventGap

    /// Upper bounds of the buckets in microseconds, ascending; `+Inf` is implicit.
    public var bucketBounds: [Int] {
        switch self {
        case .ttfb, .ttfe, .duration:
            Self.requestLatencyBounds
        case .eventGap:
            // Token streams emit every few to tens of milliseconds; long gaps are stalls.
            [1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
             1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000]
        }
    }

    /// The buckets of the request latencies (TTFB, TTFE, TTFT, duration), in microseconds: from a local origin's
    /// few milliseconds to a reasoning model's ten minutes; roughly 1-2.5-5 per decade, which keeps the quantile
    /// error small where LLM latencies sit.
    static let requestLatencyBounds = [5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
                                       1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
                                       60_000_000, 120_000_000, 300_000_000, 600_000_000]

    var metricName: String {
        switch self {
        case .ttfb: "sluice_ttfb_seconds"
        case .ttfe: "sluice_ttfe_seconds"
        case .duration: "sluice_duration_seconds"
        case .eventGap: "sluice_event_gap_seconds"
        }
    }

    var help: String {
        switch self {
        case .ttfb: "Time from forwarding the request to receiving the upstream's response head."
        case .ttfe: "Time from forwarding the request to the first SSE data event."
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
    static let idleEvictions = 10
    /// `sluice_generated_responses_total` by source: client, upstream, internal (`ProxyError.Source`).
    static let generatedClient = 11
    static let generatedUpstream = 12
    static let generatedInternal = 13
    /// WebSocket tunnels: open now, and bytes relayed each way.
    static let activeTunnels = 14
    static let tunnelBytesToUpstream = 15
    static let tunnelBytesToClient = 16
    static let scalarCount = 17

    let routeCount: Int
    let ruleCount: Int
    /// First cell of requests by (route, class); route `routeCount` is "no route matched".
    let requests: Int
    let exchanges: Int
    /// First cell of `sluice_tunnel_ends_total`, by `CompletionRecord.End` ordinal.
    let tunnelEnds: Int
    let rateLimitRejections: Int
    /// First cell of each histogram: its buckets (the last one `+Inf`), then the sum in µs.
    let histograms: [Int]
    /// First cell of the per-model series: ``ModelSeriesTable/capacity`` named ones, then the `other` series of
    /// each route slot and of "no route", ``ModelSeriesLayout/cellCount`` cells each.
    let modelSeries: Int
    let cellCount: Int

    init(routeCount: Int, ruleCount: Int) {
        self.routeCount = routeCount
        self.ruleCount = ruleCount
        var next = Self.scalarCount
        requests = next
        next += (routeCount + 1) * Self.statusClasses.count
        exchanges = next
        next += CompletionRecord.End.allCases.count
        tunnelEnds = next
        next += CompletionRecord.End.allCases.count
        rateLimitRejections = next
        next += ruleCount
        var histograms: [Int] = []
        for metric in LatencyMetric.allCases {
            histograms.append(next)
            next += metric.bucketBounds.count + 2
        }
        self.histograms = histograms
        modelSeries = next
        next += (ModelSeriesTable.capacity + routeCount + 1) * ModelSeriesLayout.cellCount
        cellCount = next
    }

    /// The first cell of per-model series `series` (``ModelSeriesTable/series(route:model:)``).
    @inline(__always)
    func modelSeriesCell(_ series: Int) -> Int {
        modelSeries + series * ModelSeriesLayout.cellCount
    }

    /// The route slot for the model table: `route` when it is a slot, else `routeCount` ("no route").
    @inline(__always)
    func routeSlot(_ route: Int?) -> Int {
        route.map { $0 >= 0 && $0 < routeCount ? $0 : routeCount } ?? routeCount
    }

    func requestCell(route: Int?, classIndex: Int) -> Int {
        requests + routeSlot(route) * Self.statusClasses.count + classIndex
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
    /// The `(route, model)` labels, shared by all loops (``MetricsRegistry``).
    let modelSeries: ModelSeriesTable
    /// Every histogram's bucket bounds, one after the other (one flat array: no nested array
    /// to retain on the per-event path); the TTFT bounds last.
    private let bounds: [Int]
    /// Per histogram: where its bounds start in `bounds`, how many there are, its first cell.
    private let histogramPlaces: [(boundsStart: Int, boundsCount: Int, firstCell: Int)]
    /// Where the TTFT bounds start in `bounds`.
    private let ttftBoundsStart: Int

    init(layout: MetricsLayout, modelSeries: ModelSeriesTable) {
        self.layout = layout
        self.modelSeries = modelSeries
        cells = MetricCells(count: layout.cellCount)
        var bounds: [Int] = []
        var places: [(Int, Int, Int)] = []
        for metric in LatencyMetric.allCases {
            places.append((bounds.count, metric.bucketBounds.count, layout.histograms[metric.rawValue]))
            bounds += metric.bucketBounds
        }
        ttftBoundsStart = bounds.count
        bounds += ModelSeriesLayout.ttftBounds
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

    /// A response sluice generated instead of forwarding one, by whose fault it is.
    func countGeneratedResponse(_ source: ProxyError.Source) {
        switch source {
        case .client: cells.add(MetricsLayout.generatedClient, 1)
        case .upstream: cells.add(MetricsLayout.generatedUpstream, 1)
        case .internal: cells.add(MetricsLayout.generatedInternal, 1)
        }
    }

    // MARK: Gauges (owning loop only; pass +1/-1 or a byte delta)

    @inline(__always)
    public func addActiveConnections(_ delta: Int) { cells.add(MetricsLayout.activeConnections, delta) }
    /// Open client connections of this loop (any thread).
    public var activeConnections: Int { cells.load(MetricsLayout.activeConnections) }
    @inline(__always)
    public func addActiveStreams(_ delta: Int) { cells.add(MetricsLayout.activeStreams, delta) }

    /// WebSocket tunnels opened (+1) or ended (-1).
    func addActiveTunnels(_ delta: Int) { cells.add(MetricsLayout.activeTunnels, delta) }

    /// Tunnel bytes written to the upstream (`toUpstream`) or to the client.
    func addTunnelBytes(_ count: Int, toUpstream: Bool) {
        cells.add(toUpstream ? MetricsLayout.tunnelBytesToUpstream : MetricsLayout.tunnelBytesToClient, count)
    }

    /// A tunnel ended, as its record's `end` says.
    func countTunnelEnd(_ end: CompletionRecord.End) { cells.add(layout.tunnelEnds + end.ordinal, 1) }
    /// Bytes queued in the loop's buffers waiting for a slow peer.
    @inline(__always)
    public func addQueuedBytes(_ delta: Int) { cells.add(MetricsLayout.queuedBytes, delta) }

    // MARK: Histograms (owning loop only)

    /// Adds one observation, in milliseconds, to `metric`'s histogram. Negative or NaN values
    /// (a clock bug) count as 0.
    @inline(__always)
    public func observe(_ metric: LatencyMetric, milliseconds: Double) {
        observe(metric, microseconds: Self.microseconds(milliseconds))
    }

    /// Adds one observation in microseconds (negative: counted as 0).
    public func observe(_ metric: LatencyMetric, microseconds: Int) {
        let place = histogramPlaces[metric.rawValue]
        observe(microseconds, boundsStart: place.boundsStart, boundsCount: place.boundsCount, firstCell: place.firstCell)
    }

    @inline(__always)
    private func observe(_ microseconds: Int, boundsStart: Int, boundsCount: Int, firstCell: Int) {
        let microseconds = max(0, microseconds)
        // A linear scan: 16 well-predicted compares beat a binary search's mispredictions.
        var bucket = 0
        while bucket < boundsCount && microseconds > bounds[boundsStart + bucket] { bucket += 1 }
        cells.add(firstCell + bucket, 1) // bucket == boundsCount is +Inf
        cells.add(firstCell + boundsCount + 1, microseconds)
    }

    /// Counts a finished exchange from its record: requests by route and status class, exchanges
    /// by end, the TTFB, TTFE and duration histograms (those reached), and, by route and model, the
    /// TTFT histogram and the reported tokens. The inter-event gap histogram is fed per event by the
    /// stream tap instead.
    ///
    /// Once per exchange, at its end: the model's series is looked up under the table's lock only when
    /// there is a TTFT or usage to count.
    public func countCompletion(_ record: borrowing CompletionRecord, route: Int?) {
        countRequest(route: route, status: record.status)
        countExchange(record.end)
        if let ttfb = record.ttfbMilliseconds { observe(.ttfb, milliseconds: ttfb) }
        if let ttfe = record.ttfeMilliseconds { observe(.ttfe, milliseconds: ttfe) }
        observe(.duration, milliseconds: record.durationMilliseconds)
        guard record.ttftMilliseconds != nil || record.usage != nil else { return }
        let series = modelSeries.series(route: layout.routeSlot(route), model: record.model)
        countModel(series: series, ttftMicroseconds: record.ttftMilliseconds.map(Self.microseconds),
                   usage: record.usage)
    }

    /// Adds an exchange's TTFT and reported tokens to per-model series `series`.
    func countModel(series: Int, ttftMicroseconds: Int?, usage: TokenUsage?) {
        let first = layout.modelSeriesCell(series)
        if let usage {
            // Clamped: a backend's nonsense (a negative or absurd count) must not move a counter backwards or wrap it.
            cells.add(first + ModelSeriesLayout.promptTokens, Int(min(max(0, usage.promptTokens), Self.maxTokensPerExchange)))
            cells.add(first + ModelSeriesLayout.completionTokens, Int(min(max(0, usage.completionTokens), Self.maxTokensPerExchange)))
        }
        if let ttftMicroseconds {
            observe(ttftMicroseconds, boundsStart: ttftBoundsStart, boundsCount: ModelSeriesLayout.ttftBounds.count,
                    firstCell: first + ModelSeriesLayout.ttftBuckets)
        }
    }

    /// The most tokens one exchange adds to a counter (2^40, far beyond any context window): at most 2^23 such
    /// exchanges before a counter could wrap, instead of one.
    static let maxTokensPerExchange: Int64 = 1 << 40

    /// Milliseconds (a record's time) as whole microseconds; negative or NaN (a clock bug) as 0.
    static func microseconds(_ milliseconds: Double) -> Int {
        milliseconds > 0 ? Int(min(milliseconds * 1000, 9.0e15).rounded()) : 0
    }
}
