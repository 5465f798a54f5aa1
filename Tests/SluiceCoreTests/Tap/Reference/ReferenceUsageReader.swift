@testable import SluiceCore

// The usage reader as it was before JSONPushScanner (commit a382bd1), kept verbatim but for its name as the
// reference the differential tests compare the shipped reader against: the rewrite was for speed only, so every
// observation must stay the same.

/// Reads token usage, the model and the output from a sequence of JSON documents: the `data` of each SSE event of a
/// streamed response, or a whole non-streamed JSON body. The response tap's reader; usage and output feed the
/// completion record and the token budgets.
///
/// Where it looks for usage and the model (any other place, e.g. `choices[0].delta.usage`, is ignored):
/// - `usage` and `model` at the top level: OpenAI chat/completions chunks and bodies, vLLM, Anthropic bodies and
///   `message_delta` events;
/// - `message.usage` and `message.model`: Anthropic `message_start`;
/// - `response.usage` and `response.model`: OpenAI Responses API events (`response.created`, `response.completed`).
///
/// Output (what a token estimate counts when no usage was reported; see `outputDeltas`) is a non-empty string at:
/// - `choices[].delta` / `choices[].message`: `content`, `reasoning_content` (vLLM, DeepSeek), `reasoning`,
///   `refusal`, and any string inside `tool_calls` or `function_call` (OpenAI chat, vLLM, TGI's Messages API);
/// - `choices[].text` (completions), `token.text` (TGI's `generate_stream`), a top-level string `content`
///   (llama.cpp's `/completion`), `content[].text` / `.thinking` / any string in `content[].input` (Anthropic bodies);
/// and, whatever its strings, a document whose top-level `type` is Anthropic's `content_block_delta` or an OpenAI
/// Responses API output delta. A role-only chunk, an empty `content`, a usage-only chunk are not output.
///
/// Contract: `beginDocument`, then `feed` the document's bytes in any pieces, then `endDocument`. What a document
/// says counts only if it parsed completely (`endDocument` commits it): a malformed, truncated or too-deep document
/// contributes nothing, so a half-received `usage` is never reported. Across documents each count and the model
/// take the last value reported; `"usage": null` and null counts report nothing; output adds up. Memory is fixed
/// (the scanner's state and two model buffers), the work is per JSON token (member names are compared only in
/// the objects that can hold something), and nothing allocates except the `model` getter. Owned by one loop thread.
struct ReferenceUsageReader: Sendable {
    /// The most bytes of a model name kept; a longer name is treated as unknown rather than cut.
    static let maxModelBytes = InlineText.capacity

    /// What an open container means for the values in it.
    private enum Role: UInt8, Sendable {
        /// A container nobody reads: `delta` of Anthropic events, metadata, everything deeper than `maxRoleDepth`
        /// (unless inside `outputTree`).
        case ignored
        /// Depth 0: outside any container (the document itself).
        case document
        /// The top-level object.
        case root
        /// `message` or `response` in the top-level object: an envelope holding `model` and `usage`.
        case envelope
        /// A `usage` object at one of the places read.
        case usage
        /// The top-level `choices` array.
        case choices
        /// One element of `choices`, or TGI's top-level `token`: one output delta when it holds output.
        case choice
        /// `delta` or `message` of a choice: holds `content`, `tool_calls` and the like.
        case message
        /// The top-level `content` array of an Anthropic message body.
        case contentBlocks
        /// One element of `contentBlocks`.
        case contentBlock
        /// A container under an output member (`tool_calls`, `function_call`, a tool's `input`) and everything in
        /// it: each non-empty string inside is output.
        case outputTree
    }

    /// The member names that mean something in some role.
    private enum Key: UInt8, Sendable {
        case other, model, usage, message, response
        case promptTokens, completionTokens, totalTokens
        case inputTokens, outputTokens, cacheCreationInputTokens, cacheReadInputTokens
        /// `choices`, `token` and `type` of the top-level object.
        case choices, token, type
        /// The top-level `content`: output when a string (llama.cpp), content blocks when an array (Anthropic).
        case content
        /// A choice's `delta` or `message`.
        case delta
        /// A member whose string is output and whose container is an `outputTree`.
        case output
    }

    /// The deepest container whose role is stored: top-level object (1), `choices` (2), a choice (3), its
    /// `delta` (4), `tool_calls` (5), a tool call (6), its `function` (7). Deeper containers inherit
    /// `outputTree` from depth 7 and are otherwise ignored.
    private static let maxRoleDepth = 7

