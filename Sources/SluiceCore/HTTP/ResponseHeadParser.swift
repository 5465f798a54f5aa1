/// A parsed response head: offsets into the bytes given to `ResponseHeadParser.parse` plus what they mean.
public struct ResponseHead: Equatable, Sendable {
    /// HTTP/1.x; a minor version above 1 is kept as sent and treated like 1.1 (RFC 9110 §2.5).
    public var version: HTTPVersion
    /// 100...599.
    public var status: Int
    /// The reason phrase, possibly empty.
    public var reason: Range<Int>
    /// Every field line, in order.
    public var fields: [HeadField]
    /// RFC 9112 §6.3, computed with the request method.
    public var framing: BodyFraming
    /// The parsed Content-Length, also where it does not frame the body (HEAD, 204, 304): the proxy writes the
    /// field from this number, never by copying what the upstream sent.
    public var contentLength: Int64?
    /// False with `Connection: close`, with HTTP/1.0 unless `Connection: keep-alive`, or with `.untilClose` framing.
    public var keepAlive: Bool
    /// Each token of every Connection field, naming the fields to strip before forwarding (RFC 9110 §7.6.1).
    public var connectionTokens: [Range<Int>]
    /// 1xx, 101 included: the final response is still to come, unless the caller switches protocols.
    public var isInformational: Bool
    /// `Connection: upgrade` with a single `Upgrade: websocket`: what a 101 accepting a WebSocket handshake says.
    public var upgradesToWebSocket: Bool

    /// An empty head whose arrays are allocated once, here.
    init(limits: HTTPLimits) {
        version = .http1_1
        status = 0
        reason = 0..<0
        fields = []
        fields.reserveCapacity(limits.maxFieldCount)
        framing = .none
        contentLength = nil
        keepAlive = false
        connectionTokens = []
        connectionTokens.reserveCapacity(HTTPLimits.maxConnectionTokens)
        isInformational = false
        upgradesToWebSocket = false
    }

    /// Empties the head, keeping the arrays' capacity.
    mutating func clear() {
        fields.removeAll(keepingCapacity: true)
        connectionTokens.removeAll(keepingCapacity: true)
        version = .http1_1
        status = 0
        reason = 0..<0
        framing = .none
        contentLength = nil
        keepAlive = false
        isInformational = false
        upgradesToWebSocket = false
    }
}

/// Restartable parser of one response head (RFC 9112 §4-§6). Field lines follow the same rules as in requests;
/// framing also depends on the request method.
///
/// Contract: as for `RequestHeadParser`: each call passes every byte of the message so far plus new ones, the
/// parser resumes at its saved offset, a completed or failed parse keeps returning its result until `reset`, and
/// no call allocates. After an informational (1xx) head, `reset` and parse the next head from the bytes after it.
/// Content-Length and Transfer-Encoding are validated even where the framing ignores them (HEAD, 1xx, 204, 304):
/// a sender must not send invalid or conflicting ones (RFC 9112 §6.1, §6.2), and a client may still read them.
public struct ResponseHeadParser: Sendable {
    /// The parsed head; valid after `parse` returned `.complete`.
    public private(set) var head: ResponseHead
    private var reader: HTTPHeadReader

    public init(limits: HTTPLimits = HTTPLimits()) {
        head = ResponseHead(limits: limits)
        reader = HTTPHeadReader(limits: limits, isRequest: false)
    }

    /// Prepares for the next response on the connection, keeping capacity.
    public mutating func reset() {
        head.clear()
        reader.reset()
    }

    /// Parses as much of the head as `bytes` holds.
    /// - Parameter requestMethod: the method of the request this answers; HEAD and CONNECT change the framing.
    /// - Returns: `.needMore`, `.complete(headLength:)` with `head` filled in, or `.failed(error, at: offset)`.
    public mutating func parse(_ bytes: Span<UInt8>, requestMethod: HTTPMethod) -> HeadParseResult {
        if let outcome = reader.outcome { return outcome }
        let result: HeadParseResult
        do {
            result = try advance(bytes, requestMethod: requestMethod)
        } catch {
            result = .failed(error.error, at: error.offset)
        }
        return reader.settle(result)
    }

    private mutating func advance(_ bytes: Span<UInt8>,
                                  requestMethod: HTTPMethod) throws(HTTPParseFailure) -> HeadParseResult {
        while true {
            switch try reader.next(bytes, fields: &head.fields, connectionTokens: &head.connectionTokens) {
            case .needMore:
                return .needMore
            case .startLine(let line):
                try parseStatusLine(line, in: bytes)
                reader.setVersion(head.version)
            case .end(let headLength):
                finish(requestMethod: requestMethod)
                return .complete(headLength: headLength)
            }
        }
    }

    /// `HTTP-version SP status-code SP [ reason-phrase ]` (RFC 9112 §4); a missing `SP reason` is tolerated too,
    /// as many servers send `HTTP/1.1 200` alone.
    private mutating func parseStatusLine(_ line: Range<Int>, in bytes: Span<UInt8>) throws(HTTPParseFailure) {
        let start = line.lowerBound
        guard let version = HTTPVersion(bytes, at: start, end: line.upperBound), version.major == 1 else {
            throw HTTPParseFailure(.invalidStatusLine, at: start)
        }
        var index = start + 8
        guard index < line.upperBound, bytes[index] == HTTPByte.space else {
            throw HTTPParseFailure(.invalidStatusLine, at: index)
        }
        var status = 0
        for _ in 0..<3 {
            index += 1
            guard index < line.upperBound, HTTPByte.isDigit(bytes[index]) else {
                throw HTTPParseFailure(.invalidStatusLine, at: index)
            }
            status = status * 10 + Int(bytes[index] - HTTPByte.zero)
        }
        index += 1
        // RFC 9110 §15: codes outside 100...599 are invalid; the proxy answers 502 rather than guess a class.
        guard (100...599).contains(status) else { throw HTTPParseFailure(.invalidStatusLine, at: start + 9) }
        if index < line.upperBound {
            guard bytes[index] == HTTPByte.space else { throw HTTPParseFailure(.invalidStatusLine, at: index) }
            index += 1
        }
        // reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
        for offset in index..<line.upperBound where HTTPByte.isForbiddenControl(bytes[offset]) {
            throw HTTPParseFailure(.controlByte, at: offset)
        }
        head.version = version
        head.status = status
        head.reason = index..<line.upperBound
    }

    /// RFC 9112 §6.3 in order: responses that never have a body, then Transfer-Encoding, then Content-Length,
    /// then reading until close. Conflicts between the two were already rejected field by field.
    private mutating func finish(requestMethod: HTTPMethod) {
        let facts = reader.facts
        let status = head.status
        if requestMethod == .head || status < 200 || status == 204 || status == 304
            || (requestMethod == .connect && status < 300) {
            // Rule 1 (HEAD, 1xx, 204, 304) and rule 2 (2xx to CONNECT: the connection becomes a tunnel).
            head.framing = .none
        } else if facts.hasTransferEncoding {
            // Rules 3 and 4: without chunked last, only the close marks the end.
            head.framing = facts.chunkedIsFinal ? .chunked : .untilClose
        } else if let contentLength = facts.contentLength {
            head.framing = .contentLength(contentLength)
        } else {
            head.framing = .untilClose
        }
        head.contentLength = facts.contentLength
        head.keepAlive = !facts.connectionClose && (head.version != .http1_0 || facts.connectionKeepAlive)
            && head.framing != .untilClose
        head.isInformational = status < 200
        head.upgradesToWebSocket = facts.upgradesToWebSocket
    }
}
