import Testing
@testable import SluiceCore

@Suite struct ModelSeriesTests {
    @Test(arguments: [
        (nil, "none"), ("", "none"), ("gpt-4o", "gpt-4o"), ("none", "none"), ("other", "other"),
        ("a\"b\\c\nd", "a\"b\\c\nd"), // escaped when rendered, not here
        (String(repeating: "m", count: 128), String(repeating: "m", count: 128)),
        (String(repeating: "m", count: 129), String(repeating: "m", count: 128)),
        // 2-byte characters: 64 fit in 128 bytes; after one ASCII byte only 63 do (no half character).
        (String(repeating: "é", count: 100), String(repeating: "é", count: 64)),
        ("a" + String(repeating: "é", count: 100), "a" + String(repeating: "é", count: 63)),
        (String(repeating: "🦙", count: 40), String(repeating: "🦙", count: 32)),
    ] as [(String?, String)])
    func labels(model: String?, expected: String) {
        let label = ModelSeriesTable.label(model)
        #expect(label == expected)
        #expect(label.utf8.count <= ModelSeriesTable.maxLabelBytes)
    }

    @Test func aPairKeepsItsSeriesAndRoutesAreApart() {
        let table = ModelSeriesTable()
        let a = table.series(route: 0, model: "gpt-4o")
        let b = table.series(route: 0, model: "llama")
        let c = table.series(route: 1, model: "gpt-4o")
        #expect([a, b, c] == [0, 1, 2])
        #expect(table.series(route: 0, model: "gpt-4o") == a)
        #expect(table.series(route: 1, model: "gpt-4o") == c)
        #expect(table.series(route: 0, model: nil) == table.series(route: 0, model: ""), "no model: one `none` series")
        #expect(table.pairs.map(\.model) == ["gpt-4o", "llama", "gpt-4o", "none"])
    }

