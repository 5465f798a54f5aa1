/// Receives the tokens of a `JSONPushScanner` as they end, and tells it which strings' text it needs.
/// The scanner is generic over its sink, so in a release build these calls are inlined into the scan loop. The
/// requirements are `mutating` even where they only read: a sink is passed by address then, where a non-mutating
/// call copies the whole sink first (measured: a 473-byte `memcpy` per string).
protocol JSONPushSink {
    /// `{` or `[`; `depth` counts the new container.
    mutating func containerStarted(array: Bool, depth: Int)
    /// `}` or `]`; `depth` no longer counts the container.
    mutating func containerEnded(array: Bool, depth: Int)
    /// A member name of the object at `depth` begins: whether its decoded text is needed (else only its end).
    /// A sink that says yes empties the buffer it keeps the text in.
    mutating func wantsKeyText(depth: Int) -> Bool
    /// A string value begins inside the container at `depth` (0: the top level): whether its decoded text is
    /// needed (else only its decoded length). A sink that says yes empties the buffer it keeps the text in.
    mutating func wantsValueText(depth: Int) -> Bool
    /// Decoded bytes of the string being read, only when the sink asked for its text. The sink keeps them, so
    /// that reading them at the string's end copies nothing.
    mutating func appendText(_ bytes: Span<UInt8>)
    mutating func appendText(_ byte: UInt8)
    /// A member name ended.
    mutating func keyEnded(depth: Int)
    /// A string value ended: `length` decoded bytes.
    mutating func stringEnded(length: Int, depth: Int)
    /// A number ended: its value when an integer that fits `Int64`, else nil (as `JSONToken.number`).
    mutating func numberEnded(_ value: Int64?)
    /// `true`, `false` or `null` ended.
    mutating func literalEnded()
}

/// Incremental JSON validator and tokenizer (RFC 8259) with the grammar, limits and decoding of `JSONScanner`,
/// built for the response tap's per-event budget: it pushes tokens to a sink in one loop over a piece (no
/// per-token return), keeps a string's decoded text only when the sink asks for it (a member name or value it
/// reads) and otherwise only counts its decoded bytes, and crosses the plain runs of a string eight bytes at a
/// time. Most bytes of an LLM stream are inside strings nobody reads (ids, fingerprints, content text), so these
/// cost about two instructions a byte instead of a state change each.
///
/// Contract: `reset` per document, `scan` its bytes in any pieces (one byte at a time included), `finish` at the
/// end, then `isComplete`. A grammar error or nesting deeper than `maxDepth` fails the document: `scan` returns
/// false then and on every later call until `reset`. Between calls it keeps only its state, the container stack
/// as a bit set and the bounded text of the string being read, so memory does not grow and nothing allocates.
/// Owned by one tap on its loop thread.
struct JSONPushScanner: Sendable {
    static let maxDepth = JSONScanner.maxDepth

    private typealias State = JSONScanner.State

    private var state: State = .value
    /// Open containers.
    private(set) var depth = 0
    /// Bit `d - 1` is set when the container at depth `d` is an array (else an object).
    private var arrayBits: UInt64 = 0
    /// Whether the string being read is a member name, and whether its text goes to the sink.
    private var stringIsKey = false
    private var keepsText = false
    /// Decoded bytes of the current string, kept or not.
    private var stringLength = 0
    /// The `\u` escape being read.
    private var codeUnit: UInt32 = 0
    private var hexDigits = 0
    /// A high surrogate waiting for its low half (0: none).
    private var highSurrogate: UInt32 = 0
    /// The number being read.
    private var number = JSONInteger()
    /// The bytes of the literal still expected, first in the low byte; 0 when complete.
    private var literalRest: UInt32 = 0

    init() {}

    /// Prepares for a new document.
    mutating func reset() {
        state = .value
        depth = 0
        arrayBits = 0
        highSurrogate = 0
    }

    /// Whether a whole top-level value has been read (and nothing but whitespace after it).
    var isComplete: Bool { state == .done }

    /// Ends the text: a top-level number is complete here; any other unfinished value fails the document.
    mutating func finish() {
        switch state {
        case .numberZero, .numberInteger, .numberFraction, .numberExponent:
            state = depth == 0 ? .done : .failed
        case .done, .failed:
            break
        default:
            state = .failed
        }
    }

