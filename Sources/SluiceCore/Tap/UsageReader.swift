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

/// Reads token usage and the model from a sequence of JSON documents: the `data` of each SSE event of a streamed
/// response, or a whole non-streamed JSON body. Shared by the response tap and by the token-per-minute rate limit.
///
/// Where it looks (any other place, e.g. `choices[0].delta.usage`, is ignored):
/// - `usage` and `model` at the top level: OpenAI chat/completions chunks and bodies, vLLM, Anthropic bodies and
///   `message_delta` events;
/// - `message.usage` and `message.model`: Anthropic `message_start`;
/// - `response.usage` and `response.model`: OpenAI Responses API events (`response.created`, `response.completed`).
///
/// Contract: `beginDocument`, then `feed` the document's bytes in any pieces, then `endDocument`. What a document
/// says counts only if it parsed completely (`endDocument` commits it): a malformed, truncated or too-deep document
/// contributes nothing, so a half-received `usage` is never reported. Across documents each count and the model
/// take the last value reported; `"usage": null` and null counts report nothing. Memory is fixed (the scanner's
/// state and two model buffers), and nothing allocates except the `model` getter. Owned by one loop thread.
public struct UsageReader: Sendable {
    /// The most bytes of a model name kept; a longer name is treated as unknown rather than cut.
    public static let maxModelBytes = InlineText.capacity

    /// What an open container means for the values in it.
    private enum Role: UInt8, Sendable {
        /// A container nobody reads: arrays, `choices[…]`, `delta`, everything deeper than `maxRoleDepth`.
        case ignored
        /// Depth 0: outside any container (the document itself).
        case document
        /// The top-level object.
        case root
        /// `message` or `response` in the top-level object: an envelope holding `model` and `usage`.
        case envelope
        /// A `usage` object at one of the places read.
        case usage
    }

    /// The member names that mean something in some role.
    private enum Key: UInt8, Sendable {
        case other, model, usage, message, response
        case promptTokens, completionTokens, totalTokens
        case inputTokens, outputTokens, cacheCreationInputTokens, cacheReadInputTokens
    }

    /// The deepest container that can have a role other than `.ignored`: top-level object (1), envelope (2),
    /// envelope's `usage` (3).
    private static let maxRoleDepth = 3

    private var scanner = JSONScanner()
    /// Roles of the open containers at depths 0...maxRoleDepth.
    private var roles = InlineArray<4, Role>(repeating: .ignored)
    /// The member whose value comes next, classified for the role of its object.
    private var pendingKey: Key = .other
    /// Whether a document is open and has not failed.
    private var reading = false
    /// What the open document reported so far (committed by `endDocument`).
    private var documentUsage = ReportedUsage()
    private var documentModel = InlineText()
    private var documentHasModel = false
    /// What the committed documents reported.
    private var reported = ReportedUsage()
    private var committedModel = InlineText()
    private var hasModel = false

    public init() {}

    /// Forgets everything learned, for a new exchange.
    public mutating func reset() {
        reading = false
        reported = ReportedUsage()
        hasModel = false
    }

    /// Starts a new document (an SSE event's data, or a body).
    public mutating func beginDocument() {
        scanner.reset()
        roles[0] = .document
        pendingKey = .other
        documentUsage = ReportedUsage()
        documentHasModel = false
        reading = true
    }

    /// Reads the next bytes of the open document. After a failure, or with no open document, it does nothing.
    public mutating func feed(_ bytes: Span<UInt8>) {
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
    public mutating func endDocument() {
        guard reading else { return }
        reading = false
        _ = scanner.finish()  // a top-level number never carries usage; only the verdict matters
        guard scanner.isComplete else { return }
        reported.update(with: documentUsage)
        if documentHasModel {
            committedModel = documentModel
            hasModel = true
        }
    }

    /// The usage reported by the committed documents; nil when none carried any (never estimated).
    public var usage: TokenUsage? { reported.tokenUsage }

    /// The counts as reported, by member name.
    var reportedUsage: ReportedUsage { reported }

    /// The last model name committed. Allocates the `String`: read it at the end of an exchange.
    public var model: String? { hasModel ? committedModel.makeString() : nil }

    // MARK: - Tokens

    private func role(at depth: Int) -> Role {
        depth <= Self.maxRoleDepth ? roles[depth] : .ignored
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
            default: newRole = .ignored
            }
            if depth <= Self.maxRoleDepth { roles[depth] = newRole }
        case .arrayStart:
            if depth <= Self.maxRoleDepth { roles[depth] = .ignored }
        case .key:
            pendingKey = classifyKey(in: role(at: depth))
            return
        case .string:
            if pendingKey == .model, !scanner.text.overflowed {
                documentModel = scanner.text
                documentHasModel = true
            }
        case .number(let value):
            if let value, value >= 0 { record(value, for: pendingKey) }
        case .objectEnd, .arrayEnd, .bool, .null:
            break
        }
        pendingKey = .other  // a member name applies to the one value after it
    }

    /// The meaning of the member name just read, in an object of `role`; `.other` for names that mean nothing
    /// there (so that, e.g., `model` inside `usage` is not taken for the model).
    private func classifyKey(in role: Role) -> Key {
        guard role != .ignored else { return .other }  // most keys of a stream: skip the comparisons
        let name = scanner.text
        switch role {
        case .root:
            if name.equals("model") { return .model }
            if name.equals("usage") { return .usage }
            if name.equals("message") { return .message }
            if name.equals("response") { return .response }
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
        case .ignored, .document:
            break
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
        case .other, .model, .usage, .message, .response: break
        }
    }
}
