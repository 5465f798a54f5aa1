import Glibc
import Synchronization
import Testing
@testable import SluiceCore

@Suite struct MetricsRegistryTests {
    /// Two loops, two routes (one with characters that need escaping), one rule, a log queue that dropped one record.
    static func sampleRegistry() -> MetricsRegistry {
        let queue = CompletionQueue(producers: 1, capacity: 2)
        for sequence in 0..<3 { _ = queue.offer(LogTestSupport.record(worker: 0, sequence: sequence), worker: 0) }
        let registry = MetricsRegistry(workers: 2, routes: ["/v1/chat", "/we\"ird\\\n"], rateLimitRules: ["per-key"], logQueue: queue)
        let a = registry.loop(0), b = registry.loop(1)
        a.countRequest(route: 0, status: 200)
        b.countRequest(route: 0, status: 204)
        a.countRequest(route: nil, status: 0)
        b.countRequest(route: 1, status: 503)
        a.countExchange(.complete)
        b.countExchange(.complete)
        a.countExchange(.clientAbort)
        b.countExchange(.upstreamError)
        a.addClientBytesReceived(100)
        b.addClientBytesReceived(50)
        a.addClientBytesSent(1000)
        a.addUpstreamBytesReceived(990)
        a.addUpstreamBytesSent(120)
        b.countRateLimitRejection(rule: 0)
        a.countBackpressurePause()
        a.addActiveConnections(1)
        b.addActiveConnections(2)
        b.addActiveConnections(-1)
        a.addActiveStreams(1)
        a.addQueuedBytes(4096)
        a.observe(.ttfb, milliseconds: 3)
        b.observe(.ttfb, milliseconds: 40)
        a.observe(.ttfb, milliseconds: 700_000) // beyond the last bound: only +Inf
        // TTFT and tokens by route and model: two models on /v1/chat (one across both loops), one whose name
        // needs escaping on the other route.
        let table = registry.modelSeries
        a.countModel(series: table.series(route: 0, model: "gpt-4o"), ttftMicroseconds: 500_250,
                     usage: .init(promptTokens: 21, completionTokens: 152, totalTokens: 173))
        b.countModel(series: table.series(route: 0, model: "gpt-4o"), ttftMicroseconds: nil,
                     usage: .init(promptTokens: 4, completionTokens: 6, totalTokens: 10))
        b.countModel(series: table.series(route: 0, model: nil), ttftMicroseconds: 3_000, usage: nil)
        a.countModel(series: table.series(route: 1, model: "m\"x\\"), ttftMicroseconds: 40_000,
                     usage: .init(promptTokens: 1, completionTokens: 2, totalTokens: 3))
        a.observe(.duration, milliseconds: 1500)
        b.observe(.duration, milliseconds: 5) // on a bound: le is inclusive
        a.observe(.eventGap, milliseconds: 0.5)
        a.observe(.eventGap, milliseconds: 20)
        return registry
    }

    /// Fixed `process_*` values and build labels, so the golden text does not depend on the host or the commit.
    static let sampleProcess = ProcessStats(cpuSeconds: 1.25, residentBytes: 10_485_760, virtualBytes: 268_435_456,
                                            openFileDescriptors: 12, maxFileDescriptors: 1_048_576,
                                            startTimeSeconds: 1_735_689_600.37)
    static func renderSample(_ registry: MetricsRegistry) -> String {
        registry.render(process: sampleProcess, build: (version: "0.1.0", commit: "abc1234"))
    }

    @Test func rendersTheGoldenText() {
        let rendered = Self.renderSample(Self.sampleRegistry())
        #expect(rendered == Self.golden)
        if rendered != Self.golden {
            // Point at the first differing line instead of two 9 kB strings.
            let got = rendered.split(separator: "\n", omittingEmptySubsequences: false)
            let want = Self.golden.split(separator: "\n", omittingEmptySubsequences: false)
            if let line = zip(got, want).enumerated().first(where: { $0.element.0 != $0.element.1 }) {
                Issue.record("line \(line.offset + 1): got \(line.element.0), want \(line.element.1)")
            }
        }
    }

    @Test func renderIsWellFormed() {
        let issues = PrometheusCheck.check(Self.sampleRegistry().render())
        #expect(issues.isEmpty, "\(issues)")
    }

