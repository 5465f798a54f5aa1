import Testing
@testable import SluiceCore

/// A response body and what the tap must report when every piece arrives at the same `now` (7): the first data
/// line and the last dispatch then both read 7, and no gap is longer than 0.
struct ResponseTapCase: Sendable, CustomTestStringConvertible {
    var name: String
    var kind: ResponseTap.Kind
    var body: [UInt8]
    var eventCount: Int
    /// Whether any `data` field began, so that `firstDataEventAt` is 7.
    var sawData: Bool
    var usage: TokenUsage?
    var model: String?
    /// When set, the capture with an ample limit.
    var capture: String?
    /// Content-bearing documents, and the completion estimate (for streams the output deltas, equal to `content`
    /// unless a chunk has several choices; for JSON bodies the output text bytes / 4).
    var content: Int
    var estimate: Int64

    init(_ name: String, _ body: String, kind: ResponseTap.Kind = .eventStream, events: Int = 0,
         sawData: Bool? = nil, usage: TokenUsage? = nil, model: String? = nil, capture: String? = nil,
         content: Int = 0, estimate: Int64? = nil) {
        self.init(name, bytes: TapTestSupport.bytes(body), kind: kind, events: events, sawData: sawData,
                  usage: usage, model: model, capture: capture, content: content, estimate: estimate)
    }

    init(_ name: String, bytes: [UInt8], kind: ResponseTap.Kind = .eventStream, events: Int = 0,
         sawData: Bool? = nil, usage: TokenUsage? = nil, model: String? = nil, capture: String? = nil,
         content: Int = 0, estimate: Int64? = nil) {
        self.name = name
        self.kind = kind
        self.body = bytes
        self.eventCount = events
        self.sawData = sawData ?? (events > 0)
        self.usage = usage
        self.model = model
        self.capture = capture
        self.content = content
        self.estimate = estimate ?? Int64(content)
    }

    var expected: ResponseObservation {
        ResponseObservation(eventCount: eventCount, firstDataEventAt: sawData ? 7 : nil,
                            lastEventAt: eventCount > 0 ? 7 : nil, maxGap: 0, usage: usage, model: model,
                            contentEvents: content, firstContentEventAt: content > 0 ? 7 : nil,
                            estimatedCompletionTokens: estimate)
    }

    var testDescription: String { name }
}

private typealias Fixtures = TapFixtures

private func usage(_ prompt: Int64, _ completion: Int64, _ total: Int64) -> TokenUsage {
    TokenUsage(promptTokens: prompt, completionTokens: completion, totalTokens: total)
}

/// An event whose data is `{"usage":{...},"deep":` followed by `levels` nested arrays: the top-level object is
/// level 1, so `levels` = 31 reaches the 32-level limit and 32 passes it.
private func deepEvent(levels: Int) -> String {
    #"data: {"usage":{"prompt_tokens":5,"completion_tokens":3},"deep":"#
        + String(repeating: "[", count: levels) + String(repeating: "]", count: levels) + "}\n\n"
}

private let openAIUsage = usage(19, 10, 29)
private let anthropicUsage = usage(25, 15, 40)

private let streamCases: [ResponseTapCase] = [
    .init("OpenAI chat stream with include_usage", Fixtures.openAIChatStream, events: 6, usage: openAIUsage,
          model: "gpt-4o-2024-08-06", content: 2),
    .init("OpenAI chat stream without usage", Fixtures.openAIChatStreamWithoutUsage, events: 4, usage: nil,
          model: "gpt-4o-mini-2024-07-18", content: 1),
    .init("Anthropic messages stream", Fixtures.anthropicStream, events: 8, usage: anthropicUsage,
          model: "claude-sonnet-4-5-20250929", content: 2),
    .init("Anthropic stream with prompt caching", Fixtures.anthropicCachedStream, events: 6,
          usage: usage(3010, 42, 3052), model: "claude-3-7-sonnet-20250219", content: 1),
    .init("Anthropic stream ended by an error event", Fixtures.anthropicErrorStream, events: 2,
          usage: usage(512, 1, 513), model: "claude-opus-4-1-20250805"),
    .init("vLLM stream", Fixtures.vLLMStream, events: 5, usage: usage(12, 3, 15),
          model: "meta-llama/Llama-3.1-8B-Instruct", content: 2),
    .init("vLLM continuous usage: the last report wins", Fixtures.vLLMContinuousUsageStream, events: 4,
          usage: usage(8, 3, 11), model: "Qwen/Qwen2.5-7B-Instruct", content: 2),
    .init("OpenAI Responses API stream", Fixtures.openAIResponsesStream, events: 3, usage: usage(37, 11, 48),
          model: "gpt-4.1-2025-04-14", content: 1),
]

