/// What `UsageEventFilter.next` found in the bytes it was given.
public enum UsageEventStep: Equatable, Sendable {
    /// Every byte was consumed and the current block has not ended: hold the block's bytes.
    case needMore
    /// The block ended after the first `consumed` bytes of this input: the bytes held plus those are one block, to be
    /// dropped (`drop`, the usage-only chunk) or forwarded. The rest of the input starts the next block.
    case complete(consumed: Int, drop: Bool)
    /// The block outgrew `UsageEventFilter.maxBlockBytes`: forward what is held and all of this input; the rest of
    /// the block is forwarded as it comes (`.forward` again) until it ends (`.complete` with `drop` false).
    case forward
}

/// Finds the usage-only event of an OpenAI-compatible stream, so that a proxy that asked for usage on the client's
/// behalf (`StreamUsageRequest`, `inject_usage`) can remove it and give the client exactly what the backend would
/// have sent without `include_usage`. The session feeds it in ClientSession+UsageFilter.
///
/// The stream is cut into blocks, each ended by a blank line (WHATWG HTML §9.2.6; LF, CRLF or CR line ends). A block
/// is dropped only when all its lines are `data` fields (no `event`, `id`, `retry` or comment that the client would
/// then miss) and their data is one JSON object whose top-level `choices` is an empty array and whose `usage` is an
/// object: the chunk OpenAI and vLLM append for `include_usage` (`{"id":…,"choices":[],"usage":{…}}`). Every other
/// block, `[DONE]` included, is forwarded unchanged.
///
/// Contract: `reset` at each response; `next` with the bytes that follow the last block boundary, in any pieces
/// (the caller holds a block's bytes until `.complete`, at most `maxBlockBytes` of them; a block ended by a lone CR
/// waits for the next byte, which may be its LF); `finish` at the end of the body. Between calls it keeps only its
/// state and a `JSONScanner`: each byte is looked at a constant number of times and nothing allocates.
/// Owned by one exchange on its loop thread.
public struct UsageEventFilter: Sendable {
    /// A block longer than this is never dropped, and is forwarded as it comes once the bytes held pass it: the
    /// usage chunk is a few hundred bytes.
    public static let maxBlockBytes = 16 * 1024

    /// Where the parser is in a line.
    private enum Line: UInt8, Sendable {
        /// At the first byte of a line.
        case start
        /// Inside a field name (`nameLength`, `nameIsDataPrefix`).
        case name
        /// Just after `data:`: one space is dropped.
        case valueStart
        /// Inside a `data` value: fed to the scanner.
        case dataValue
        /// Inside a comment or another field's value.
        case skipped
    }

    /// How the block's top-level `choices` looked.
    private enum Choices: UInt8, Sendable {
        case absent
        /// `[` was the value; the next token decides.
        case opened
        case empty
        case other
    }

    /// "data", packed with the first byte lowest.
    private static let dataName: UInt32 = 0x61_74_61_64

    private var line = Line.start
    /// The previous byte was a CR ending a non-blank line: an LF now belongs to it.
    private var afterCarriageReturn = false
    /// The block's blank line was a lone CR: the next byte ends the block (and belongs to it if it is an LF).
    private var blankCarriageReturn = false
    private var nameLength = 0
    private var nameIsDataPrefix = false
    /// Bytes of the current block consumed so far (for `maxBlockBytes`).
    private var blockBytes = 0
    private var forwarding = false
    /// The block has had a line that is not a `data` field.
    private var hasOtherLine = false
    private var dataLines = 0
    private var scanner = JSONScanner()
    private var jsonFailed = false
    /// The top-level member whose value comes next: 1 `choices`, 2 `usage`, 0 another.
    private var pendingMember: UInt8 = 0
    private var choices = Choices.absent
    private var usageIsObject = false

    public init() {}

    /// Prepares for a new response body.
    public mutating func reset() {
        line = .start
        afterCarriageReturn = false
        blankCarriageReturn = false
        forwarding = false
        startBlock()
    }

