/// One lexical unit of a JSON text (RFC 8259 §2), as `JSONScanner` reports it.
enum JSONToken: Equatable, Sendable {
    /// `{`; `JSONScanner.depth` now counts the new object.
    case objectStart
    /// `}`; `depth` no longer counts the object.
    case objectEnd
    /// `[`; `depth` now counts the new array.
    case arrayStart
    /// `]`; `depth` no longer counts the array.
    case arrayEnd
    /// A member name ended; its decoded bytes are in `JSONScanner.text`.
    case key
    /// A string value ended; its decoded bytes are in `JSONScanner.text`.
    case string
    /// A number ended: its value when it is an integer that fits `Int64`, nil when it has a fraction or an
    /// exponent or does not fit (token counts are integers; a value that cannot be exact is treated as absent).
    case number(Int64?)
    /// `true` or `false`.
    case bool(Bool)
    /// `null`.
    case null
}

/// What the bytes at the start of the input to `JSONScanner.next` held.
enum JSONStep: Equatable, Sendable {
    /// Every byte was consumed and no token ended.
    case needMore
    /// A token ended after the first `consumed` bytes; the rest is for the next call. `consumed` may be 0: a
    /// number ends at the first byte that cannot continue it, which the next call then reads.
    case token(JSONToken, consumed: Int)
    /// The text is not JSON (or nests deeper than `maxDepth`); `at` is the offending byte's offset in this input.
    case failed(at: Int)
}

/// Incremental JSON tokenizer (RFC 8259): bytes may be split anywhere, one at a time included. Between calls it keeps
/// only its state, the container stack as a bit set, and the text of the string being read (`InlineText`, bounded),
/// so memory does not grow with the document and nothing allocates.
///
/// Contract: `next` consumes bytes until a token ends and returns it with the count consumed, or `.needMore` after
/// consuming everything. A caller loops on the rest of its input until `.needMore`. Once a top-level value has
/// ended only whitespace may follow (`isComplete`); anything else, a grammar error, or nesting deeper than
/// `maxDepth` gives `.failed(at:)`, and every later call `.failed(at: 0)` until `reset`. A top-level number has no
/// terminator, so `finish` ends it at the end of the text. Validation is of the grammar only: bytes >= 0x20 inside
/// strings are taken as they are (UTF-8 is not checked), and unpaired surrogate escapes decode to U+FFFD.
///
/// Owned by one tap on its loop thread.
struct JSONScanner: Sendable {
    /// Containers nested deeper than this fail the document; the stack is one bit per level in `arrayBits`.
    static let maxDepth = 32

    /// Where the scanner is in the grammar.
    enum State: UInt8, Sendable {
        /// Before a value: document start or after `:`.
        case value
        /// After `[`: a value or `]`.
        case valueOrArrayEnd
        /// After `{`: a member name or `}`.
        case keyOrObjectEnd
        /// After `,` in an object: a member name must follow (no trailing comma).
        case key
        /// After a member name: `:` must follow.
        case colon
        /// After a value inside a container: `,` or the closing bracket.
        case commaOrEnd
        /// Inside a string (`stringIsKey` tells whether it is a member name).
        case string
        /// After a backslash inside a string.
        case escape
        /// Inside the four hex digits of a `\u` escape.
        case unicodeEscape
        /// After a leading `-`: a digit must follow.
        case numberMinus
        /// After a leading `0`: no more integer digits may follow.
        case numberZero
        /// Inside integer digits.
        case numberInteger
        /// After `.`: a digit must follow.
        case numberDot
        /// Inside fraction digits.
        case numberFraction
        /// After `e` or `E`: a sign or a digit.
        case numberExponentMark
        /// After the exponent's sign: a digit must follow.
        case numberExponentSign
        /// Inside exponent digits.
        case numberExponent
        /// Inside `true`, `false` or `null`; `literalRest` holds the bytes still expected.
        case literal
        /// The top-level value has ended; only whitespace may follow.
        case done
        /// The text was rejected.
        case failed
    }

    /// What consuming one byte did.
    private enum ByteOutcome {
        /// The byte was consumed; no token ended.
        case more
        /// The byte was consumed and ended this token.
        case ended(JSONToken)
        /// This token ended just before the byte, which was not consumed (a number's terminator).
        case endedBefore(JSONToken)
        /// The byte is not allowed here.
        case failed
    }

