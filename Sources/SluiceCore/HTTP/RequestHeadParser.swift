/// A parsed request head: offsets into the bytes given to `RequestHeadParser.parse` plus what they mean.
public struct RequestHead: Equatable, Sendable {
    public var method: HTTPMethod
    public var methodRange: Range<Int>
    public var target: Range<Int>
    public var targetForm: TargetForm
    public var version: HTTPVersion
    /// Every field line, in order.
    public var fields: [HeadField]
    /// `.none` when there is neither Content-Length nor Transfer-Encoding (RFC 9112 §6.3 rule 7); never `.untilClose`.
    public var framing: BodyFraming
    /// HTTP/1.1: unless `Connection: close`; HTTP/1.0: only with `Connection: keep-alive` (RFC 9112 §9.3).
    public var keepAlive: Bool
    /// `Expect: 100-continue` in an HTTP/1.1 request (RFC 9110 §10.1.1).
    public var expectContinue: Bool
    /// Each token of every Connection field, naming the fields to strip before forwarding (RFC 9110 §7.6.1).
    public var connectionTokens: [Range<Int>]
    /// The index in `fields` of the Host field, if any.
    public var hostField: Int?
    /// `Connection: upgrade` with a single `Upgrade: websocket` (RFC 6455 §4.1); whether it may open a tunnel
    /// (method, version, body, the route) is the proxy's to decide.
    public var upgradesToWebSocket: Bool

    /// An empty head whose arrays are allocated once, here.
    init(limits: HTTPLimits) {
        method = .other
        methodRange = 0..<0
        target = 0..<0
        targetForm = .origin
        version = .http1_1
        fields = []
        fields.reserveCapacity(limits.maxFieldCount)
        framing = .none
        keepAlive = false
        expectContinue = false
        connectionTokens = []
        connectionTokens.reserveCapacity(HTTPLimits.maxConnectionTokens)
        hostField = nil
        upgradesToWebSocket = false
    }

    /// Empties the head, keeping the arrays' capacity.
    mutating func clear() {
        fields.removeAll(keepingCapacity: true)
        connectionTokens.removeAll(keepingCapacity: true)
        method = .other
        methodRange = 0..<0
        target = 0..<0
        targetForm = .origin
        version = .http1_1
        framing = .none
        keepAlive = false
        expectContinue = false
        hostField = nil
        upgradesToWebSocket = false
    }
}

/// Restartable parser of one request head (RFC 9112 §2-§6), strict wherever two hops could disagree on framing.
///
/// Contract: `bytes` holds every byte of this message received so far, from its first byte; each call passes the
/// same prefix plus new bytes. The parser resumes at its saved offset and never rescans, so feeding one byte more per
/// call is O(total). After `.complete` or `.failed`, further calls return the same result until `reset`.
/// No call allocates: the arrays of `head` are reserved in `init` and reused. A value owned by one connection on
/// its loop thread; it shares no state.
public struct RequestHeadParser: Sendable {
    /// The parsed head; valid after `parse` returned `.complete`.
    public private(set) var head: RequestHead
    private var reader: HTTPHeadReader
    private var emptyLinesSkipped = 0

    public init(limits: HTTPLimits = HTTPLimits()) {
        head = RequestHead(limits: limits)
        reader = HTTPHeadReader(limits: limits, isRequest: true)
    }

    /// Prepares for the next message on the connection, keeping capacity.
    public mutating func reset() {
        head.clear()
        reader.reset()
        emptyLinesSkipped = 0
    }

    /// Parses as much of the head as `bytes` holds.
    /// - Returns: `.needMore`, `.complete(headLength:)` with `head` filled in, or `.failed(error, at: offset)`;
    ///   `error.status` is the status to answer with.
    public mutating func parse(_ bytes: Span<UInt8>) -> HeadParseResult {
        if let outcome = reader.outcome { return outcome }
        let result: HeadParseResult
        do {
            result = try advance(bytes)
        } catch {
            result = .failed(error.error, at: error.offset)
        }
        return reader.settle(result)
    }

