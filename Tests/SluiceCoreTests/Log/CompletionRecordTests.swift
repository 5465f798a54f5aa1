import Foundation
import Glibc
import Testing
@testable import SluiceCore

@Suite struct CompletionRecordTests {
    /// A record with every field set.
    static func fullRecord() -> CompletionRecord {
        var record = CompletionRecord(timestampMicroseconds: 1_735_689_600_123_456, requestID: "7f3a9c2e4b1d0a86",
                                      clientAddress: "203.0.113.7:51234", method: "POST",
                                      path: "/v1/chat/completions?api_key=secret", worker: 3)
        record.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        record.route = "/v1"
        record.upstreamName = "llm"
        record.upstreamAddress = "10.0.0.5:8000"
        record.tries = 2
        record.affinity = "spill"
        record.status = 200
        record.requestBytes = 812
        record.responseBytes = 40_213
        record.sseEvents = 153
        record.ttfbMilliseconds = 41.25
        record.ttfeMilliseconds = 41.75
        record.ttftMilliseconds = 502.5
        record.tpotMilliseconds = 28.5
        record.tokensPerSecond = 35.0877193
        record.durationMilliseconds = 4812.0004
        record.maxGapMilliseconds = 220
        record.pausedMilliseconds = 0
        record.peakQueuedBytes = 65_536
        record.rateLimitKeyHash = "9e107d9d372bb682"
        record.rateLimitDecision = "allowed"
        record.model = "gpt-4o-mini"
        record.usage = .init(promptTokens: 21, completionTokens: 152, totalTokens: 173)
        record.usageSource = "reported"
        record.end = .complete
        return record
    }

    @Test func fullRecordRendersEveryFieldInOrder() {
        let expected = #"{"ts":"2025-01-01T00:00:00.123456Z","request_id":"7f3a9c2e4b1d0a86","#
            + #""traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","client":"203.0.113.7:51234","#
            + #""route":"/v1","method":"POST","path":"/v1/chat/completions","upstream":"llm","server":"10.0.0.5:8000","tries":2,"affinity":"spill","#
            + #""status":200,"#
            + #""request_bytes":812,"response_bytes":40213,"sse_events":153,"ttfb_ms":41.250,"ttfe_ms":41.750,"#
            + #""ttft_ms":502.500,"tpot_ms":28.500,"tokens_per_second":35.088,"duration_ms":4812.000,"max_gap_ms":220.000,"paused_ms":0.000,"peak_queued_bytes":65536,"#
            + #""rate_limit_key":"9e107d9d372bb682","rate_limit_decision":"allowed","model":"gpt-4o-mini","#
            + #""usage":{"prompt_tokens":21,"completion_tokens":152,"total_tokens":173},"usage_source":"reported","#
            + #""end":"complete","#
            + #""error":null,"worker":3}"# + "\n"
        #expect(Self.fullRecord().jsonLine == expected)
    }

    @Test func absentValuesAreNull() throws {
        var record = CompletionRecord(timestampMicroseconds: 0, requestID: "r1", clientAddress: "[::1]:9", method: "GET",
                                      path: "/", worker: 0)
        record.end = .rejectedBadRequest
        record.status = 400
        record.error = "bad request line"
        let expected = #"{"ts":"1970-01-01T00:00:00.000000Z","request_id":"r1","traceparent":null,"client":"[::1]:9","#
            + #""route":null,"method":"GET","path":"/","upstream":null,"server":null,"tries":0,"affinity":null,"#
            + #""status":400,"request_bytes":0,"#
            + #""response_bytes":0,"sse_events":0,"ttfb_ms":null,"ttfe_ms":null,"ttft_ms":null,"tpot_ms":null,"#
            + #""tokens_per_second":null,"duration_ms":0.000,"#
            + #""max_gap_ms":0.000,"paused_ms":0.000,"peak_queued_bytes":0,"rate_limit_key":null,"#
            + #""rate_limit_decision":null,"model":null,"usage":null,"end":"rejected_bad_request","#
            + #""error":"bad request line","worker":0}"# + "\n"
        #expect(record.jsonLine == expected)
        let object = try #require(LogTestSupport.jsonObject(record.jsonLine))
        #expect(object["usage"] is NSNull, "no usage in the stream is an explicit null, never an estimate")
        for key in ["ttfe_ms", "ttft_ms", "tpot_ms", "tokens_per_second"] { #expect(object[key] is NSNull, "\(key)") }
    }

    @Test func anEstimateIsLoggedApartFromUsage() throws {
        var record = LogTestSupport.record(worker: 0, sequence: 1)
        record.usageSource = "estimated"
        record.estimatedUsage = .init(promptTokens: 12, completionTokens: 30, totalTokens: 42)
        let line = record.jsonLine
        #expect(line.contains(#""usage":null,"usage_source":"estimated","#
            + #""estimated_usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42},"#))
        let object = try #require(LogTestSupport.jsonObject(line))
        #expect(object["usage"] is NSNull, "an estimate is never presented as reported usage")
        #expect(!LogTestSupport.record(worker: 0, sequence: 1).jsonLine.contains("usage_source"),
                "the keys appear only when set")
    }

