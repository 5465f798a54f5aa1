import Testing
@testable import SluiceCore

/// A request the parser must accept, with everything it must report.
struct ValidRequestCase: Sendable, CustomTestStringConvertible {
    var name: String
    var head: String
    /// Bytes after the head (body, pipelined requests), which the parser must leave alone.
    var after = ""
    var method: HTTPMethod = .get
    var target = "/"
    var form: TargetForm = .origin
    var version: HTTPVersion = .http1_1
    var fields: [String]
    var framing: BodyFraming = .none
    var keepAlive = true
    var expectContinue = false
    var connectionTokens: [String] = []
    var hostField: Int? = 0
    var upgradesToWebSocket = false

    var testDescription: String { name }
}

/// A request the parser must reject, with the error and the offset it must report.
struct RejectedRequestCase: Sendable, CustomTestStringConvertible {
    var name: String
    var raw: String
    var error: HTTPParseError
    var at: Int
    var status = 400

    init(_ name: String, _ raw: String, _ error: HTTPParseError, at: Int, status: Int = 400) {
        self.name = name
        self.raw = raw
        self.error = error
        self.at = at
        self.status = status
    }

    var testDescription: String { name }
}

private let requestLine = "GET / HTTP/1.1\r\n"  // 16 bytes, so field lines after it start at offset 16
private let hostLine = "Host: a\r\n"  // 9 bytes
/// Makes "GET \(longTarget) HTTP/1.1" exactly 8192 bytes.
private let longTarget = "/" + String(repeating: "a", count: 8192 - 14)