    /// Reads `bytes`, pushing each token that ends to `sink`. Returns false if the document failed (here or
    /// before).
    mutating func scan<Sink: JSONPushSink>(_ bytes: Span<UInt8>, into sink: inout Sink) -> Bool {
        var index = 0
        let count = bytes.count
        while index < count {
            let byte = bytes[unchecked: index]
            switch state {
            case .value, .valueOrArrayEnd, .keyOrObjectEnd, .key, .colon, .commaOrEnd, .done:
                index += 1
                if TapByte.isJSONWhitespace(byte) { continue }
                guard structural(byte, into: &sink) else { return failed() }
            case .string:
                let runEnd = Self.plainRunEnd(bytes, from: index)
                if runEnd > index {
                    flushSurrogate(into: &sink)
                    stringLength += runEnd - index
                    if keepsText { sink.appendText(bytes.extracting(index..<runEnd)) }
                    index = runEnd
                    continue
                }
                index += 1
                if byte == TapByte.quote {
                    flushSurrogate(into: &sink)
                    if stringIsKey {
                        state = .colon
                        sink.keyEnded(depth: depth)
                    } else {
                        valueEnded()
                        sink.stringEnded(length: stringLength, depth: depth)
                    }
                } else if byte == TapByte.backslash {
                    state = .escape
                } else {
                    return failed()  // RFC 8259 §7: control characters must be escaped
                }
            case .escape:
                index += 1
                guard escaped(byte, into: &sink) else { return failed() }
            case .unicodeEscape:
                index += 1
                guard let value = TapByte.hexValue(byte) else { return failed() }
                codeUnit = codeUnit << 4 | UInt32(value)
                hexDigits += 1
                if hexDigits == 4 {
                    takeCodeUnit(codeUnit, into: &sink)
                    state = .string
                }
            case .numberInteger:
                // A run of digits at once: token counts and timestamps are most of the numbers read.
                var digitIndex = index
                while digitIndex < count, TapByte.isDigit(bytes[unchecked: digitIndex]) {
                    accumulate(bytes[unchecked: digitIndex])
                    digitIndex += 1
                }
                if digitIndex > index {
                    index = digitIndex
                    continue
                }
                switch byte {
                case TapByte.dot: state = .numberDot
                case TapByte.lowerE, TapByte.upperE: state = .numberExponentMark; number.exact = false
                default: numberEnded(into: &sink); continue  // the byte is read again after the number
                }
                index += 1
            case .numberZero, .numberFraction, .numberExponent:
                if numberContinues(byte) {
                    index += 1
                } else {
                    numberEnded(into: &sink)  // the byte is read again after the number
                }
            case .numberMinus, .numberDot, .numberExponentMark, .numberExponentSign:
                index += 1
                guard numberPrefix(byte) else { return failed() }
            case .literal:
                index += 1
                guard byte == UInt8(truncatingIfNeeded: literalRest) else { return failed() }
                literalRest >>= 8
                if literalRest == 0 {
                    valueEnded()
                    sink.literalEnded()
                }
            case .failed:
                return false
            }
        }
        return state != .failed
    }

    private mutating func failed() -> Bool {
        state = .failed
        return false
    }

