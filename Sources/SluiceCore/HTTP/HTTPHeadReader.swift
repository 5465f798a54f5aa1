/// What the field lines of one head say about framing and the connection, gathered line by line so that each value
/// is examined once, when its line completes (RFC 9112 §6, §9.6; RFC 9110 §7.2, §8.6, §10.1.1).
struct HTTPFieldFacts: Sendable {
    /// Requests also track Host and Expect.
    let isRequest: Bool
    /// The message's version, set by the parser once the start line is known.
    var version = HTTPVersion.http1_1
    /// The value every Content-Length element agreed on.
    private(set) var contentLength: Int64?
    /// The offset of the last Transfer-Encoding value, where a request's non-chunked final coding is reported.
    private(set) var transferEncodingAt: Int?
    private(set) var sawChunked = false
    /// Whether chunked is the last coding so far (RFC 9112 §6.3 rules 3 and 4).
    private(set) var chunkedIsFinal = false
    /// A coding other than chunked was listed (legal in responses; a request gets 501).
    private(set) var sawOtherCoding = false
    private(set) var connectionClose = false
    private(set) var connectionKeepAlive = false
    /// `Connection: upgrade` (RFC 9110 §7.8: an Upgrade field is meaningful only with it).
    private(set) var connectionUpgrade = false
    /// Upgrade fields seen, and whether the only one offers exactly `websocket` (RFC 6455 §4.1, §4.2.2): a list of
    /// several protocols, or a second Upgrade field, is not a WebSocket upgrade.
    private(set) var upgradeFields = 0
    private(set) var upgradeIsWebSocket = false
    /// Exactly one Upgrade field, offering only `websocket`, and `Connection: upgrade`.
    var upgradesToWebSocket: Bool { connectionUpgrade && upgradeFields == 1 && upgradeIsWebSocket }
    private(set) var hostCount = 0
    private(set) var hostField: Int?
    private(set) var expectContinue = false

    init(isRequest: Bool) {
        self.isRequest = isRequest
    }

    var hasTransferEncoding: Bool { transferEncodingAt != nil }

    mutating func reset() {
        self = HTTPFieldFacts(isRequest: isRequest)
    }

    /// Records what `field` (fields[index], whose line starts at `lineStart`) says about framing and the connection.
    /// Connection tokens are appended to `connectionTokens`.
    /// - Throws: a framing or value error at the offending byte; a field that conflicts with an earlier one is
    ///   reported at its line start.
    mutating func note(_ field: HeadField, index: Int, lineStart: Int, in bytes: Span<UInt8>,
                       connectionTokens: inout [Range<Int>]) throws(HTTPParseFailure) {
        func named(_ name: StaticString) -> Bool {
            HTTPByte.equals(bytes, field.name, name, ignoringCase: true)
        }
        // Dispatch on length first: most fields are none of these and cost one integer switch.
        switch field.name.count {
        case 4 where isRequest && named("host"):
            try noteHost(field.value, index: index, lineStart: lineStart, in: bytes)
        case 7 where named("upgrade"):
            upgradeFields += 1
            var list = HTTPListCursor(field.value)
            var offered = 0
            var webSocket = false
            while let token = list.next(bytes) {
                guard !token.isEmpty else { continue }
                offered += 1
                webSocket = HTTPByte.equals(bytes, token, "websocket", ignoringCase: true)
            }
            upgradeIsWebSocket = offered == 1 && webSocket
        case 6 where isRequest && named("expect"):
            // RFC 9110 §10.1.1: an HTTP/1.0 server ignores 100-continue.
            expectContinue = version != .http1_0
                && HTTPByte.equals(bytes, field.value, "100-continue", ignoringCase: true)
        case 10 where named("connection"):
            try noteConnection(field.value, in: bytes, tokens: &connectionTokens)
        case 14 where named("content-length"):
            try noteContentLength(field.value, lineStart: lineStart, in: bytes)
        case 17 where named("transfer-encoding"):
            try noteTransferEncoding(field.value, lineStart: lineStart, in: bytes)
        default:
            break
        }
    }

