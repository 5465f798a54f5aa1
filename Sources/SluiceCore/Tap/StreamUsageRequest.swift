/// One splice that makes a streaming OpenAI-compatible request body ask for usage
/// (`"stream_options":{"include_usage":true}`): replace `removing` bytes at `offset` with `insertion`. Every other
/// byte of the body stays as the client sent it. Used by `inject_usage` (ClientSession+UsageInjection).
public struct StreamUsageEdit: Equatable, Sendable {
    /// What is written at `offset`.
    public enum Insertion: Equatable, Sendable {
        /// `,"stream_options":{"include_usage":true}` before the top-level object's `}` (no `stream_options`).
        case streamOptionsMember
        /// `"include_usage":true,` after the `{` of a `stream_options` object that has other members.
        case firstIncludeUsage
        /// `"include_usage":true` inside an empty `stream_options` object.
        case onlyIncludeUsage
        /// `true` in place of `"include_usage": false` or `null`.
        case trueValue
        /// `{"include_usage":true}` in place of `"stream_options": null`.
        case streamOptionsObject

        /// The bytes written.
        public var text: StaticString {
            switch self {
            case .streamOptionsMember: #","stream_options":{"include_usage":true}"#
            case .firstIncludeUsage: #""include_usage":true,"#
            case .onlyIncludeUsage: #""include_usage":true"#
            case .trueValue: "true"
            case .streamOptionsObject: #"{"include_usage":true}"#
            }
        }
    }

    /// Where the splice starts, in body bytes.
    public var offset: Int
    /// Body bytes replaced (0: a pure insertion).
    public var removing: Int
    public var insertion: Insertion

    public init(offset: Int, removing: Int, insertion: Insertion) {
        self.offset = offset
        self.removing = removing
        self.insertion = insertion
    }

    /// How much longer the body gets: what the `Content-Length` the upstream is sent must add.
    public var lengthChange: Int { insertion.text.utf8CodeUnitCount - removing }

    /// Appends the edited body to `out` (which grows only if it lacks the capacity).
    public func apply(to body: Span<UInt8>, into out: inout [UInt8]) {
        for index in 0..<offset { out.append(body[index]) }
        insertion.text.withUTF8Buffer { out.append(contentsOf: $0) }
        for index in (offset + removing)..<body.count { out.append(body[index]) }
    }
}

/// Decides whether and where a request body must be edited to ask for stream usage.
///
/// Contract: `edit(for:)` gets one whole body (the caller holds it, bounded). It returns an edit only when the body
/// is one well-formed JSON object with `"stream": true` whose `stream_options.include_usage` is absent, `false` or
/// `null`: the client did not ask for usage, so the usage-only chunk the backend then sends must be removed before
/// the client sees it (`UsageEventFilter`). It returns nil, and the body goes as it is, when the client asked
/// (`include_usage: true`), when the request does not stream, when the body is not such a JSON object, or when
/// `stream`, `stream_options` or `include_usage` appear twice or with an unexpected type (which member a backend
/// honours is then unclear, and an unclear edit is worse than none). Whether the path is a chat/completions or
/// completions endpoint is the caller's decision. Reads each byte once; allocates nothing.
public enum StreamUsageRequest {
    /// What a member name at the levels read means.
    private enum Member {
        case other, stream, streamOptions, includeUsage
    }

    /// The value of a member seen once, twice, or not at all.
    private enum Seen: Equatable {
        case absent
        /// The value's token, and the offsets its bytes span.
        case once(JSONToken, start: Int, end: Int)
        case repeated
    }

    /// See the type's contract.
    public static func edit(for body: Span<UInt8>) -> StreamUsageEdit? {
        var scanner = JSONScanner()
        var offset = 0
        var pending = Member.other
        var stream = Seen.absent
        var options = Seen.absent
        var includeUsage = Seen.absent
        /// Depth 2 is the `stream_options` object (only while it is open).
        var inOptions = false
        var optionsEmpty = true
        var topLevelEnd = -1
        while offset < body.count {
            let step = scanner.next(body.extracting(offset...))
            guard case .token(let token, let consumed) = step else {
                if case .failed = step { return nil }
                break
            }
            let end = offset + consumed
            offset = end
            let depth = scanner.depth
            if token == .key {
                pending = .other
                if depth == 1 {
                    if scanner.text.equals("stream") { pending = .stream }
                    if scanner.text.equals("stream_options") { pending = .streamOptions }
                } else if depth == 2 && inOptions {
                    optionsEmpty = false
                    if scanner.text.equals("include_usage") { pending = .includeUsage }
                }
                continue
            }
            // A value (or the start of one) right after a member name belongs to that member.
            let start = Self.start(of: token, end: end)
            switch pending {
            case .stream: note(&stream, token, start: start, end: end)
            case .streamOptions:
                note(&options, token, start: start, end: end)
                if token == .objectStart { inOptions = true; optionsEmpty = true }
            case .includeUsage: note(&includeUsage, token, start: start, end: end)
            case .other: break
            }
            pending = .other
            if token == .objectEnd && depth == 1 { inOptions = false }
            if token == .objectEnd && depth == 0 { topLevelEnd = end - 1 }
        }
        _ = scanner.finish()
        guard scanner.isComplete, topLevelEnd >= 0, case .once(.bool(true), _, _) = stream else { return nil }
        switch options {
        case .absent:
            return StreamUsageEdit(offset: topLevelEnd, removing: 0, insertion: .streamOptionsMember)
        case .once(.null, let start, let end):
            return StreamUsageEdit(offset: start, removing: end - start, insertion: .streamOptionsObject)
        case .once(.objectStart, let start, _):
            switch includeUsage {
            case .absent:
                return StreamUsageEdit(offset: start + 1, removing: 0,
                                       insertion: optionsEmpty ? .onlyIncludeUsage : .firstIncludeUsage)
            case .once(.bool(false), let start, let end), .once(.null, let start, let end):
                return StreamUsageEdit(offset: start, removing: end - start, insertion: .trueValue)
            default:
                return nil  // asked for usage (true), or a value no backend reads as a boolean
            }
        default:
            return nil
        }
    }

    private static func note(_ seen: inout Seen, _ token: JSONToken, start: Int, end: Int) {
        seen = seen == .absent ? .once(token, start: start, end: end) : .repeated
    }

    /// Where a value token's bytes begin, given where it ended: literals end with their last byte, a container's
    /// start is its one bracket. Numbers and strings are only ever rejected, so their start does not matter.
    private static func start(of token: JSONToken, end: Int) -> Int {
        switch token {
        case .bool(true), .null: end - 4
        case .bool(false): end - 5
        default: end - 1
        }
    }
}