    private mutating func advance(_ bytes: Span<UInt8>) throws(HTTPParseFailure) -> HeadParseResult {
        while true {
            switch try reader.next(bytes, fields: &head.fields, connectionTokens: &head.connectionTokens) {
            case .needMore:
                return .needMore
            case .startLine(let line) where line.isEmpty:
                // RFC 9112 §2.2: skip empty lines before the request line, a bounded number of them.
                emptyLinesSkipped += 1
                guard emptyLinesSkipped <= HTTPLimits.maxLeadingEmptyLines else {
                    throw HTTPParseFailure(.tooManyLeadingEmptyLines, at: line.lowerBound)
                }
                reader.expectStartLine()
            case .startLine(let line):
                try parseRequestLine(line, in: bytes)
                reader.setVersion(head.version)
            case .end(let headLength):
                try finish(emptyLineAt: headLength - 2)
                return .complete(headLength: headLength)
            }
        }
    }

    /// `method SP request-target SP HTTP-version` (RFC 9112 §3), single spaces only.
    private mutating func parseRequestLine(_ line: Range<Int>, in bytes: Span<UInt8>) throws(HTTPParseFailure) {
        var index = line.lowerBound
        while index < line.upperBound, HTTPByte.isTokenChar(bytes[index]) { index += 1 }
        guard index < line.upperBound, index > line.lowerBound, bytes[index] == HTTPByte.space else {
            let isMethodByte = index < line.upperBound && bytes[index] != HTTPByte.space
            throw HTTPParseFailure(isMethodByte ? .invalidMethod : .invalidRequestLine, at: index)
        }
        head.methodRange = line.lowerBound..<index
        head.method = HTTPMethod(bytes, head.methodRange)

        let targetStart = index + 1
        index = targetStart
        while index < line.upperBound, bytes[index] != HTTPByte.space { index += 1 }
        guard index > targetStart else { throw HTTPParseFailure(.invalidRequestLine, at: targetStart) }
        // No second space: an HTTP/0.9 request, which has no headers and cannot be proxied safely.
        guard index < line.upperBound else { throw HTTPParseFailure(.invalidVersion, at: index) }
        head.target = targetStart..<index

        // The version is checked before the target, whose rules belong to HTTP/1.x: "PRI * HTTP/2.0" gets 505.
        let versionStart = index + 1
        guard line.upperBound - versionStart == 8,
              let version = HTTPVersion(bytes, at: versionStart, end: line.upperBound)
        else { throw HTTPParseFailure(.invalidVersion, at: versionStart) }
        guard version == .http1_1 || version == .http1_0 else {
            throw HTTPParseFailure(.unsupportedVersion, at: versionStart)
        }
        head.version = version
        head.targetForm = try Self.targetForm(head.target, method: head.method, in: bytes)
    }

    /// The form of `target` (RFC 9112 §3.2), which must suit `method`.
    /// - Throws: `.invalidTarget` at a CTL, SP or non-ASCII byte, or at the target start for a wrong form.
    private static func targetForm(_ target: Range<Int>, method: HTTPMethod,
                                   in bytes: Span<UInt8>) throws(HTTPParseFailure) -> TargetForm {
        for offset in target where bytes[offset] <= HTTPByte.space || bytes[offset] >= HTTPByte.delete {
            throw HTTPParseFailure(.invalidTarget, at: offset)
        }
        let form: TargetForm
        let first = bytes[target.lowerBound]
        if method == .connect {
            form = .authority
            guard isAuthority(target, in: bytes) else { throw HTTPParseFailure(.invalidTarget, at: target.lowerBound) }
        } else if first == HTTPByte.slash {
            form = .origin
        } else if first == HTTPByte.asterisk && target.count == 1 && method == .options {
            form = .asterisk
        } else if let schemeLength = httpSchemeLength(target, in: bytes) {
            form = .absolute
            try checkAbsoluteAuthority(target, from: target.lowerBound + schemeLength, in: bytes)
        } else {
            throw HTTPParseFailure(.invalidTarget, at: target.lowerBound)
        }
        return form
    }