    @Test func aTunnelAddsItsObjectAfterTheWorker() throws {
        var record = LogTestSupport.record(worker: 0, sequence: 1)
        #expect(!record.jsonLine.contains("tunnel"), "an ordinary exchange has no tunnel key")
        record.end = .tunnelClientClosed
        record.tunnel = .init(clientBytes: 30, upstreamBytes: 1_018, clientMessages: 2, upstreamMessages: 3, clientCloseCode: 4000,
                              upstreamCloseCode: nil, firstUpstreamMessageMilliseconds: 2.5, durationMilliseconds: 28.166)
        let line = record.jsonLine
        #expect(line.contains(#""worker":0,"tunnel":{"protocol":"websocket","client_bytes":30,"upstream_bytes":1018,"#
            + #""client_messages":2,"upstream_messages":3,"client_close_code":4000,"upstream_close_code":null,"#
            + #""first_upstream_message_ms":2.500,"duration_ms":28.166}"#), "\(line)")
        let object = try #require(LogTestSupport.jsonObject(line))
        #expect(object["end"] as? String == "tunnel_client_closed")
    }

    @Test func endHasExactlyTheSpecifiedSpellings() {
        let specified = ["complete", "client_abort", "upstream_abort", "upstream_error", "timeout_connect",
                         "timeout_first_byte", "timeout_idle", "timeout_total", "client_write_timeout",
                         "rejected_rate_limit", "rejected_bad_request", "drain", "rejected_overload",
                         "upstream_unresolved", "tunnel_client_closed", "tunnel_upstream_closed", "tunnel_idle_timeout"]
        #expect(CompletionRecord.End.allCases.map(\.rawValue) == specified)
        #expect(CompletionRecord.End.allCases.map(\.ordinal) == Array(0..<specified.count))
    }

    @Test(arguments: CompletionRecord.End.allCases)
    func everyEndRendersAndParses(end: CompletionRecord.End) throws {
        var record = LogTestSupport.record(worker: 1, sequence: 9)
        record.end = end
        let object = try #require(LogTestSupport.jsonObject(record.jsonLine))
        #expect(object["end"] as? String == end.rawValue)
    }

    @Test func keysAppearInTheDocumentedOrder() {
        var record = Self.fullRecord()
        record.estimatedUsage = .init(promptTokens: 1, completionTokens: 2, totalTokens: 3)
        record.capturedRequestBody = "{}"
        let line = record.jsonLine
        let keys = ["ts", "request_id", "traceparent", "client", "route", "method", "path", "upstream", "server", "tries", "affinity", "status",
                    "request_bytes", "response_bytes", "sse_events", "ttfb_ms", "ttfe_ms", "ttft_ms", "tpot_ms",
                    "tokens_per_second", "duration_ms", "max_gap_ms", "paused_ms", "peak_queued_bytes", "rate_limit_key", "rate_limit_decision", "model", "usage",
                    "usage_source", "estimated_usage", "end", "error", "worker", "request_body", "response_text", "capture_truncated"]
        let positions = keys.map { key in line.range(of: "\"\(key)\":").map { line.distance(from: line.startIndex, to: $0.lowerBound) } ?? -1 }
        #expect(!positions.contains(-1))
        #expect(positions == positions.sorted())
    }

