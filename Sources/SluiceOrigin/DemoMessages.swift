import Foundation

// Anthropic's Messages API for the demo backend, free of sockets: request
// decoding, the reply (the same text and tokens as the chat completion), and
// the exact bytes of Anthropic's wire format, so the `anthropic` SDK works
// against `sluice demo`. The connection shell only writes what these return.

/// An Anthropic-shaped client error: `{"type":"error","error":{"type","message"}}`.
struct DemoAnthropicError: Error, Equatable, Sendable {
    /// The HTTP status to answer with.
    var status: Int
    var message: String
    /// Anthropic's error class; the demo only produces the client's.
    var type: String = "invalid_request_error"

    /// The response body, in Anthropic's key order.
    var json: String {
        #"{"type":"error","error":{"type":\#(DemoJSON.string(type)),"message":\#(DemoJSON.string(message))}}"#
    }
}

/// The fields of a `POST /v1/messages` body that the demo uses.
struct DemoMessagesRequest: Equatable, Sendable {
    /// The requested model, echoed back (required, as Anthropic requires it).
    var model: String
    /// The text of the last `user` message, or "" if there is none.
    var lastUserText: String
    /// Whitespace-separated words across `system` and all messages: the input token count.
    var inputTokens: Int
    var stream: Bool
    /// `max_tokens`, required by Anthropic; a reply longer than this is cut and
    /// stops with `max_tokens`.
    var maxTokens: Int

    /// Decodes and validates a request body, answering bad input the way
    /// Anthropic does: status 400 and an `invalid_request_error`.
    static func decode(_ body: [UInt8]) -> Result<DemoMessagesRequest, DemoAnthropicError> {
        func invalid(_ message: String) -> Result<DemoMessagesRequest, DemoAnthropicError> {
            .failure(DemoAnthropicError(status: 400, message: message))
        }
        guard case .object(let fields)? = try? JSONDecoder().decode(DemoJSONValue.self, from: Data(body)) else {
            return invalid("There was an issue with your request body: it is not a valid JSON object.")
        }

        guard case .string(let model)? = fields["model"] else {
            return invalid(fields["model"] == nil || fields["model"] == .null ? "model: Field required" : "model: Input should be a valid string")
        }

        let maxTokens: Int
        switch fields["max_tokens"] {
        case nil, .null:
            return invalid("max_tokens: Field required")
        case .number(let value) where value.rounded() == value && abs(value) < 1e15:
            guard value >= 1 else { return invalid("max_tokens: Input should be greater than or equal to 1") }
            maxTokens = Int(value)
        default:
            return invalid("max_tokens: Input should be a valid integer")
        }

        var inputTokens = 0
        switch fields["system"] {
        case nil, .null: break
        case .string(let text): inputTokens += wordCount(text)
        case .array(let blocks): inputTokens += wordCount(DemoChatRequest.joinedTextParts(blocks))
        default: return invalid("system: Input should be a valid string or a list of text blocks")
        }

        guard let messagesValue = fields["messages"], messagesValue != .null else { return invalid("messages: Field required") }
        guard case .array(let messages) = messagesValue else { return invalid("messages: Input should be a valid list") }
        guard !messages.isEmpty else { return invalid("messages: at least one message is required") }
        var lastUserText = ""
        for (index, message) in messages.enumerated() {
            guard case .object(let message) = message else {
                return invalid("messages.\(index): Input should be a valid dictionary")
            }
            guard case .string(let role)? = message["role"] else { return invalid("messages.\(index).role: Field required") }
            guard role == "user" || role == "assistant" else {
                return invalid("messages.\(index).role: Input should be 'user' or 'assistant'")
            }
            let text: String
            switch message["content"] {
            case .string(let content): text = content
            case .array(let blocks): text = DemoChatRequest.joinedTextParts(blocks)
            case nil, .null: return invalid("messages.\(index).content: Field required")
            default: return invalid("messages.\(index).content: Input should be a valid string or a list of content blocks")
            }
            inputTokens += wordCount(text)
            if role == "user" { lastUserText = text }
        }

        var stream = false
        switch fields["stream"] {
        case nil, .null: break
        case .bool(let value): stream = value
        default: return invalid("stream: Input should be a valid boolean")
        }

        return .success(DemoMessagesRequest(
            model: model, lastUserText: lastUserText, inputTokens: inputTokens, stream: stream, maxTokens: maxTokens))
    }

