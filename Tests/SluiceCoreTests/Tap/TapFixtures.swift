/// Response bodies as backends send them, written out in full. Event streams end with the blank line that
/// dispatches their last event unless the name says otherwise.
enum TapFixtures {
    /// OpenAI chat/completions with `stream_options: {"include_usage": true}`: `"usage":null` on every chunk, then a
    /// chunk with empty `choices` and the usage, then `[DONE]`.
    static let openAIChatStream = #"""
        data: {"id":"chatcmpl-AkP3xKsZ2mTZ9","object":"chat.completion.chunk","created":1735000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f785eb5f47","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

        data: {"id":"chatcmpl-AkP3xKsZ2mTZ9","object":"chat.completion.chunk","created":1735000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f785eb5f47","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}

        data: {"id":"chatcmpl-AkP3xKsZ2mTZ9","object":"chat.completion.chunk","created":1735000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f785eb5f47","choices":[{"index":0,"delta":{"content":"! How can I \"help\"\n today?"},"logprobs":null,"finish_reason":null}],"usage":null}

        data: {"id":"chatcmpl-AkP3xKsZ2mTZ9","object":"chat.completion.chunk","created":1735000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f785eb5f47","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

        data: {"id":"chatcmpl-AkP3xKsZ2mTZ9","object":"chat.completion.chunk","created":1735000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f785eb5f47","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

        data: [DONE]
        """# + "\n\n"

    /// The same request without `include_usage`: no usage anywhere.
    static let openAIChatStreamWithoutUsage = #"""
        data: {"id":"chatcmpl-AkP4a","object":"chat.completion.chunk","created":1735000001,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0aa8d3e20b","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

        data: {"id":"chatcmpl-AkP4a","object":"chat.completion.chunk","created":1735000001,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0aa8d3e20b","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}

        data: {"id":"chatcmpl-AkP4a","object":"chat.completion.chunk","created":1735000001,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0aa8d3e20b","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

        data: [DONE]
        """# + "\n\n"

    /// Anthropic messages: `message_start` carries the model and the input usage, `message_delta` the cumulative
    /// output tokens; a `ping` event in between.
    static let anthropicStream = #"""
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: ping
        data: {"type": "ping"}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"! \u00bfQu\u00e9 tal?"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

        event: message_stop
        data: {"type":"message_stop"}
        """# + "\n\n"

    /// Anthropic with prompt caching: the prompt is input + cache creation + cache read; a newer `message_delta`
    /// repeats the input counts.
    static let anthropicCachedStream = #"""
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_01Cache","type":"message","role":"assistant","content":[],"model":"claude-3-7-sonnet-20250219","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":1000,"cache_read_input_tokens":2000,"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":0},"output_tokens":2,"service_tier":"standard"}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Cached."}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":10,"cache_creation_input_tokens":1000,"cache_read_input_tokens":2000,"output_tokens":42}}

        event: message_stop
        data: {"type":"message_stop"}
        """# + "\n\n"

    /// Anthropic overloaded mid-stream: only `message_start`'s usage was reported.
    static let anthropicErrorStream = #"""
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_01Err","type":"message","role":"assistant","content":[],"model":"claude-opus-4-1-20250805","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":512,"output_tokens":1}}}

        event: error
        data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}
        """# + "\n\n"

    /// vLLM's OpenAI-compatible server: `data:` lines only, usage in the last chunk (total before completion).
    static let vLLMStream = #"""
        data: {"id":"chatcmpl-9a1b2c","object":"chat.completion.chunk","created":1730000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

        data: {"id":"chatcmpl-9a1b2c","object":"chat.completion.chunk","created":1730000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}

        data: {"id":"chatcmpl-9a1b2c","object":"chat.completion.chunk","created":1730000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":" there"},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}

        data: {"id":"chatcmpl-9a1b2c","object":"chat.completion.chunk","created":1730000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":12,"total_tokens":15,"completion_tokens":3}}

        data: [DONE]
        """# + "\n\n"

    /// vLLM with `continuous_usage_stats`: every chunk carries the running usage; the last wins.
    static let vLLMContinuousUsageStream = #"""
        data: {"id":"chatcmpl-c0","object":"chat.completion.chunk","created":1730000000,"model":"Qwen/Qwen2.5-7B-Instruct","choices":[{"index":0,"delta":{"content":"A"},"finish_reason":null}],"usage":{"prompt_tokens":8,"total_tokens":9,"completion_tokens":1}}

        data: {"id":"chatcmpl-c0","object":"chat.completion.chunk","created":1730000000,"model":"Qwen/Qwen2.5-7B-Instruct","choices":[{"index":0,"delta":{"content":"B"},"finish_reason":null}],"usage":{"prompt_tokens":8,"total_tokens":10,"completion_tokens":2}}

        data: {"id":"chatcmpl-c0","object":"chat.completion.chunk","created":1730000000,"model":"Qwen/Qwen2.5-7B-Instruct","choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":8,"total_tokens":11,"completion_tokens":3}}

        data: [DONE]
        """# + "\n\n"

    /// OpenAI Responses API: `response.created` has `"usage":null`, `response.completed` the usage
    /// (`input_tokens` / `output_tokens` / `total_tokens`, with nested details that are not read).
    static let openAIResponsesStream = #"""
        event: response.created
        data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_67c9fdcecf","object":"response","created_at":1741290958,"status":"in_progress","model":"gpt-4.1-2025-04-14","output":[],"usage":null}}

        event: response.output_text.delta
        data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_67c9fdcf37","output_index":0,"content_index":0,"delta":"Hi"}

        event: response.completed
        data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_67c9fdcecf","object":"response","created_at":1741290958,"status":"completed","model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_67c9fdcf37","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi","annotations":[]}]}],"usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48}}}
        """# + "\n\n"

    /// `usage` and `model` keys at depths that do not count: inside `choices[0].delta`, `choices[0].message`, a
    /// nested object, an array document and inside `usage` itself; plus an escaped decoy inside a content string.
    static let decoyStream = #"""
        data: {"id":"x","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"{\"usage\":{\"prompt_tokens\":7}}","usage":{"prompt_tokens":999,"completion_tokens":999,"total_tokens":1998}},"message":{"model":"decoy","usage":{"input_tokens":5}}}],"meta":{"usage":{"prompt_tokens":1},"model":"decoy2","response":{"usage":{"input_tokens":3}}},"usage":null}

        data: [{"usage":{"prompt_tokens":4}},{"model":"decoy3"}]

        data: {"usage":{"model":"decoy4","details":{"prompt_tokens":8}},"message":[{"usage":{"input_tokens":6}}],"response":"not an object"}
        """# + "\n\n"

    /// Escapes in the model and in member names (an escaped `usage` is still `usage`).
    static let escapedStream = #"""
        data: {"model":"gpt-4o\u002dmini \"q\" \\\/ \u00e9\ud83d\ude00","\u0075sage":{"prompt\u005ftokens":5,"completion_tokens":6}}
        """# + "\n\n"

    /// Malformed documents contribute nothing; the one valid event does.
    static let malformedStream = #"""
        data: {"usage":{"prompt_tokens":5,"completion_tokens":3}

        data: {"usage":{"prompt_tokens":5,,"completion_tokens":3}}

        data: {"usage":{"prompt_tokens":5,"completion_tokens":3}} trailing

        data: {"usage":{"prompt_tokens":5,"completion_tokens":3}}}

        data: {"model":"ok","usage":{"prompt_tokens":1,"completion_tokens":2}}

        data: {"model":"late","usage":{"prompt_tokens":100,"completion_tokens":200
        """# + "\n\n"

    /// One JSON document over three data lines (joined with LF, §9.2.6), a comment between two of them.
    static let multiLineStream = #"""
        data: {"model":"multi",
        data:  "usage": {"prompt_tokens": 3,
        : a comment inside the event
        data:"completion_tokens": 4}}
        """# + "\n\n"

    /// Comments and keepalives around a single event.
    static let keepaliveStream = #"""
        : ping

        : ping
        :

        data: {"model":"kept","usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}

        : ping
        """# + "\n\n"

    /// Field-line edge cases: a line without colon, no space or two spaces after the colon, names that are not
    /// `data`, fields other than data, a long name.
    static let fieldEdgeCases = #"""
        data

        data:x

        data:  y

        DATA: {"model":"upper"}

        dataa: {"model":"longer"}

        dat: {"model":"shorter"}

        event: only-an-event

        id: 42

        retry: 1000

        averyveryveryverylongfieldnamethatgoesonandonandon: {"model":"long"}

        : just a comment
        """# + "\n\n"

    /// Non-streaming OpenAI chat completion, pretty-printed.
    static let openAIChatBody = #"""
        {
          "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
          "object": "chat.completion",
          "created": 1741570283,
          "model": "gpt-4o-2024-08-06",
          "choices": [
            {
              "index": 0,
              "message": {
                "role": "assistant",
                "content": "The image shows a wooden boardwalk.",
                "refusal": null,
                "annotations": []
              },
              "logprobs": null,
              "finish_reason": "stop"
            }
          ],
          "usage": {
            "prompt_tokens": 1117,
            "completion_tokens": 46,
            "total_tokens": 1163,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
          },
          "service_tier": "default",
          "system_fingerprint": "fp_fc9f1d7035"
        }
        """# + "\n"

    /// Non-streaming Anthropic message.
    static let anthropicBody = #"""
        {"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hi! My name is Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"output_tokens":503,"cache_creation_input_tokens":2051,"cache_read_input_tokens":0}}
        """#

    /// An OpenAI error body: no usage.
    static let errorBody = #"""
        {"error":{"message":"Rate limit reached for gpt-4o","type":"rate_limit_exceeded","param":null,"code":"rate_limit_exceeded"}}
        """#

    /// `text` with every LF replaced by `lineEnd`.
    static func withLineEnds(_ text: String, _ lineEnd: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: lineEnd)
    }

    /// `text` with its line ends cycling through CRLF, LF and CR.
    static func withMixedLineEnds(_ text: String) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let ends = ["\r\n", "\n", "\r"]
        var mixed = ""
        for (number, line) in lines.enumerated() {
            mixed += line
            if number < lines.count - 1 { mixed += ends[number % ends.count] }
        }
        return mixed
    }
}