    /// authority-form = uri-host ":" port (RFC 9112 §3.2.3), port non-empty; no userinfo, path, query or fragment.
    private static func isAuthority(_ target: Range<Int>, in bytes: Span<UInt8>) -> Bool {
        var colon = target.upperBound - 1
        while colon > target.lowerBound, HTTPByte.isDigit(bytes[colon]) { colon -= 1 }
        guard colon > target.lowerBound, colon < target.upperBound - 1, bytes[colon] == HTTPByte.colon else {
            return false
        }
        for offset in target.lowerBound..<colon where !HTTPByte.isHostChar(bytes[offset]) { return false }
        return true
    }

    /// The length of `http://` or `https://` when `target` starts with one (schemes are case-insensitive,
    /// RFC 3986 §3.1) followed by at least one byte, else nil.
    private static func httpSchemeLength(_ target: Range<Int>, in bytes: Span<UInt8>) -> Int? {
        for prefix: StaticString in ["http://", "https://"] {
            let length = prefix.utf8CodeUnitCount
            if target.count > length, HTTPByte.equals(bytes, target.lowerBound..<target.lowerBound + length, prefix, ignoringCase: true) {
                return length
            }
        }
        return nil
    }

    /// An absolute-form target's authority runs to the path's "/" (or the end) and obeys Host's grammar; userinfo
    /// is refused (RFC 9110 §4.2.4), so credentials never reach the upstream's Host or the completion log. A query
    /// straight after the authority is refused too: the upstream would need a path sluice would have to invent.
    private static func checkAbsoluteAuthority(_ target: Range<Int>, from start: Int, in bytes: Span<UInt8>) throws(HTTPParseFailure) {
        var end = start
        while end < target.upperBound, bytes[end] != HTTPByte.slash {
            if bytes[end] == UInt8(ascii: "?") || bytes[end] == UInt8(ascii: "#") { throw HTTPParseFailure(.invalidTarget, at: end) }
            end += 1
        }
        guard end > start else { throw HTTPParseFailure(.invalidTarget, at: start) }
        switch HTTPAuthority.check(bytes, start..<end) {
        case .valid: break
        case .userinfo(let offset): throw HTTPParseFailure(.userinfoInTarget, at: offset)
        case .invalid(let offset): throw HTTPParseFailure(.invalidTarget, at: offset)
        }
    }

    /// Applies the rules that need the whole head: Host presence and framing (RFC 9112 §3.2, §6.3).
    /// - Parameter emptyLineAt: the offset of the final CRLF, where a missing Host is reported.
    private mutating func finish(emptyLineAt: Int) throws(HTTPParseFailure) {
        let facts = reader.facts
        if head.version == .http1_1 && facts.hostCount == 0 {
            throw HTTPParseFailure(.missingHost, at: emptyLineAt)
        }
        if let transferEncodingAt = facts.transferEncodingAt {
            // RFC 9112 §6.3 rule 4: a request whose final coding is not chunked has no reliable length.
            guard facts.chunkedIsFinal else {
                throw HTTPParseFailure(.unsupportedTransferEncoding, at: transferEncodingAt)
            }
            guard !facts.sawOtherCoding else { throw HTTPParseFailure(.unimplementedTransferCoding, at: transferEncodingAt) }
            head.framing = .chunked
        } else if let contentLength = facts.contentLength {
            head.framing = .contentLength(contentLength)
        } else {
            head.framing = .none
        }
        head.keepAlive = !facts.connectionClose && (head.version == .http1_1 || facts.connectionKeepAlive)
        head.expectContinue = facts.expectContinue
        head.hostField = facts.hostField
        head.upgradesToWebSocket = facts.upgradesToWebSocket
    }
}
