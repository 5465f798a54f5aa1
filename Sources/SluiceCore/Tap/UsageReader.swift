/// Token counts of one exchange as the backend reported them.
public struct TokenUsage: Equatable, Sendable {
    /// Input tokens, including Anthropic's cache-creation and cache-read input tokens.
    public var promptTokens: Int64
    /// Output tokens.
    public var completionTokens: Int64
    /// The backend's `total_tokens`, or prompt + completion when it sent none.
    public var totalTokens: Int64

    public init(promptTokens: Int64, completionTokens: Int64, totalTokens: Int64) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
    }
}

/// The counts found in `usage` objects, by member name; nil when never reported (or reported as null, a fraction,
/// a negative number or a number too large for `Int64`).
struct ReportedUsage: Equatable, Sendable {
    /// OpenAI chat/completions (`prompt_tokens`, `completion_tokens`, `total_tokens`).
    var promptTokens: Int64?
    var completionTokens: Int64?
    var totalTokens: Int64?
    /// Anthropic messages and the OpenAI Responses API (`input_tokens`, `output_tokens`).
    var inputTokens: Int64?
    var outputTokens: Int64?
    /// Anthropic prompt caching; the Anthropic `input_tokens` excludes these.
    var cacheCreationInputTokens: Int64?
    var cacheReadInputTokens: Int64?

    /// Whether no count was reported.
    var isEmpty: Bool { self == ReportedUsage() }

    /// Takes every count `newer` reported: counts are cumulative, so the last report wins (Anthropic's
    /// `message_delta` carries the running `output_tokens`; vLLM's continuous usage repeats all three).
    mutating func update(with newer: ReportedUsage) {
        if let value = newer.promptTokens { promptTokens = value }
        if let value = newer.completionTokens { completionTokens = value }
        if let value = newer.totalTokens { totalTokens = value }
        if let value = newer.inputTokens { inputTokens = value }
        if let value = newer.outputTokens { outputTokens = value }
        if let value = newer.cacheCreationInputTokens { cacheCreationInputTokens = value }
        if let value = newer.cacheReadInputTokens { cacheReadInputTokens = value }
    }

    /// The counts folded into one shape: prompt is `prompt_tokens`, else `input_tokens` plus both cache counts;
    /// completion is `completion_tokens`, else `output_tokens`; total is `total_tokens`, else their sum. A part
    /// never reported counts 0. Nil when nothing was reported, or when a sum overflows `Int64` (no real backend
    /// sends that; a trap or a wrapped count would be worse than no count).
    var tokenUsage: TokenUsage? {
        guard !isEmpty else { return nil }
        var prompt = promptTokens ?? 0
        if promptTokens == nil {
            guard let sum = Self.sum(inputTokens ?? 0, cacheCreationInputTokens ?? 0, cacheReadInputTokens ?? 0)
            else { return nil }
            prompt = sum
        }
        let completion = completionTokens ?? outputTokens ?? 0
        guard let total = totalTokens ?? Self.sum(prompt, completion, 0) else { return nil }
        return TokenUsage(promptTokens: prompt, completionTokens: completion, totalTokens: total)
    }

    private static func sum(_ a: Int64, _ b: Int64, _ c: Int64) -> Int64? {
        let (ab, overflowAB) = a.addingReportingOverflow(b)
        let (abc, overflowABC) = ab.addingReportingOverflow(c)
        return overflowAB || overflowABC ? nil : abc
    }
}

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
/// (the scanner's state and two model buffers) and nothing allocates except the `model` getter. Owned by one loop
/// thread.
///
/// Cost: every document is still validated whole (that is what makes a half-sent `usage` count for nothing), but
/// the work per byte is only the grammar's: member names are kept and compared only in the objects that can hold
/// something, string values only for `model` and `type`, and every other string (ids, fingerprints, the content
/// text itself) is crossed eight bytes at a time with only its decoded length counted (`JSONPushScanner`). The
/// work per event depends on the event alone, never on how much of the stream came before.
public struct UsageReader: Sendable {
    /// The most bytes of a model name kept; a longer name is treated as unknown rather than cut.
    public static let maxModelBytes = InlineText.capacity

    private var scanner = JSONPushScanner()
    /// What the open document reported so far (committed by `endDocument`).
    private var document = UsageDocument()
    /// Whether a document is open and has not failed.
    private var reading = false
    /// What the committed documents reported.
    private var reported = ReportedUsage()
    private var committedModel = InlineText()
    private var hasModel = false
    private var committedContentDocuments = 0
    private var committedOutputDeltas = 0
    private var committedOutputBytes = 0

    public init() {}

    /// Forgets everything learned, for a new exchange.
    public mutating func reset() {
        reading = false
        reported = ReportedUsage()
        hasModel = false
        committedContentDocuments = 0
        committedOutputDeltas = 0
        committedOutputBytes = 0
    }

    /// Starts a new document (an SSE event's data, or a body).
    public mutating func beginDocument() {
        scanner.reset()
        document.begin()
        reading = true
    }