    private var state: State = .value
    /// Open containers.
    private(set) var depth = 0
    /// Bit `d - 1` is set when the container at depth `d` is an array (else an object).
    private var arrayBits: UInt64 = 0
    /// Whether the string being read is a member name.
    private var stringIsKey = false
    /// The decoded bytes of the current or last string, cut at `InlineText.capacity`.
    private(set) var text = InlineText()
    /// The `\u` escape being read.
    private var codeUnit: UInt32 = 0
    private var hexDigits = 0
    /// A high surrogate waiting for its low half (0: none).
    private var highSurrogate: UInt32 = 0
    /// The number being read.
    private var number = JSONInteger()
    /// The bytes of the literal still expected, first in the low byte; 0 when complete.
    private var literalRest: UInt32 = 0
    /// The token the literal being read will give.
    private var literalToken: JSONToken = .null

    init() {
        assert(Self.maxDepth <= UInt64.bitWidth, "the container stack is one bit per level of arrayBits")
    }

    /// Prepares for a new document.
    mutating func reset() {
        state = .value
        depth = 0
        arrayBits = 0
        text.removeAll()
        highSurrogate = 0
    }

    /// Whether a whole top-level value has been read (and nothing but whitespace after it).
    var isComplete: Bool { state == .done }

    /// Whether the text was rejected.
    var isFailed: Bool { state == .failed }

    /// Reads `bytes` until a token ends. See the type's contract.
    mutating func next(_ bytes: Span<UInt8>) -> JSONStep {
        var index = 0
        while index < bytes.count {
            if state == .string {
                // Most bytes of an LLM chunk sit inside strings (content deltas): take a plain run at
                // once and leave only its terminator to the byte machine.
                let runEnd = Self.plainStringRunEnd(bytes, from: index)
                if runEnd > index {
                    flushSurrogate()
                    text.append(contentsOf: bytes.extracting(index..<runEnd))
                    index = runEnd
                    continue
                }
            }
            switch consume(bytes[index]) {
            case .more:
                index += 1
            case .ended(let token):
                return .token(token, consumed: index + 1)
            case .endedBefore(let token):
                return .token(token, consumed: index)
            case .failed:
                state = .failed
                return .failed(at: index)
            }
        }
        return .needMore
    }

    /// The end of the run of string bytes from `start` that need no grammar: up to the first quote,
    /// backslash or control byte.
    private static func plainStringRunEnd(_ bytes: Span<UInt8>, from start: Int) -> Int {
        bytes.withUnsafeBufferPointer { buffer -> Int in
            var index = start
            while index < buffer.count {
                let byte = buffer[index]
                if byte == TapByte.quote || byte == TapByte.backslash || byte < 0x20 { return index }
                index += 1
            }
            return index
        }
    }

    /// Ends the text: completes a top-level number (returned), or fails the document if a value is unfinished.
    /// Returns nil when no token ended here; check `isComplete` for the verdict.
    mutating func finish() -> JSONToken? {
        switch state {
        case .numberZero, .numberInteger, .numberFraction, .numberExponent:
            guard depth == 0 else { break }
            state = .done
            return numberToken
        case .done, .failed:
            return nil
        default:
            break
        }
        state = .failed
        return nil
    }

    // MARK: - Grammar