    @Test(arguments: [
        ("plain", #""plain""#),
        ("say \"hi\"", #""say \"hi\"""#),
        ("back\\slash", #""back\\slash""#),
        ("line\nfeed\r\ttab", #""line\nfeed\r\ttab""#),
        ("\u{08}\u{0C}", #""\b\f""#),
        ("\u{00}\u{01}\u{1F}\u{7F}", #""\u0000\u0001\u001f\u007f""#),
        ("é ☃ 🦀", "\"é ☃ 🦀\""),
        ("</script>", #""</script>""#),
    ])
    func stringsAreEscaped(input: String, expected: String) throws {
        var out: [UInt8] = []
        JSONBytes.appendString(input, to: &out)
        let rendered = String(decoding: out, as: UTF8.self)
        #expect(rendered == expected)
        // And Foundation reads back the original text.
        let parsed = try JSONSerialization.jsonObject(with: Data(out), options: [.fragmentsAllowed]) as? String
        #expect(parsed == input)
    }

    @Test(arguments: [
        ([0x61, 0xFF, 0x62], "a\u{FFFD}b"), // a byte that never starts a sequence
        ([0xC3], "\u{FFFD}"), // truncated 2-byte sequence at the end
        ([0xE2, 0x82, 0x61], "\u{FFFD}a"), // truncated 3-byte sequence: one U+FFFD for the maximal subpart
        ([0xC0, 0xAF], "\u{FFFD}\u{FFFD}"), // overlong "/"
        ([0xED, 0xA0, 0x80], "\u{FFFD}\u{FFFD}\u{FFFD}"), // UTF-16 surrogate
        ([0xF4, 0x90, 0x80, 0x80], "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"), // above U+10FFFF
        ([0xF0, 0x9F, 0xA6], "\u{FFFD}"), // truncated 4-byte sequence
        ([0xF0, 0x9F, 0xA6, 0x80], "🦀"),
        ([0x80, 0x22], "\u{FFFD}\""), // lone continuation byte, then a quote that still gets escaped
    ] as [([UInt8], String)])
    func invalidUTF8IsReplaced(bytes: [UInt8], expected: String) throws {
        var out: [UInt8] = []
        bytes.withUnsafeBufferPointer { JSONBytes.appendString(utf8: $0, to: &out) }
        let parsed = try JSONSerialization.jsonObject(with: Data(out), options: [.fragmentsAllowed]) as? String
        #expect(parsed == expected)
        #expect(String(validating: out, as: UTF8.self) != nil, "the output is valid UTF-8")
    }

    @Test func queryStringIsDroppedUnlessAsked() throws {
        var record = LogTestSupport.record(worker: 0, sequence: 0)
        record.path = "/v1/models?key=secret#frag"
        #expect(try #require(LogTestSupport.jsonObject(record.jsonLine))["path"] as? String == "/v1/models")
        record.path = "/v1/models#frag"
        #expect(try #require(LogTestSupport.jsonObject(record.jsonLine))["path"] as? String == "/v1/models")
        record.path = "/v1/models?key=secret"
        record.includeQuery = true
        #expect(try #require(LogTestSupport.jsonObject(record.jsonLine))["path"] as? String == "/v1/models?key=secret")
    }

    @Test func capturesAppearOnlyWhenCaptured() throws {
        var record = LogTestSupport.record(worker: 0, sequence: 0)
        #expect(!record.jsonLine.contains("request_body"))
        record.capturedResponseText = "Hello\nworld"
        record.captureTruncated = true
        let object = try #require(LogTestSupport.jsonObject(record.jsonLine))
        #expect(object["request_body"] is NSNull)
        #expect(object["response_text"] as? String == "Hello\nworld")
        #expect(object["capture_truncated"] as? Bool == true)
    }

    /// Times are measured in whole microseconds (`ProxyLoop.nowMicroseconds`) and reach the record as
    /// microseconds / 1000: each such value is written back as exactly its microseconds.
    @Test(arguments: [
        (0.0, "0.000"), (12.5, "12.500"), (0.0004, "0.000"), (0.0005, "0.001"), (1234.5678, "1234.568"),
        (-3, "0.000"), (Double.nan, "0.000"), (Double.infinity, "0.000"), (600_000, "600000.000"),
        (Double(12_345) / 1000, "12.345"), (Double(1) / 1000, "0.001"), (Double(999) / 1000, "0.999"),
        (Double(86_400_000_001) / 1000, "86400000.001"), (Double(3_600_000_123_457) / 1000, "3600000123.457"),
    ])
    func millisecondsHaveThreeDecimals(value: Double, expected: String) {
        var out: [UInt8] = []
        JSONBytes.appendMilliseconds(value, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == expected)
    }

    @Test(arguments: [Int64.min, -1, 0, 7, -42, 1_000_000, Int64.max])
    func integersRender(value: Int64) {
        var out: [UInt8] = []
        JSONBytes.appendInt(value, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == String(value))
    }

    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000000Z"),
        (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
        (1_735_689_599_999_999, "2024-12-31T23:59:59.999999Z"),
        (1_735_689_600_000_001, "2025-01-01T00:00:00.000001Z"),
        (4_107_542_400_000_000, "2100-03-01T00:00:00.000000Z"),
        (-1, "1969-12-31T23:59:59.999999Z"),
    ])
    func timestampsAreRFC3339UTC(microseconds: Int64, expected: String) {
        var out: [UInt8] = []
        CompletionRecord.appendTimestamp(microseconds: microseconds, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == expected)
    }

    @Test func timestampsAgreeWithGmtime() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let microseconds = Int64.random(in: 0..<7_258_118_400_000_000, using: &generator) // 1970 to 2200
            var seconds = time_t(microseconds / 1_000_000)
            var parts = tm()
            gmtime_r(&seconds, &parts)
            func pad(_ value: Int32, _ width: Int) -> String {
                let text = String(value)
                return String(repeating: "0", count: width - text.count) + text
            }
            let expected = "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
                + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(microseconds % 1_000_000), 6))Z"
            var out: [UInt8] = []
            CompletionRecord.appendTimestamp(microseconds: microseconds, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == expected, "at \(microseconds)")
        }
    }

    /// Whole numbers of microseconds below a day, divided by 1000 as the session does, come back as the same
    /// digits: the three decimals are the measurement, never a rounding artefact.
    @Test func microsecondCountsRoundTrip() {
        var out: [UInt8] = []
        // Densely below 10 ms, then every 8,639,993 µs up to a day (about 20,000 values in all).
        for microseconds in Array(stride(from: Int64(0), to: 10_000, by: 1)) + Array(stride(from: Int64(0), to: 86_400_000_000, by: 8_639_993)) {
            out.removeAll(keepingCapacity: true)
            JSONBytes.appendMilliseconds(Double(microseconds) / 1000, to: &out)
            let fraction = microseconds % 1000
            let expected = "\(microseconds / 1000)." + (fraction < 10 ? "00" : fraction < 100 ? "0" : "") + "\(fraction)"
            if String(decoding: out, as: UTF8.self) != expected {
                Issue.record("\(microseconds) µs written as \(String(decoding: out, as: UTF8.self))")
                return
            }
        }
    }

    @Test func wallClockIsNowInMicroseconds() {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let before = Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
        let clock = CompletionRecord.wallClockMicroseconds()
        #expect(clock >= before && clock - before < 1_000_000)
        // Microsecond resolution: some reading in a tight loop is not a whole millisecond, which a clock in
        // milliseconds times 1000 could never give.
        var sawSubMillisecond = false
        for _ in 0..<10_000 where CompletionRecord.wallClockMicroseconds() % 1000 != 0 {
            sawSubMillisecond = true
            break
        }
        #expect(sawSubMillisecond)
    }
}
