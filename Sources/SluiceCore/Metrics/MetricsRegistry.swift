/// All loops' metrics and what is needed to name them; renders `GET /metrics`.
///
/// Created at start-up, before the loops; each loop takes its ``LoopMetrics`` with
/// ``loop(_:)`` and is the only writer of it. ``render()`` runs on the admin listener's
/// thread, sums the loops cell by cell and never blocks them.
///
/// Routes and rate-limit rules are counted in slots named by prefix and rule name. A reload
/// keeps the slots of names it keeps (their counters go on) and gives new names free slots;
/// a slot, once named, keeps its name, so no counter ever goes backwards under one label.
public final class MetricsRegistry: Sendable {
    /// The `Content-Type` of a `/metrics` response.
    public static let contentType = PrometheusText.contentType

    /// One per loop, indexed by worker.
    public let loops: [LoopMetrics]
    /// Source of `sluice_log_records_{written,dropped}_total`; nil when the completion log is off.
    public let logQueue: CompletionQueue?
    private let layout: MetricsLayout
    private let names: Locked<Names>
    /// The `(route, model)` labels of the TTFT histogram and the token counters, shared by the loops.
    let modelSeries = ModelSeriesTable()
    /// The upstream pools of the settings in force (``watch(_:)``), whose series are read at each scrape.
    let upstreamPools = Locked<[UpstreamPool]>([])

    /// The labels of the slots and the live rate limiter (replaced by a reload that changes the rules).
    private struct Names {
        var routes: [String] = []
        var rules: [String] = []
        /// Slots of the rules the current limiter applies, by its rule index.
        var currentRuleSlots: [Int] = []
        var rateLimiter: RateLimiter?
    }

    /// - Parameters:
    ///   - routes, rateLimitRules: the starting names, given slots 0, 1, ... in order.
    ///   - routeCapacity, ruleCapacity: slots for all names ever used (reloads included); at least the
    ///     starting counts. A name beyond them is counted as no route / not at all.
    public init(workers: Int, routes: [String], rateLimitRules: [String], logQueue: CompletionQueue?,
                rateLimiter: RateLimiter? = nil, routeCapacity: Int? = nil, ruleCapacity: Int? = nil) {
        precondition(workers > 0)
        let layout = MetricsLayout(routeCount: max(routeCapacity ?? 0, routes.count),
                                   ruleCount: max(ruleCapacity ?? 0, rateLimitRules.count))
        self.layout = layout
        let modelSeries = modelSeries
        loops = (0..<workers).map { _ in LoopMetrics(layout: layout, modelSeries: modelSeries) }
        self.logQueue = logQueue
        names = Locked(Names())
        _ = routeSlots(for: routes)
        _ = useRateLimiter(rateLimiter, rules: rateLimitRules)
    }

    /// Route prefixes by slot.
    public var routes: [String] { names.withLock { $0.routes } }
    /// Rule names by slot.
    public var rateLimitRules: [String] { names.withLock { $0.rules } }

    /// The slot of each prefix, naming free slots for new ones (nil when none is left). Any thread.
    public func routeSlots(for prefixes: [String]) -> [Int?] {
        names.withLock { names in prefixes.map { Self.slot(for: $0, in: &names.routes, capacity: layout.routeCount) } }
    }

    /// Makes `limiter` (applying `rules`, by name, in its rule order) the source of the allowed and untracked
    /// counters, and returns the slot of each rule for rejection counts. Any thread.
    public func useRateLimiter(_ limiter: RateLimiter?, rules: [String]) -> [Int?] {
        names.withLock { names in
            let slots = rules.map { Self.slot(for: $0, in: &names.rules, capacity: layout.ruleCount) }
            names.rateLimiter = limiter
            names.currentRuleSlots = slots.map { $0 ?? -1 }
            return slots
        }
    }

    private static func slot(for name: String, in labels: inout [String], capacity: Int) -> Int? {
        if let existing = labels.firstIndex(of: name) { return existing }
        guard labels.count < capacity else { return nil }
        labels.append(name)
        return labels.count - 1
    }

    /// The metrics loop `worker` writes.
    public func loop(_ worker: Int) -> LoopMetrics { loops[worker] }