    private mutating func consume(_ byte: UInt8) -> ByteOutcome {
        switch state {
        case .string:
            switch byte {
            case TapByte.quote:
                flushSurrogate()
                if stringIsKey {
                    state = .colon
                    return .ended(.key)
                }
                valueEnded()
                return .ended(.string)
            case TapByte.backslash:
                state = .escape
                return .more
            case 0..<0x20:
                return .failed  // RFC 8259 §7: control characters must be escaped
            default:
                flushSurrogate()
                text.append(byte)
                return .more
            }
        case .escape:
            return escaped(byte)
        case .unicodeEscape:
            guard let value = TapByte.hexValue(byte) else { return .failed }
            codeUnit = codeUnit << 4 | UInt32(value)
            hexDigits += 1
            if hexDigits == 4 {
                takeCodeUnit(codeUnit)
                state = .string
            }
            return .more
        case .numberMinus:
            switch byte {
            case TapByte.zero: state = .numberZero
            case TapByte.one...TapByte.nine: state = .numberInteger; accumulate(byte)
            default: return .failed
            }
            return .more
        case .numberZero:
            switch byte {
            case TapByte.dot: state = .numberDot
            case TapByte.lowerE, TapByte.upperE: state = .numberExponentMark; number.exact = false
            case TapByte.zero...TapByte.nine: return .failed  // RFC 8259 §6: no leading zeros
            default: return numberEnded()
            }
            return .more
        case .numberInteger:
            switch byte {
            case TapByte.zero...TapByte.nine: accumulate(byte)
            case TapByte.dot: state = .numberDot
            case TapByte.lowerE, TapByte.upperE: state = .numberExponentMark; number.exact = false
            default: return numberEnded()
            }
            return .more
        case .numberDot:
            guard TapByte.isDigit(byte) else { return .failed }
            state = .numberFraction
            number.exact = false
            return .more
        case .numberFraction:
            switch byte {
            case TapByte.zero...TapByte.nine: break
            case TapByte.lowerE, TapByte.upperE: state = .numberExponentMark
            default: return numberEnded()
            }
            return .more
        case .numberExponentMark:
            switch byte {
            case TapByte.plus, TapByte.minus: state = .numberExponentSign
            case TapByte.zero...TapByte.nine: state = .numberExponent
            default: return .failed
            }
            return .more
        case .numberExponentSign:
            guard TapByte.isDigit(byte) else { return .failed }
            state = .numberExponent
            return .more
        case .numberExponent:
            return TapByte.isDigit(byte) ? .more : numberEnded()
        case .literal:
            guard byte == UInt8(truncatingIfNeeded: literalRest) else { return .failed }
            literalRest >>= 8
            guard literalRest == 0 else { return .more }
            valueEnded()
            return .ended(literalToken)
        case .failed:
            return .failed
        case .value, .valueOrArrayEnd, .keyOrObjectEnd, .key, .colon, .commaOrEnd, .done:
            return TapByte.isJSONWhitespace(byte) ? .more : structural(byte)
        }
    }

    /// A non-whitespace byte between tokens.
    private mutating func structural(_ byte: UInt8) -> ByteOutcome {
        switch state {
        case .value:
            return valueStarted(byte)
        case .valueOrArrayEnd:
            return byte == TapByte.closeBracket ? containerEnded(array: true) : valueStarted(byte)
        case .keyOrObjectEnd:
            if byte == TapByte.closeBrace { return containerEnded(array: false) }
            return byte == TapByte.quote ? stringStarted(key: true) : .failed
        case .key:
            return byte == TapByte.quote ? stringStarted(key: true) : .failed
        case .colon:
            guard byte == TapByte.colon else { return .failed }
            state = .value
            return .more
        case .commaOrEnd:
            switch byte {
            case TapByte.comma:
                state = innermostIsArray ? .value : .key
                return .more
            case TapByte.closeBrace:
                return containerEnded(array: false)
            case TapByte.closeBracket:
                return containerEnded(array: true)
            default:
                return .failed
            }
        default:
            return .failed  // .done: bytes after the top-level value
        }
    }

    /// The first byte of a value.
    private mutating func valueStarted(_ byte: UInt8) -> ByteOutcome {
        switch byte {
        case TapByte.openBrace:
            return containerStarted(array: false)
        case TapByte.openBracket:
            return containerStarted(array: true)
        case TapByte.quote:
            return stringStarted(key: false)
        case TapByte.minus:
            numberStarted(negative: true)
            state = .numberMinus
        case TapByte.zero:
            numberStarted(negative: false)
            state = .numberZero
        case TapByte.one...TapByte.nine:
            numberStarted(negative: false)
            accumulate(byte)
            state = .numberInteger
        case TapByte.lowerT:
            literalStarted(rest: "rue", token: .bool(true))
        case TapByte.lowerF:
            literalStarted(rest: "alse", token: .bool(false))
        case TapByte.lowerN:
            literalStarted(rest: "ull", token: .null)
        default:
            return .failed
        }
        return .more
    }

