/// The `(route, model)` label pairs of the per-model series (`sluice_ttft_seconds`, `sluice_prompt_tokens_total`,
/// `sluice_completion_tokens_total`), with a cap so that clients choosing model names cannot make the label set,
/// and with it the scrape and Prometheus' memory, grow without bound.
///
/// A route names at most ``maxModelsPerRoute`` models, in the order they are first counted; later ones are counted
/// under the route's `other` series. The table holds at most ``capacity`` named pairs over all routes (a full
/// table also sends new pairs to `other`), so the cells each loop allocates for them are fixed at start-up.
/// A pair, once named, keeps its series for the life of the process (a reload too): a counter never goes backwards.
///
/// Any thread. ``series(route:model:)`` takes a lock: it runs once per exchange, at its end, never per chunk.
final class ModelSeriesTable: Sendable {
    /// Named models per route; beyond, `other`.
    static let maxModelsPerRoute = 32
    /// Named `(route, model)` pairs over all routes.
    static let capacity = 256
    /// Longest label value kept, in UTF-8 bytes; a longer model name is cut at a character boundary.
    static let maxLabelBytes = 128
    /// The label of the series that counts models beyond the cap.
    static let otherLabel = "other"
    /// The label of exchanges whose request and response named no model.
    static let noneLabel = "none"

    /// One named pair; `route` is a route slot, or the layout's route count for "no route".
    struct Pair: Hashable, Sendable {
        var route: Int
        var model: String
    }

    private struct State {
        var slots: [Pair: Int] = [:]
        /// Named pairs by series index.
        var pairs: [Pair] = []
        /// Named models per route slot.
        var perRoute: [Int: Int] = [:]
    }

    private let state = Locked(State())

    init() {
        state.withLock { $0.slots.reserveCapacity(Self.capacity) }
    }

    /// The series of `model` on route slot `route`: `0..<capacity` for a named pair, or ``otherSeries(route:)``.
    /// A nil or empty model is named `none`; a model spelled `other` is counted as `other` (the label is taken).
    func series(route: Int, model: String?) -> Int {
        let label = Self.label(model)
        if label == Self.otherLabel { return Self.otherSeries(route: route) }
        return state.withLock { state in
            let pair = Pair(route: route, model: label)
            if let existing = state.slots[pair] { return existing }
            let named = state.perRoute[route, default: 0]
            guard named < Self.maxModelsPerRoute && state.pairs.count < Self.capacity else {
                return Self.otherSeries(route: route)
            }
            state.perRoute[route] = named + 1
            state.pairs.append(pair)
            state.slots[pair] = state.pairs.count - 1
            return state.pairs.count - 1
        }
    }

    /// The `other` series of route slot `route`: after the named ones, one per route slot.
    static func otherSeries(route: Int) -> Int { capacity + route }

    /// The named pairs, by series index (a snapshot for a scrape).
    var pairs: [Pair] { state.withLock { $0.pairs } }

    /// The label value for `model`: `none` when nil or empty, else the name cut to ``maxLabelBytes``.
    static func label(_ model: String?) -> String {
        guard let model, !model.isEmpty else { return noneLabel }
        guard model.utf8.count > maxLabelBytes else { return model }
        var kept = ""
        var bytes = 0
        for scalar in model.unicodeScalars {
            bytes += UTF8.width(scalar)
            if bytes > maxLabelBytes { break }
            kept.unicodeScalars.append(scalar)
        }
        return kept
    }
}

/// The cells of one per-model series, from its first cell (``MetricsLayout/modelSeriesCell(_:)``).
enum ModelSeriesLayout {
    /// `sluice_prompt_tokens_total`: reported prompt tokens.
    static let promptTokens = 0
    /// `sluice_completion_tokens_total`: reported completion tokens.
    static let completionTokens = 1
    /// `sluice_ttft_seconds`: its buckets (the last one `+Inf`), then the sum in µs.
    static let ttftBuckets = 2
    static let ttftBounds = LatencyMetric.requestLatencyBounds
    static let cellCount = ttftBuckets + ttftBounds.count + 2

    static let ttftName = "sluice_ttft_seconds"
    static let ttftHelp = "Time from forwarding the request to the first output (a content-bearing SSE event or a body's first byte), by route and model."
}
