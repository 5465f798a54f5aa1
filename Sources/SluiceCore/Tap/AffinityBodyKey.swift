/// Finds the affinity key a JSON request body carries (`affinity json PATH`, `affinity prompt SIZE`) while the
/// session holds the connect, and hashes it as the header key is hashed.
///
/// - `.json(path)`: the value at the dotted path from the top-level object. A string gives the bytes between its
///   quotes as sent (escapes not decoded: two requests sending the same text get the same key, and a header holding
///   those bytes hashes alike); a number, `true` or `false` gives its token. Member names are compared decoded. An
///   empty string, any other value (object, array, null), a missing member, a path through a non-object, a body that
///   is not an object, malformed JSON before the value ends, or nesting deeper than `JSONScanner.maxDepth` gives
///   `.absent`. The first occurrence of a member wins, at every level of the path: a later duplicate is never read.
/// - `.prompt(bytes: N)`: the first top-level `messages`, `prompt` or `input` member whose value is an array or a
///   string; the key is the first N bytes of that value's JSON text as sent, from its `[` or `"`. Found as soon as N
///   bytes were read, at the value's end if it is shorter, or at `finish` with the bytes read so far (a body cut by
///   the read limit). Turns of one conversation repeat its beginning, so they share a key once it is N bytes long
///   (before that, the `]` or the next message differ). A member of another type (an SDK's `"input": null`) does not
///   count. Malformed JSON (or nesting too deep) before N bytes of the value gives `.absent`.
///
/// Bytes after the key was found are not read, so a body malformed only after its key still has one.
///
/// Contract: `reset` per request, `feed` the de-chunked body in any pieces (one byte at a time included), `finish`
/// when the body ended or the session stopped reading. Once `.found` or `.absent` is returned, every later call
/// returns it until `reset`. Memory is fixed (scanner state, the hasher, the path shared with the config): neither
/// `init` nor `feed` allocates. A value owned by one exchange on its loop thread.
struct AffinityBodyKey {
    /// What the body said so far.
    enum Result: Equatable {
        /// Undecided: feed more bytes or call `finish`.
        case needMore
        /// The key, hashed with SipHash-2-4 under `hashKey`.
        case found(UInt64)
        /// The body carries no key; the request is balanced without affinity.
        case absent
    }

    /// Fixed, so every sluice replica maps a key to the same server; the header key is hashed under it too.
    static let hashKey: (UInt64, UInt64) = (0x6166_6669_6E69_7479, 0x6B65_7968_6173_6831)

    /// What is being looked for.
    private enum Target {
        /// The member names of a `json` path, outermost first (kept as the config holds them, so that making a
        /// scanner per request allocates nothing).
        case path([String])
        /// `prompt`: the most bytes of the value hashed.
        case prompt(limit: Int)
    }

    /// Where the search is, between the scanner's tokens.
    private enum Phase {
        /// Before the top-level value: it must be an object.
        case start
        /// Reading the members of the object at depth `level + 1` (the top level for `prompt`).
        case searching
        /// A member named by an inner segment of the path ended: its value must be an object, searched next.
        case nestedObjectAhead
        /// The wanted member's name ended: its value starts at the next byte that is neither whitespace nor `:`.
        case valueAhead
        /// Inside the wanted value: its bytes are hashed as the scanner accepts them.
        case inValue
    }

    private let target: Target
    private var scanner = JSONScanner()
    private var phase = Phase.start
    /// Segments of the path matched so far; the object searched is at depth `level + 1`.
    private var level = 0
    /// Bytes of the value hashed so far.
    private var hashedCount = 0
    private var hasher = SipHash24(k0: hashKey.0, k1: hashKey.1)
    private var result = Result.needMore

    /// A scanner for `key`, which must be `.json` or `.prompt` (a header key reads no body: every body is `.absent`).
    init(_ key: AffinityKey) {
        switch key {
        case .json(let segments):
            target = .path(segments)
        case .prompt(let bytes):
            target = .prompt(limit: max(1, bytes))
        case .header:
            target = .path([])
        }
        reset()
    }

    /// Prepares for the next request's body.
    mutating func reset() {
        scanner.reset()
        phase = .start
        level = 0
        hashedCount = 0
        hasher = SipHash24(k0: Self.hashKey.0, k1: Self.hashKey.1)
        if case .path(let segments) = target, segments.isEmpty {
            result = .absent
        } else {
            result = .needMore
        }
    }

