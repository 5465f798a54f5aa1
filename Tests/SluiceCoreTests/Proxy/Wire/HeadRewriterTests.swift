import Testing

@testable import SluiceCore

/// The heads sluice writes: framing fields and Host come from the parsed message whatever `Connection` names, and
/// an upstream's X-Request-Id passes unchanged.
@Suite struct HeadRewriterTests {
    private static func requestHead(_ text: String, upgrade: Bool = false) -> String {
        let bytes = Array(text.utf8)
        var parser = RequestHeadParser()
        guard case .complete = parser.parse(bytes.span) else { return "unparsed" }
        let head = parser.head
        let out = ByteBuffer(capacity: 16 * 1024)
        let path = head.targetForm == .absolute ? pathRange(head, bytes) : head.target
        let fits = HeadRewriter.writeRequestHead(into: out, source: bytes.span, head: head, pathRange: path,
                                                 clientIP: Array("10.0.0.1".utf8), requestID: Array("rid".utf8), fallbackHost: Array("up:80".utf8),
                                                 upgrade: upgrade)
        #expect(fits)
        return out.withReadableSpan { span in String(decoding: (0..<span.count).map { span[$0] }, as: UTF8.self) }
    }

    private static func pathRange(_ head: RequestHead, _ bytes: [UInt8]) -> Range<Int> {
        let buffer = ByteBuffer(capacity: bytes.count + 1)
        _ = bytes.withUnsafeBufferPointer { buffer.append($0.span) }
        return HeadRewriter.pathRange(of: head, in: buffer)
    }

    private static func responseHead(_ text: String, requestID: String? = "rid", method: HTTPMethod = .get, dechunk: Bool = false,
                                     upgrade: Bool = false)
        -> (head: String, facts: HeadRewriter.ResponseFacts?)
    {
        let bytes = Array(text.utf8)
        var parser = ResponseHeadParser()
        guard case .complete = parser.parse(bytes.span, requestMethod: method) else { return ("unparsed", nil) }
        let out = ByteBuffer(capacity: 16 * 1024)
        let facts = HeadRewriter.writeResponseHead(into: out, source: bytes.span, head: parser.head, requestID: requestID.map { Array($0.utf8) },
                                                   close: false, reframe: dechunk ? .untilClose : .asReceived, upgrade: upgrade)
        return (out.withReadableSpan { span in String(decoding: (0..<span.count).map { span[$0] }, as: UTF8.self) }, facts)
    }

    private static let forwarded = "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n"

    @Test(arguments: [
        // HIGH 2: Connection naming a framing field or Host is ignored for those fields.
        ("POST /u HTTP/1.1\r\nHost: h\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
         "POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n" + forwarded + "X-Forwarded-Host: h\r\nX-Request-Id: rid\r\n\r\n"),
        ("POST /u HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
         "POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n" + forwarded + "X-Forwarded-Host: h\r\nX-Request-Id: rid\r\n\r\n"),
        ("GET /u HTTP/1.1\r\nConnection: host, x-drop\r\nX-Drop: 1\r\nHost: h\r\nAccept: */*\r\n\r\n",
         "GET /u HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n" + forwarded + "X-Forwarded-Host: h\r\nX-Request-Id: rid\r\n\r\n"),
        // Content-Length written once, from the parsed number.
        ("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 005\r\nContent-Length: 5\r\n\r\n",
         "POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n" + forwarded + "X-Forwarded-Host: h\r\nX-Request-Id: rid\r\n\r\n"),
        // An absolute-form authority becomes Host; HTTP/1.0 without Host gets the upstream's.
        ("GET http://abs.example:81/p HTTP/1.1\r\nHost: h\r\n\r\n",
         "GET /p HTTP/1.1\r\nHost: abs.example:81\r\n" + forwarded + "X-Forwarded-Host: h\r\nX-Request-Id: rid\r\n\r\n"),
        ("GET /p HTTP/1.0\r\n\r\n", "GET /p HTTP/1.1\r\nHost: up:80\r\n" + forwarded + "X-Request-Id: rid\r\n\r\n"),
    ])
    func requestFramingAndHostComeFromTheParsedHead(_ input: String, _ expected: String) {
        #expect(Self.requestHead(input) == expected)
    }

    @Test(arguments: [
        ("HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
         "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Request-Id: rid\r\n\r\n"),
        ("HTTP/1.1 200 OK\r\nConnection: transfer-encoding, keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Request-Id: rid\r\n\r\n"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Request-Id: rid\r\n\r\n"),
        // A 304's Content-Length frames nothing but still describes the representation: passed, as parsed.
        ("HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n", "HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\nX-Request-Id: rid\r\n\r\n"),
        // The upstream's own request id is end to end: kept, and sluice's is not added.
        ("HTTP/1.1 200 OK\r\nX-Request-Id: up-1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Request-Id: up-1\r\n\r\n"),
    ])
    func responseFramingComesFromTheParsedHead(_ input: String, _ expected: String) {
        #expect(Self.responseHead(input).head == expected)
    }

    @Test func aDechunkedResponseLosesTransferEncodingAndAnInterimHeadKeepsItsFields() {
        #expect(Self.responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nA: b\r\n\r\n", dechunk: true).head
                == "HTTP/1.1 200 OK\r\nA: b\r\nX-Request-Id: rid\r\n\r\n")
        #expect(Self.responseHead("HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\nX-Request-Id: u\r\n\r\n", requestID: nil).head
                == "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\nX-Request-Id: u\r\n\r\n")
    }

    /// A forwarded WebSocket upgrade names only what sluice tunnels: the client's Connection tokens and Upgrade list are
    /// dropped as hop-by-hop and `Connection: Upgrade` + `Upgrade: websocket` written; Sec-WebSocket-* pass untouched.
    /// Without `upgrade` (h2c, a route with websocket off) nothing of the upgrade reaches the upstream.
    @Test func anUpgradeIsWrittenFromTheDecisionNotCopied() {
        let request = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade, X-Drop\r\nUpgrade: websocket\r\nX-Drop: 1\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        let kept = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n"
        #expect(Self.requestHead(request, upgrade: true) == "GET /ws HTTP/1.1\r\nHost: h\r\n" + kept + Self.forwarded
                + "X-Forwarded-Host: h\r\nX-Request-Id: rid\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        #expect(Self.requestHead(request) == "GET /ws HTTP/1.1\r\nHost: h\r\n" + kept + Self.forwarded + "X-Forwarded-Host: h\r\nX-Request-Id: rid\r\n\r\n")
        let h2c = "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n"
        #expect(Self.requestHead(h2c) == "GET / HTTP/1.1\r\nHost: h\r\n" + Self.forwarded + "X-Forwarded-Host: h\r\nX-Request-Id: rid\r\n\r\n")
        let switching = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pP\r\n\r\n"
        #expect(Self.responseHead(switching, requestID: nil, upgrade: true).head
                == "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pP\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    }

    @Test func theUpstreamRequestIDIsReportedForTheRecord() throws {
        let text = "HTTP/1.1 200 OK\r\nX-Request-Id: up-1\r\nContent-Length: 0\r\n\r\n"
        let range = try #require(Self.responseHead(text).facts?.upstreamRequestID)
        #expect(String(decoding: Array(text.utf8)[range], as: UTF8.self) == "up-1")
        #expect(Self.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").facts?.upstreamRequestID == nil)
    }
}
