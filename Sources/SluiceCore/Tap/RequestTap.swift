/// Reads the top-level `model` and `stream` members of a JSON request body as it streams upstream, and the size of
/// its text for a prompt-token estimate; it never changes, keeps or delays the bytes.
///
/// Contract: `reset` at each request, `observe` each piece of the (de-chunked) body as it is forwarded, and read
/// `model` / `stream` once the body has been forwarded. They are known only when the body is one complete, well-formed
/// JSON document of at most `maxBodyBytes` bytes: a larger body (the tap stops reading once the cap is passed), a
/// malformed or unfinished one, or a non-object body reports nil for both. A member that appears twice takes its last
/// value, as the JSON parsers of the common backends do. Memory is fixed (scanner state, one inline model buffer,
/// the capture buffer allocated in `init`) and `observe` never allocates.
///
/// A value owned by one exchange on its loop thread.
public struct RequestTap: Sendable {
    /// The member whose value comes next.
    private enum Key: UInt8, Sendable {
        case other, model, stream
    }

    /// Bodies larger than this are not read (reported unknown): they cost scanning for a result that a client
    /// could hide anywhere in megabytes of prompt.
    public let maxBodyBytes: Int

    private var scanner = JSONScanner()
    /// Body bytes read so far (while not over the cap).
    private var bodyBytes = 0
    /// Body bytes offered, over the cap too (only counted, never scanned).
    private var offeredBytes = 0
    /// Decoded bytes of the body's JSON string values (member names not included).
    private var stringBytes = 0
    private var overLimit = false
    private var pendingKey: Key = .other
    /// The last top-level `model` value, when it was a string of at most `InlineText.capacity` bytes.
    private var modelText = InlineText()
    private var hasModel = false
    /// The last top-level `stream` value, when it was a boolean.
    private var streamValue: Bool?
    private var capture: CaptureBuffer

    /// - Parameters:
    ///   - maxBodyBytes: the largest body read.
    ///   - captureLimit: when > 0, also keep the first `captureLimit` bytes of the body (whatever its size), in
    ///     storage allocated once here.
    public init(maxBodyBytes: Int, captureLimit: Int = 0) {
        self.maxBodyBytes = max(0, maxBodyBytes)
        capture = CaptureBuffer(limit: captureLimit)
    }

    /// Prepares for a new request body, reusing all storage.
    public mutating func reset() {
        scanner.reset()
        bodyBytes = 0
        offeredBytes = 0
        stringBytes = 0
        overLimit = false
        pendingKey = .other
        hasModel = false
        streamValue = nil
        capture.reset()
    }

    /// Reads the next piece of the body.
    public mutating func observe(_ bytes: Span<UInt8>) {
        capture.append(bytes)
        offeredBytes += bytes.count
        guard !overLimit else { return }
        guard bytes.count <= maxBodyBytes - bodyBytes else {
            overLimit = true
            return
        }
        bodyBytes += bytes.count
        // Counted before this check, so that a malformed body passes the cap however it was split (found by fuzzing:
        // it did only when the bytes over the cap came in the piece that also failed the scanner).
        guard !scanner.isFailed else { return }
        var offset = 0
        while offset < bytes.count {
            switch scanner.next(bytes.extracting(offset...)) {
            case .needMore, .failed:
                return
            case .token(let token, let consumed):
                offset += consumed
                take(token)
            }
        }
    }

    /// The top-level `model` string (at most `InlineText.capacity` bytes), or nil. Allocates the `String`.
    public var model: String? {
        isKnown && hasModel ? modelText.makeString() : nil
    }

    /// The top-level `stream` boolean, or nil.
    public var stream: Bool? {
        isKnown ? streamValue : nil
    }

    /// The bytes of the body's text: the decoded bytes of its JSON string values (messages, system prompt, tool
    /// descriptions; also short values like roles and the model) when the body was read whole as one complete JSON
    /// document, else every body byte offered (a body over `maxBodyBytes`, malformed or cut short is not
    /// scanned, so its whole size stands in: a larger estimate, never a free one).
    public var textBytes: Int {
        isKnown ? stringBytes : offeredBytes
    }

    /// The prompt tokens estimated from `textBytes`: 4 bytes a token (the usual figure for English text with
    /// OpenAI's and Anthropic's tokenizers), rounded up.
    public var estimatedPromptTokens: Int64 {
        Int64((textBytes + 3) / 4)
    }

    /// Whether the body passed `maxBodyBytes` (so nothing is reported).
    public var exceededLimit: Bool { overLimit }

    /// Calls `body` with the captured body bytes (empty when capture is off).
    public func withCapturedBody<R>(_ body: (Span<UInt8>) -> R) -> R {
        capture.withBytes(body)
    }

    /// Whether body bytes were dropped because the capture limit was reached.
    public var captureTruncated: Bool { capture.truncated }

    /// The body was read whole and is a complete JSON document.
    private var isKnown: Bool { !overLimit && scanner.isComplete }

    private mutating func take(_ token: JSONToken) {
        if token == .key {
            // Only members of the top-level object (depth 1) are read.
            pendingKey = .other
            if scanner.depth == 1 {
                if scanner.text.equals("model") { pendingKey = .model }
                if scanner.text.equals("stream") { pendingKey = .stream }
            }
            return
        }
        if token == .string { stringBytes += scanner.text.length }
        // Any other token right after a member name is that member's value.
        switch pendingKey {
        case .model:
            hasModel = token == .string && !scanner.text.overflowed
            if hasModel { modelText = scanner.text }
        case .stream:
            if case .bool(let value) = token { streamValue = value } else { streamValue = nil }
        case .other:
            break
        }
        pendingKey = .other
    }
}