private let crlfStream = Fixtures.withLineEnds(Fixtures.openAIChatStream, "\r\n")
private let crStream = Fixtures.withLineEnds(Fixtures.anthropicStream, "\r")
private let mixedStream = Fixtures.withMixedLineEnds(Fixtures.anthropicStream)
private let bomStream = "\u{FEFF}" + Fixtures.anthropicStream
private let partialBOMStream: [UInt8] = [0xEF, 0xBB] + TapTestSupport.bytes("data: {\"model\":\"hidden\"}\n\ndata: 1\n\n")
private let unterminatedDone = String(Fixtures.openAIChatStream.dropLast(1))
private let unterminatedUsage = String(Fixtures.openAIChatStream.dropLast("\n\ndata: [DONE]\n\n".count)) + "\n"

/// Line ends, BOM and framing (§9.2.6).
private let framingCases: [ResponseTapCase] = [
    .init("CRLF line ends", crlfStream, events: 6,
          usage: openAIUsage, model: "gpt-4o-2024-08-06", content: 2),
    .init("CR line ends", crStream, events: 8,
          usage: anthropicUsage, model: "claude-sonnet-4-5-20250929", content: 2),
    .init("mixed CRLF, LF and CR line ends", mixedStream, events: 8,
          usage: anthropicUsage, model: "claude-sonnet-4-5-20250929", content: 2),
    .init("a BOM at the start is skipped", bomStream, events: 8,
          usage: anthropicUsage, model: "claude-sonnet-4-5-20250929", content: 2),
    .init("a BOM later is part of a field name", "data: {}\n\n\u{FEFF}data: {\"model\":\"hidden\"}\n\n",
          events: 2, model: nil, capture: "{}\n"),
    .init("a partial BOM at the start is part of a field name",
          bytes: partialBOMStream, events: 2,
          capture: "1\n"),
    .init("comments and keepalives", Fixtures.keepaliveStream, events: 1, usage: usage(2, 3, 5), model: "kept"),
    .init("multi-line data is one document", Fixtures.multiLineStream, events: 1, usage: usage(3, 4, 7),
          model: "multi",
          capture: "{\"model\":\"multi\",\n \"usage\": {\"prompt_tokens\": 3,\n\"completion_tokens\": 4}}\n"),
    .init("a token split across data lines is not joined", "data: {\"usage\":{\"prompt_tokens\":1\ndata: 2}}\n\n",
          events: 1, usage: nil),
    .init("field-line edge cases", Fixtures.fieldEdgeCases, events: 10, usage: nil, model: nil,
          capture: "\nx\n y\n"),
    .init("blank lines and comments only", "\n\r\n\r: hi\n\n:\r\r", events: 0),
    .init("empty body", "", events: 0),
    .init("an unterminated [DONE] is not dispatched",
          unterminatedDone, events: 5, usage: openAIUsage, model: "gpt-4o-2024-08-06", content: 2),
    .init("an unterminated usage event is not dispatched",
          unterminatedUsage, events: 4, usage: nil,
          model: "gpt-4o-2024-08-06", content: 2),
    .init("an unterminated last line is not dispatched", "data: {\"model\":\"a\"}\n\ndata: {\"model\":\"b\"}",
          events: 1, model: "a"),
    .init("event without data", "event: ping\nid: 7\n\n", events: 1, sawData: false),
]

private let overflowingCount =
    "data: {\"usage\":{\"prompt_tokens\":99999999999999999999,\"completion_tokens\":5,\"total_tokens\":7}}\n\n"
private let maxCount = "data: {\"usage\":{\"prompt_tokens\":9223372036854775807,\"completion_tokens\":1}}\n\n"
private let maxCountWithTotal = "data: {\"usage\":{\"prompt_tokens\":9223372036854775807,\"completion_tokens\":0,"
    + "\"total_tokens\":9223372036854775807}}\n\n"