    @Test func processFamiliesWithoutAValueAreLeftOut() {
        let rendered = MetricsRegistry(workers: 1, routes: [], rateLimitRules: [], logQueue: nil)
            .render(process: ProcessStats(openFileDescriptors: 3), build: (version: "1.2.3", commit: "unknown"))
        #expect(rendered.contains("\nprocess_open_fds 3\n"))
        #expect(rendered.contains("\nsluice_build_info{version=\"1.2.3\",commit=\"unknown\"} 1\n"))
        for absent in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                       "process_max_fds", "process_start_time_seconds"] {
            #expect(!rendered.contains(absent), "\(absent) without a value")
        }
        let issues = PrometheusCheck.check(rendered)
        #expect(issues.isEmpty, "\(issues)")
    }

    @Test func loopsAreSummedAtScrape() {
        let registry = MetricsRegistry(workers: 3, routes: ["/"], rateLimitRules: [], logQueue: nil)
        for worker in 0..<3 {
            for _ in 0...worker { registry.loop(worker).countRequest(route: 0, status: 200) }
            registry.loop(worker).addClientBytesSent(10 * (worker + 1))
            registry.loop(worker).countModel(series: registry.modelSeries.series(route: 0, model: "m"), ttftMicroseconds: 100_000,
                                             usage: .init(promptTokens: 1, completionTokens: Int64(worker), totalTokens: 0))
        }
        let samples = PrometheusCheck.samples(registry.render())
        #expect(samples["sluice_requests_total{route=\"/\",code_class=\"2xx\"}"] == "6")
        #expect(samples["sluice_client_bytes_sent_total"] == "60")
        #expect(samples["sluice_ttft_seconds_bucket{route=\"/\",model=\"m\",le=\"0.1\"}"] == "3")
        #expect(samples["sluice_ttft_seconds_count{route=\"/\",model=\"m\"}"] == "3")
        #expect(samples["sluice_ttft_seconds_sum{route=\"/\",model=\"m\"}"] == "0.3")
        #expect(samples["sluice_prompt_tokens_total{route=\"/\",model=\"m\"}"] == "3")
        #expect(samples["sluice_completion_tokens_total{route=\"/\",model=\"m\"}"] == "3")
        #expect(samples["sluice_log_records_written_total"] == "0", "no log queue: zero, still present")
    }

    @Test func completionRecordFeedsRequestsExchangesAndTimings() {
        let registry = MetricsRegistry(workers: 1, routes: ["/v1"], rateLimitRules: [], logQueue: nil)
        var record = LogTestSupport.record(worker: 0, sequence: 1)
        record.status = 429
        record.end = .rejectedRateLimit
        record.durationMilliseconds = 0.2
        registry.loop(0).countCompletion(record, route: 0)
        record.status = 200
        record.end = .complete
        record.ttfbMilliseconds = 30
        record.ttfeMilliseconds = 31
        record.ttftMilliseconds = 480
        record.durationMilliseconds = 2000
        registry.loop(0).countCompletion(record, route: 0)
        let samples = PrometheusCheck.samples(registry.render())
        #expect(samples["sluice_requests_total{route=\"/v1\",code_class=\"4xx\"}"] == "1")
        #expect(samples["sluice_requests_total{route=\"/v1\",code_class=\"2xx\"}"] == "1")
        #expect(samples["sluice_exchanges_total{end=\"rejected_rate_limit\"}"] == "1")
        #expect(samples["sluice_exchanges_total{end=\"complete\"}"] == "1")
        #expect(samples["sluice_ttfb_seconds_count"] == "1", "an exchange that never reached a response head has no TTFB")
        // No model in the record: counted under model "none"; the rejected exchange (no TTFT, no usage) not at all.
        #expect(samples["sluice_ttft_seconds_bucket{route=\"/v1\",model=\"none\",le=\"0.5\"}"] == "1")
        #expect(samples["sluice_ttft_seconds_bucket{route=\"/v1\",model=\"none\",le=\"0.25\"}"] == "0")
        #expect(samples["sluice_ttft_seconds_count{route=\"/v1\",model=\"none\"}"] == "1")
        #expect(samples["sluice_prompt_tokens_total{route=\"/v1\",model=\"none\"}"] == "0")
        #expect(samples["sluice_ttfe_seconds_bucket{le=\"0.05\"}"] == "1")
        #expect(samples["sluice_ttfe_seconds_count"] == "1")
        #expect(samples["sluice_duration_seconds_count"] == "2")
        #expect(samples["sluice_duration_seconds_sum"] == "2.0002")
    }

    @Test(arguments: [(0, 5), (99, 5), (100, 0), (101, 0), (200, 1), (299, 1), (304, 2), (429, 3), (599, 4), (600, 5), (-1, 5)])
    func statusClasses(status: Int, classIndex: Int) {
        #expect(MetricsLayout.statusClassIndex(status) == classIndex)
    }

    @Test func unknownRouteAndRuleIndicesAreSafe() {
        let registry = MetricsRegistry(workers: 1, routes: ["/a"], rateLimitRules: ["r"], logQueue: nil)
        registry.loop(0).countRequest(route: 7, status: 200) // counted as no route
        registry.loop(0).countRateLimitRejection(rule: 3) // ignored
        let samples = PrometheusCheck.samples(registry.render())
        #expect(samples["sluice_requests_total{route=\"none\",code_class=\"2xx\"}"] == "1")
        #expect(samples["sluice_rate_limit_rejections_total{rule=\"r\"}"] == "0")
    }

    @Test func reloadKeepsSlotsOfKeptNamesAndNamesFreeOnes() {
        let registry = MetricsRegistry(workers: 1, routes: ["/a", "/b"], rateLimitRules: ["r"], logQueue: nil,
                                       routeCapacity: 3, ruleCapacity: 2)
        registry.loop(0).countRequest(route: 1, status: 200)
        // A reload drops /a, keeps /b and adds /c and /d: /b keeps slot 1 (its counter goes on), /c takes the
        // last free slot, /d finds none and is counted as no route.
        #expect(registry.routeSlots(for: ["/b", "/c", "/d"]) == [1, 2, nil])
        #expect(registry.useRateLimiter(nil, rules: ["s", "r", "t"]) == [1, 0, nil])
        registry.loop(0).countRequest(route: 1, status: 200)
        registry.loop(0).countRateLimitRejection(rule: 1)
        let samples = PrometheusCheck.samples(registry.render())
        #expect(samples["sluice_requests_total{route=\"/b\",code_class=\"2xx\"}"] == "2")
        #expect(samples["sluice_requests_total{route=\"/a\",code_class=\"2xx\"}"] == "0")
        #expect(samples["sluice_requests_total{route=\"/c\",code_class=\"2xx\"}"] == "0")
        #expect(samples["sluice_rate_limit_rejections_total{rule=\"s\"}"] == "1")
        #expect(registry.routes == ["/a", "/b", "/c"])
    }

    @Test(arguments: [(0, "0"), (1, "0.000001"), (5_000, "0.005"), (2_500_000, "2.5"), (1_000_000, "1"),
                      (600_000_000, "600"), (123_456_789, "123.456789"), (-1_500_000, "-1.5")])
    func secondsAreExactDecimals(microseconds: Int, expected: String) {
        #expect(PrometheusText.seconds(microseconds: microseconds) == expected)
    }

    @Test func labelValuesAndHelpAreEscaped() {
        var text = PrometheusText()
        text.family("m", type: "gauge", help: "back\\slash \"quoted\"\nnext")
        text.sample("m", labels: ["a": "x\\y\"z\nw", "b": "é"], value: 1)
        #expect(text.text == "# HELP m back\\\\slash \"quoted\"\\nnext\n# TYPE m gauge\nm{a=\"x\\\\y\\\"z\\nw\",b=\"é\"} 1\n")
    }

    @Test func observationsLandInTheRightBucket() {
        let registry = MetricsRegistry(workers: 1, routes: [], rateLimitRules: [], logQueue: nil)
        let loop = registry.loop(0)
        loop.observe(.eventGap, milliseconds: -5) // a clock bug: counted as 0
        loop.observe(.eventGap, milliseconds: .nan)
        loop.observe(.eventGap, milliseconds: 1) // exactly on the first bound
        loop.observe(.eventGap, milliseconds: 1.001)
        loop.observe(.eventGap, milliseconds: 61_000)
        let samples = PrometheusCheck.samples(registry.render())
        #expect(samples["sluice_event_gap_seconds_bucket{le=\"0.001\"}"] == "3")
        #expect(samples["sluice_event_gap_seconds_bucket{le=\"0.0025\"}"] == "4")
        #expect(samples["sluice_event_gap_seconds_bucket{le=\"60\"}"] == "4")
        #expect(samples["sluice_event_gap_seconds_bucket{le=\"+Inf\"}"] == "5")
        #expect(samples["sluice_event_gap_seconds_sum"] == "61.002001")
    }

    /// Loops write while another thread scrapes: every scrape is well formed (cumulative buckets,
    /// `_count` equal to `+Inf`) and the final one has every update. Run with --sanitize=thread.
    @Test func scrapesWhileLoopsWrite() {
        let workers = 3
        let updates = 30_000
        let registry = MetricsRegistry(workers: workers, routes: ["/v1"], rateLimitRules: ["k"], logQueue: nil)
        let done = Atomic<Int>(0)
        let scrapeIssues = Atomic<Int>(0)
        let scraper = LogTestSupport.spawn {
            while done.load(ordering: .acquiring) < workers {
                if !PrometheusCheck.check(registry.render()).isEmpty { scrapeIssues.wrappingAdd(1, ordering: .relaxed) }
            }
        }
        LogTestSupport.onThreads(workers) { worker in
            let loop = registry.loop(worker)
            for index in 0..<updates {
                loop.countRequest(route: 0, status: 200)
                loop.addClientBytesReceived(2)
                loop.addActiveStreams(index % 2 == 0 ? 1 : -1)
                loop.observe(.eventGap, milliseconds: Double(index % 100))
            }
            done.wrappingAdd(1, ordering: .releasing)
        }
        LogTestSupport.join(scraper)
        #expect(scrapeIssues.load(ordering: .relaxed) == 0)
        let samples = PrometheusCheck.samples(registry.render())
        #expect(samples["sluice_requests_total{route=\"/v1\",code_class=\"2xx\"}"] == String(workers * updates))
        #expect(samples["sluice_client_bytes_received_total"] == String(2 * workers * updates))
        #expect(samples["sluice_active_streams"] == "0")
        #expect(samples["sluice_event_gap_seconds_count"] == String(workers * updates))
    }

}