let validRequests: [ValidRequestCase] = [
    ValidRequestCase(name: "WebSocket upgrade (RFC 6455 §4.1)",
                     head: "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     target: "/ws", fields: ["Host: a", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13"],
                     connectionTokens: ["Upgrade"], upgradesToWebSocket: true),
    ValidRequestCase(name: "WebSocket upgrade: the token in a list, any case",
                     head: "GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nHost: a\r\nConnection: keep-alive, UPGRADE\r\n\r\n",
                     fields: ["Upgrade: WebSocket", "Host: a", "Connection: keep-alive, UPGRADE"],
                     connectionTokens: ["keep-alive", "UPGRADE"], hostField: 1, upgradesToWebSocket: true),
    ValidRequestCase(name: "Upgrade without Connection: upgrade is not an upgrade (RFC 9110 §7.8)",
                     head: "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", fields: ["Host: a", "Upgrade: websocket"]),
    ValidRequestCase(name: "Upgrade offering two protocols is not a WebSocket upgrade",
                     head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket, h2c\r\n\r\n",
                     fields: ["Host: a", "Connection: upgrade", "Upgrade: websocket, h2c"], connectionTokens: ["upgrade"]),
    ValidRequestCase(name: "two Upgrade fields are not a WebSocket upgrade",
                     head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nUpgrade: websocket\r\n\r\n",
                     fields: ["Host: a", "Connection: upgrade", "Upgrade: websocket", "Upgrade: websocket"], connectionTokens: ["upgrade"]),
    ValidRequestCase(name: "h2c upgrade",
                     head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
                     fields: ["Host: a", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA"],
                     connectionTokens: ["Upgrade", "HTTP2-Settings"]),
    ValidRequestCase(name: "minimal GET", head: "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
                     fields: ["Host: example.com"]),
    ValidRequestCase(name: "POST with Content-Length, body and a pipelined request",
                     head: "POST /v1/chat/completions?stream=true HTTP/1.1\r\nHost: api.local:8080\r\n"
                         + "Content-Type: application/json\r\nContent-Length: 5\r\nAccept: text/event-stream\r\n\r\n",
                     after: "hello" + "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                     method: .post, target: "/v1/chat/completions?stream=true",
                     fields: ["Host: api.local:8080", "Content-Type: application/json", "Content-Length: 5",
                              "Accept: text/event-stream"],
                     framing: .contentLength(5)),
    ValidRequestCase(name: "chunked, coding name case-insensitive",
                     head: "PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", after: "0\r\n\r\n",
                     method: .put, target: "/x", fields: ["Host: a", "Transfer-Encoding: Chunked"], framing: .chunked),
    ValidRequestCase(name: "Content-Length 0", head: "DELETE /item/7 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                     method: .delete, target: "/item/7", fields: ["Host: a", "Content-Length: 0"],
                     framing: .contentLength(0)),
    ValidRequestCase(name: "identical Content-Length values in a list and a second field",
                     head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7 ,7\r\nContent-Length: 7\r\n\r\n",
                     method: .post, fields: ["Host: a", "Content-Length: 7 ,7", "Content-Length: 7"],
                     framing: .contentLength(7)),
    ValidRequestCase(name: "18-digit Content-Length",
                     head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999999\r\n\r\n",
                     method: .post, fields: ["Host: a", "Content-Length: 999999999999999999"],
                     framing: .contentLength(999_999_999_999_999_999)),
    ValidRequestCase(name: "HTTP/1.0 without Host closes", head: "GET /old HTTP/1.0\r\n\r\n", target: "/old",
                     version: .http1_0, fields: [], keepAlive: false, hostField: nil),
    ValidRequestCase(name: "HTTP/1.0 keep-alive",
                     head: "HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a\r\n\r\n", method: .head,
                     version: .http1_0, fields: ["Connection: Keep-Alive", "Host: a"],
                     connectionTokens: ["Keep-Alive"], hostField: 1),
    ValidRequestCase(name: "Connection close with options and empty list elements",
                     head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Trace ,,te\r\n\r\n",
                     fields: ["Host: a", "Connection: close, X-Trace ,,te"], keepAlive: false,
                     connectionTokens: ["close", "X-Trace", "te"]),
    ValidRequestCase(name: "leading empty lines are skipped and counted in the head",
                     head: "\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", fields: ["Host: a"]),
    ValidRequestCase(name: "OWS trimmed, empty values, obs-text",
                     head: "GET / HTTP/1.1\r\nHost: a\r\nX-A:   spaced \t value \t \r\nX-Empty:\r\nX-Blank: \t \r\n"
                         + "X-Text: caf\u{E9}\r\n\r\n",
                     fields: ["Host: a", "X-A: spaced \t value", "X-Empty: ", "X-Blank: ", "X-Text: caf\u{E9}"]),
    ValidRequestCase(name: "every tchar in a field name",
                     head: "GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n",
                     fields: ["Host: a", "!#$%&'*+-.^_`|~09azAZ: v"]),
    ValidRequestCase(name: "Expect 100-continue, case-insensitive",
                     head: "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
                     method: .post, fields: ["Host: a", "Expect: 100-Continue", "Content-Length: 3"],
                     framing: .contentLength(3), expectContinue: true),
    ValidRequestCase(name: "Expect ignored in HTTP/1.0", head: "POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
                     method: .post, version: .http1_0, fields: ["Expect: 100-continue"], keepAlive: false,
                     hostField: nil),
    ValidRequestCase(name: "absolute form", head: "GET HTTP://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n",
                     target: "HTTP://example.com/x?y", form: .absolute, fields: ["Host: example.com"]),
    ValidRequestCase(name: "absolute form https", head: "OPTIONS https://e HTTP/1.1\r\nHost: e\r\n\r\n",
                     method: .options, target: "https://e", form: .absolute, fields: ["Host: e"]),
    ValidRequestCase(name: "authority form with CONNECT",
                     head: "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", method: .connect,
                     target: "[::1]:443", form: .authority, fields: ["Host: [::1]:443"]),
    ValidRequestCase(name: "asterisk form with OPTIONS", head: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
                     method: .options, target: "*", form: .asterisk, fields: ["Host: a"]),
    ValidRequestCase(name: "other methods", head: "PROPFIND /d HTTP/1.1\r\nHost: a\r\n\r\n", method: .other,
                     target: "/d", fields: ["Host: a"]),
    ValidRequestCase(name: "methods are case-sensitive", head: "get / HTTP/1.1\r\nHost: a\r\n\r\n", method: .other,
                     fields: ["Host: a"]),
    ValidRequestCase(name: "PATCH, TRACE-like names", head: "PATCH /p HTTP/1.1\r\nHost: a\r\n\r\n", method: .patch,
                     target: "/p", fields: ["Host: a"]),
    ValidRequestCase(name: "empty Host", head: "GET / HTTP/1.1\r\nHost:\r\n\r\n", fields: ["Host: "]),
    ValidRequestCase(name: "request line of exactly maxRequestLineBytes",
                     head: "GET \(longTarget) HTTP/1.1\r\nHost: a\r\n\r\n", target: longTarget, fields: ["Host: a"]),
    ValidRequestCase(name: "exactly maxFieldCount fields",
                     head: requestLine + hostLine + String(repeating: "X: y\r\n", count: 99) + "\r\n",
                     fields: ["Host: a"] + Array(repeating: "X: y", count: 99)),
    ValidRequestCase(name: "32 Connection tokens",
                     head: requestLine + hostLine + "Connection: "
                         + (0..<32).map { "o\($0)" }.joined(separator: ",") + "\r\n\r\n",
                     fields: ["Host: a", "Connection: " + (0..<32).map { "o\($0)" }.joined(separator: ",")],
                     connectionTokens: (0..<32).map { "o\($0)" }),
]

