/// What the bytes at the start of the input to `ChunkedDecoder.next` are.
public enum ChunkedStep: Equatable, Sendable {
    /// The first n bytes are framing: a chunk-size line, the CRLF after chunk data, or trailer bytes.
    case framing(Int)
    /// The first n bytes are payload.
    case data(Int)
    /// The first n bytes complete the message (the end of the last-chunk, trailers and final CRLF);
    /// any bytes after them belong to whatever follows.
    case end(Int)
    /// The body is malformed; `at` is the offset of the offending byte in this call's input.
    case failed(HTTPParseError, at: Int)
}

/// What `ChunkedDecoder.scan` found in its input.
public enum ChunkedScanResult: Equatable, Sendable {
    /// Every byte belongs to the body and the body is not finished.
    case consumedAll
    /// `bytes[0..<at]` finish the body; the rest belongs to whatever follows.
    case ended(at: Int)
    /// The body is malformed at this offset of the input.
    case failed(HTTPParseError, at: Int)
}

/// Incremental chunked-body scanner (RFC 9112 §7.1): it consumes every byte it is given (never asks the caller to
/// keep bytes), keeping only its state (partial size value, counters) between calls, so input may be split
/// anywhere, 1 byte at a time included. It validates the framing and reports where payload lies; forwarding the
/// bytes verbatim or de-chunking them is the caller's choice.
///
/// Offsets in results are relative to each call's input. After `.end`/`.ended` it returns `.end(0)`/`.ended(at: 0)`
/// and after a failure the same error at offset 0, until `reset`. Nothing allocates. A value owned by one
/// connection on its loop thread; it shares no state.
public struct ChunkedDecoder: Sendable {
    /// Where the decoder is in the body.
    enum State: Equatable, Sendable {
        /// At the first byte of a chunk-size.
        case sizeStart
        /// Inside the chunk-size digits.
        case size
        /// BWS after the chunk-size, where only more BWS or ";" may follow.
        case whitespaceBeforeExtension
        /// After ";" (and BWS), before an extension name.
        case extensionNameStart
        /// Inside an extension name.
        case extensionName
        /// BWS after an extension name, before "=" or the next ";".
        case whitespaceAfterName
        /// After "=" (and BWS), before the value.
        case extensionValueStart
        /// Inside a token value.
        case extensionToken
        /// Inside a quoted-string value.
        case extensionQuoted
        /// After a backslash in a quoted-string.
        case extensionQuotedPair
        /// After a quoted-string value, where only BWS, ";" or the line end may follow.
        case extensionValueEnd
        /// BWS after a value, before the next ";".
        case whitespaceAfterValue
        /// After the CR of a chunk-size line.
        case sizeLineFeed
        /// Inside chunk data; `remaining` bytes are left.
        case data
        /// After chunk data, expecting CR.
        case dataCarriageReturn
        /// After chunk data and CR, expecting LF.
        case dataLineFeed
        /// In the trailer section after the last-chunk, lexed like header fields.
        case trailers
        /// The message is complete.
        case finished
        /// The body was rejected with this error.
        case failed(HTTPParseError)
    }

    /// The largest chunk-size accepted: half of Int64.max, so that adding a chunk to a running total never overflows.
    static let maxChunkSize = UInt64(Int64.max / 2)
    /// A chunk-size of more hex digits is rejected even if its value is small: leading zeros are a parsing
    /// differential that proxies have been desynchronised with.
    static let maxChunkSizeDigits = 16

