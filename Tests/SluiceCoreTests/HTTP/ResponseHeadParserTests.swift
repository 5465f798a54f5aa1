import Testing
@testable import SluiceCore

/// A response the parser must accept, with everything it must report.
struct ValidResponseCase: Sendable, CustomTestStringConvertible {
    var name: String
    var head: String
    /// Bytes after the head (body, a final response after a 1xx), which the parser must leave alone.
    var after = ""
    var requestMethod: HTTPMethod = .get
    var version: HTTPVersion = .http1_1
    var status = 200
    var reason = "OK"
    var fields: [String]
    var framing: BodyFraming
    var keepAlive = true
    var connectionTokens: [String] = []
    var upgradesToWebSocket = false

    var testDescription: String { name }
}

/// A response the parser must reject, with the error and the offset it must report.
struct RejectedResponseCase: Sendable, CustomTestStringConvertible {
    var name: String
    var raw: String
    var requestMethod: HTTPMethod = .get
    var error: HTTPParseError
    var at: Int

    init(_ name: String, _ raw: String, _ error: HTTPParseError, at: Int) {
        self.name = name
        self.raw = raw
        self.error = error
        self.at = at
    }

    var testDescription: String { name }
}

private let statusLine = "HTTP/1.1 200 OK\r\n"  // 17 bytes, so field lines after it start at offset 17

let validResponses: [ValidResponseCase] = [
    ValidResponseCase(name: "SSE stream until close",
                      head: "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
                      after: "data: {}\n\n",
                      fields: ["Content-Type: text/event-stream", "Cache-Control: no-cache"], framing: .untilClose,
                      keepAlive: false),
    ValidResponseCase(name: "chunked SSE stream",
                      head: "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                      after: "a\r\ndata: {}\n\n\r\n",
                      fields: ["Content-Type: text/event-stream", "Transfer-Encoding: chunked"], framing: .chunked),
    ValidResponseCase(name: "Content-Length with body and more", head: statusLine + "Content-Length: 5\r\n\r\n",
                      after: "helloHTTP/1.1 200 OK\r\n", fields: ["Content-Length: 5"], framing: .contentLength(5)),
    ValidResponseCase(name: "HEAD response has no body", head: statusLine + "Content-Length: 100\r\n\r\n",
                      requestMethod: .head, fields: ["Content-Length: 100"], framing: .none),
    ValidResponseCase(name: "HEAD response to a chunked resource",
                      head: statusLine + "Transfer-Encoding: chunked\r\n\r\n", requestMethod: .head,
                      fields: ["Transfer-Encoding: chunked"], framing: .none),
    ValidResponseCase(name: "204 has no body", head: "HTTP/1.1 204 No Content\r\n\r\n", status: 204,
                      reason: "No Content", fields: [], framing: .none),
    ValidResponseCase(name: "304 with Content-Length has no body",
                      head: "HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n", status: 304,
                      reason: "Not Modified", fields: ["Content-Length: 12"], framing: .none),
    ValidResponseCase(name: "100 Continue followed by the final response", head: "HTTP/1.1 100 Continue\r\n\r\n",
                      after: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", status: 100, reason: "Continue",
                      fields: [], framing: .none),
    ValidResponseCase(name: "101 Switching Protocols",
                      head: "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                      status: 101, reason: "Switching Protocols",
                      fields: ["Connection: upgrade", "Upgrade: websocket"], framing: .none,
                      connectionTokens: ["upgrade"], upgradesToWebSocket: true),
    ValidResponseCase(name: "101 to h2c is not a WebSocket switch",
                      head: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
                      status: 101, reason: "Switching Protocols",
                      fields: ["Connection: Upgrade", "Upgrade: h2c"], framing: .none, connectionTokens: ["Upgrade"]),
    ValidResponseCase(name: "101 with Upgrade: websocket but no Connection: upgrade is not a WebSocket switch",
                      head: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                      status: 101, reason: "Switching Protocols", fields: ["Upgrade: websocket"], framing: .none),
    ValidResponseCase(name: "2xx to CONNECT opens a tunnel", head: "HTTP/1.1 200 Connection Established\r\n\r\n",
                      requestMethod: .connect, reason: "Connection Established", fields: [], framing: .none),
    ValidResponseCase(name: "no reason phrase after the space", head: "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
                      reason: "", fields: ["Content-Length: 0"], framing: .contentLength(0)),
    ValidResponseCase(name: "no space and no reason", head: "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", status: 404,
                      reason: "", fields: ["Content-Length: 0"], framing: .contentLength(0)),
    ValidResponseCase(name: "reason with spaces, tabs and obs-text",
                      head: "HTTP/1.1 500 Internal\tServer  Err\u{E9}ur \r\nContent-Length: 0\r\n\r\n", status: 500,
                      reason: "Internal\tServer  Err\u{E9}ur ", fields: ["Content-Length: 0"],
                      framing: .contentLength(0)),
    ValidResponseCase(name: "HTTP/1.0 closes by default", head: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
                      after: "ok", version: .http1_0, fields: ["Content-Length: 2"], framing: .contentLength(2),
                      keepAlive: false),
    ValidResponseCase(name: "HTTP/1.0 keep-alive",
                      head: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
                      version: .http1_0, fields: ["Connection: keep-alive", "Content-Length: 2"],
                      framing: .contentLength(2), connectionTokens: ["keep-alive"]),
    ValidResponseCase(name: "HTTP/1.2 is read as 1.x", head: "HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
                      version: HTTPVersion(major: 1, minor: 2), fields: ["Content-Length: 0"],
                      framing: .contentLength(0)),
    ValidResponseCase(name: "Connection: close", head: statusLine + "Connection: Close\r\nContent-Length: 0\r\n\r\n",
                      fields: ["Connection: Close", "Content-Length: 0"], framing: .contentLength(0),
                      keepAlive: false, connectionTokens: ["Close"]),
    ValidResponseCase(name: "final coding not chunked reads until close",
                      head: statusLine + "Transfer-Encoding: gzip\r\n\r\n", fields: ["Transfer-Encoding: gzip"],
                      framing: .untilClose, keepAlive: false),
    ValidResponseCase(name: "chunked then gzip reads until close",
                      head: statusLine + "Transfer-Encoding: chunked, gzip\r\n\r\n",
                      fields: ["Transfer-Encoding: chunked, gzip"], framing: .untilClose, keepAlive: false),
    ValidResponseCase(name: "identical Content-Length values", head: statusLine + "Content-Length: 3, 3\r\n\r\n",
                      fields: ["Content-Length: 3, 3"], framing: .contentLength(3)),
    ValidResponseCase(name: "Host is not special in responses", head: statusLine + "Host: a\r\nHost: b c\r\n\r\n",
                      fields: ["Host: a", "Host: b c"], framing: .untilClose, keepAlive: false),
]