private let inexactCounts = "data: {\"usage\":{\"prompt_tokens\":1.5,\"completion_tokens\":-2,\"total_tokens\":1e2,"
    + "\"input_tokens\":\"4\",\"output_tokens\":null}}\n\n"
private let model128 = String(repeating: "m", count: 128)
private let model128Event = "data: {\"model\":\"" + model128 + "\"}\n\n"
private let model129Event = "data: {\"model\":\"" + model128 + "m\"}\n\n"
private let deep31 = deepEvent(levels: 31)
private let deep32 = deepEvent(levels: 32)

/// Usage and model extraction.
private let usageCases: [ResponseTapCase] = [
    .init("decoy usage and model keys at the wrong depth", Fixtures.decoyStream, events: 3, usage: nil,
          model: "gpt-4o-mini", content: 1),
    .init("escapes in the model and in member names", Fixtures.escapedStream, events: 1, usage: usage(5, 6, 11),
          model: "gpt-4o-mini \"q\" \\/ \u{E9}\u{1F600}"),
    .init("malformed documents contribute nothing", Fixtures.malformedStream, events: 6, usage: usage(1, 2, 3),
          model: "ok"),
    .init("31 nested levels under the top-level object are read", deep31, events: 1,
          usage: usage(5, 3, 8)),
    .init("32 nested levels under the top-level object stop the document", deep32, events: 1,
          usage: nil),
    .init("an overflowing count is absent", overflowingCount, events: 1, usage: usage(0, 5, 7)),
    .init("Int64.max is a count; a sum past it is no usage", maxCount, events: 1, usage: nil),
    .init("Int64.max with an explicit total", maxCountWithTotal, events: 1, usage: usage(.max, 0, .max)),
    .init("fractions, exponents, negatives, strings and nulls are absent", inexactCounts, events: 1, usage: nil),
    .init("usage null and an empty usage object", "data: {\"usage\":null}\n\ndata: {\"usage\":{}}\n\n", events: 2,
          usage: nil),
    .init("missing total is prompt + completion", "data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6}}\n\n",
          events: 1, usage: usage(4, 6, 10)),
    .init("a model longer than 128 bytes is unknown", model129Event, events: 1, model: nil),
    .init("a model of exactly 128 bytes is kept", model128Event, events: 1, model: model128),
    .init("a model that is not a string is ignored", "data: {\"model\":\"a\"}\n\ndata: {\"model\":7}\n\n",
          events: 2, model: "a"),
    .init("the last model wins", "data: {\"model\":\"a\"}\n\ndata: {\"model\":\"b\"}\n\n", events: 2, model: "b"),
    .init("plain-text data is not JSON", "data: Hello, world\n\ndata: [DONE]\n\n", events: 2,
          capture: "Hello, world\n[DONE]\n"),
]

private let truncatedBody = String(Fixtures.anthropicBody.dropLast(1))
private let bodyWithGarbage = Fixtures.anthropicBody + "x"

/// Non-streaming bodies, and bodies read as the wrong kind.
private let bodyCases: [ResponseTapCase] = [
    .init("OpenAI JSON body", Fixtures.openAIChatBody, kind: .json, usage: usage(1117, 46, 1163),
          model: "gpt-4o-2024-08-06", capture: Fixtures.openAIChatBody, content: 1, estimate: 9),
    .init("Anthropic JSON body", Fixtures.anthropicBody, kind: .json, usage: usage(4146, 503, 4649),
          model: "claude-sonnet-4-5-20250929", content: 1, estimate: 6),
    .init("JSON error body", Fixtures.errorBody, kind: .json, usage: nil),
    .init("truncated JSON body", truncatedBody, kind: .json, usage: nil, model: nil),
    .init("JSON body with trailing garbage", bodyWithGarbage, kind: .json, usage: nil, model: nil),
    .init("JSON read as an event stream finds nothing", Fixtures.anthropicBody, kind: .eventStream, events: 0),
    .init("an event stream read as JSON finds nothing", Fixtures.openAIChatStream, kind: .json, usage: nil),
    .init("other bodies are only captured", Fixtures.openAIChatStream, kind: .other,
          capture: Fixtures.openAIChatStream),
]