    /// The current values of every metric, summed over the loops, in the Prometheus text format
    /// (``contentType``). Any thread; allocates (a scrape is not on the data path).
    ///
    /// Every counter and histogram is written even when zero, for every route, status class,
    /// `end` and rule, so a rate over a series that appears later still starts from 0. The per-model
    /// series are the exception: a `(route, model)` pair appears once it has been counted (its labels
    /// are not known before), and a route's `other` once a model beyond the cap was counted there. The
    /// upstream pools' series are written for the servers and upstreams of the settings in force.
    ///
    /// - Parameters:
    ///   - process: the `process_*` values; read from procfs now unless given (tests give fixed ones).
    ///   - build: the labels of `sluice_build_info`.
    ///   - now: the loop clock's milliseconds, against which a server's ejection is read for `sluice_upstream_server_up`.
    public func render(process: ProcessStats = .current(),
                       build: (version: String, commit: String) = (BuildInfo.version, BuildInfo.commit),
                       now: Int64 = Syscall.monotonicMilliseconds()) -> String {
        let (routes, rateLimitRules, currentRuleSlots, rateLimiter) = names.withLock {
            ($0.routes, $0.rules, $0.currentRuleSlots, $0.rateLimiter)
        }
        let pools = upstreamPools.withLock { $0 }
        var totals = [Int](repeating: 0, count: layout.cellCount)
        for loop in loops {
            for index in 0..<layout.cellCount { totals[index] &+= loop.cells.load(index) }
        }
        var out = PrometheusText()

        out.family("sluice_requests_total", type: "counter",
                   help: "Finished requests by route prefix and class of the status sent (none: no response).")
        for route in Array(routes.indices) + [layout.routeCount] {
            let routeLabel = route < routes.count ? routes[route] : "none"
            for (classIndex, statusClass) in MetricsLayout.statusClasses.enumerated() {
                out.sample("sluice_requests_total", labels: ["route": routeLabel, "code_class": statusClass],
                           value: totals[layout.requestCell(route: route, classIndex: classIndex)])
            }
        }

        out.family("sluice_exchanges_total", type: "counter", help: "Finished exchanges by how they ended.")
        for end in CompletionRecord.End.allCases {
            out.sample("sluice_exchanges_total", labels: ["end": end.rawValue], value: totals[layout.exchanges + end.ordinal])
        }

        out.family("sluice_tunnels_active", type: "gauge", help: "WebSocket tunnels open now.")
        out.sample("sluice_tunnels_active", value: totals[MetricsLayout.activeTunnels])
        out.family("sluice_tunnel_bytes_total", type: "counter", help: "Bytes relayed through WebSocket tunnels after the 101, by direction.")
        out.sample("sluice_tunnel_bytes_total", labels: ["direction": "client_to_upstream"], value: totals[MetricsLayout.tunnelBytesToUpstream])
        out.sample("sluice_tunnel_bytes_total", labels: ["direction": "upstream_to_client"], value: totals[MetricsLayout.tunnelBytesToClient])
        out.family("sluice_tunnel_ends_total", type: "counter", help: "Finished WebSocket tunnels by how they ended.")
        for end in CompletionRecord.End.allCases where CompletionRecord.End.tunnelEnds.contains(end) {
            out.sample("sluice_tunnel_ends_total", labels: ["end": end.rawValue], value: totals[layout.tunnelEnds + end.ordinal])
        }

        let byteCounters: [(String, String, Int)] = [
            ("sluice_client_bytes_received_total", "Bytes read from clients.", MetricsLayout.clientBytesReceived),
            ("sluice_client_bytes_sent_total", "Bytes written to clients.", MetricsLayout.clientBytesSent),
            ("sluice_upstream_bytes_received_total", "Bytes read from upstreams.", MetricsLayout.upstreamBytesReceived),
            ("sluice_upstream_bytes_sent_total", "Bytes written to upstreams.", MetricsLayout.upstreamBytesSent),
        ]
        for (name, help, cell) in byteCounters {
            out.family(name, type: "counter", help: help)
            out.sample(name, value: totals[cell])
        }

        out.family("sluice_rate_limit_rejections_total", type: "counter", help: "Requests rejected by each rate-limit rule.")
        for (rule, name) in rateLimitRules.enumerated() {
            out.sample("sluice_rate_limit_rejections_total", labels: ["rule": name], value: totals[layout.rateLimitRejections + rule])
        }

        if let rateLimiter {
            out.family("sluice_rate_limit_allowed_total", type: "counter", help: "Requests admitted by each rate-limit rule.")
            for (rule, slot) in currentRuleSlots.enumerated() where slot >= 0 {
                out.sample("sluice_rate_limit_allowed_total", labels: ["rule": rateLimitRules[slot]],
                           value: rateLimiter.counters(rule: rule).allowed)
            }
            out.family("sluice_rate_limit_untracked_total", type: "counter",
                       help: "Requests admitted without tracking because the key table was full of busy keys (fail-open).")
            out.sample("sluice_rate_limit_untracked_total", value: rateLimiter.untrackedCount)
        }

        out.family("sluice_backpressure_pauses_total", type: "counter",
                   help: "Times reads from an upstream were paused because the client was slower.")
        out.sample("sluice_backpressure_pauses_total", value: totals[MetricsLayout.backpressurePauses])
        out.family("sluice_connections_refused_total", type: "counter",
                   help: "Client connections answered 503 because max_connections were open.")
        out.sample("sluice_connections_refused_total", value: totals[MetricsLayout.overloadRefusals])
        out.family("sluice_connections_evicted_total", type: "counter",
                   help: "Idle client connections closed to make room for a new one because max_connections were open.")
        out.sample("sluice_connections_evicted_total", value: totals[MetricsLayout.idleEvictions])
        out.family("sluice_upstream_retries_total", type: "counter",
                   help: "Requests sent again before any response byte: on a fresh connection to the same server after a pooled one was found closed (reason replay, over all upstreams), or to another server of the upstream after a retry_on failure (reason connect_error, reset or the status).")
        out.sample("sluice_upstream_retries_total", labels: ["reason": "replay"], value: totals[MetricsLayout.upstreamReplays])
        Self.renderPoolRetries(pools, to: &out)
        out.family("sluice_generated_responses_total", type: "counter",
                   help: "Responses sluice generated instead of forwarding one, by whose fault: client (4xx), upstream (502, 504) or internal (503).")
        out.sample("sluice_generated_responses_total", labels: ["source": "client"], value: totals[MetricsLayout.generatedClient])
        out.sample("sluice_generated_responses_total", labels: ["source": "upstream"], value: totals[MetricsLayout.generatedUpstream])
        out.sample("sluice_generated_responses_total", labels: ["source": "internal"], value: totals[MetricsLayout.generatedInternal])

        let gauges: [(String, String, Int)] = [
            ("sluice_active_connections", "Open client connections.", MetricsLayout.activeConnections),
            ("sluice_active_streams", "Responses being streamed to clients.", MetricsLayout.activeStreams),
            ("sluice_queued_bytes", "Bytes queued in sluice waiting for a slow peer.", MetricsLayout.queuedBytes),
        ]
        for (name, help, cell) in gauges {
            out.family(name, type: "gauge", help: help)
            out.sample(name, value: totals[cell])
        }

        out.family("sluice_log_records_written_total", type: "counter", help: "Completion records written to every log sink.")
        out.sample("sluice_log_records_written_total", value: logQueue?.writtenCount ?? 0)
        out.family("sluice_log_records_dropped_total", type: "counter",
                   help: "Completion records dropped because the log queue was full.")
        out.sample("sluice_log_records_dropped_total", value: logQueue?.droppedCount ?? 0)

        for metric in LatencyMetric.allCases {
            let name = metric.metricName
            let bounds = metric.bucketBounds
            let first = layout.histograms[metric.rawValue]
            out.family(name, type: "histogram", help: metric.help)
            // Buckets are stored per interval and made cumulative here; `_count` is the `+Inf`
            // bucket itself, so the two agree even while loops write during the scrape.
            var cumulative = 0
            for (index, bound) in bounds.enumerated() {
                cumulative &+= totals[first + index]
                out.sample(name + "_bucket", labels: ["le": PrometheusText.seconds(microseconds: bound)], value: cumulative)
            }
            cumulative &+= totals[first + bounds.count]
            out.sample(name + "_bucket", labels: ["le": "+Inf"], value: cumulative)
            out.sample(name + "_sum", value: PrometheusText.seconds(microseconds: totals[first + bounds.count + 1]))
            out.sample(name + "_count", value: cumulative)
            // TTFT right after TTFE, where it was before it gained its labels.
            if metric == .ttfe { renderModelSeries(totals: totals, routes: routes, to: &out) }
        }

        Self.renderPools(pools, now: now, to: &out)

        out.family("sluice_build_info", type: "gauge", help: "Always 1; the labels say which sluice this is.")
        out.sample("sluice_build_info", labels: ["version": build.version, "commit": build.commit], value: 1)
        Self.renderProcess(process, to: &out)
        return out.text
    }

