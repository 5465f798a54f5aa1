import Foundation

// The chat-completions logic of the demo backend, free of sockets: request
// decoding, the reply script, and the exact bytes of OpenAI's wire format.
// The connection shell only writes what these functions return.

/// The model the demo backend reports and defaults to.
let demoModelID = "sluice-demo"

/// A JSON value that keeps booleans and numbers apart.
///
/// `JSONSerialization` on Linux bridges `true` and `1` to the same `NSNumber`,
/// so `"stream": 1` could not be rejected the way OpenAI rejects it;
/// `JSONDecoder` keeps the two distinct.
enum DemoJSONValue: Decodable, Equatable, Sendable {
    /// JSON `null`.
    case null
    /// `true` or `false`, never a number.
    case bool(Bool)
    /// Any JSON number; integer fields check that it is whole.
    case number(Double)
    case string(String)
    case array([DemoJSONValue])
    case object([String: DemoJSONValue])

    /// Tries each JSON type in turn; Bool goes first so `true` is not read as 1.
    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([DemoJSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: DemoJSONValue].self))
        }
    }
}

/// An OpenAI-shaped client error: `{"error":{"message","type","param","code"}}`.
struct DemoAPIError: Error, Equatable, Sendable {
    /// The HTTP status to answer with.
    var status: Int
    var message: String
    /// OpenAI's error class; every error the demo produces is the client's.
    var type: String = "invalid_request_error"
    /// OpenAI's machine-readable code, e.g. `unknown_url`; usually null.
    var code: String?

    /// The response body, in OpenAI's key order.
    var json: String {
        #"{"error":{"message":\#(DemoJSON.string(message)),"type":\#(DemoJSON.string(type)),"param":null,"code":\#(code.map(DemoJSON.string) ?? "null")}}"#
    }
}

/// The fields of a `POST /v1/chat/completions` body that the demo uses.
struct DemoChatRequest: Equatable, Sendable {
    /// The requested model, echoed back; `sluice-demo` when absent.
    var model: String
    /// The text of the last `user` message, or "" if there is none.
    var lastUserText: String
    /// Whitespace-separated words across all messages: the prompt token count.
    var promptTokens: Int
    var stream: Bool
    /// `stream_options.include_usage`.
    var includeUsage: Bool
    /// `max_tokens`, or the newer `max_completion_tokens`.
    var maxTokens: Int?