let responseTapCases: [ResponseTapCase] = streamCases + framingCases + usageCases + bodyCases

@Suite("ResponseTap")
struct ResponseTapTests {
    private typealias Support = TapTestSupport

    @Test("observes bodies the same, whole, split at every offset and byte by byte", arguments: responseTapCases)
    func observes(_ responseCase: ResponseTapCase) {
        let whole = Support.run(kind: responseCase.kind, responseCase.body, captureLimit: 1 << 16)
        #expect(whole.observation == responseCase.expected)
        if let capture = responseCase.capture {
            #expect(String(decoding: whole.captured, as: UTF8.self) == capture)
        }
        #expect(!whole.captureTruncated)
        // One tap reused across feedings, as the proxy reuses it across exchanges.
        var tap = ResponseTap(captureLimit: 1 << 16)
        for feeding in Support.feedings(responseCase.body.count) {
            let outcome = Support.run(&tap, kind: responseCase.kind, responseCase.body, cuts: feeding.cuts)
            #expect(outcome == whole, "\(feeding.name)")
        }
    }

    /// Pieces with their `now`, and the timing the tap must report.
    struct TimingCase: Sendable, CustomTestStringConvertible {
        var name: String
        var pieces: [(now: Int64, text: String)]
        var eventCount: Int
        var firstDataEventAt: Int64?
        var lastEventAt: Int64?
        var maxGap: Int64
        var testDescription: String { name }
    }

    static let timingCases: [TimingCase] = [
        .init(name: "TTFT is the call in which the first data line began; gaps between dispatches",
              pieces: [(0, ": ping\n\n"), (100, "da"), (150, "ta: {}\n\n"), (400, "event: x\ndata: 1\n"), (450, "\n"),
                       (500, "data: 2\n\n")],
              eventCount: 3, firstDataEventAt: 100, lastEventAt: 500, maxGap: 300),
        .init(name: "the LF of a CRLF split across calls is not a blank line",
              pieces: [(10, "data: a\r"), (20, "\n"), (30, "\r\n")],
              eventCount: 1, firstDataEventAt: 10, lastEventAt: 30, maxGap: 0),
        .init(name: "CR then CR is a blank line",
              pieces: [(10, "data: a\r"), (20, "\r")],
              eventCount: 1, firstDataEventAt: 10, lastEventAt: 20, maxGap: 0),
        .init(name: "a blank CR, then the LF completing it in a later call",
              pieces: [(10, "data: a\r"), (20, "\n\r"), (35, "\n"), (40, "data: b\n\n")],
              eventCount: 2, firstDataEventAt: 10, lastEventAt: 40, maxGap: 20),
        .init(name: "events without data count but do not set TTFT",
              pieces: [(5, "event: ping\n\n"), (25, "id: 1\n\n")],
              eventCount: 2, firstDataEventAt: nil, lastEventAt: 25, maxGap: 20),
        .init(name: "the longest gap wins",
              pieces: [(0, "data: 1\n\n"), (10, "data: 2\n\n"), (1000, "data: 3\n\n"), (1005, "data: 4\n\n")],
              eventCount: 4, firstDataEventAt: 0, lastEventAt: 1005, maxGap: 990),
        .init(name: "a BOM in its own call",
              pieces: [(1, "\u{FEFF}"), (2, "data: x\n\n")],
              eventCount: 1, firstDataEventAt: 2, lastEventAt: 2, maxGap: 0),
        .init(name: "a comment line before the first data line",
              pieces: [(1, ": c"), (2, "omment\ndata: y\n"), (3, "\n")],
              eventCount: 1, firstDataEventAt: 2, lastEventAt: 3, maxGap: 0),
        .init(name: "an event without data dispatched before the first data line",
              pieces: [(1, "event: ping\n\n"), (5, "data: x\n\n")],
              eventCount: 2, firstDataEventAt: 5, lastEventAt: 5, maxGap: 4),
        .init(name: "a data line after a non-data field of the same event",
              pieces: [(1, "event: delta\n"), (2, "data: z\n\n")],
              eventCount: 1, firstDataEventAt: 2, lastEventAt: 2, maxGap: 0),
        .init(name: "an unterminated final event changes nothing",
              pieces: [(1, "data: a\n\n"), (50, "data: b\n")],
              eventCount: 1, firstDataEventAt: 1, lastEventAt: 1, maxGap: 0),
        .init(name: "several events in one call share its time",
              pieces: [(3, "data: a\n\ndata: b\n\n"), (9, "data: c\n\n")],
              eventCount: 3, firstDataEventAt: 3, lastEventAt: 9, maxGap: 6),
    ]

