/// A line completed by `HTTPHeadLexer.next`.
enum HTTPHeadToken: Equatable {
    /// The input ran out inside a line; call again with more bytes.
    case needMore
    /// A complete start line, without its CRLF; empty for an empty line.
    case startLine(Range<Int>)
    /// A syntactically valid field line; `HTTPHeadLexer.field` and `lineStart` describe it.
    case field
    /// The empty line that ends the section.
    case sectionEnd
}

/// Byte-level, restartable lexer for the lines of a head or trailer section (RFC 9112 §2.1:
/// `start-line *( field-line CRLF ) CRLF`, §2.2, §5). It is the one implementation of the field-line grammar:
/// request heads, response heads and chunked trailers all go through it.
///
/// Contract: between calls it keeps only its state and the offsets of the current line; the caller keeps the
/// position. Each call examines bytes from `position` up to `end` once, so feeding one byte more per call costs
/// O(1) per byte. Offsets are in the coordinates of the spans passed in; they are meaningful to a caller that
/// passes the same prefix plus new bytes each time (the head parsers) and go stale for one that passes fresh
/// spans (the chunked decoder), which therefore never reads `field`.
///
/// Line endings are CRLF only: a bare LF, or a CR followed by anything but LF, is an error (RFC 9112 §2.2 allows
/// accepting bare LF; sluice does not, so that it never reads a line boundary that the next hop does not).
struct HTTPHeadLexer: Sendable {
    /// Where the lexer is within a line.
    enum State: Equatable, Sendable {
        /// Inside a start line: every byte but CR and LF is taken; the caller checks the content once it is complete.
        case startLine
        /// At the first byte of a field line, or of the empty line that ends the section.
        case lineStart
        /// Inside a field name.
        case name
        /// After the colon, before the first non-whitespace byte of the value.
        case leadingWhitespace
        /// Inside a field value; `valueEnd` trails the last non-whitespace byte.
        case value
        /// After a CR, where only LF may follow; the payload says what the LF completes.
        case lineFeed(LineEnd)
    }

    /// What the LF awaited in `State.lineFeed` completes.
    enum LineEnd: Equatable, Sendable {
        case startLine
        case field
        case section
    }

    private(set) var state: State
    /// Content bytes a start line may hold; the next one fails with `.requestLineTooLong` as soon as it arrives.
    private let maxStartLineBytes: Int
    // Offsets of the current or last completed line, in the caller's coordinates (see the type's contract).
    /// The offset of the current line's first byte.
    private(set) var lineStart = 0
    private var nameEnd = 0
    private var valueStart = 0
    private var valueEnd = 0

    /// - Parameters:
    ///   - state: `.startLine` for a head, `.lineStart` for a trailer section.
    ///   - maxStartLineBytes: the request-line limit; `Int.max` where only the head limit applies.
    init(state: State, maxStartLineBytes: Int = .max) {
        self.state = state
        self.maxStartLineBytes = maxStartLineBytes
    }

    /// The field line last returned as `.field`.
    var field: HeadField {
        HeadField(name: lineStart..<nameEnd, value: valueStart..<valueEnd)
    }

    /// Restarts at the first byte of a new section (`offset` in the caller's coordinates).
    mutating func reset(to state: State, at offset: Int) {
        self.state = state
        lineStart = offset
    }

    /// Lexes `bytes[position..<end]` up to and including the first line it completes.
    /// - Returns: the completed line, or `.needMore` when `end` was reached inside a line; `position` then
    ///   points past the last byte examined, and after a completed line, past its LF.
    /// - Throws: the offending byte's error and offset; for a CR not followed by LF, the offset of the byte after
    ///   the CR (where the LF should have been).
    mutating func next(_ bytes: Span<UInt8>, position: inout Int, end: Int) throws(HTTPParseFailure) -> HTTPHeadToken {
        var index = position
        defer { position = index }
        while index < end {
            switch state {
            case .startLine:
                // Bytes past the limit are examined only to see whether the line ends there.
                let limit = end - lineStart > maxStartLineBytes ? lineStart + maxStartLineBytes : end
                while index < limit, bytes[index] != HTTPByte.cr, bytes[index] != HTTPByte.lf { index += 1 }
                guard index < end else { return .needMore }
                switch bytes[index] {
                case HTTPByte.cr: state = .lineFeed(.startLine)
                case HTTPByte.lf: throw HTTPParseFailure(.bareLF, at: index)
                default: throw HTTPParseFailure(.requestLineTooLong, at: index)
                }
                index += 1

            case .lineStart:
                lineStart = index
                let byte = bytes[index]
                if HTTPByte.isTokenChar(byte) {
                    state = .name
                } else if byte == HTTPByte.cr {
                    state = .lineFeed(.section)
                } else if HTTPByte.isWhitespace(byte) {
                    throw HTTPParseFailure(.obsFold, at: index)
                } else {
                    throw HTTPParseFailure(Self.misplaced(byte, otherwise: .invalidFieldName), at: index)
                }
                index += 1

            case .name:
                while index < end, HTTPByte.isTokenChar(bytes[index]) { index += 1 }
                guard index < end else { return .needMore }
                let byte = bytes[index]
                if byte == HTTPByte.colon {
                    nameEnd = index
                    state = .leadingWhitespace
                    index += 1
                } else if HTTPByte.isWhitespace(byte) {
                    throw HTTPParseFailure(.whitespaceBeforeColon, at: index)  // RFC 9112 §5.1: MUST reject
                } else if byte == HTTPByte.cr {
                    throw HTTPParseFailure(.missingColon, at: index)
                } else {
                    throw HTTPParseFailure(Self.misplaced(byte, otherwise: .invalidFieldName), at: index)
                }

            case .leadingWhitespace:
                while index < end, HTTPByte.isWhitespace(bytes[index]) { index += 1 }
                guard index < end else { return .needMore }
                valueStart = index
                valueEnd = index
                state = .value

            case .value:
                while index < end {
                    let byte = bytes[index]
                    if HTTPByte.isFieldContent(byte) {
                        index += 1
                        valueEnd = index
                    } else if HTTPByte.isWhitespace(byte) {
                        index += 1
                    } else {
                        break
                    }
                }
                guard index < end else { return .needMore }
                guard bytes[index] == HTTPByte.cr else {
                    // Neither content, whitespace nor CR: LF or a control byte.
                    throw HTTPParseFailure(Self.misplaced(bytes[index], otherwise: .controlByte), at: index)
                }
                state = .lineFeed(.field)
                index += 1

            case .lineFeed(let lineEnd):
                guard bytes[index] == HTTPByte.lf else { throw HTTPParseFailure(.bareCR, at: index) }
                index += 1
                state = .lineStart  // which sets `lineStart` when the next line begins
                switch lineEnd {
                case .startLine: return .startLine(lineStart..<index - 2)
                case .field: return .field
                case .section: return .sectionEnd
                }
            }
        }
        return .needMore
    }

    /// The error for a byte that cannot appear where it is: a bare LF, a control byte, or else `otherwise`.
    private static func misplaced(_ byte: UInt8, otherwise: HTTPParseError) -> HTTPParseError {
        if byte == HTTPByte.lf { return .bareLF }
        if HTTPByte.isForbiddenControl(byte) { return .controlByte }
        return otherwise
    }
}