    /// Reads the next bytes of the open document. After a failure, or with no open document, it does nothing.
    public mutating func feed(_ bytes: Span<UInt8>) {
        guard reading else { return }
        if !scanner.scan(bytes, into: &document) {
            reading = false  // malformed: the document says nothing
        }
    }

    /// Ends the open document and commits what it reported if it was complete, well-formed JSON.
    public mutating func endDocument() {
        guard reading else { return }
        reading = false
        scanner.finish()  // a top-level number never carries usage; only the verdict matters
        guard scanner.isComplete else { return }
        reported.update(with: document.usage)
        if document.hasModel {
            committedModel = document.model
            hasModel = true
        }
        // A delta event is one delta; so is output outside any choice (a body's content blocks, llama.cpp).
        var deltas = document.choiceDeltas + (document.isDeltaEvent ? 1 : 0)
        if deltas == 0 && document.outputStrings > 0 { deltas = 1 }
        if deltas > 0 {
            committedContentDocuments += 1
            committedOutputDeltas += deltas
        }
        committedOutputBytes += document.outputBytes
    }

    /// The usage reported by the committed documents; nil when none carried any (never estimated).
    public var usage: TokenUsage? { reported.tokenUsage }

    /// The counts as reported, by member name.
    var reportedUsage: ReportedUsage { reported }

    /// The last model name committed. Allocates the `String`: read it at the end of an exchange.
    public var model: String? { hasModel ? committedModel.makeString() : nil }

    /// Committed documents that held output (for SSE, content-bearing events).
    public var contentDocuments: Int { committedContentDocuments }

    /// Output deltas of the committed documents: each choice holding output counts one (so `n` choices per
    /// chunk count `n`), an output delta event counts one, and a document with output elsewhere counts one.
    /// OpenAI-compatible servers and Anthropic send at least one token per delta, so this is at most the
    /// completion tokens: the estimate a stream without usage is charged.
    public var outputDeltas: Int { committedOutputDeltas }

    /// Decoded bytes of the output strings of the committed documents (the estimate for a JSON body).
    public var outputTextBytes: Int { committedOutputBytes }
}

/// What one open document reported, built from its tokens: the sink of `UsageReader`'s scanner. Each container
/// gets a role from its parent's role and its member name, and the role says which member names mean something.
private struct UsageDocument: JSONPushSink, Sendable {
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

        /// Whether member names in a container of this role are compared (the others' names mean nothing).
        var readsKeys: Bool {
            switch self {
            case .root, .envelope, .usage, .choice, .message, .contentBlock: true
            case .ignored, .document, .choices, .contentBlocks, .outputTree: false
            }
        }
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

    /// Roles of the open containers at depths 0...maxRoleDepth.
    private var roles = InlineArray<8, Role>(repeating: .ignored)
    /// The member whose value comes next, classified for the role of its object.
    private var pendingKey: Key = .other
    /// Where the text of the string being read goes: member names and `type` values to `shortText`, `model`
    /// values to `modelText`. Two buffers because a short one is cheap to compare and the model needs 128 bytes.
    private var textGoesToModel = false
    private var shortText = ShortText()
    private var modelText = InlineText()
    private(set) var usage = ReportedUsage()
    private(set) var model = InlineText()
    private(set) var hasModel = false
    /// Output strings and their decoded bytes.
    private(set) var outputStrings = 0
    private(set) var outputBytes = 0
    /// Choices that held output; `choiceStartStrings` is `outputStrings` when the open choice began (choices
    /// never nest).
    private(set) var choiceDeltas = 0
    private var choiceStartStrings = 0
    /// The top-level `type` names an output delta event.
    private(set) var isDeltaEvent = false

    /// Forgets the previous document.
    mutating func begin() {
        roles[0] = .document
        pendingKey = .other
        usage = ReportedUsage()
        hasModel = false
        outputStrings = 0
        outputBytes = 0
        choiceDeltas = 0
        isDeltaEvent = false
    }

    // Only `mutating` methods here: a non-mutating one copies the whole sink (about 470 bytes) per call.
    private mutating func role(at depth: Int) -> Role {
        if depth <= Self.maxRoleDepth { return roles[depth] }
        // Deeper containers are not stored: only an output tree reaches past the stored depths.
        return roles[Self.maxRoleDepth] == .outputTree ? .outputTree : .ignored
    }

    // MARK: - Tokens

    mutating func containerStarted(array: Bool, depth: Int) {
        // `depth` counts the new container; its role follows from its parent's and the member name.
        let parent = role(at: depth - 1)
        let newRole: Role
        if array {
            switch (parent, pendingKey) {
            case (.root, .choices): newRole = .choices
            case (.root, .content): newRole = .contentBlocks
            case (.outputTree, _), (_, .output): newRole = .outputTree
            default: newRole = .ignored
            }
        } else {
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
            if newRole == .choice { choiceStartStrings = outputStrings }
        }
        if depth <= Self.maxRoleDepth { roles[depth] = newRole }
        pendingKey = .other
    }