let rejectedResponses: [RejectedResponseCase] = [
    .init("HTTP/2.0 status line", "HTTP/2.0 200 OK\r\n\r\n", .invalidStatusLine, at: 0),
    .init("HTTP/0.9 status line", "HTTP/0.9 200 OK\r\n\r\n", .invalidStatusLine, at: 0),
    .init("lowercase version name", "http/1.1 200 OK\r\n\r\n", .invalidStatusLine, at: 0),
    .init("not HTTP", "ICY 200 OK\r\n\r\n", .invalidStatusLine, at: 0),
    .init("empty status line", "\r\nHTTP/1.1 200 OK\r\n\r\n", .invalidStatusLine, at: 0),
    .init("version only", "HTTP/1.1\r\n\r\n", .invalidStatusLine, at: 8),
    .init("tab after version", "HTTP/1.1\t200 OK\r\n\r\n", .invalidStatusLine, at: 8),
    .init("double space", "HTTP/1.1  200 OK\r\n\r\n", .invalidStatusLine, at: 9),
    .init("two-digit status", "HTTP/1.1 20 OK\r\n\r\n", .invalidStatusLine, at: 11),
    .init("four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", .invalidStatusLine, at: 12),
    .init("status below 100", "HTTP/1.1 099 Odd\r\n\r\n", .invalidStatusLine, at: 9),
    .init("status above 599", "HTTP/1.1 600 Odd\r\n\r\n", .invalidStatusLine, at: 9),
    .init("NUL in reason", "HTTP/1.1 200 O\0K\r\n\r\n", .controlByte, at: 14),
    .init("bare LF ending the status line", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", .bareLF, at: 15),
    .init("bare CR in the status line", "HTTP/1.1 200 OK\rX\r\n\r\n", .bareCR, at: 16),
    .init("obs-fold", statusLine + "X-A: b\r\n c\r\n\r\n", .obsFold, at: 25),
    .init("whitespace before colon", statusLine + "Content-Length : 5\r\n\r\n", .whitespaceBeforeColon, at: 31),
    .init("DEL in value", statusLine + "X: \u{7F}\r\n\r\n", .controlByte, at: 20),
    .init("Content-Length with Transfer-Encoding",
          statusLine + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", .contentLengthWithTransferEncoding,
          at: 36),
    .init("conflicting Content-Length", statusLine + "Content-Length: 5\r\nContent-Length: 50\r\n\r\n",
          .conflictingContentLength, at: 52),
    .init("Content-Length: +5", statusLine + "Content-Length: +5\r\n\r\n", .invalidContentLength, at: 33),
    .init("chunked twice", statusLine + "Transfer-Encoding: chunked,chunked\r\n\r\n", .unsupportedTransferEncoding,
          at: 44),
    .init("invalid coding token", statusLine + "Transfer-Encoding: chunked, g/zip\r\n\r\n",
          .unsupportedTransferEncoding, at: 46),
    .init("Transfer-Encoding in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
          .transferEncodingInHTTP10, at: 17),
    .init("33 Connection tokens",
          statusLine + "Connection: " + (0..<33).map { "o\($0)" }.joined(separator: ",") + "\r\n\r\n",
          .tooManyConnectionOptions, at: 29 + 32 * 3 + 22),
    .init("101 fields", statusLine + String(repeating: "X: y\r\n", count: 101) + "\r\n", .tooManyFields,
          at: 17 + 100 * 6),
    .init("66 KiB head",
          statusLine + String(repeating: "X: " + String(repeating: "v", count: 1019) + "\r\n", count: 66),
          .headTooLarge, at: 65536),
]

@Suite("ResponseHeadParser")
struct ResponseHeadParserTests {
    private typealias Support = HTTPTestSupport

    @Test("accepts valid responses, whole, split at every offset and byte by byte", arguments: validResponses)
    func acceptsValidResponses(_ valid: ValidResponseCase) {
        let bytes = Support.bytes(valid.head + valid.after)
        var first: ResponseHead?
        for feeding in Support.feedings(bytes.count) {
            var parser = ResponseHeadParser()
            let result = Support.feed(&parser, bytes, cuts: feeding.cuts) {
                $0.parse($1, requestMethod: valid.requestMethod)
            }
            #expect(result == .complete(headLength: valid.head.utf8.count), "\(feeding.name)")
            guard let first else {
                first = parser.head
                expectHead(parser.head, matches: valid, in: bytes)
                continue
            }
            #expect(parser.head == first, "\(feeding.name)")
        }
    }

    private func expectHead(_ head: ResponseHead, matches valid: ValidResponseCase, in bytes: [UInt8]) {
        #expect(head.version == valid.version)
        #expect(head.status == valid.status)
        #expect(Support.text(bytes, head.reason) == valid.reason)
        #expect(Support.fieldTexts(head.fields, in: bytes) == valid.fields)
        #expect(head.framing == valid.framing)
        #expect(head.keepAlive == valid.keepAlive)
        #expect(head.connectionTokens.map { Support.text(bytes, $0) } == valid.connectionTokens)
        #expect(head.isInformational == (valid.status < 200))
        #expect(head.upgradesToWebSocket == valid.upgradesToWebSocket)
    }

    @Test("rejects malformed and ambiguous responses at the offending byte", arguments: rejectedResponses)
    func rejectsResponses(_ rejected: RejectedResponseCase) {
        let bytes = Support.bytes(rejected.raw)
        for feeding in Support.feedings(bytes.count) {
            var parser = ResponseHeadParser()
            let result = Support.feed(&parser, bytes, cuts: feeding.cuts) { $0.parse($1, requestMethod: .get) }
            #expect(result == .failed(rejected.error, at: rejected.at), "\(feeding.name)")
        }
    }

    @Test("parses the final response after an informational one, after reset")
    func parsesFinalResponseAfterInformational() {
        let informational = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        let final = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        let bytes = Support.bytes(informational + final)
        var parser = ResponseHeadParser()
        #expect(parser.parse(bytes.span, requestMethod: .post) == .complete(headLength: informational.utf8.count))
        #expect(parser.head.isInformational)
        #expect(parser.head.framing == .none)

        parser.reset()
        let rest = Array(bytes[informational.utf8.count...])
        #expect(parser.parse(rest.span, requestMethod: .post) == .complete(headLength: final.utf8.count))
        #expect(parser.head.status == 200)
        #expect(!parser.head.isInformational)
        #expect(parser.head.framing == .chunked)
        #expect(parser.head.fields.count == 1)
    }
}