    /// The end of the run of string bytes from `start` that need no grammar: up to the first quote, backslash or
    /// control byte. Eight bytes per step (SWAR): each test below sets the high bit of the bytes that match, and
    /// a false match (from a borrow) can only sit above a true one, so the lowest set bit is the first match.
    /// Raw memory is read here only, inside the span's bounds, because `Span` has no word loads.
    private static func plainRunEnd(_ bytes: Span<UInt8>, from start: Int) -> Int {
        bytes.withUnsafeBufferPointer { buffer -> Int in
            let raw = UnsafeRawBufferPointer(buffer)
            let ones: UInt64 = 0x0101_0101_0101_0101
            let highBits: UInt64 = 0x8080_8080_8080_8080
            var index = start
            while index + 8 <= raw.count {
                let word = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: index, as: UInt64.self))
                let quotes = word ^ (ones &* UInt64(TapByte.quote))
                let backslashes = word ^ (ones &* UInt64(TapByte.backslash))
                let matches = ((quotes &- ones) & ~quotes) | ((backslashes &- ones) & ~backslashes)
                    | ((word &- ones &* 0x20) & ~word)
                let found = matches & highBits
                if found != 0 { return index + found.trailingZeroBitCount / 8 }
                index += 8
            }
            while index < raw.count {
                let byte = buffer[index]
                if byte == TapByte.quote || byte == TapByte.backslash || byte < 0x20 { return index }
                index += 1
            }
            return index
        }
    }

    // MARK: - Grammar

    /// A non-whitespace byte between tokens; false when it is not allowed there.
    @inline(__always)  // once per structural byte; as a call it saves and restores six registers (1 % per event)
    private mutating func structural<Sink: JSONPushSink>(_ byte: UInt8, into sink: inout Sink) -> Bool {
        switch state {
        case .value:
            return valueStarted(byte, into: &sink)
        case .valueOrArrayEnd:
            return byte == TapByte.closeBracket
                ? containerEnded(array: true, into: &sink) : valueStarted(byte, into: &sink)
        case .keyOrObjectEnd:
            if byte == TapByte.closeBrace { return containerEnded(array: false, into: &sink) }
            guard byte == TapByte.quote else { return false }
            stringStarted(key: true, keepsText: sink.wantsKeyText(depth: depth))
            return true
        case .key:
            guard byte == TapByte.quote else { return false }
            stringStarted(key: true, keepsText: sink.wantsKeyText(depth: depth))
            return true
        case .colon:
            guard byte == TapByte.colon else { return false }
            state = .value
            return true
        case .commaOrEnd:
            switch byte {
            case TapByte.comma:
                state = innermostIsArray ? .value : .key
                return true
            case TapByte.closeBrace:
                return containerEnded(array: false, into: &sink)
            case TapByte.closeBracket:
                return containerEnded(array: true, into: &sink)
            default:
                return false
            }
        default:
            return false  // .done: bytes after the top-level value
        }
    }

    /// The first byte of a value.
    @inline(__always)  // once per structural byte; as a call it saves and restores six registers (1 % per event)
    private mutating func valueStarted<Sink: JSONPushSink>(_ byte: UInt8, into sink: inout Sink) -> Bool {
        switch byte {
        case TapByte.openBrace:
            return containerStarted(array: false, into: &sink)
        case TapByte.openBracket:
            return containerStarted(array: true, into: &sink)
        case TapByte.quote:
            stringStarted(key: false, keepsText: sink.wantsValueText(depth: depth))
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
            literalStarted(rest: 0x65_75_72)  // "rue"
        case TapByte.lowerF:
            literalStarted(rest: 0x65_73_6C_61)  // "alse"
        case TapByte.lowerN:
            literalStarted(rest: 0x6C_6C_75)  // "ull"
        default:
            return false
        }
        return true
    }

    private mutating func containerStarted<Sink: JSONPushSink>(array: Bool, into sink: inout Sink) -> Bool {
        guard depth < Self.maxDepth else { return false }
        if array { arrayBits |= 1 << UInt64(depth) }
        depth += 1
        state = array ? .valueOrArrayEnd : .keyOrObjectEnd
        sink.containerStarted(array: array, depth: depth)
        return true
    }

    private mutating func containerEnded<Sink: JSONPushSink>(array: Bool, into sink: inout Sink) -> Bool {
        guard depth > 0, innermostIsArray == array else { return false }
        depth -= 1
        arrayBits &= ~(1 << UInt64(depth))
        valueEnded()
        sink.containerEnded(array: array, depth: depth)
        return true
    }

    private var innermostIsArray: Bool {
        depth > 0 && arrayBits & (1 << UInt64(depth - 1)) != 0
    }

    /// After any value: the enclosing container continues, or the document is complete.
    private mutating func valueEnded() {
        state = depth == 0 ? .done : .commaOrEnd
    }

    // MARK: - Strings

    private mutating func stringStarted(key: Bool, keepsText: Bool) {
        stringIsKey = key
        self.keepsText = keepsText
        stringLength = 0
        highSurrogate = 0
        state = .string
    }

    /// Appends one decoded byte of the current string.
    private mutating func appendDecoded<Sink: JSONPushSink>(_ byte: UInt8, into sink: inout Sink) {
        stringLength += 1
        if keepsText { sink.appendText(byte) }
    }

    /// The byte after a backslash (RFC 8259 §7); false when it starts no escape.
    private mutating func escaped<Sink: JSONPushSink>(_ byte: UInt8, into sink: inout Sink) -> Bool {
        guard let decoded = TapByte.singleCharacterEscape(byte) else {
            guard byte == TapByte.lowerU else { return false }
            codeUnit = 0
            hexDigits = 0
            state = .unicodeEscape
            return true
        }
        flushSurrogate(into: &sink)
        appendDecoded(decoded, into: &sink)
        state = .string
        return true
    }

    /// A decoded `\uXXXX`: surrogate pairs join into one scalar, lone halves become U+FFFD.
    private mutating func takeCodeUnit<Sink: JSONPushSink>(_ unit: UInt32, into sink: inout Sink) {
        switch unit {
        case 0xD800...0xDBFF:
            flushSurrogate(into: &sink)
            highSurrogate = unit
        case 0xDC00...0xDFFF:
            if highSurrogate != 0 {
                appendScalar(0x10000 + ((highSurrogate - 0xD800) << 10) + (unit - 0xDC00), into: &sink)
                highSurrogate = 0
            } else {
                appendScalar(0xFFFD, into: &sink)
            }
        default:
            flushSurrogate(into: &sink)
            appendScalar(unit, into: &sink)
        }
    }

    /// A high surrogate not followed by a low one stands alone: U+FFFD.
    private mutating func flushSurrogate<Sink: JSONPushSink>(into sink: inout Sink) {
        guard highSurrogate != 0 else { return }
        highSurrogate = 0
        appendScalar(0xFFFD, into: &sink)
    }

    /// Appends the UTF-8 encoding of `scalar` (at most U+10FFFF, never a surrogate here).
    private mutating func appendScalar<Sink: JSONPushSink>(_ scalar: UInt32, into sink: inout Sink) {
        switch scalar {
        case 0..<0x80:
            appendDecoded(UInt8(scalar), into: &sink)
        case 0x80..<0x800:
            appendDecoded(UInt8(0xC0 | scalar >> 6), into: &sink)
            appendDecoded(UInt8(0x80 | scalar & 0x3F), into: &sink)
        case 0x800..<0x10000:
            appendDecoded(UInt8(0xE0 | scalar >> 12), into: &sink)
            appendDecoded(UInt8(0x80 | scalar >> 6 & 0x3F), into: &sink)
            appendDecoded(UInt8(0x80 | scalar & 0x3F), into: &sink)
        default:
            appendDecoded(UInt8(0xF0 | scalar >> 18), into: &sink)
            appendDecoded(UInt8(0x80 | scalar >> 12 & 0x3F), into: &sink)
            appendDecoded(UInt8(0x80 | scalar >> 6 & 0x3F), into: &sink)
            appendDecoded(UInt8(0x80 | scalar & 0x3F), into: &sink)
        }
    }

    // MARK: - Numbers and literals

    private mutating func numberStarted(negative: Bool) {
        number = JSONInteger(negative: negative)
    }

    private mutating func accumulate(_ digit: UInt8) { number.accumulate(digit) }

    /// In a state where the number may end (after `0`, in the fraction or the exponent): whether `byte`
    /// continues it (and the new state). A digit after a leading `0` also "continues" it, into a failure.
    private mutating func numberContinues(_ byte: UInt8) -> Bool {
        switch state {
        case .numberZero:
            switch byte {
            case TapByte.dot: state = .numberDot
            case TapByte.lowerE, TapByte.upperE: state = .numberExponentMark; number.exact = false
            case TapByte.zero...TapByte.nine: state = .failed  // RFC 8259 §6: no leading zeros
            default: return false
            }
        case .numberFraction:
            switch byte {
            case TapByte.zero...TapByte.nine: break
            case TapByte.lowerE, TapByte.upperE: state = .numberExponentMark
            default: return false
            }
        default:  // .numberExponent
            return TapByte.isDigit(byte)
        }
        return true
    }

    /// In a state where a number cannot end yet (after `-`, `.`, `e` or the exponent's sign): false when `byte`
    /// cannot come next.
    private mutating func numberPrefix(_ byte: UInt8) -> Bool {
        switch state {
        case .numberMinus:
            switch byte {
            case TapByte.zero: state = .numberZero
            case TapByte.one...TapByte.nine: state = .numberInteger; accumulate(byte)
            default: return false
            }
        case .numberDot:
            guard TapByte.isDigit(byte) else { return false }
            state = .numberFraction
            number.exact = false
        case .numberExponentMark:
            switch byte {
            case TapByte.plus, TapByte.minus: state = .numberExponentSign
            case TapByte.zero...TapByte.nine: state = .numberExponent
            default: return false
            }
        default:  // .numberExponentSign
            guard TapByte.isDigit(byte) else { return false }
            state = .numberExponent
        }
        return true
    }

    /// The number ended just before the current byte, which is read next in the new state.
    private mutating func numberEnded<Sink: JSONPushSink>(into sink: inout Sink) {
        valueEnded()
        sink.numberEnded(number.value)
    }

    /// `rest`: the literal's bytes after its first, packed with the next expected byte lowest.
    private mutating func literalStarted(rest: UInt32) {
        literalRest = rest
        state = .literal
    }
}