    /// Reads the bytes after the last block boundary. See the type's contract.
    public mutating func next(_ bytes: Span<UInt8>) -> UsageEventStep {
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if blankCarriageReturn {
                blankCarriageReturn = false
                return endBlock(consumed: byte == TapByte.lineFeed ? index + 1 : index)
            }
            if afterCarriageReturn {
                afterCarriageReturn = false
                if byte == TapByte.lineFeed {
                    index += 1
                    continue
                }
            }
            switch line {
            case .start:
                index += 1
                if byte == TapByte.lineFeed { return endBlock(consumed: index) }
                if byte == TapByte.carriageReturn {
                    blankCarriageReturn = true
                    continue
                }
                if byte == TapByte.colon {
                    hasOtherLine = true  // a comment
                    line = .skipped
                } else {
                    line = .name
                    nameLength = 0
                    nameIsDataPrefix = true
                    matchName(byte)
                }
            case .name:
                index += 1
                if byte == TapByte.colon {
                    line = nameEnded() ? .valueStart : .skipped
                } else if byte == TapByte.lineFeed || byte == TapByte.carriageReturn {
                    _ = nameEnded()  // a line without a colon: a field with an empty value
                    lineEnded(by: byte)
                } else {
                    matchName(byte)
                }
            case .valueStart:
                line = .dataValue
                if byte == TapByte.space { index += 1 }
            case .dataValue, .skipped:
                let end = Self.lineEnd(in: bytes, from: index)
                if line == .dataValue { feed(bytes.extracting(index..<end)) }
                index = end
                if end < bytes.count {
                    lineEnded(by: bytes[end])
                    index += 1
                }
            }
        }
        blockBytes += bytes.count
        if forwarding || blockBytes > Self.maxBlockBytes {
            forwarding = true
            return .forward
        }
        return .needMore
    }

    /// Ends the body: bytes held are a complete block only when its blank line was a lone CR (no LF came); an
    /// unfinished block is never dropped (forward what is held).
    public mutating func finish() -> Bool {
        guard blankCarriageReturn else { return false }
        blankCarriageReturn = false
        guard case .complete(_, let drop) = endBlock(consumed: 0) else { return false }
        return drop
    }

    // MARK: - Lines

    private mutating func startBlock() {
        blockBytes = 0
        hasOtherLine = false
        dataLines = 0
        jsonFailed = false
        pendingMember = 0
        choices = .absent
        usageIsObject = false
    }

    private mutating func endBlock(consumed: Int) -> UsageEventStep {
        var drop = false
        // A block over the cap is never dropped, whether or not it ended within one input: the verdict must not
        // depend on how the stream was split.
        let withinCap = blockBytes + consumed <= Self.maxBlockBytes
        if withinCap && !forwarding && !hasOtherLine && dataLines > 0 && !jsonFailed {
            _ = scanner.finish()
            drop = scanner.isComplete && choices == .empty && usageIsObject
        }
        forwarding = false
        startBlock()
        return .complete(consumed: consumed, drop: drop)
    }

    private mutating func matchName(_ byte: UInt8) {
        guard nameLength <= 4 else { return }
        nameIsDataPrefix = nameIsDataPrefix && nameLength < 4
            && byte == UInt8(truncatingIfNeeded: Self.dataName >> UInt32(8 * nameLength))
        nameLength += 1
    }

    /// A field name ended; returns whether it is `data` (whose value is then fed to the scanner).
    private mutating func nameEnded() -> Bool {
        guard nameIsDataPrefix && nameLength == 4 else {
            hasOtherLine = true
            return false
        }
        if dataLines == 0 {
            scanner.reset()
        } else {
            // §9.2.6: an event's data lines are joined with LF, which is JSON whitespace.
            let lineFeed = InlineArray<1, UInt8>(repeating: TapByte.lineFeed)
            feed(lineFeed.span)
        }
        dataLines += 1
        return true
    }

    private mutating func lineEnded(by byte: UInt8) {
        line = .start
        afterCarriageReturn = byte == TapByte.carriageReturn
    }

    /// The offset of the first CR or LF at or after `start`, or `bytes.count`.
    private static func lineEnd(in bytes: Span<UInt8>, from start: Int) -> Int {
        var index = start
        while index < bytes.count {
            let byte = bytes[index]
            if byte == TapByte.lineFeed || byte == TapByte.carriageReturn { return index }
            index += 1
        }
        return index
    }

    // MARK: - JSON

    private mutating func feed(_ bytes: Span<UInt8>) {
        guard !jsonFailed else { return }
        var offset = 0
        while offset < bytes.count {
            switch scanner.next(bytes.extracting(offset...)) {
            case .needMore:
                return
            case .failed:
                jsonFailed = true
                return
            case .token(let token, let consumed):
                offset += consumed
                take(token)
            }
        }
    }

    private mutating func take(_ token: JSONToken) {
        let depth = scanner.depth
        if choices == .opened {
            // The token right after `choices: [` says whether the array is empty.
            choices = token == .arrayEnd && depth == 1 ? .empty : .other
        }
        if token == .key {
            pendingMember = 0
            if depth == 1 {
                if scanner.text.equals("choices") { pendingMember = 1 }
                if scanner.text.equals("usage") { pendingMember = 2 }
            }
            return
        }
        switch pendingMember {
        case 1: choices = token == .arrayStart ? .opened : .other
        case 2: usageIsObject = token == .objectStart
        default: break
        }
        pendingMember = 0
    }
}