    @Test func beyondTheCapARouteCountsUnderOther() {
        let table = ModelSeriesTable()
        let cap = ModelSeriesTable.maxModelsPerRoute
        let named = (0..<cap).map { table.series(route: 3, model: "m\($0)") }
        #expect(named == Array(0..<cap))
        let other = ModelSeriesTable.otherSeries(route: 3)
        #expect(other >= ModelSeriesTable.capacity)
        for extra in 0..<100 { #expect(table.series(route: 3, model: "x\(extra)") == other) }
        #expect(table.series(route: 3, model: "m5") == 5, "a model named before the cap keeps its series")
        #expect(table.series(route: 3, model: "other") == other)
        // Another route has its own cap and its own `other`; a model literally named `other` never gets a named series.
        #expect(table.series(route: 4, model: "x0") == cap)
        #expect(table.series(route: 4, model: "other") == ModelSeriesTable.otherSeries(route: 4))
        #expect(table.pairs.count == cap + 1)
    }

    @Test func aFullTableSendsNewPairsToOther() {
        let table = ModelSeriesTable()
        let perRoute = ModelSeriesTable.maxModelsPerRoute
        let routes = ModelSeriesTable.capacity / perRoute
        for route in 0..<routes {
            for model in 0..<perRoute { _ = table.series(route: route, model: "m\(model)") }
        }
        #expect(table.pairs.count == ModelSeriesTable.capacity)
        #expect(table.series(route: routes, model: "new") == ModelSeriesTable.otherSeries(route: routes))
        #expect(table.series(route: 0, model: "m0") == 0)
    }

    /// Loops name models concurrently (one exchange end each): every thread gets the same series for a name,
    /// and no pair is named twice. Run with --sanitize=thread.
    @Test func threadsAgreeOnSeries() {
        let table = ModelSeriesTable()
        let results = (0..<4).map { _ in Locked<[Int]>([]) }
        LogTestSupport.onThreads(4) { worker in
            var seen: [Int] = []
            for index in 0..<2_000 { seen.append(table.series(route: index % 3, model: "m\(index % 50)")) }
            results[worker].withLock { $0 = seen }
        }
        let first = results[0].withLock { $0 }
        for worker in 1..<4 { #expect(results[worker].withLock { $0 } == first) }
        #expect(Set(table.pairs).count == table.pairs.count)
        #expect(table.pairs.count == 3 * ModelSeriesTable.maxModelsPerRoute)
    }

    @Test func renderedPerModelSeries() {
        let registry = MetricsRegistry(workers: 2, routes: ["/a", "/b"], rateLimitRules: [], logQueue: nil)
        let cap = ModelSeriesTable.maxModelsPerRoute
        var record = LogTestSupport.record(worker: 0, sequence: 1)
        record.ttftMilliseconds = 12.345
        record.usage = .init(promptTokens: 7, completionTokens: 11, totalTokens: 18)
        for index in 0..<(cap + 3) {
            record.model = "model-\(index)"
            registry.loop(index % 2).countCompletion(record, route: 0)
        }
        // Only usage, no TTFT: counted in the tokens, observed in no bucket.
        record.ttftMilliseconds = nil
        record.model = "q\"uote\\d"
        registry.loop(0).countCompletion(record, route: 1)
        // Neither TTFT nor usage (a 404, a refused request): no series at all.
        record.usage = nil
        record.model = "never-counted"
        registry.loop(0).countCompletion(record, route: 1)
        registry.loop(1).countCompletion(record, route: nil)
        let text = registry.render()
        #expect(PrometheusCheck.check(text).isEmpty, "\(PrometheusCheck.check(text))")
        let samples = PrometheusCheck.samples(text)
        #expect(samples["sluice_prompt_tokens_total{route=\"/a\",model=\"model-0\"}"] == "7")
        #expect(samples["sluice_completion_tokens_total{route=\"/a\",model=\"model-31\"}"] == "11")
        #expect(samples["sluice_prompt_tokens_total{route=\"/a\",model=\"model-32\"}"] == nil, "beyond the cap")
        #expect(samples["sluice_prompt_tokens_total{route=\"/a\",model=\"other\"}"] == "21")
        #expect(samples["sluice_ttft_seconds_count{route=\"/a\",model=\"other\"}"] == "3")
        #expect(samples["sluice_ttft_seconds_bucket{route=\"/a\",model=\"model-1\",le=\"0.025\"}"] == "1")
        #expect(samples["sluice_ttft_seconds_bucket{route=\"/a\",model=\"model-1\",le=\"0.01\"}"] == "0")
        #expect(samples["sluice_ttft_seconds_sum{route=\"/a\",model=\"model-1\"}"] == "0.012345")
        #expect(samples["sluice_prompt_tokens_total{route=\"/b\",model=\"q\\\"uote\\\\d\"}"] == "7")
        #expect(samples["sluice_ttft_seconds_count{route=\"/b\",model=\"q\\\"uote\\\\d\"}"] == "0")
        #expect(samples["sluice_prompt_tokens_total{route=\"/b\",model=\"other\"}"] == nil, "an unused other is not written")
        #expect(!text.contains("never-counted"))
        #expect(samples.keys.filter { $0.hasPrefix("sluice_prompt_tokens_total{") }.count == cap + 2)
    }

    @Test func absurdTokenCountsAreClamped() {
        let registry = MetricsRegistry(workers: 1, routes: ["/"], rateLimitRules: [], logQueue: nil)
        let loop = registry.loop(0)
        let series = registry.modelSeries.series(route: 0, model: "m")
        loop.countModel(series: series, ttftMicroseconds: nil, usage: .init(promptTokens: -50, completionTokens: .max, totalTokens: 0))
        loop.countModel(series: series, ttftMicroseconds: nil, usage: .init(promptTokens: 3, completionTokens: .max, totalTokens: 0))
        let samples = PrometheusCheck.samples(registry.render())
        #expect(samples["sluice_prompt_tokens_total{route=\"/\",model=\"m\"}"] == "3")
        #expect(samples["sluice_completion_tokens_total{route=\"/\",model=\"m\"}"] == String(2 * LoopMetrics.maxTokensPerExchange))
    }
}