    private var scanner = JSONScanner()
    /// Roles of the open containers at depths 0...maxRoleDepth.
    private var roles = InlineArray<8, Role>(repeating: .ignored)
    /// The member whose value comes next, classified for the role of its object.
    private var pendingKey: Key = .other
    /// Whether a document is open and has not failed.
    private var reading = false
    /// What the open document reported so far (committed by `endDocument`).
    private var documentUsage = ReportedUsage()
    private var documentModel = InlineText()
    private var documentHasModel = false
    /// Output strings of the open document, and their decoded bytes.
    private var documentOutputStrings = 0
    private var documentOutputBytes = 0
    /// Choices of the open document that held output; `choiceStartStrings` is `documentOutputStrings` when the
    /// open choice began (choices never nest).
    private var documentChoiceDeltas = 0
    private var choiceStartStrings = 0
    /// The document's top-level `type` names an output delta event.
    private var documentIsDeltaEvent = false
    /// What the committed documents reported.
    private var reported = ReportedUsage()
    private var committedModel = InlineText()
    private var hasModel = false
    private var committedContentDocuments = 0
    private var committedOutputDeltas = 0
    private var committedOutputBytes = 0

    init() {}

    /// Forgets everything learned, for a new exchange.
    mutating func reset() {
        reading = false
        reported = ReportedUsage()
        hasModel = false
        committedContentDocuments = 0
        committedOutputDeltas = 0
        committedOutputBytes = 0
    }

    /// Starts a new document (an SSE event's data, or a body).
    mutating func beginDocument() {
        scanner.reset()
        roles[0] = .document
        pendingKey = .other
        documentUsage = ReportedUsage()
        documentHasModel = false
        documentOutputStrings = 0
        documentOutputBytes = 0
        documentChoiceDeltas = 0
        documentIsDeltaEvent = false
        reading = true
    }

    /// Reads the next bytes of the open document. After a failure, or with no open document, it does nothing.
    mutating func feed(_ bytes: Span<UInt8>) {
        guard reading else { return }
        var offset = 0
        while offset < bytes.count {
            switch scanner.next(bytes.extracting(offset...)) {
            case .needMore:
                return
            case .token(let token, let consumed):
                offset += consumed
                take(token)
            case .failed:
                reading = false  // malformed: the document says nothing
                return
            }
        }
    }

    /// Ends the open document and commits what it reported if it was complete, well-formed JSON.
    mutating func endDocument() {
        guard reading else { return }
        reading = false
        _ = scanner.finish()  // a top-level number never carries usage; only the verdict matters
        guard scanner.isComplete else { return }
        reported.update(with: documentUsage)
        if documentHasModel {
            committedModel = documentModel
            hasModel = true
        }
        // A delta event is one delta; so is output outside any choice (a body's content blocks, llama.cpp).
        var deltas = documentChoiceDeltas + (documentIsDeltaEvent ? 1 : 0)
        if deltas == 0 && documentOutputStrings > 0 { deltas = 1 }
        if deltas > 0 {
            committedContentDocuments += 1
            committedOutputDeltas += deltas
        }
        committedOutputBytes += documentOutputBytes
    }

    /// The usage reported by the committed documents; nil when none carried any (never estimated).
    var usage: TokenUsage? { reported.tokenUsage }

    /// The counts as reported, by member name.
    var reportedUsage: ReportedUsage { reported }

    /// The last model name committed. Allocates the `String`: read it at the end of an exchange.
    var model: String? { hasModel ? committedModel.makeString() : nil }

    /// Committed documents that held output (for SSE, content-bearing events).
    var contentDocuments: Int { committedContentDocuments }

    /// Output deltas of the committed documents: each choice holding output counts one (so `n` choices per
    /// chunk count `n`), an output delta event counts one, and a document with output elsewhere counts one.
    /// OpenAI-compatible servers and Anthropic send at least one token per delta, so this is at most the
    /// completion tokens: the estimate a stream without usage is charged.
    var outputDeltas: Int { committedOutputDeltas }

    /// Decoded bytes of the output strings of the committed documents (the estimate for a JSON body).
    var outputTextBytes: Int { committedOutputBytes }

    // MARK: - Tokens

    private func role(at depth: Int) -> Role {
        if depth <= Self.maxRoleDepth { return roles[depth] }
        // Deeper containers are not stored: only an output tree reaches past the stored depths.
        return roles[Self.maxRoleDepth] == .outputTree ? .outputTree : .ignored
    }