    mutating func containerEnded(array: Bool, depth: Int) {
        // `depth` no longer counts the closed container, whose role is still stored one level down.
        if !array && role(at: depth + 1) == .choice && outputStrings > choiceStartStrings {
            choiceDeltas += 1
        }
        pendingKey = .other
    }

    mutating func wantsKeyText(depth: Int) -> Bool {
        guard role(at: depth).readsKeys else { return false }
        textGoesToModel = false
        shortText.removeAll()
        return true
    }

    mutating func wantsValueText(depth: Int) -> Bool {
        switch pendingKey {
        case .model:
            textGoesToModel = true
            modelText.removeAll()
        case .type:
            textGoesToModel = false
            shortText.removeAll()
        default:
            return false
        }
        return true
    }

    mutating func appendText(_ bytes: Span<UInt8>) {
        if textGoesToModel {
            modelText.append(contentsOf: bytes)
        } else {
            shortText.append(contentsOf: bytes)
        }
    }

    mutating func appendText(_ byte: UInt8) {
        if textGoesToModel {
            modelText.append(byte)
        } else {
            shortText.append(byte)
        }
    }

    mutating func keyEnded(depth: Int) {
        // A member name applies to the one value after it; names in unread roles are never compared.
        pendingKey = classifyShortText(in: role(at: depth))
    }

    mutating func stringEnded(length: Int, depth: Int) {
        switch pendingKey {
        case .model:
            if !modelText.overflowed {
                model = modelText
                hasModel = true
            }
        case .output, .content:
            noteOutput(length)
        case .type:
            isDeltaEvent = shortTextIsDeltaEventType()
        default:
            if role(at: depth) == .outputTree { noteOutput(length) }
        }
        pendingKey = .other
    }

    mutating func numberEnded(_ value: Int64?) {
        if let value, value >= 0 { record(value, for: pendingKey) }
        pendingKey = .other
    }

    mutating func literalEnded() {
        pendingKey = .other
    }

    /// A string of output: an empty one is none (a role-only chunk's `"content":""`).
    private mutating func noteOutput(_ length: Int) {
        guard length > 0 else { return }
        outputStrings += 1
        outputBytes += length
    }

    /// Top-level `type` values of events that carry output whatever their strings: Anthropic's
    /// `content_block_delta` (text, thinking and tool-input deltas) and the OpenAI Responses API's deltas.
    private mutating func shortTextIsDeltaEventType() -> Bool {
        let type = shortText
        return type.equals("content_block_delta") || type.equals("response.output_text.delta")
            || type.equals("response.refusal.delta") || type.equals("response.function_call_arguments.delta")
            || type.equals("response.reasoning_text.delta") || type.equals("response.reasoning_summary_text.delta")
    }

    /// The meaning of a member name in an object of `role`; `.other` for names that mean nothing there (so that,
    /// e.g., `model` inside `usage` is not taken for the model).
    private mutating func classifyShortText(in role: Role) -> Key {
        guard role.readsKeys else { return .other }  // most keys of a stream: no comparisons
        let name = shortText
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
        case .promptTokens: usage.promptTokens = value
        case .completionTokens: usage.completionTokens = value
        case .totalTokens: usage.totalTokens = value
        case .inputTokens: usage.inputTokens = value
        case .outputTokens: usage.outputTokens = value
        case .cacheCreationInputTokens: usage.cacheCreationInputTokens = value
        case .cacheReadInputTokens: usage.cacheReadInputTokens = value
        default: break
        }
    }
}

/// The decoded text of a member name or a `type` value, as `UsageDocument` compares it: the first `capacity`
/// bytes inline, small enough to pass around without a `memcpy` (an `InlineText` is 152 bytes). Longer text is
/// not any of the names compared (the longest is `response.reasoning_summary_text.delta`, 37 bytes).
private struct ShortText: Sendable {
    static let capacity = 40

    private var storage = InlineArray<40, UInt8>(repeating: 0)
    /// Bytes offered since `removeAll`, kept or not.
    private var count = 0

    mutating func removeAll() {
        count = 0
    }

    mutating func append(_ byte: UInt8) {
        if count < Self.capacity { storage[count] = byte }
        count += 1
    }

    mutating func append(contentsOf bytes: Span<UInt8>) {
        let kept = min(bytes.count, max(Self.capacity - count, 0))
        for offset in 0..<kept { storage[count + offset] = bytes[offset] }
        count += bytes.count
    }

    /// Whether the text is exactly `literal`'s UTF-8 bytes.
    func equals(_ literal: StaticString) -> Bool {
        guard literal.utf8CodeUnitCount == count, count <= Self.capacity else { return false }
        return literal.withUTF8Buffer { expected in
            for index in 0..<count where storage[index] != expected[index] {
                return false
            }
            return true
        }
    }
}