    /// RFC 9112 §3.2: one Host, whose value is uri-host [ ":" port ].
    private mutating func noteHost(_ value: Range<Int>, index: Int, lineStart: Int,
                                   in bytes: Span<UInt8>) throws(HTTPParseFailure) {
        hostCount += 1
        guard hostCount == 1 else { throw HTTPParseFailure(.multipleHost, at: lineStart) }
        hostField = index
        switch HTTPAuthority.check(bytes, value) {
        case .valid: break
        case .userinfo(let offset), .invalid(let offset): throw HTTPParseFailure(.invalidFieldValue, at: offset)
        }
    }

    /// RFC 9110 §7.6.1: a list of option tokens; empty elements are ignored as §5.6.1 asks.
    private mutating func noteConnection(_ value: Range<Int>, in bytes: Span<UInt8>,
                                         tokens: inout [Range<Int>]) throws(HTTPParseFailure) {
        var list = HTTPListCursor(value)
        while let token = list.next(bytes) {
            guard !token.isEmpty else { continue }
            for offset in token where !HTTPByte.isTokenChar(bytes[offset]) {
                throw HTTPParseFailure(.invalidFieldValue, at: offset)
            }
            guard tokens.count < HTTPLimits.maxConnectionTokens else {
                throw HTTPParseFailure(.tooManyConnectionOptions, at: token.lowerBound)
            }
            tokens.append(token)
            if HTTPByte.equals(bytes, token, "close", ignoringCase: true) {
                connectionClose = true
            } else if HTTPByte.equals(bytes, token, "keep-alive", ignoringCase: true) {
                connectionKeepAlive = true
            } else if HTTPByte.equals(bytes, token, "upgrade", ignoringCase: true) {
                connectionUpgrade = true
            }
        }
    }

    /// RFC 9110 §8.6: 1*DIGIT; a list or repeated field of identical values counts as one value.
    private mutating func noteContentLength(_ value: Range<Int>, lineStart: Int,
                                            in bytes: Span<UInt8>) throws(HTTPParseFailure) {
        guard !hasTransferEncoding else { throw HTTPParseFailure(.contentLengthWithTransferEncoding, at: lineStart) }
        var list = HTTPListCursor(value)
        while let element = list.next(bytes) {
            let length = try Self.parseContentLength(element, in: bytes)
            if let contentLength, contentLength != length {
                throw HTTPParseFailure(.conflictingContentLength, at: element.lowerBound)
            }
            contentLength = length
        }
    }

    /// One Content-Length element. 18 digits keep the value below Int64.max without an overflow check, and no
    /// body that long is ever legitimate.
    private static func parseContentLength(_ element: Range<Int>,
                                           in bytes: Span<UInt8>) throws(HTTPParseFailure) -> Int64 {
        guard !element.isEmpty else { throw HTTPParseFailure(.invalidContentLength, at: element.lowerBound) }
        var length: Int64 = 0
        for offset in element {
            let byte = bytes[offset]
            guard HTTPByte.isDigit(byte), offset - element.lowerBound < 18 else {
                throw HTTPParseFailure(.invalidContentLength, at: offset)
            }
            length = length * 10 + Int64(byte - HTTPByte.zero)
        }
        return length
    }

    /// RFC 9112 §6.1: a list of codings, combined across fields; chunked at most once. Codings with parameters are
    /// rejected: no transfer coding sluice forwards defines any, and odd spellings are how framing gets smuggled.
    private mutating func noteTransferEncoding(_ value: Range<Int>, lineStart: Int,
                                               in bytes: Span<UInt8>) throws(HTTPParseFailure) {
        guard version != .http1_0 else { throw HTTPParseFailure(.transferEncodingInHTTP10, at: lineStart) }
        guard contentLength == nil else { throw HTTPParseFailure(.contentLengthWithTransferEncoding, at: lineStart) }
        transferEncodingAt = value.lowerBound
        var list = HTTPListCursor(value)
        while let coding = list.next(bytes) {
            guard !coding.isEmpty else { throw HTTPParseFailure(.unsupportedTransferEncoding, at: coding.lowerBound) }
            for offset in coding where !HTTPByte.isTokenChar(bytes[offset]) {
                throw HTTPParseFailure(.unsupportedTransferEncoding, at: offset)
            }
            let isChunked = HTTPByte.equals(bytes, coding, "chunked", ignoringCase: true)
            if isChunked && sawChunked {
                throw HTTPParseFailure(.unsupportedTransferEncoding, at: coding.lowerBound)
            }
            sawChunked = sawChunked || isChunked
            sawOtherCoding = sawOtherCoding || !isChunked
            chunkedIsFinal = isChunked
        }
    }
}

