import Testing
@testable import SluiceCore

/// A request body and the `model` and `stream` the tap must report for it (with a cap well above its size).
struct RequestTapCase: Sendable, CustomTestStringConvertible {
    var name: String
    var body: [UInt8]
    var model: String?
    var stream: Bool?

    init(_ name: String, _ body: String, model: String?, stream: Bool?) {
        self.name = name
        self.body = TapTestSupport.bytes(body)
        self.model = model
        self.stream = stream
    }

    var testDescription: String { name }
}

private let model128 = String(repeating: "m", count: 128)

let requestTapCases: [RequestTapCase] = [
    .init("OpenAI streaming request",
          #"{"model":"gpt-4o","stream":true,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}],"stream_options":{"include_usage":true}}"#,
          model: "gpt-4o", stream: true),
    .init("non-streaming request", #"{"model":"gpt-4o-mini","stream":false,"messages":[]}"#,
          model: "gpt-4o-mini", stream: false),
    .init("no stream member", #"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#,
          model: "gpt-4o", stream: nil),
    .init("Anthropic request with decoys in nested objects",
          #"{"messages":[{"role":"user","content":"hi","model":"decoy","stream":false}],"metadata":{"model":"decoy2","stream":false},"tools":[{"name":"t","input_schema":{"type":"object","properties":{"model":{"type":"string"}}}}],"model":"claude-3-5-haiku-20241022","max_tokens":1024,"stream":true}"#,
          model: "claude-3-5-haiku-20241022", stream: true),
    .init("pretty-printed", "{\n  \"model\" : \"llama3\",\r\n\t\"stream\" :\ttrue\n}\n", model: "llama3", stream: true),
    .init("escapes in the model", #"{"model":"gpt\u002d4o \"x\"","stream":true}"#, model: "gpt-4o \"x\"",
          stream: true),
    .init("duplicate members: the last wins", #"{"model":"a","stream":true,"model":"b","stream":false}"#,
          model: "b", stream: false),
    .init("a later null model makes it unknown", #"{"model":"a","model":null}"#, model: nil, stream: nil),
    .init("a model that is not a string", #"{"model":42,"stream":true}"#, model: nil, stream: true),
    .init("a model that is an object", #"{"model":{"name":"x"},"stream":true}"#, model: nil, stream: true),
    .init("a stream that is not a boolean", #"{"model":"m","stream":"true"}"#, model: "m", stream: nil),
    .init("a stream of 1", #"{"model":"m","stream":1}"#, model: "m", stream: nil),
    .init("a model of exactly 128 bytes", "{\"model\":\"\(model128)\"}", model: model128, stream: nil),
    .init("a model longer than 128 bytes", "{\"model\":\"\(model128)m\"}", model: nil, stream: nil),
    .init("unfinished body", #"{"model":"gpt-4o","stream":true,"#, model: nil, stream: nil),
    .init("garbage after the body", #"{"model":"gpt-4o","stream":true} x"#, model: nil, stream: nil),
    .init("malformed body", #"{"model":"gpt-4o","stream":tru}"#, model: nil, stream: nil),
    .init("an array body", #"[{"model":"gpt-4o","stream":true}]"#, model: nil, stream: nil),
    .init("an empty body", "", model: nil, stream: nil),
    .init("form data", "model=gpt-4o&stream=true", model: nil, stream: nil),
]

@Suite("RequestTap")
struct RequestTapTests {
    private typealias Support = TapTestSupport

    /// Feeds `bytes` to `tap` (after `reset`) in pieces cut at `cuts`.
    private static func run(_ tap: inout RequestTap, _ bytes: [UInt8], cuts: [Int]) -> (String?, Bool?) {
        tap.reset()
        for range in Support.pieces(bytes.count, cuts: cuts) {
            tap.observe(bytes.span.extracting(range))
        }
        return (tap.model, tap.stream)
    }

    @Test("reads model and stream, whole, split at every offset and byte by byte", arguments: requestTapCases)
    func reads(_ requestCase: RequestTapCase) {
        var tap = RequestTap(maxBodyBytes: 1 << 20)
        for feeding in Support.feedings(requestCase.body.count) {
            let (model, stream) = Self.run(&tap, requestCase.body, cuts: feeding.cuts)
            #expect(model == requestCase.model, "\(feeding.name)")
            #expect(stream == requestCase.stream, "\(feeding.name)")
        }
    }

    @Test("a body over the cap reports nothing, in any split")
    func cap() {
        let body = Support.bytes(#"{"model":"gpt-4o","stream":true,"messages":[]}"#)
        let cases: [(cap: Int, model: String?, stream: Bool?, exceeded: Bool)] = [
            (body.count, "gpt-4o", true, false),
            (body.count - 1, nil, nil, true),
            (10, nil, nil, true),
            (0, nil, nil, true),
        ]
        for (cap, model, stream, exceeded) in cases {
            var tap = RequestTap(maxBodyBytes: cap)
            for feeding in Support.feedings(body.count) {
                #expect(Self.run(&tap, body, cuts: feeding.cuts) == (model, stream), "cap \(cap) \(feeding.name)")
                #expect(tap.exceededLimit == exceeded, "cap \(cap) \(feeding.name)")
            }
        }
    }

    @Test("a malformed body over the cap passes it in any split")
    func malformedBodyOverCap() {
        // Found by SluiceFuzzTap: once the scanner had failed, later pieces were no longer counted, so the verdict
        // depended on where the body was split.
        let body = Support.bytes("data: {}\n\n")
        var tap = RequestTap(maxBodyBytes: 3)
        for feeding in Support.feedings(body.count) {
            #expect(Self.run(&tap, body, cuts: feeding.cuts) == (nil, nil), "\(feeding.name)")
            #expect(tap.exceededLimit, "\(feeding.name)")
        }
    }

    @Test("captures the first bytes of the body, whatever the cap")
    func capture() {
        let body = Support.bytes(#"{"model":"gpt-4o","stream":true}"#)
        let cases: [(cap: Int, limit: Int, captured: String, truncated: Bool)] = [
            (1 << 20, 0, "", false),
            (1 << 20, 64, #"{"model":"gpt-4o","stream":true}"#, false),
            (1 << 20, 9, #"{"model":"#, true),
            (4, 9, #"{"model":"#, true),
        ]
        for (cap, limit, captured, truncated) in cases {
            var tap = RequestTap(maxBodyBytes: cap, captureLimit: limit)
            for feeding in Support.feedings(body.count) {
                _ = Self.run(&tap, body, cuts: feeding.cuts)
                let bytes = tap.withCapturedBody { Support.array($0) }
                #expect(String(decoding: bytes, as: UTF8.self) == captured, "\(limit) \(feeding.name)")
                #expect(tap.captureTruncated == truncated, "\(limit) \(feeding.name)")
            }
        }
    }

    @Test("text bytes: decoded string values of a complete JSON body, else every body byte; in any split")
    func textBytes() {
        let cases: [(body: String, cap: Int, textBytes: Int, estimate: Int64)] = [
            // "m" + "user" + "Hello, world" (member names, numbers and booleans are not text).
            (#"{"model":"m","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"Hello, world"}]}"#,
             1 << 20, 17, 5),
            (#"{"content":"\u00e9\n\"\\"}"#, 1 << 20, 5, 2),  // é is 2 bytes, then LF, quote, backslash
            (#"{"max_tokens":1024,"stream":true,"n":null}"#, 1 << 20, 0, 0),
            (#"{"content":"abcd""#, 1 << 20, 17, 5),  // unfinished: every byte offered
            (#"{"content":"abc"} trailing"#, 1 << 20, 26, 7),  // not JSON after all
            (#"{"content":"0123456789"}"#, 10, 24, 6),  // over the cap: every byte, counted but not scanned
            ("plain text prompt", 1 << 20, 17, 5),
            ("", 1 << 20, 0, 0),
        ]
        for (body, cap, textBytes, estimate) in cases {
            let bytes = Support.bytes(body)
            var tap = RequestTap(maxBodyBytes: cap)
            for feeding in Support.feedings(bytes.count) {
                _ = Self.run(&tap, bytes, cuts: feeding.cuts)
                #expect(tap.textBytes == textBytes, "\(body) \(feeding.name)")
                #expect(tap.estimatedPromptTokens == estimate, "\(body) \(feeding.name)")
            }
        }
    }

    @Test("model and stream are unknown until the body is complete")
    func unknownUntilComplete() {
        var tap = RequestTap(maxBodyBytes: 1024)
        tap.observe(Support.bytes(#"{"model":"gpt-4o","stream":true"#).span)
        #expect(tap.model == nil && tap.stream == nil)
        tap.observe(Support.bytes("}").span)
        #expect(tap.model == "gpt-4o" && tap.stream == true)
        tap.reset()
        #expect(tap.model == nil && tap.stream == nil && !tap.exceededLimit)
    }
}