    private let limits: HTTPLimits
    private var state: State = .sizeStart
    /// The chunk-size being read, then the data bytes left in the chunk.
    private var remaining: UInt64 = 0
    private var sizeDigits = 0
    /// Content bytes of the current chunk-size line, excluding CRLF.
    private var sizeLineBytes = 0
    private var trailerBytes = 0
    private var trailerLexer = HTTPHeadLexer(state: .lineStart)

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
    }

    /// Prepares for the next chunked body.
    public mutating func reset() {
        self = ChunkedDecoder(limits: limits)
    }

    /// Whether the last-chunk, the trailers and the final CRLF have all been consumed.
    public var isFinished: Bool { state == .finished }

    /// Classifies the start of `bytes`: the longest prefix that is all framing, all payload, or the end of the body.
    /// An empty input yields a zero count.
    public mutating func next(_ bytes: Span<UInt8>) -> ChunkedStep {
        switch state {
        case .finished:
            return .end(0)
        case .failed(let error):
            return .failed(error, at: 0)
        case .data:
            let count = UInt64(bytes.count) < remaining ? bytes.count : Int(remaining)
            remaining -= UInt64(count)
            if remaining == 0 { state = .dataCarriageReturn }
            return .data(count)
        default:
            do {
                let count = try consumeFraming(bytes)
                return state == .finished ? .end(count) : .framing(count)
            } catch {
                state = .failed(error.error)
                return .failed(error.error, at: error.offset)
            }
        }
    }

    /// Fast path for verbatim forwarding: scans as far as possible.
    /// - Returns: `.consumedAll`, `.ended(at: n)` (`bytes[0..<n]` finish the message, the rest belongs to whatever
    ///   follows), or `.failed(error, at: offset)`.
    public mutating func scan(_ bytes: Span<UInt8>) -> ChunkedScanResult {
        var offset = 0
        repeat {
            switch next(bytes.extracting(offset...)) {
            case .framing(let count), .data(let count): offset += count
            case .end(let count): return .ended(at: offset + count)
            case .failed(let error, let at): return .failed(error, at: offset + at)
            }
        } while offset < bytes.count
        return .consumedAll
    }

    /// Runs the framing state machine over `bytes` until chunk data starts, the body ends, or the bytes run out.
    /// - Returns: the number of bytes consumed.
    /// - Throws: the offending byte's error and its offset in `bytes`.
    private mutating func consumeFraming(_ bytes: Span<UInt8>) throws(HTTPParseFailure) -> Int {
        var index = 0
        if let dataStart = commonFramingEnd(bytes) { return dataStart }
        while index < bytes.count {
            if state == .trailers {
                return try consumeTrailers(bytes, from: index)
            }
            let byte = bytes[index]
            if state.isInSizeLine && byte != HTTPByte.cr {
                sizeLineBytes += 1
                guard sizeLineBytes <= limits.maxChunkLineBytes else {
                    throw HTTPParseFailure(.chunkLineTooLong, at: index)
                }
            }
            try consumeFramingByte(byte, at: index)
            index += 1
            if state == .data { break }
        }
        return index
    }

    /// The framing nearly every chunk has, `[CRLF] HEXDIG+ CRLF` before non-empty data, taken whole when it is all
    /// in `bytes`: the per-byte state machine costs more than the event a chunk carries. Returns where the data
    /// starts, with the state as the byte-wise path would leave it; nil (state untouched) for anything else,
    /// which the byte-wise path then reads, so both accept and reject exactly the same input.
    private mutating func commonFramingEnd(_ bytes: Span<UInt8>) -> Int? {
        var index = 0
        if state == .dataCarriageReturn {
            guard bytes.count >= 2, bytes[0] == HTTPByte.cr, bytes[1] == HTTPByte.lf else { return nil }
            index = 2
        } else if state != .sizeStart {
            return nil
        }
        var size: UInt64 = 0
        let digitsStart = index
        while index < bytes.count, index - digitsStart < Self.maxChunkSizeDigits, let digit = HTTPByte.hexValue(bytes[index]) {
            guard size <= (Self.maxChunkSize - UInt64(digit)) / 16 else { return nil }
            size = size * 16 + UInt64(digit)
            index += 1
        }
        let digits = index - digitsStart
        guard digits > 0, digits <= limits.maxChunkLineBytes, size > 0, index + 2 <= bytes.count,
              bytes[index] == HTTPByte.cr, bytes[index + 1] == HTTPByte.lf else { return nil }
        remaining = size
        sizeLineBytes = 0
        state = .data
        return index + 2
    }

    /// One byte of a chunk-size line or of the CRLF after chunk data (RFC 9112 §7.1, §7.1.1).
    private mutating func consumeFramingByte(_ byte: UInt8, at index: Int) throws(HTTPParseFailure) {
        switch state {
        case .sizeStart:
            // No leading whitespace, sign or "0x": only HEXDIG starts a chunk-size.
            guard let digit = HTTPByte.hexValue(byte) else { throw HTTPParseFailure(.invalidChunkSize, at: index) }
            remaining = UInt64(digit)
            sizeDigits = 1
            state = .size
        case .size:
            if let digit = HTTPByte.hexValue(byte) {
                sizeDigits += 1
                guard sizeDigits <= Self.maxChunkSizeDigits,
                      remaining <= (Self.maxChunkSize - UInt64(digit)) / 16 else {
                    throw HTTPParseFailure(.chunkSizeOverflow, at: index)
                }
                remaining = remaining * 16 + UInt64(digit)
            } else if byte == HTTPByte.semicolon {
                state = .extensionNameStart
            } else if HTTPByte.isWhitespace(byte) {
                state = .whitespaceBeforeExtension
            } else {
                try endSizeLine(byte, at: index, otherwise: .invalidChunkSize)
            }
        case .whitespaceBeforeExtension:
            // BWS is allowed only before ";" (chunk-ext = *( BWS ";" ... )), so "1 \r\n" is rejected.
            if byte == HTTPByte.semicolon {
                state = .extensionNameStart
            } else if !HTTPByte.isWhitespace(byte) {
                throw HTTPParseFailure(.invalidChunkExtension, at: index)
            }
        case .extensionNameStart:
            if HTTPByte.isTokenChar(byte) {
                state = .extensionName
            } else if !HTTPByte.isWhitespace(byte) {
                throw HTTPParseFailure(.invalidChunkExtension, at: index)
            }
        case .extensionName:
            if HTTPByte.isTokenChar(byte) { break }
            if HTTPByte.isWhitespace(byte) {
                state = .whitespaceAfterName
            } else {
                try afterExtensionPart(byte, at: index, allowsEquals: true)
            }
        case .whitespaceAfterName:
            if HTTPByte.isWhitespace(byte) { break }
            if byte == HTTPByte.equals {
                state = .extensionValueStart
            } else if byte == HTTPByte.semicolon {
                state = .extensionNameStart
            } else {
                throw HTTPParseFailure(.invalidChunkExtension, at: index)
            }
        case .extensionValueStart:
            if HTTPByte.isTokenChar(byte) {
                state = .extensionToken
            } else if byte == HTTPByte.doubleQuote {
                state = .extensionQuoted
            } else if !HTTPByte.isWhitespace(byte) {
                throw HTTPParseFailure(.invalidChunkExtension, at: index)
            }
        case .extensionToken:
            if HTTPByte.isTokenChar(byte) { break }
            if HTTPByte.isWhitespace(byte) {
                state = .whitespaceAfterValue
            } else {
                try afterExtensionPart(byte, at: index, allowsEquals: false)
            }
        case .extensionQuoted:
            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 9110 §5.6.4)
            if byte == HTTPByte.doubleQuote {
                state = .extensionValueEnd
            } else if byte == HTTPByte.backslash {
                state = .extensionQuotedPair
            } else if HTTPByte.isForbiddenControl(byte) {
                throw HTTPParseFailure(.invalidChunkExtension, at: index)
            }
        case .extensionQuotedPair:
            guard !HTTPByte.isForbiddenControl(byte) else { throw HTTPParseFailure(.invalidChunkExtension, at: index) }
            state = .extensionQuoted
        case .extensionValueEnd:
            if HTTPByte.isWhitespace(byte) {
                state = .whitespaceAfterValue
            } else {
                try afterExtensionPart(byte, at: index, allowsEquals: false)
            }
        case .whitespaceAfterValue:
            if byte == HTTPByte.semicolon {
                state = .extensionNameStart
            } else if !HTTPByte.isWhitespace(byte) {
                throw HTTPParseFailure(.invalidChunkExtension, at: index)
            }
        case .sizeLineFeed:
            guard byte == HTTPByte.lf else { throw HTTPParseFailure(.invalidChunkLineEnd, at: index) }
            sizeLineBytes = 0
            if remaining == 0 {
                // last-chunk: the trailer section follows (RFC 9112 §7.1.2).
                state = .trailers
                trailerLexer.reset(to: .lineStart, at: index + 1)
            } else {
                state = .data
            }
        case .dataCarriageReturn:
            guard byte == HTTPByte.cr else { throw HTTPParseFailure(.invalidChunkLineEnd, at: index) }
            state = .dataLineFeed
        case .dataLineFeed:
            guard byte == HTTPByte.lf else { throw HTTPParseFailure(.invalidChunkLineEnd, at: index) }
            state = .sizeStart
        case .data, .trailers, .finished, .failed:
            preconditionFailure("data, trailers and final states are handled by the callers")
        }
    }

    /// The byte after an extension name or value when it is not whitespace: ";" starts the next extension,
    /// "=" (after a name) starts a value, CR ends the line.
    private mutating func afterExtensionPart(_ byte: UInt8, at index: Int,
                                             allowsEquals: Bool) throws(HTTPParseFailure) {
        if byte == HTTPByte.semicolon {
            state = .extensionNameStart
        } else if allowsEquals && byte == HTTPByte.equals {
            state = .extensionValueStart
        } else {
            try endSizeLine(byte, at: index, otherwise: .invalidChunkExtension)
        }
    }

    /// CR where a chunk-size line may end; LF there is a bare LF, anything else `otherwise`.
    private mutating func endSizeLine(_ byte: UInt8, at index: Int,
                                      otherwise: HTTPParseError) throws(HTTPParseFailure) {
        switch byte {
        case HTTPByte.cr: state = .sizeLineFeed
        case HTTPByte.lf: throw HTTPParseFailure(.invalidChunkLineEnd, at: index)
        default: throw HTTPParseFailure(otherwise, at: index)
        }
    }

    /// Lexes trailer field lines from `start`, within what is left of `maxTrailerBytes`.
    /// - Returns: the offset after the bytes consumed; the state is `.finished` if the final CRLF was among them.
    /// - Throws: `.trailerTooLarge`, `.invalidChunkLineEnd` for a bare CR or LF, `.invalidTrailer` for anything
    ///   else the field-line grammar rejects.
    private mutating func consumeTrailers(_ bytes: Span<UInt8>, from start: Int) throws(HTTPParseFailure) -> Int {
        let budget = limits.maxTrailerBytes - trailerBytes
        let end = bytes.count - start > budget ? start + budget : bytes.count
        var position = start
        defer { trailerBytes += position - start }
        while true {
            let token: HTTPHeadToken
            do {
                token = try trailerLexer.next(bytes, position: &position, end: end)
            } catch {
                let isLineEnd = error.error == .bareCR || error.error == .bareLF
                throw HTTPParseFailure(isLineEnd ? .invalidChunkLineEnd : .invalidTrailer, at: error.offset)
            }
            switch token {
            case .field:
                continue
            case .sectionEnd:
                state = .finished
                return position
            case .needMore:
                guard end == bytes.count else { throw HTTPParseFailure(.trailerTooLarge, at: end) }
                return position
            case .startLine:
                preconditionFailure("a trailer section has no start line")
            }
        }
    }
}

extension ChunkedDecoder.State {
    /// Whether the state is within a chunk-size line, whose content counts against `maxChunkLineBytes`.
    var isInSizeLine: Bool {
        switch self {
        case .sizeStart, .size, .whitespaceBeforeExtension, .extensionNameStart, .extensionName, .whitespaceAfterName,
             .extensionValueStart, .extensionToken, .extensionQuoted, .extensionQuotedPair, .extensionValueEnd,
             .whitespaceAfterValue:
            true
        case .sizeLineFeed, .data, .dataCarriageReturn, .dataLineFeed, .trailers, .finished, .failed:
            false
        }
    }
}
