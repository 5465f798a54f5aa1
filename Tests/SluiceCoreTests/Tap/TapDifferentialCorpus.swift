/// Bodies for the differential tests of the response tap (`TapDifferentialTests`): the real-shaped streams of
/// `TapFixtures` plus hostile ones aimed at the places where `JSONPushScanner` takes shortcuts (strings crossed
/// eight bytes at a time, names kept only where read, the short buffer for names and `type`).
enum TapDifferentialCorpus {
    /// An OpenAI chat chunk in the servers' field order, with `content` written as given (already JSON-escaped).
    static func openAIChunk(_ content: String, model: String = "gpt-4o-2024-08-06", extra: String = "") -> String {
        #"{"id":"chatcmpl-AkP3xKsZ2mTZ9abcdEFGH","object":"chat.completion.chunk","created":1735000000,"model":"\#(model)","system_fingerprint":"fp_f785eb5f47","choices":[{"index":0,"delta":{"content":"\#(content)"},"logprobs":null,"finish_reason":null}]\#(extra)}"#
    }

    /// One SSE event per document.
    static func stream(_ documents: [String]) -> String {
        documents.map { "data: \($0)\n\n" }.joined()
    }

    /// Event streams, by name.
    static let eventStreams: [(name: String, body: String)] = [
        ("openAI", TapFixtures.openAIChatStream),
        ("openAI without usage", TapFixtures.openAIChatStreamWithoutUsage),
        ("anthropic", TapFixtures.anthropicStream),
        ("anthropic cached", TapFixtures.anthropicCachedStream),
        ("anthropic error", TapFixtures.anthropicErrorStream),
        ("vLLM", TapFixtures.vLLMStream),
        ("vLLM continuous usage", TapFixtures.vLLMContinuousUsageStream),
        ("responses API", TapFixtures.openAIResponsesStream),
        ("decoys", TapFixtures.decoyStream),
        ("escapes", TapFixtures.escapedStream),
        ("malformed", TapFixtures.malformedStream),
        ("multi-line", TapFixtures.multiLineStream),
        ("keepalive", TapFixtures.keepaliveStream),
        ("field edge cases", TapFixtures.fieldEdgeCases),
        ("CRLF", TapFixtures.withLineEnds(TapFixtures.anthropicStream, "\r\n")),
        ("mixed line ends", TapFixtures.withMixedLineEnds(TapFixtures.openAIChatStream)),
        ("TGI", stream([
            #"{"index":1,"token":{"id":25,"text":" Hello","logprob":-0.1,"special":false},"generated_text":null,"details":null}"#,
            #"{"index":2,"token":{"id":2,"text":"","logprob":0,"special":true},"generated_text":" Hello","details":{"finish_reason":"eos_token","generated_tokens":2}}"#,
        ])),
        ("long strings", stream([
            openAIChunk(String(repeating: "0123456789abcdef", count: 300)),
            openAIChunk(String(repeating: #"a\"b\\c\/"#, count: 200) + #"\"#),
            openAIChunk("", model: String(repeating: "m", count: 128)),
            openAIChunk("x", model: String(repeating: "m", count: 129)),
        ])),
        ("escapes at every offset", stream((0..<17).map { pad in
            openAIChunk(String(repeating: "p", count: pad) + #"\"\\\u00e9\ud83d\ude00\ud800x\udc00\n"#,
                        model: String(repeating: "q", count: pad) + #"m\u006Fdel\\"#)
        })),
        ("escaped names and types", stream([
            #"{"mo\u0064el":"escaped-name","choices":[{"delta":{"c\u006fntent":"hi"}}]}"#,
            #"{"type":"content_block\u005fdelta","delta":{"text":""}}"#,
            #"{"t\u0079pe":"response.output_text.delta","usage":{"input_tokens":3}}"#,
            #"{"type":"response.reasoning_summary_text.delta!","model":"\u0000"}"#,
        ])),
        ("usage in odd places", stream([
            #"{"choices":[{"delta":{"content":"{\"usage\":{\"prompt_tokens\":99}}","usage":{"prompt_tokens":98}}}],"usage":null}"#,
            #"{"usage":{"prompt_tokens":1,"completion_tokens":null,"total_tokens":1.5,"output_tokens":-2,"input_tokens":1e3}}"#,
            #"{"usage":{"prompt_tokens":99999999999999999999,"completion_tokens":7,"model":"not-a-model"},"model":"m1"}"#,
            #"{"message":{"usage":{"output_tokens":4},"model":"m2","content":[{"type":"text","text":"t"}]}}"#,
            #"{"response":{"usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}}}"#,
            #"{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2},"model":"a","model":"b"}"#,
        ])),
        ("keys in other orders", stream([
            #"{"choices":[{"finish_reason":null,"delta":{"content":"a"},"index":0}],"model":"late-model","id":"x"}"#,
            #"{"usage":{"total_tokens":9,"completion_tokens":4,"prompt_tokens":5},"choices":[]}"#,
            #"{ "model" : "spaced" , "choices" : [ { "delta" : { "content" : "b" } } ] }"#,
        ])),
        ("outputs", stream([
            #"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\":[1,{\"b\":\"c\"}]}"}}]}}]}"#,
            #"{"choices":[{"delta":{"reasoning_content":"r"}},{"delta":{"refusal":"no"}},{"text":"t"}]}"#,
            #"{"content":"llama"}"#,
            #"{"content":[{"type":"thinking","thinking":"hm"},{"type":"tool_use","input":{"q":["deep",{"x":{"y":{"z":"s"}}}]}}]}"#,
            #"{"choices":[{"delta":{"content":""}}]}"#,
        ])),
        ("invalid documents", stream([
            #"{"model":"tab\there","choices":[{"delta":{"content":"a"}}]}"#.replacingTab(),
            #"{"model":"x","usage":{"prompt_tokens":01}}"#,
            #"{"model":"x","usage":{"prompt_tokens":1},}"#,
            #"{"model":"x","usage":{"prompt_tokens":1}} trailing"#,
            #"{"model":"x","usage":{"prompt_tokens":1}"#,
            #"{"model":"x\u12G4"}"#,
            #"{"model":"x\q"}"#,
            #"{"usage":{"prompt_tokens":-}}"#,
            #"{"usage":{"prompt_tokens":1.}}"#,
            #"{"usage":{"prompt_tokens":1e}}"#,
            #"{"usage":{"prompt_tokens":tru}}"#,
            #"[1,2]]"#,
            #"{"a":[}"#,
            String(repeating: "[", count: 33) + String(repeating: "]", count: 33),
            String(repeating: "[", count: 32) + #"{"usage":{"prompt_tokens":3}}"# + String(repeating: "]", count: 32),
            #"{"usage":{"prompt_tokens":4}}"#,
            "[DONE]", "42", "-0.5e+3", "\"top\"", "true", "null", "", " ",
        ])),
    ]

    /// Non-streamed bodies, by name.
    static let jsonBodies: [(name: String, body: String)] = [
        ("openAI body", TapFixtures.openAIChatBody),
        ("anthropic body", TapFixtures.anthropicBody),
        ("error body", TapFixtures.errorBody),
        ("escaped output", #"{"choices":[{"message":{"content":"\u00e9\ud83d\ude00\ud800\"x\\"}}],"usage":{"prompt_tokens":1}}"#),
        ("top-level number", "1234"),
        ("truncated", #"{"model":"m","usage":{"prompt_tokens":1}"#),
    ]
}

private extension String {
    /// The text with the two characters `\t` turned into a raw tab (invalid inside a JSON string).
    func replacingTab() -> String {
        var result = ""
        var previous: Character?
        for character in self {
            if previous == "\\" && character == "t" {
                result.removeLast()
                result.append("\t")
            } else {
                result.append(character)
            }
            previous = character
        }
        return result
    }
}