    @Test("takes times from the calls", arguments: timingCases)
    func timing(_ timing: TimingCase) {
        var tap = ResponseTap()
        tap.reset(kind: .eventStream)
        for piece in timing.pieces {
            let bytes = Support.bytes(piece.text)
            tap.observe(bytes.span, now: piece.now)
        }
        tap.finish(now: 10_000)
        let observation = tap.observation
        #expect(observation.eventCount == timing.eventCount)
        #expect(observation.firstDataEventAt == timing.firstDataEventAt)
        #expect(observation.lastEventAt == timing.lastEventAt)
        #expect(observation.maxGap == timing.maxGap)
    }

    @Test("TTFT and gaps of a real stream delivered one event per call")
    func realStreamTiming() {
        let body = Support.bytes(Fixtures.anthropicStream)
        // Cut after each blank line; event i arrives at 1000 + 40 * i, except the delta after a 700 ms stall.
        var cuts: [Int] = []
        for index in 1..<body.count where body[index] == 0x0A && body[index - 1] == 0x0A {
            cuts.append(index + 1)
        }
        cuts.removeLast()  // the last blank line ends the body
        #expect(cuts.count == 7)
        let outcome = Support.run(kind: .eventStream, body, cuts: cuts) { index in
            1000 + 40 * Int64(index) + (index >= 4 ? 700 : 0)
        }
        #expect(outcome.observation == ResponseObservation(
            eventCount: 8, firstDataEventAt: 1000, lastEventAt: 1000 + 40 * 7 + 700, maxGap: 740,
            usage: anthropicUsage, model: "claude-sonnet-4-5-20250929",
            contentEvents: 2, firstContentEventAt: 1000 + 40 * 3, estimatedCompletionTokens: 2))
    }

    @Test("capture keeps the first bytes and marks the rest as dropped")
    func captureLimit() {
        let cases: [(kind: ResponseTap.Kind, body: String, limit: Int, captured: String, truncated: Bool)] = [
            (.eventStream, "data: abc\n\ndata: def\n\n", 0, "", false),
            (.eventStream, "data: abc\n\ndata: def\n\n", 8, "abc\ndef\n", false),
            (.eventStream, "data: abc\n\ndata: def\n\n", 7, "abc\ndef", true),
            (.eventStream, "data: abc\n\ndata: def\n\n", 5, "abc\nd", true),
            (.eventStream, "event: x\nid: 1\n: c\n\n", 4, "", false),
            (.json, "{\"a\":1}", 7, "{\"a\":1}", false),
            (.json, "{\"a\":1}", 3, "{\"a", true),
            (.other, "<html>", 100, "<html>", false),
        ]
        for (kind, body, limit, captured, truncated) in cases {
            let bytes = Support.bytes(body)
            for feeding in Support.feedings(bytes.count) {
                let outcome = Support.run(kind: kind, bytes, cuts: feeding.cuts, captureLimit: limit)
                #expect(String(decoding: outcome.captured, as: UTF8.self) == captured, "\(body) \(feeding.name)")
                #expect(outcome.captureTruncated == truncated, "\(body) \(feeding.name)")
            }
        }
    }

    @Test("reset forgets the previous exchange; input after finish is ignored")
    func resetAndFinish() {
        var tap = ResponseTap(captureLimit: 64)
        let anthropic = Support.run(&tap, kind: .eventStream, Support.bytes(Fixtures.anthropicStream))
        #expect(anthropic.observation.usage == anthropicUsage)

        tap.reset(kind: .eventStream)
        #expect(tap.observation == ResponseObservation())
        #expect(tap.withCapturedText { $0.count } == 0)

        tap.observe(Support.bytes("data: {\"model\":\"m\"}\n\n").span, now: 1)
        tap.finish(now: 2)
        tap.observe(Support.bytes("data: {\"model\":\"n\"}\n\n").span, now: 3)
        tap.finish(now: 4)
        #expect(tap.observation == ResponseObservation(eventCount: 1, firstDataEventAt: 1, lastEventAt: 1,
                                                       model: "m"))
    }

    @Test("the first body byte's time is kept for every kind, from the first call that had bytes",
          arguments: [ResponseTap.Kind.eventStream, .json, .other])
    func firstBodyByte(_ kind: ResponseTap.Kind) {
        var tap = ResponseTap()
        tap.reset(kind: kind)
        #expect(tap.firstBodyByteAt == nil)
        tap.observe(Support.bytes("").span, now: 5)
        #expect(tap.firstBodyByteAt == nil, "an empty piece is no byte")
        tap.observe(Support.bytes("{").span, now: 9)
        tap.observe(Support.bytes("}").span, now: 12)
        tap.finish(now: 14)
        #expect(tap.firstBodyByteAt == 9)
        tap.reset(kind: kind)
        #expect(tap.firstBodyByteAt == nil, "reset forgets it")
    }

    @Test("data lines longer than the line-search window, with every line end", arguments: ["\n", "\r\n", "\r"])
    func longLines(_ lineEnd: String) {
        // 2,500 and 5,000 bytes: each spans several search windows, and CR-only ends must not be missed in one.
        let padding = String(repeating: "x", count: 2_500)
        let stream = "data: {\"model\":\"m\",\"pad\":\"\(padding)\"}\n\n"
            + "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2},\"pad\":\"\(padding + padding)\"}\n\n"
        let bytes = Support.bytes(Fixtures.withLineEnds(stream, lineEnd))
        let expected = ResponseObservation(eventCount: 2, firstDataEventAt: 7, lastEventAt: 7, maxGap: 0,
                                           usage: usage(1, 2, 3), model: "m")
        #expect(Support.run(kind: .eventStream, bytes).observation == expected)
        for cut in [1, 1_023, 1_024, 1_025, 2_530, 2_531, 2_532, 4_000] {
            #expect(Support.run(kind: .eventStream, bytes, cuts: [cut]).observation == expected, "cut at \(cut)")
        }
    }

    @Test("without usage reading, framing and timing are followed and no usage, model or content is reported")
    func usageOff() {
        for (kind, body) in [(ResponseTap.Kind.eventStream, Fixtures.anthropicStream), (.json, #"{"model":"m","usage":{"total_tokens":3}}"#)] {
            let bytes = Support.bytes(body)
            let reading = Support.run(kind: kind, bytes).observation
            var tap = ResponseTap()
            tap.reset(kind: kind, readsUsage: false)
            tap.observe(bytes.span, now: 7)
            tap.finish(now: 7)
            #expect(tap.observation == ResponseObservation(eventCount: reading.eventCount, firstDataEventAt: reading.firstDataEventAt,
                                                           lastEventAt: reading.lastEventAt, maxGap: reading.maxGap))
            #expect(reading.usage != nil && reading.model != nil)
            #expect(kind != .eventStream || reading.contentEvents == 2)
        }
    }

    @Test("UsageReader reads documents given separately")
    func usageReaderAlone() {
        var reader = UsageReader()
        let documents = [
            #"{"type":"message_start","message":{"model":"claude-3-5-haiku-20241022","usage":{"input_tokens":7,"output_tokens":1}}}"#,
            #"{"type":"message_delta","usage":{"output_tokens":3}}"#,
            #"{"type":"message_delta","usage":{"output_tokens":5}"#,  // unfinished: ignored
        ]
        for document in documents {
            let bytes = Support.bytes(document)
            reader.beginDocument()
            for index in bytes.indices {
                reader.feed(bytes.span.extracting(index..<index + 1))
            }
            reader.endDocument()
        }
        #expect(reader.usage == usage(7, 3, 10))
        #expect(reader.model == "claude-3-5-haiku-20241022")
        #expect(reader.reportedUsage == ReportedUsage(inputTokens: 7, outputTokens: 3))
        reader.reset()
        #expect(reader.usage == nil && reader.model == nil)
    }
}