    /// Decodes and validates a request body, answering bad input the way
    /// OpenAI does: status 400 and an `invalid_request_error`.
    static func decode(_ body: [UInt8]) -> Result<DemoChatRequest, DemoAPIError> {
        guard case .object(let fields)? = try? JSONDecoder().decode(DemoJSONValue.self, from: Data(body)) else {
            return .failure(DemoAPIError(status: 400, message:
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"))
        }
        func invalidType(_ name: String, _ expected: String) -> Result<DemoChatRequest, DemoAPIError> {
            .failure(DemoAPIError(status: 400, message: "Invalid type for '\(name)': expected \(expected)."))
        }

        var model = demoModelID
        switch fields["model"] {
        case nil, .null: break
        case .string(let name): model = name
        default: return invalidType("model", "a string")
        }

        guard let messagesValue = fields["messages"], messagesValue != .null else {
            return .failure(DemoAPIError(status: 400, message: "Missing required parameter: 'messages'."))
        }
        guard case .array(let messages) = messagesValue else { return invalidType("messages", "an array") }
        guard !messages.isEmpty else {
            return .failure(DemoAPIError(status: 400, message:
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead."))
        }
        var lastUserText = ""
        var promptTokens = 0
        for (index, message) in messages.enumerated() {
            guard case .object(let message) = message else { return invalidType("messages[\(index)]", "an object") }
            guard case .string(let role)? = message["role"] else {
                return .failure(DemoAPIError(status: 400, message: "Missing required parameter: 'messages[\(index)].role'."))
            }
            let text: String
            switch message["content"] {
            case nil, .null:
                text = ""  // An assistant turn that only made tool calls.
            case .string(let content):
                text = content
            case .array(let parts):
                text = joinedTextParts(parts)
            default:
                return invalidType("messages[\(index)].content", "a string or an array of content parts")
            }
            promptTokens += text.split(whereSeparator: \.isWhitespace).count
            if role == "user" { lastUserText = text }
        }

        var stream = false
        switch fields["stream"] {
        case nil, .null: break
        case .bool(let value): stream = value
        default: return invalidType("stream", "a boolean")
        }

        var includeUsage = false
        switch fields["stream_options"] {
        case nil, .null: break
        case .object(let options):
            switch options["include_usage"] {
            case nil, .null: break
            case .bool(let value): includeUsage = value
            default: return invalidType("stream_options.include_usage", "a boolean")
            }
        default: return invalidType("stream_options", "an object")
        }

        var maxTokens: Int?
        for name in ["max_tokens", "max_completion_tokens"] {
            switch fields[name] {
            case nil, .null: continue
            case .number(let value) where value.rounded() == value && abs(value) < 1e15:
                guard value >= 1 else {
                    return .failure(DemoAPIError(status: 400, message:
                        "Invalid '\(name)': integer below minimum value. Expected a value >= 1, but got \(Int(value)) instead."))
                }
                maxTokens = min(maxTokens ?? Int.max, Int(value))
            default:
                return invalidType(name, "an integer")
            }
        }

        return .success(DemoChatRequest(
            model: model, lastUserText: lastUserText, promptTokens: promptTokens,
            stream: stream, includeUsage: includeUsage, maxTokens: maxTokens))
    }

    /// The text of an array `content`: its `text` parts joined by "\n".
    /// Image and audio parts carry nothing the demo can echo, so they are skipped.
    static func joinedTextParts(_ parts: [DemoJSONValue]) -> String {
        parts.compactMap { part -> String? in
            guard case .object(let fields) = part, case .string(let text)? = fields["text"] else { return nil }
            if case .string(let type)? = fields["type"], type != "text" { return nil }
            return text
        }.joined(separator: "\n")
    }
}

/// The demo's answer to one request, decided before any byte is written.
struct DemoChatReply: Equatable, Sendable {
    /// `chatcmpl-` plus 29 random alphanumerics, like OpenAI's ids.
    var id: String
    /// Unix seconds, shared by every chunk of one stream as OpenAI does.
    var created: Int
    var model: String
    /// The reply split into words, each but the first with its leading space,
    /// already cut to `max_tokens`.
    var tokens: [String]
    /// "stop", or "length" when `max_tokens` cut the reply.
    var finishReason: String
    var promptTokens: Int

    /// Plans the reply to `request`.
    init(request: DemoChatRequest, id: String = DemoChatReply.makeID(), created: Int = Int(Date().timeIntervalSince1970)) {
        var tokens = DemoChatReply.tokenize(DemoChatReply.replyText(forUserMessage: request.lastUserText))
        var finishReason = "stop"
        if let maxTokens = request.maxTokens, maxTokens < tokens.count {
            tokens.removeLast(tokens.count - maxTokens)
            finishReason = "length"
        }
        self.id = id
        self.created = created
        self.model = request.model
        self.tokens = tokens
        self.finishReason = finishReason
        self.promptTokens = request.promptTokens
    }

    /// The full reply text for a last user message; see `DemoBackend.replyText`.
    static func replyText(forUserMessage message: String) -> String {
        // Unicode scalars rather than Characters, so a test in another
        // language (Python's `s[:200]`) can compute the same text.
        let quoted = String(String.UnicodeScalarView(message.unicodeScalars.prefix(200)))
        return "Hello from sluice's demo backend. You said: \"\(quoted)\". Each of these words left the backend as its own SSE event, and the proxy passed it on the moment it arrived."
    }

    /// Splits `text` at each space, keeping the space at the front of the
    /// following token, so that concatenating the tokens gives back `text`
    /// exactly (runs of spaces become tokens of a single space).
    static func tokenize(_ text: String) -> [String] {
        let pieces = text.split(separator: " ", omittingEmptySubsequences: false)
        guard let first = pieces.first else { return [] }
        return [String(first)] + pieces.dropFirst().map { " " + $0 }
    }

    /// A fresh completion id.
    static func makeID() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        return "chatcmpl-" + String((0..<29).map { _ in alphabet.randomElement()! })
    }

    var completionTokens: Int { tokens.count }

    /// `{"prompt_tokens":P,"completion_tokens":C,"total_tokens":P+C}`.
    var usageJSON: String {
        #"{"prompt_tokens":\#(promptTokens),"completion_tokens":\#(completionTokens),"total_tokens":\#(promptTokens + completionTokens)}"#
    }

    // MARK: Wire format

    /// The non-streaming `chat.completion` object.
    var completionJSON: String {
        let content = DemoJSON.string(tokens.joined())
        return #"{"id":"\#(id)","object":"chat.completion","created":\#(created),"model":\#(DemoJSON.string(model)),"# +
            #""choices":[{"index":0,"message":{"role":"assistant","content":\#(content),"refusal":null},"logprobs":null,"finish_reason":"\#(finishReason)"}],"# +
            #""usage":\#(usageJSON),"system_fingerprint":"fp_sluice_demo"}"#
    }

    /// The payloads of every SSE event of a streamed reply, in order, each
    /// already framed as `data: ...\n\n`: the role chunk, one chunk per token,
    /// the finish chunk, the usage chunk when `includeUsage`, and `[DONE]`.
    /// With `includeUsage` every other chunk carries `"usage":null`, as OpenAI's do.
    func streamEvents(includeUsage: Bool) -> [String] {
        let prefix = #"{"id":"\#(id)","object":"chat.completion.chunk","created":\#(created),"model":\#(DemoJSON.string(model)),"system_fingerprint":"fp_sluice_demo","choices":"#
        let usageNull = includeUsage ? #","usage":null"# : ""
        func choice(delta: String, finishReason: String?) -> String {
            let finish = finishReason.map { "\"\($0)\"" } ?? "null"
            return "data: " + prefix + #"[{"index":0,"delta":\#(delta),"logprobs":null,"finish_reason":\#(finish)}]"# + usageNull + "}\n\n"
        }
        var events = [choice(delta: #"{"role":"assistant","content":""}"#, finishReason: nil)]
        for token in tokens {
            events.append(choice(delta: #"{"content":\#(DemoJSON.string(token))}"#, finishReason: nil))
        }
        events.append(choice(delta: "{}", finishReason: finishReason))
        if includeUsage {
            events.append("data: " + prefix + #"[],"usage":\#(usageJSON)}"# + "\n\n")
        }
        events.append("data: [DONE]\n\n")
        return events
    }
}

/// JSON text helpers for the hand-ordered objects above.
///
/// The objects are assembled as text so their keys come out in OpenAI's order
/// (JSONSerialization does not keep insertion order); every string value still
/// goes through `JSONEncoder`, so quotes, backslashes, control characters and
/// non-ASCII text are escaped by Foundation, not by hand.
enum DemoJSON {
    /// `value` as a JSON string literal, quotes included; UTF-8 passes through
    /// unescaped and `/` is left alone.
    static func string(_ value: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        // Encoding a String cannot fail; the fallback only satisfies the type checker.
        guard let data = try? encoder.encode(value) else { return "\"\"" }
        return String(decoding: data, as: UTF8.self)
    }
}
