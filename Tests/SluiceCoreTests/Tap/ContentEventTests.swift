import Testing
@testable import SluiceCore

/// A body and the output the tap must find in it: content-bearing documents, and the completion estimate.
struct ContentCase: Sendable, CustomTestStringConvertible {
    var name: String
    var kind: ResponseTap.Kind
    var body: String
    var contentEvents: Int
    var estimate: Int64

    /// An SSE stream of one event per element of `data` (each `data: …` then a blank line).
    static func events(_ name: String, _ data: [String], content: Int, estimate: Int64? = nil) -> ContentCase {
        ContentCase(name: name, kind: .eventStream, body: data.map { "data: \($0)\n\n" }.joined(),
                    contentEvents: content, estimate: estimate ?? Int64(content))
    }

    /// A JSON body.
    static func body(_ name: String, _ body: String, content: Int, estimate: Int64) -> ContentCase {
        ContentCase(name: name, kind: .json, body: body, contentEvents: content, estimate: estimate)
    }

    var testDescription: String { name }
}

private func chunk(_ delta: String) -> String {
    #"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":"# + delta + #","finish_reason":null}]}"#
}

private let contentCases: [ContentCase] = [
    // OpenAI chat/completions and the servers that copy it (vLLM, TGI's Messages API).
    .events("a content delta", [chunk(#"{"content":"Hi"}"#)], content: 1),
    .events("a role-only chunk is not output", [chunk(#"{"role":"assistant"}"#)], content: 0),
    .events("an empty content is not output", [chunk(#"{"role":"assistant","content":""}"#)], content: 0),
    .events("a null content is not output", [chunk(#"{"content":null,"refusal":null}"#)], content: 0),
    .events("an empty delta (the finish chunk) is not output", [chunk("{}")], content: 0),
    .events("a usage-only chunk is not output",
            [#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#], content: 0),
    .events("an escaped newline is output", [chunk(#"{"content":"\n"}"#)], content: 1),
    .events("the first tool-call chunk (id and name)",
            [chunk(#"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}"#)],
            content: 1),
    .events("a tool-call arguments delta",
            [chunk(#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}"#)], content: 1),
    .events("a tool-call chunk with only empty strings is not output",
            [chunk(#"{"tool_calls":[{"index":0,"function":{"arguments":""}}]}"#)], content: 0),
    .events("an empty tool_calls array is not output", [chunk(#"{"tool_calls":[]}"#)], content: 0),
    .events("output nested deeper than the stored roles",
            [chunk(#"{"tool_calls":[{"function":{"arguments":{"a":{"b":[{"c":"deep"}]}}}}]}"#)], content: 1),
    .events("the legacy function_call", [chunk(#"{"function_call":{"arguments":"{}"}}"#)], content: 1),
    .events("reasoning_content (vLLM, DeepSeek)", [chunk(#"{"reasoning_content":"Let me think"}"#)], content: 1),
    .events("reasoning", [chunk(#"{"reasoning":"Hmm"}"#)], content: 1),
    .events("a refusal", [chunk(#"{"refusal":"I can't"}"#)], content: 1),
    .events("completions text", [#"{"id":"cmpl","object":"text_completion","choices":[{"text":"Hello","index":0}]}"#],
            content: 1),
    .events("empty completions text is not output", [#"{"choices":[{"text":"","index":0,"finish_reason":"stop"}]}"#],
            content: 0),
    .events("two choices with output: one event, two deltas",
            [#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#],
            content: 1, estimate: 2),
    .events("one of two choices with output",
            [#"{"choices":[{"index":0,"delta":{"content":""}},{"index":1,"delta":{"content":"b"}}]}"#], content: 1),
    .events("logprobs content is not output",
            [#"{"choices":[{"index":0,"delta":{},"logprobs":{"content":[{"token":"x","logprob":-1}]}}]}"#], content: 0),
    .events("content outside a choice's delta is not output",
            [#"{"delta":{"content":"x"}}"#, #"{"message":{"content":"x"}}"#,
             #"{"choices":[{"delta":{"metadata":{"content":"x"}}}]}"#, #"{"content":{"text":"x"}}"#,
             #"[{"choices":[{"delta":{"content":"x"}}]}]"#], content: 0),
    .events("a chat stream: role-only, three deltas, finish, usage, [DONE]",
            [chunk(#"{"role":"assistant","content":""}"#), chunk(#"{"content":"One"}"#), chunk(#"{"content":" two"}"#),
             chunk(#"{"content":" three"}"#), chunk("{}"),
             #"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}"#, "[DONE]"],
            content: 3),
    .events("a malformed document is not counted", [#"{"choices":[{"delta":{"content":"x"}}]"#], content: 0),
    // Other servers.
    .events("TGI generate_stream token",
            [#"{"index":1,"token":{"id":7,"text":"Hi","logprob":-0.1,"special":false},"generated_text":null,"details":null}"#],
            content: 1),
    .events("llama.cpp /completion content", [#"{"content":"Hi","stop":false}"#, #"{"content":"","stop":true}"#],
            content: 1),
    // Anthropic messages.
    .events("Anthropic text, thinking and tool-input deltas",
            [#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
             #"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#,
             #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#],
            content: 3),
    .events("Anthropic events around the deltas are not output",
            [#"{"type":"message_start","message":{"id":"m","content":[],"usage":{"input_tokens":5,"output_tokens":1}}}"#,
             #"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"x"}}"#,
             #"{"type": "ping"}"#, #"{"type":"content_block_stop","index":0}"#,
             #"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
             #"{"type":"message_stop"}"#], content: 0),
    // OpenAI Responses API.
    .events("Responses API deltas",
            [#"{"type":"response.created","response":{"id":"r","output":[],"usage":null}}"#,
             #"{"type":"response.output_text.delta","item_id":"m","delta":"Hi"}"#,
             #"{"type":"response.function_call_arguments.delta","item_id":"f","delta":"{"}"#,
             #"{"type":"response.output_text.done","text":"Hi"}"#], content: 2),
    // Non-streamed JSON bodies: the output text bytes / 4, rounded up.
    .body("OpenAI chat body", #"{"choices":[{"index":0,"message":{"role":"assistant","content":"12345678"}}]}"#,
          content: 1, estimate: 2),
    .body("OpenAI chat body with a tool call",
          #"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#,
          content: 1, estimate: 3),
    .body("completions body", #"{"choices":[{"text":"abcde","index":0}]}"#, content: 1, estimate: 2),
    .body("escapes count decoded", #"{"choices":[{"message":{"content":"\u00e9t\u00e9"}}]}"#, content: 1, estimate: 2),
    .body("Anthropic body with text and a tool use",
          #"{"type":"message","content":[{"type":"text","text":"abcd"},{"type":"tool_use","id":"t","name":"f","input":{"q":"xyz"}}]}"#,
          content: 1, estimate: 2),
    .body("Anthropic thinking block", #"{"content":[{"type":"thinking","thinking":"hmm","signature":"s"}]}"#,
          content: 1, estimate: 1),
    .body("a body with no output", #"{"error":{"message":"bad","type":"invalid_request_error"}}"#,
          content: 0, estimate: 0),
    .body("a truncated body counts nothing", #"{"choices":[{"message":{"content":"12345678"}}]"#,
          content: 0, estimate: 0),
    ContentCase(name: "other bodies are not read", kind: .other, body: #"{"content":"Hi"}"#, contentEvents: 0,
                estimate: 0),
]

@Suite("Content-bearing events")
struct ContentEventTests {
    private typealias Support = TapTestSupport

    @Test("counts output whole, split at every offset and byte by byte", arguments: contentCases)
    func counts(_ contentCase: ContentCase) {
        let bytes = Support.bytes(contentCase.body)
        var tap = ResponseTap()
        for feeding in Support.feedings(bytes.count) {
            let observation = Support.run(&tap, kind: contentCase.kind, bytes, cuts: feeding.cuts).observation
            #expect(observation.contentEvents == contentCase.contentEvents, "\(feeding.name)")
            #expect(observation.estimatedCompletionTokens == contentCase.estimate, "\(feeding.name)")
            #expect(observation.firstContentEventAt == (contentCase.contentEvents > 0 ? 7 : nil), "\(feeding.name)")
        }
    }

    @Test("the first content event's time is its dispatch, after role-only and metadata events")
    func firstContentTime() {
        var tap = ResponseTap()
        tap.reset(kind: .eventStream)
        // The first content event arrives in three calls; it is dispatched by the blank line at 40.
        let content = "data: " + chunk(#"{"content":"Hi"}"#) + "\n\n"
        let pieces: [(Int64, String)] = [
            (10, "data: " + chunk(#"{"role":"assistant","content":""}"#) + "\n\n"),
            (20, String(content.prefix(20))),
            (30, String(content.dropFirst(20).dropLast(1))),
            (40, "\n"),
            (50, "data: " + chunk(#"{"content":"!"}"#) + "\n\n"),
        ]
        for (now, text) in pieces {
            tap.observe(Support.bytes(text).span, now: now)
        }
        tap.finish(now: 60)
        let observation = tap.observation
        #expect(observation.firstDataEventAt == 10)
        #expect(observation.firstContentEventAt == 40)
        #expect(observation.contentEvents == 2)
        #expect(observation.estimatedCompletionTokens == 2)
    }

    @Test("reset forgets the counts")
    func resetForgets() {
        var tap = ResponseTap()
        let first = Support.run(&tap, kind: .eventStream, Support.bytes("data: " + chunk(#"{"content":"x"}"#) + "\n\n"))
        #expect(first.observation.contentEvents == 1)
        tap.reset(kind: .eventStream)
        #expect(tap.observation == ResponseObservation())
    }
}