/// A small reader of the text format for structural checks.
enum PrometheusCheck {
    /// Sample lines as `name{labels}` → value text.
    static func samples(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            result[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        return result
    }

    /// Problems found: a sample before its `# TYPE`, a family without `# HELP` or declared twice, names without the
    /// `sluice_` prefix (or `process_`, the client libraries' standard names), counters without `_total`,
    /// non-numeric values, histogram buckets not cumulative or not ending in `+Inf`, `_count` different
    /// from the `+Inf` bucket; each labelled histogram series (labels other than `le`) on its own.
    static func check(_ text: String) -> [String] {
        var issues: [String] = []
        guard text.hasSuffix("\n") else { return ["no final newline"] }
        var types: [String: String] = [:]
        var helped: Set<String> = []
        var lastBucket: (series: String, bound: Double, value: Double)?
        var infBuckets: [String: Double] = [:]
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# HELP ") {
                helped.insert(String(line.dropFirst(7).prefix { $0 != " " }))
                continue
            }
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                guard parts.count == 2 else { issues.append("bad TYPE: \(line)"); continue }
                let name = String(parts[0])
                if types[name] != nil { issues.append("family declared twice: \(name)") }
                types[name] = String(parts[1])
                if !helped.contains(name) { issues.append("TYPE before HELP: \(name)") }
                if !name.hasPrefix("sluice_") && !name.hasPrefix("process_") { issues.append("no prefix: \(name)") }
                if parts[1] == "counter" && !name.hasSuffix("_total") { issues.append("counter without _total: \(name)") }
                continue
            }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                issues.append("bad sample: \(line)")
                continue
            }
            let series = line[..<space]
            let name = String(series.prefix { $0 != "{" })
            let family = types[name] != nil ? name
                : ["_bucket", "_sum", "_count"].compactMap { name.hasSuffix($0) ? String(name.dropLast($0.count)) : nil }.first ?? name
            guard let type = types[family] else {
                issues.append("sample without TYPE: \(line)")
                continue
            }
            guard type == "histogram" else { continue }
            // The series: the family and its labels other than `le` (written last, as the renderer does).
            let labels = series.drop { $0 != "{" }
            if name.hasSuffix("_bucket") {
                guard let range = series.range(of: "le=\""), let end = series[range.upperBound...].firstIndex(of: "\"") else {
                    issues.append("bucket without le: \(line)")
                    continue
                }
                var others = String(labels[labels.startIndex..<range.lowerBound]) // `{a="x",` or `{`
                others.removeLast()
                let key = family + (others.isEmpty ? "" : others + "}")
                let label = series[range.upperBound..<end]
                let bound = label == "+Inf" ? Double.infinity : Double(label) ?? .nan
                if let last = lastBucket, last.series == key {
                    if !(bound > last.bound) { issues.append("le not ascending: \(line)") }
                    if value < last.value { issues.append("buckets not cumulative: \(line)") }
                } else if let last = lastBucket, last.bound != .infinity {
                    issues.append("series \(last.series) ended before +Inf: \(line)")
                }
                lastBucket = (key, bound, value)
                if bound == .infinity { infBuckets[key] = value }
            } else if name.hasSuffix("_count") {
                let key = family + labels
                if infBuckets[key] != value { issues.append("_count \(value) differs from +Inf bucket of \(key)") }
                if lastBucket?.series != key || lastBucket?.bound != .infinity { issues.append("last bucket of \(key) is not +Inf") }
            }
        }
        return issues
    }
}