    /// Reads the next piece of the body. Returns `.needMore` until the key is found or known to be absent.
    mutating func feed(_ bytes: Span<UInt8>) -> Result {
        var offset = 0
        while result == .needMore, offset < bytes.count {
            let rest = bytes.extracting(offset...)
            // Where the value's bytes begin in `rest` (0 when the value began in an earlier piece or call).
            var valueFrom = 0
            if phase == .valueAhead {
                guard let start = Self.valueStart(in: rest) else {
                    // Whitespace and the colon only: the scanner checks them, the value is in a later piece.
                    if case .failed = scanner.next(rest) { result = .absent }
                    return result
                }
                valueFrom = start + valueStarted(with: rest[start])
            }
            let step = scanner.next(rest)
            switch step {
            case .needMore:
                hashValue(rest, from: valueFrom, to: rest.count)
                offset = bytes.count
            case .token(let token, let consumed):
                hashValue(rest, from: valueFrom, to: consumed - (closesWantedString(token) ? 1 : 0))
                offset += consumed
                if result == .needMore { take(token) }
            case .failed(let at):
                hashValue(rest, from: valueFrom, to: at)
                if result == .needMore { result = .absent }
            }
        }
        return result
    }

    /// The body ended, or the session read as much of it as it waits for.
    mutating func finish() -> Result {
        guard result == .needMore else { return result }
        if case .prompt = target, phase == .inValue, hashedCount > 0 {
            result = .found(hasher.finalize())
        } else {
            result = .absent
        }
        return result
    }

    // MARK: - Values

    /// The offset of the first byte in `bytes` that is neither whitespace nor `:`, or nil. Between a member name and
    /// its value only those come (the scanner fails on anything else, and on a second colon).
    private static func valueStart(in bytes: Span<UInt8>) -> Int? {
        for index in 0..<bytes.count {
            let byte = bytes[index]
            if !TapByte.isJSONWhitespace(byte) && byte != TapByte.colon { return index }
        }
        return nil
    }

    /// The wanted value begins with `first`: hashing starts if it can give a key (else the search goes on).
    /// Returns how many of its first bytes are not hashed: a `json` string's opening quote (its closing one is left
    /// out by `closesWantedString`).
    private mutating func valueStarted(with first: UInt8) -> Int {
        switch target {
        case .path:
            phase = .inValue
            return first == TapByte.quote ? 1 : 0
        case .prompt:
            let isArrayOrString = first == TapByte.openBracket || first == TapByte.quote
            phase = isArrayOrString ? .inValue : .searching
            return 0
        }
    }

    /// Whether `token` is the end of the `json` string value whose content is hashed, so its closing quote is not.
    private func closesWantedString(_ token: JSONToken) -> Bool {
        guard case .path = target, phase == .inValue else { return false }
        return token == .string
    }

    /// Hashes `bytes[from..<to]` when inside the wanted value, up to the `prompt` limit, which finds the key.
    private mutating func hashValue(_ bytes: Span<UInt8>, from: Int, to: Int) {
        guard phase == .inValue, from < to else { return }
        var end = to
        if case .prompt(let limit) = target { end = min(end, from + limit - hashedCount) }
        for index in from..<end { hasher.append(byte: bytes[index]) }
        hashedCount += end - from
        if case .prompt(let limit) = target, hashedCount == limit {
            result = .found(hasher.finalize())
        }
    }

    // MARK: - Tokens

    /// Moves the search on by one token of the body.
    private mutating func take(_ token: JSONToken) {
        switch phase {
        case .start:
            if token == .objectStart {
                phase = .searching
            } else {
                result = .absent  // not an object: no member can be named
            }
        case .searching:
            if token == .key, scanner.depth == level + 1 {
                memberNamed()
            } else if token == .objectEnd, scanner.depth < level + 1 {
                result = .absent  // the object searched ended without the member
            }
        case .nestedObjectAhead:
            if token == .objectStart {
                level += 1
                phase = .searching
            } else {
                result = .absent  // the path goes through a value that is not an object
            }
        case .valueAhead:
            break  // never: `feed` finds where the value starts before the scanner reads its first token
        case .inValue:
            valueToken(token)
        }
    }

    /// A member of the object searched ended its name: is it the one wanted?
    private mutating func memberNamed() {
        let text = scanner.text
        switch target {
        case .path(let segments):
            guard !text.overflowed, text.withBytes({ Self.equal($0, segments[level]) }) else { return }
            phase = level == segments.count - 1 ? .valueAhead : .nestedObjectAhead
        case .prompt:
            if text.equals("messages") || text.equals("prompt") || text.equals("input") {
                phase = .valueAhead
            }
        }
    }

    /// A token inside the wanted value: whether the value ended, and with a key or not.
    private mutating func valueToken(_ token: JSONToken) {
        switch target {
        case .path:
            // The value's first token decides: a scalar ends in it, an object or array starts in it.
            switch token {
            case .string where hashedCount == 0:
                result = .absent  // as an empty header: otherwise every such request would share one server
            case .string, .number, .bool:
                result = .found(hasher.finalize())
            default:
                result = .absent
            }
        case .prompt:
            // A string at the top level is the value itself; an array ends when the top level is back.
            if scanner.depth == 1, token == .string || token == .arrayEnd {
                result = .found(hasher.finalize())
            }
        }
    }

    private static func equal(_ text: Span<UInt8>, _ name: String) -> Bool {
        var index = 0
        for byte in name.utf8 {
            guard index < text.count, text[index] == byte else { return false }
            index += 1
        }
        return index == text.count
    }
}