    private mutating func take(_ token: JSONToken) {
        let depth = scanner.depth
        switch token {
        case .objectStart:
            // `depth` now counts the new object; its role follows from its parent's and the member name.
            let parent = role(at: depth - 1)
            let newRole: Role
            switch (parent, pendingKey) {
            case (.document, _): newRole = .root
            case (.root, .usage), (.envelope, .usage): newRole = .usage
            case (.root, .message), (.root, .response): newRole = .envelope
            case (.choices, _), (.root, .token): newRole = .choice
            case (.choice, .delta): newRole = .message
            case (.contentBlocks, _): newRole = .contentBlock
            case (.outputTree, _), (_, .output): newRole = .outputTree
            default: newRole = .ignored
            }
            if newRole == .choice { choiceStartStrings = documentOutputStrings }
            if depth <= Self.maxRoleDepth { roles[depth] = newRole }
        case .arrayStart:
            let newRole: Role
            switch (role(at: depth - 1), pendingKey) {
            case (.root, .choices): newRole = .choices
            case (.root, .content): newRole = .contentBlocks
            case (.outputTree, _), (_, .output): newRole = .outputTree
            default: newRole = .ignored
            }
            if depth <= Self.maxRoleDepth { roles[depth] = newRole }
        case .objectEnd:
            // `depth` no longer counts the closed object, whose role is still stored one level down.
            if role(at: depth + 1) == .choice && documentOutputStrings > choiceStartStrings {
                documentChoiceDeltas += 1
            }
        case .key:
            pendingKey = classifyKey(in: role(at: depth))
            return
        case .string:
            let length = scanner.text.length
            switch pendingKey {
            case .model:
                if !scanner.text.overflowed {
                    documentModel = scanner.text
                    documentHasModel = true
                }
            case .output, .content:
                noteOutput(length)
            case .type:
                documentIsDeltaEvent = Self.isDeltaEventType(scanner.text)
            default:
                if role(at: depth) == .outputTree { noteOutput(length) }
            }
        case .number(let value):
            if let value, value >= 0 { record(value, for: pendingKey) }
        case .arrayEnd, .bool, .null:
            break
        }
        pendingKey = .other  // a member name applies to the one value after it
    }

    /// A string of output: an empty one is none (a role-only chunk's `"content":""`).
    private mutating func noteOutput(_ length: Int) {
        guard length > 0 else { return }
        documentOutputStrings += 1
        documentOutputBytes += length
    }

    /// Top-level `type` values of events that carry output whatever their strings: Anthropic's
    /// `content_block_delta` (text, thinking and tool-input deltas) and the OpenAI Responses API's deltas.
    private static func isDeltaEventType(_ type: InlineText) -> Bool {
        type.equals("content_block_delta") || type.equals("response.output_text.delta")
            || type.equals("response.refusal.delta") || type.equals("response.function_call_arguments.delta")
            || type.equals("response.reasoning_text.delta") || type.equals("response.reasoning_summary_text.delta")
    }

    /// The meaning of the member name just read, in an object of `role`; `.other` for names that mean nothing
    /// there (so that, e.g., `model` inside `usage` is not taken for the model).
    private func classifyKey(in role: Role) -> Key {
        let name = scanner.text
        switch role {
        case .root:
            if name.equals("model") { return .model }
            if name.equals("usage") { return .usage }
            if name.equals("choices") { return .choices }
            if name.equals("type") { return .type }
            if name.equals("content") { return .content }
            if name.equals("message") { return .message }
            if name.equals("response") { return .response }
            if name.equals("token") { return .token }
        case .envelope:
            if name.equals("model") { return .model }
            if name.equals("usage") { return .usage }
        case .usage:
            if name.equals("prompt_tokens") { return .promptTokens }
            if name.equals("completion_tokens") { return .completionTokens }
            if name.equals("total_tokens") { return .totalTokens }
            if name.equals("input_tokens") { return .inputTokens }
            if name.equals("output_tokens") { return .outputTokens }
            if name.equals("cache_creation_input_tokens") { return .cacheCreationInputTokens }
            if name.equals("cache_read_input_tokens") { return .cacheReadInputTokens }
        case .choice:
            if name.equals("delta") || name.equals("message") { return .delta }
            if name.equals("text") { return .output }
        case .message:
            if name.equals("content") || name.equals("reasoning_content") || name.equals("reasoning")
                || name.equals("refusal") || name.equals("tool_calls") || name.equals("function_call") {
                return .output
            }
        case .contentBlock:
            if name.equals("text") || name.equals("thinking") || name.equals("input") { return .output }
        case .ignored, .document, .choices, .contentBlocks, .outputTree:
            break  // most keys of a stream: no comparisons
        }
        return .other
    }

    private mutating func record(_ value: Int64, for key: Key) {
        switch key {
        case .promptTokens: documentUsage.promptTokens = value
        case .completionTokens: documentUsage.completionTokens = value
        case .totalTokens: documentUsage.totalTokens = value
        case .inputTokens: documentUsage.inputTokens = value
        case .outputTokens: documentUsage.outputTokens = value
        case .cacheCreationInputTokens: documentUsage.cacheCreationInputTokens = value
        case .cacheReadInputTokens: documentUsage.cacheReadInputTokens = value
        default: break
        }
    }
}