    private mutating func containerStarted(array: Bool) -> ByteOutcome {
        guard depth < Self.maxDepth else { return .failed }
        if array { arrayBits |= 1 << UInt64(depth) }
        depth += 1
        state = array ? .valueOrArrayEnd : .keyOrObjectEnd
        return .ended(array ? .arrayStart : .objectStart)
    }

    private mutating func containerEnded(array: Bool) -> ByteOutcome {
        guard depth > 0, innermostIsArray == array else { return .failed }
        depth -= 1
        arrayBits &= ~(1 << UInt64(depth))
        valueEnded()
        return .ended(array ? .arrayEnd : .objectEnd)
    }

    private var innermostIsArray: Bool {
        depth > 0 && arrayBits & (1 << UInt64(depth - 1)) != 0
    }

    /// After any value: the enclosing container continues, or the document is complete.
    private mutating func valueEnded() {
        state = depth == 0 ? .done : .commaOrEnd
    }

    // MARK: - Strings

    private mutating func stringStarted(key: Bool) -> ByteOutcome {
        stringIsKey = key
        text.removeAll()
        highSurrogate = 0
        state = .string
        return .more
    }

    /// The byte after a backslash (RFC 8259 §7).
    private mutating func escaped(_ byte: UInt8) -> ByteOutcome {
        guard let decoded = TapByte.singleCharacterEscape(byte) else {
            guard byte == TapByte.lowerU else { return .failed }
            codeUnit = 0
            hexDigits = 0
            state = .unicodeEscape
            return .more
        }
        flushSurrogate()
        text.append(decoded)
        state = .string
        return .more
    }

    /// A decoded `\uXXXX`: surrogate pairs join into one scalar, lone halves become U+FFFD.
    private mutating func takeCodeUnit(_ unit: UInt32) {
        switch unit {
        case 0xD800...0xDBFF:
            flushSurrogate()
            highSurrogate = unit
        case 0xDC00...0xDFFF:
            if highSurrogate != 0 {
                appendScalar(0x10000 + ((highSurrogate - 0xD800) << 10) + (unit - 0xDC00))
                highSurrogate = 0
            } else {
                appendScalar(0xFFFD)
            }
        default:
            flushSurrogate()
            appendScalar(unit)
        }
    }

    /// A high surrogate not followed by a low one stands alone: U+FFFD.
    private mutating func flushSurrogate() {
        guard highSurrogate != 0 else { return }
        highSurrogate = 0
        appendScalar(0xFFFD)
    }

    /// Appends the UTF-8 encoding of `scalar` (at most U+10FFFF, never a surrogate here).
    private mutating func appendScalar(_ scalar: UInt32) {
        switch scalar {
        case 0..<0x80:
            text.append(UInt8(scalar))
        case 0x80..<0x800:
            text.append(UInt8(0xC0 | scalar >> 6))
            text.append(UInt8(0x80 | scalar & 0x3F))
        case 0x800..<0x10000:
            text.append(UInt8(0xE0 | scalar >> 12))
            text.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            text.append(UInt8(0x80 | scalar & 0x3F))
        default:
            text.append(UInt8(0xF0 | scalar >> 18))
            text.append(UInt8(0x80 | scalar >> 12 & 0x3F))
            text.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            text.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    // MARK: - Numbers and literals

    private mutating func numberStarted(negative: Bool) {
        number = JSONInteger(negative: negative)
    }

    private mutating func accumulate(_ digit: UInt8) { number.accumulate(digit) }

    /// The number ended just before the current byte, which the next call reads.
    private mutating func numberEnded() -> ByteOutcome {
        valueEnded()
        return .endedBefore(numberToken)
    }

    private var numberToken: JSONToken {
        .number(number.value)
    }

    /// `rest`: the literal's bytes after its first (at most 4, ASCII).
    private mutating func literalStarted(rest: StaticString, token: JSONToken) {
        var packed: UInt32 = 0
        rest.withUTF8Buffer { bytes in
            for (position, byte) in bytes.enumerated() {
                packed |= UInt32(byte) << UInt32(8 * position)
            }
        }
        literalRest = packed
        literalToken = token
        state = .literal
    }
}