/// The head-parsing steps requests and responses share: lexing from the saved offset, the head size and field
/// count limits, and the field lines with their facts. Each parser adds only its start line and framing rules.
struct HTTPHeadReader: Sendable {
    /// What `next` reached.
    enum Event: Equatable {
        /// The bytes ran out before the head ended.
        case needMore
        /// A start line (empty for an empty line), for the parser to check.
        case startLine(Range<Int>)
        /// The head ends at `headLength`, after its final CRLF.
        case end(headLength: Int)
    }

    let limits: HTTPLimits
    private(set) var facts: HTTPFieldFacts
    private var lexer: HTTPHeadLexer
    /// The offset of the next byte to examine; never moves back, which is what makes re-parsing free.
    private var position = 0
    /// The result returned once the head completed or failed, repeated by later calls.
    private(set) var outcome: HeadParseResult?

    init(limits: HTTPLimits, isRequest: Bool) {
        self.limits = limits
        facts = HTTPFieldFacts(isRequest: isRequest)
        lexer = HTTPHeadLexer(state: .startLine, maxStartLineBytes: isRequest ? limits.maxRequestLineBytes : .max)
    }

    mutating func reset() {
        facts.reset()
        lexer.reset(to: .startLine, at: 0)
        position = 0
        outcome = nil
    }

    /// The message's version, for the rules that depend on it; set once the start line is parsed.
    mutating func setVersion(_ version: HTTPVersion) {
        facts.version = version
    }

    /// Makes the next line a start line again, after an empty line the request parser skips (RFC 9112 §2.2).
    mutating func expectStartLine() {
        lexer.reset(to: .startLine, at: position)
    }

    /// Parses field lines into `fields` and `connectionTokens` until the start line, the end of the head, or the
    /// end of the bytes.
    /// - Precondition: `bytes` begins with every byte given to earlier calls since `reset`.
    /// - Throws: `.headTooLarge` at `maxHeadBytes` once that many bytes are present without the head ending,
    ///   `.tooManyFields` at the line start of the field over the limit, or any lexing or field-value error.
    mutating func next(_ bytes: Span<UInt8>, fields: inout [HeadField],
                       connectionTokens: inout [Range<Int>]) throws(HTTPParseFailure) -> Event {
        precondition(bytes.count >= position, "parse must be given every byte of earlier calls")
        let end = min(bytes.count, limits.maxHeadBytes)
        while true {
            switch try lexer.next(bytes, position: &position, end: end) {
            case .needMore:
                guard end == bytes.count else { throw HTTPParseFailure(.headTooLarge, at: end) }
                return .needMore
            case .startLine(let line):
                return .startLine(line)
            case .field:
                guard fields.count < limits.maxFieldCount else {
                    throw HTTPParseFailure(.tooManyFields, at: lexer.lineStart)
                }
                try facts.note(lexer.field, index: fields.count, lineStart: lexer.lineStart, in: bytes,
                               connectionTokens: &connectionTokens)
                fields.append(lexer.field)
            case .sectionEnd:
                return .end(headLength: position)
            }
        }
    }

    /// Records the result of a `parse` call that completed or failed, so later calls return it unchanged.
    mutating func settle(_ result: HeadParseResult) -> HeadParseResult {
        if result != .needMore { outcome = result }
        return result
    }
}