private func tooManyFields() -> String {
    requestLine + hostLine + String(repeating: "X: y\r\n", count: 100) + "\r\n"
}

/// A head of 66 KiB in 66 fields, each under every other limit.
private func oversizedHead(terminated: Bool) -> String {
    requestLine + hostLine + String(repeating: "X: " + String(repeating: "v", count: 1019) + "\r\n", count: 66)
        + (terminated ? "\r\n" : "")
}

let rejectedRequests: [RejectedRequestCase] = [
    // Request line (RFC 9112 §3).
    .init("HTTP/0.9 style, no version", "GET /\r\nHost: a\r\n\r\n", .invalidVersion, at: 5),
    .init("method only", "GET\r\n\r\n", .invalidRequestLine, at: 3),
    .init("leading space", " GET / HTTP/1.1\r\n", .invalidRequestLine, at: 0),
    .init("double space before target", "GET  / HTTP/1.1\r\n", .invalidRequestLine, at: 4),
    .init("double space before version", "GET /  HTTP/1.1\r\n", .invalidVersion, at: 6),
    .init("space after version", "GET / HTTP/1.1 \r\n", .invalidVersion, at: 6),
    .init("tab as separator", "GET\t/ HTTP/1.1\r\n", .invalidMethod, at: 3),
    .init("non-token method", "G(T / HTTP/1.1\r\n", .invalidMethod, at: 1),
    .init("NUL in method", "GE\0 / HTTP/1.1\r\n", .invalidMethod, at: 2),
    .init("DEL in target", "GET /a\u{7F} HTTP/1.1\r\n", .invalidTarget, at: 6),
    .init("control byte in target", "GET /\u{1} HTTP/1.1\r\n", .invalidTarget, at: 5),
    .init("non-ASCII in target", "GET /\u{E9} HTTP/1.1\r\n", .invalidTarget, at: 5),
    .init("asterisk without OPTIONS", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget, at: 4),
    .init("asterisk with more", "OPTIONS *x HTTP/1.1\r\n", .invalidTarget, at: 8),
    .init("authority form without CONNECT", "GET a:443 HTTP/1.1\r\n", .invalidTarget, at: 4),
    .init("CONNECT with origin form", "CONNECT /x HTTP/1.1\r\n", .invalidTarget, at: 8),
    .init("CONNECT without port", "CONNECT example.com HTTP/1.1\r\n", .invalidTarget, at: 8),
    .init("CONNECT with userinfo", "CONNECT u@h:443 HTTP/1.1\r\n", .invalidTarget, at: 8),
    .init("unknown scheme", "GET ftp://x/ HTTP/1.1\r\n", .invalidTarget, at: 4),
    .init("scheme without authority", "GET http:// HTTP/1.1\r\n", .invalidTarget, at: 4),
    .init("HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", .unsupportedVersion, at: 6, status: 505),
    .init("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", .unsupportedVersion, at: 6, status: 505),
    .init("HTTP/1.2", "GET / HTTP/1.2\r\n", .unsupportedVersion, at: 6, status: 505),
    .init("HTTP/0.9 with version", "GET / HTTP/0.9\r\n", .unsupportedVersion, at: 6, status: 505),
    .init("HTTP/3.0", "GET / HTTP/3.0\r\n", .unsupportedVersion, at: 6, status: 505),
    .init("lowercase version name", "GET / http/1.1\r\n", .invalidVersion, at: 6),
    .init("two-digit minor", "GET / HTTP/1.10\r\n", .invalidVersion, at: 6),
    .init("no minor", "GET / HTTP/1\r\n", .invalidVersion, at: 6),
    .init("8193-byte request line", "GET \(longTarget)a HTTP/1.1\r\nHost: a\r\n\r\n", .requestLineTooLong,
          at: 8192, status: 414),
    .init("414 before the line ends", "GET " + longTarget + String(repeating: "a", count: 10), .requestLineTooLong,
          at: 8192, status: 414),
    .init("too many leading empty lines", "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n", .tooManyLeadingEmptyLines, at: 8),
    .init("bare LF before the request line", "\nGET / HTTP/1.1\r\n", .bareLF, at: 0),
    .init("bare LF ending the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", .bareLF, at: 14),
    .init("bare CR in the request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", .bareCR, at: 15),
    .init("bare CR in a leading empty line", "\r\r\nGET / HTTP/1.1\r\n", .bareCR, at: 1),

    // Field lines (RFC 9112 §5, RFC 9110 §5.5).
    .init("Host :x", requestLine + "Host :x\r\n\r\n", .whitespaceBeforeColon, at: 20),
    .init("tab before colon", requestLine + hostLine + "X\t: y\r\n\r\n", .whitespaceBeforeColon, at: 26),
    .init("obs-fold", requestLine + hostLine + "X-A: b\r\n c\r\n\r\n", .obsFold, at: 33),
    .init("obs-fold with tab", requestLine + hostLine + "X-A: b\r\n\tc\r\n\r\n", .obsFold, at: 33),
    .init("whitespace before the first field", requestLine + " Host: a\r\n\r\n", .obsFold, at: 16),
    .init("NUL in value", requestLine + hostLine + "X-A: a\0b\r\n\r\n", .controlByte, at: 31),
    .init("DEL in value", requestLine + hostLine + "X-A: a\u{7F}\r\n\r\n", .controlByte, at: 31),
    .init("escape in value", requestLine + hostLine + "X-A: \u{1B}[0m\r\n\r\n", .controlByte, at: 30),
    .init("NUL in name", requestLine + hostLine + "X\0A: b\r\n\r\n", .controlByte, at: 26),
    .init("control byte at line start", requestLine + "\u{1}X: b\r\n\r\n", .controlByte, at: 16),
    .init("non-token name", requestLine + hostLine + "X@A: b\r\n\r\n", .invalidFieldName, at: 26),
    .init("non-ASCII name", requestLine + hostLine + "X\u{E9}: b\r\n\r\n", .invalidFieldName, at: 26),
    .init("empty name", requestLine + hostLine + ": b\r\n\r\n", .invalidFieldName, at: 25),
    .init("no colon", requestLine + hostLine + "NoColon\r\n\r\n", .missingColon, at: 32),
    .init("bare LF after a value", requestLine + "Host: a\nX: y\r\n\r\n", .bareLF, at: 23),
    .init("bare LF in a name", requestLine + "Host\n: a\r\n\r\n", .bareLF, at: 20),
    .init("bare LF ending the head", requestLine + hostLine + "\n", .bareLF, at: 25),
    .init("bare CR in a value", requestLine + "Host: a\rb\r\n\r\n", .bareCR, at: 24),
    .init("bare CR ending the head", requestLine + hostLine + "\rX", .bareCR, at: 26),

    // Host (RFC 9112 §3.2).
    .init("missing Host in HTTP/1.1", requestLine + "X: y\r\n\r\n", .missingHost, at: 22),
    .init("two Host fields", requestLine + hostLine + "host: b\r\n\r\n", .multipleHost, at: 25),
    .init("two Host fields in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", .multipleHost, at: 25),
    .init("space in Host", requestLine + "Host: a b\r\n\r\n", .invalidFieldValue, at: 23),
    .init("path in Host", requestLine + "Host: a/b\r\n\r\n", .invalidFieldValue, at: 23),
    .init("userinfo in Host", requestLine + "Host: u@a\r\n\r\n", .invalidFieldValue, at: 23),

    // Content-Length (RFC 9110 §8.6).
    .init("Content-Length: +5", requestLine + hostLine + "Content-Length: +5\r\n\r\n", .invalidContentLength, at: 41),
    .init("Content-Length: -1", requestLine + hostLine + "Content-Length: -1\r\n\r\n", .invalidContentLength, at: 41),
    .init("Content-Length: 0x10", requestLine + hostLine + "Content-Length: 0x10\r\n\r\n", .invalidContentLength,
          at: 42),
    .init("space inside Content-Length", requestLine + hostLine + "Content-Length: 1 2\r\n\r\n",
          .invalidContentLength, at: 42),
    .init("empty Content-Length", requestLine + hostLine + "Content-Length:\r\n\r\n", .invalidContentLength, at: 40),
    .init("trailing comma in Content-Length", requestLine + hostLine + "Content-Length: 5,\r\n\r\n",
          .invalidContentLength, at: 43),
    .init("19-digit Content-Length", requestLine + hostLine + "Content-Length: 1000000000000000000\r\n\r\n",
          .invalidContentLength, at: 59),
    .init("Content-Length beyond Int64", requestLine + hostLine + "Content-Length: 99999999999999999999\r\n\r\n",
          .invalidContentLength, at: 59),
    .init("Content-Length: 5, 6", requestLine + hostLine + "Content-Length: 5, 6\r\n\r\n",
          .conflictingContentLength, at: 44),
    .init("two differing Content-Length fields",
          requestLine + hostLine + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", .conflictingContentLength, at: 60),

    // Transfer-Encoding (RFC 9112 §6.1, §6.3).
    .init("Transfer-Encoding then Content-Length",
          requestLine + hostLine + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
          .contentLengthWithTransferEncoding, at: 53),
    .init("Content-Length then Transfer-Encoding",
          requestLine + hostLine + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
          .contentLengthWithTransferEncoding, at: 44),
    .init("Transfer-Encoding: chunked, identity",
          requestLine + hostLine + "Transfer-Encoding: chunked, identity\r\n\r\n", .unsupportedTransferEncoding,
          at: 44),
    .init("xchunked", requestLine + hostLine + "Transfer-Encoding: xchunked\r\n\r\n", .unsupportedTransferEncoding,
          at: 44),
    .init("gzip only", requestLine + hostLine + "Transfer-Encoding: gzip\r\n\r\n", .unsupportedTransferEncoding,
          at: 44),
    // Another coding before chunked is well-formed but not implemented: 501 (a TE.TE desync vector otherwise).
    .init("gzip then chunked across fields",
          requestLine + hostLine + "TRANSFER-ENCODING: gzip\r\ntransfer-encoding:chunked\r\n\r\n", .unimplementedTransferCoding,
          at: 68, status: 501),
    .init("identity, chunked", requestLine + hostLine + "Transfer-Encoding: identity, chunked\r\n\r\n",
          .unimplementedTransferCoding, at: 44, status: 501),
    .init("chunked twice in one field", requestLine + hostLine + "Transfer-Encoding: chunked, chunked\r\n\r\n",
          .unsupportedTransferEncoding, at: 53),
    .init("chunked in two fields",
          requestLine + hostLine + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
          .unsupportedTransferEncoding, at: 72),
    .init("chunked then gzip across fields",
          requestLine + hostLine + "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
          .unsupportedTransferEncoding, at: 72),
    .init("empty Transfer-Encoding", requestLine + hostLine + "Transfer-Encoding:\r\n\r\n",
          .unsupportedTransferEncoding, at: 43),
    .init("empty coding", requestLine + hostLine + "Transfer-Encoding: gzip,,chunked\r\n\r\n",
          .unsupportedTransferEncoding, at: 49),
    .init("coding with parameters", requestLine + hostLine + "Transfer-Encoding: chunked;q=1\r\n\r\n",
          .unsupportedTransferEncoding, at: 51),
    .init("quoted coding", requestLine + hostLine + "Transfer-Encoding: \"chunked\"\r\n\r\n",
          .unsupportedTransferEncoding, at: 44),
    .init("Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
          .transferEncodingInHTTP10, at: 17),

    // Connection (RFC 9110 §7.6.1).
    .init("33 Connection tokens",
          requestLine + hostLine + "Connection: " + (0..<33).map { "o\($0)" }.joined(separator: ",") + "\r\n\r\n",
          .tooManyConnectionOptions, at: 37 + 32 * 3 + 22 * 1),
    .init("non-token Connection option", requestLine + hostLine + "Connection: close, a b\r\n\r\n",
          .invalidFieldValue, at: 45),

    // Limits (RFC 6585 §5).
    .init("101 fields", tooManyFields(), .tooManyFields, at: 16 + 9 + 99 * 6, status: 431),
    .init("66 KiB head", oversizedHead(terminated: true), .headTooLarge, at: 65536, status: 431),
    .init("431 before the head ends", oversizedHead(terminated: false), .headTooLarge, at: 65536, status: 431),
]

@Suite("RequestHeadParser")
struct RequestHeadParserTests {
    private typealias Support = HTTPTestSupport

    @Test("accepts valid requests, whole, split at every offset and byte by byte", arguments: validRequests)
    func acceptsValidRequests(_ valid: ValidRequestCase) {
        let bytes = Support.bytes(valid.head + valid.after)
        let headLength = valid.head.utf8.count
        var first: RequestHead?
        for feeding in Support.feedings(bytes.count) {
            var parser = RequestHeadParser()
            let result = Support.feed(&parser, bytes, cuts: feeding.cuts) { $0.parse($1) }
            #expect(result == .complete(headLength: headLength), "\(feeding.name)")
            guard let first else {
                first = parser.head
                expectHead(parser.head, matches: valid, in: bytes)
                continue
            }
            #expect(parser.head == first, "\(feeding.name)")
        }
    }

    private func expectHead(_ head: RequestHead, matches valid: ValidRequestCase, in bytes: [UInt8]) {
        #expect(head.method == valid.method)
        let requestLine = valid.head.drop { $0 == "\r\n" }
        #expect(Support.text(bytes, head.methodRange) == String(requestLine.prefix { $0 != " " }))
        #expect(Support.text(bytes, head.target) == valid.target)
        #expect(head.targetForm == valid.form)
        #expect(head.version == valid.version)
        #expect(Support.fieldTexts(head.fields, in: bytes) == valid.fields)
        #expect(head.framing == valid.framing)
        #expect(head.keepAlive == valid.keepAlive)
        #expect(head.expectContinue == valid.expectContinue)
        #expect(head.connectionTokens.map { Support.text(bytes, $0) } == valid.connectionTokens)
        #expect(head.hostField == valid.hostField)
        #expect(head.upgradesToWebSocket == valid.upgradesToWebSocket)
    }

    @Test("rejects malformed and ambiguous requests at the offending byte", arguments: rejectedRequests)
    func rejectsRequests(_ rejected: RejectedRequestCase) {
        let bytes = Support.bytes(rejected.raw)
        for feeding in Support.feedings(bytes.count) {
            var parser = RequestHeadParser()
            let result = Support.feed(&parser, bytes, cuts: feeding.cuts) { $0.parse($1) }
            #expect(result == .failed(rejected.error, at: rejected.at), "\(feeding.name)")
        }
        #expect(rejected.error.status == rejected.status)
    }

    @Test("parses pipelined requests after reset, keeping capacity")
    func parsesPipelinedRequestsAfterReset() {
        let first = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
        let second = "GET /b HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
        let bytes = HTTPTestSupport.bytes(first + second)
        var parser = RequestHeadParser()
        let capacity = (parser.head.fields.capacity, parser.head.connectionTokens.capacity)
        guard case .complete(let headLength) = parser.parse(bytes.span) else {
            Issue.record("first head did not complete")
            return
        }
        #expect(parser.head.framing == .contentLength(2))
        // A completed parser repeats its result rather than parsing the body as fields.
        #expect(parser.parse(bytes.span) == .complete(headLength: headLength))

        parser.reset()
        let rest = Array(bytes[(headLength + 2)...])
        #expect(parser.parse(rest.span) == .complete(headLength: second.utf8.count))
        #expect(Support.text(rest, parser.head.target) == "/b")
        #expect(parser.head.keepAlive == false)
        #expect(parser.head.connectionTokens.count == 1)
        #expect(parser.head.fields.capacity == capacity.0)
        #expect(parser.head.connectionTokens.capacity == capacity.1)
    }

    @Test("a failed parser repeats its failure")
    func repeatsFailure() {
        let bytes = HTTPTestSupport.bytes("GET / HTTP/2.0\r\n")
        var parser = RequestHeadParser()
        #expect(parser.parse(bytes.span) == .failed(.unsupportedVersion, at: 6))
        #expect(parser.parse(bytes.span) == .failed(.unsupportedVersion, at: 6))
    }

    @Test("honours configured limits")
    func honoursConfiguredLimits() {
        var limits = HTTPLimits()
        limits.maxRequestLineBytes = 14
        limits.maxHeadBytes = 40
        limits.maxFieldCount = 1
        let cases: [(String, HeadParseResult)] = [
            ("GET /1234 HTTP/1.1\r\n", .failed(.requestLineTooLong, at: 14)),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n", .failed(.tooManyFields, at: 25)),
            ("GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaa\r\n\r\n", .failed(.headTooLarge, at: 40)),
            ("GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaa\r\n\r\n", .complete(headLength: 40)),
        ]
        for (raw, expected) in cases {
            var parser = RequestHeadParser(limits: limits)
            #expect(parser.parse(HTTPTestSupport.bytes(raw).span) == expected, "\(raw)")
        }
    }
}