    /// Whitespace-separated words: the demo's token count.
    private static func wordCount(_ text: String) -> Int {
        text.split(whereSeparator: \.isWhitespace).count
    }
}

/// The demo's answer to one `POST /v1/messages`, decided before any byte is written.
struct DemoMessagesReply: Equatable, Sendable {
    /// `msg_` plus 24 random alphanumerics, like Anthropic's ids.
    var id: String
    var model: String
    /// The reply split as the chat completion splits it (one word per
    /// delta), already cut to `max_tokens`.
    var tokens: [String]
    /// `end_turn`, or `max_tokens` when `max_tokens` cut the reply.
    var stopReason: String
    var inputTokens: Int

    /// Plans the reply to `request`: the same text as `DemoChatReply`.
    init(request: DemoMessagesRequest, id: String = DemoMessagesReply.makeID()) {
        var tokens = DemoChatReply.tokenize(DemoChatReply.replyText(forUserMessage: request.lastUserText))
        var stopReason = "end_turn"
        if request.maxTokens < tokens.count {
            tokens.removeLast(tokens.count - request.maxTokens)
            stopReason = "max_tokens"
        }
        self.id = id
        self.model = request.model
        self.tokens = tokens
        self.stopReason = stopReason
        self.inputTokens = request.inputTokens
    }

    /// A fresh message id.
    static func makeID() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        return "msg_" + String((0..<24).map { _ in alphabet.randomElement()! })
    }

    var outputTokens: Int { tokens.count }

    // MARK: Wire format

    /// The message object without its content and usage: shared by the
    /// non-streaming body and `message_start`.
    private func messageJSON(content: String, stopReason: String?, outputTokens: Int) -> String {
        let stop = stopReason.map(DemoJSON.string) ?? "null"
        return #"{"id":"\#(id)","type":"message","role":"assistant","model":\#(DemoJSON.string(model)),"# +
            #""content":\#(content),"stop_reason":\#(stop),"stop_sequence":null,"# +
            #""usage":{"input_tokens":\#(inputTokens),"output_tokens":\#(outputTokens)}}"#
    }

    /// The non-streaming `message` body.
    var bodyJSON: String {
        messageJSON(content: #"[{"type":"text","text":\#(DemoJSON.string(tokens.joined()))}]"#,
                    stopReason: stopReason, outputTokens: outputTokens)
    }

    /// Every SSE event of a streamed reply, in order, each framed as
    /// `event: NAME\ndata: JSON\n\n`: `message_start` (usage so far: the input
    /// and one output token, as Anthropic reports it), `content_block_start`,
    /// `ping`, one `content_block_delta` (`text_delta`) per token,
    /// `content_block_stop`, `message_delta` (stop reason and the final
    /// `output_tokens`) and `message_stop`.
    var streamEvents: [String] {
        func event(_ name: String, _ data: String) -> String { "event: \(name)\ndata: \(data)\n\n" }
        var events = [
            event("message_start", #"{"type":"message_start","message":\#(messageJSON(content: "[]", stopReason: nil, outputTokens: 1))}"#),
            event("content_block_start", #"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            event("ping", #"{"type":"ping"}"#),
        ]
        for token in tokens {
            events.append(event("content_block_delta",
                                #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":\#(DemoJSON.string(token))}}"#))
        }
        events.append(event("content_block_stop", #"{"type":"content_block_stop","index":0}"#))
        events.append(event("message_delta",
                            #"{"type":"message_delta","delta":{"stop_reason":\#(DemoJSON.string(stopReason)),"stop_sequence":null},"usage":{"output_tokens":\#(outputTokens)}}"#))
        events.append(event("message_stop", #"{"type":"message_stop"}"#))
        return events
    }
}