    /// `sluice_ttft_seconds`, `sluice_prompt_tokens_total` and `sluice_completion_tokens_total` by route and model:
    /// each route's named models in the order they were first counted, then its `other` if used.
    private func renderModelSeries(totals: [Int], routes: [String], to out: inout PrometheusText) {
        let pairs = modelSeries.pairs
        var series: [(index: Int, route: String, model: String)] = []
        for route in 0...layout.routeCount {
            let routeLabel = route < routes.count ? routes[route] : "none"
            for (index, pair) in pairs.enumerated() where pair.route == route {
                series.append((index, routeLabel, pair.model))
            }
            let other = ModelSeriesTable.otherSeries(route: route)
            let first = layout.modelSeriesCell(other)
            if (0..<ModelSeriesLayout.cellCount).contains(where: { totals[first + $0] != 0 }) {
                series.append((other, routeLabel, ModelSeriesTable.otherLabel))
            }
        }

        let name = ModelSeriesLayout.ttftName
        let bounds = ModelSeriesLayout.ttftBounds
        out.family(name, type: "histogram", help: ModelSeriesLayout.ttftHelp)
        for entry in series {
            let first = layout.modelSeriesCell(entry.index) + ModelSeriesLayout.ttftBuckets
            var cumulative = 0
            for (index, bound) in bounds.enumerated() {
                cumulative &+= totals[first + index]
                out.sample(name + "_bucket", labels: ["route": entry.route, "model": entry.model,
                                                      "le": PrometheusText.seconds(microseconds: bound)], value: cumulative)
            }
            cumulative &+= totals[first + bounds.count]
            out.sample(name + "_bucket", labels: ["route": entry.route, "model": entry.model, "le": "+Inf"], value: cumulative)
            out.sample(name + "_sum", labels: ["route": entry.route, "model": entry.model],
                       value: PrometheusText.seconds(microseconds: totals[first + bounds.count + 1]))
            out.sample(name + "_count", labels: ["route": entry.route, "model": entry.model], value: cumulative)
        }

        let counters = [
            ("sluice_prompt_tokens_total", "Prompt tokens the upstream reported, by route and model.", ModelSeriesLayout.promptTokens),
            ("sluice_completion_tokens_total", "Completion tokens the upstream reported, by route and model.",
             ModelSeriesLayout.completionTokens),
        ]
        for (counter, help, offset) in counters {
            out.family(counter, type: "counter", help: help)
            for entry in series {
                out.sample(counter, labels: ["route": entry.route, "model": entry.model],
                           value: totals[layout.modelSeriesCell(entry.index) + offset])
            }
        }
    }

    /// The `process_*` families as the Prometheus client libraries name them; a value that could not be read is
    /// left out with its family.
    static func renderProcess(_ process: ProcessStats, to out: inout PrometheusText) {
        if let cpu = process.cpuSeconds {
            out.family("process_cpu_seconds_total", type: "counter", help: "Total user and system CPU time spent in seconds.")
            out.sample("process_cpu_seconds_total", value: PrometheusText.decimal(cpu))
        }
        let gauges: [(String, String, Int?)] = [
            ("process_resident_memory_bytes", "Resident memory size in bytes.", process.residentBytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", process.virtualBytes),
            ("process_open_fds", "Number of open file descriptors.", process.openFileDescriptors),
            ("process_max_fds", "Maximum number of open file descriptors.", process.maxFileDescriptors),
        ]
        for (name, help, value) in gauges {
            guard let value else { continue }
            out.family(name, type: "gauge", help: help)
            out.sample(name, value: value)
        }
        if let start = process.startTimeSeconds {
            out.family("process_start_time_seconds", type: "gauge", help: "Start time of the process since unix epoch in seconds.")
            out.sample("process_start_time_seconds", value: PrometheusText.decimal(start))
        }
    }
}
