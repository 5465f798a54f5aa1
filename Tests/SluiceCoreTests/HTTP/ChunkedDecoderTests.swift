import Testing
@testable import SluiceCore

/// A chunked body the decoder must accept: `body` is the whole message body, `after` whatever follows it.
struct ValidChunkedCase: Sendable, CustomTestStringConvertible {
    var name: String
    var body: [UInt8]
    var after: [UInt8] = []
    var payload: [UInt8]

    init(_ name: String, _ body: String, after: String = "", payload: String) {
        self.name = name
        self.body = HTTPTestSupport.bytes(body)
        self.after = HTTPTestSupport.bytes(after)
        self.payload = HTTPTestSupport.bytes(payload)
    }

    init(_ name: String, body: [UInt8], payload: [UInt8]) {
        self.name = name
        self.body = body
        self.payload = payload
    }

    var testDescription: String { name }
}

/// A chunked body the decoder must reject, with the error and the offset (in the whole input) it must report.
struct RejectedChunkedCase: Sendable, CustomTestStringConvertible {
    var name: String
    var raw: [UInt8]
    var error: HTTPParseError
    var at: Int

    init(_ name: String, _ raw: String, _ error: HTTPParseError, at: Int) {
        self.name = name
        self.raw = HTTPTestSupport.bytes(raw)
        self.error = error
        self.at = at
    }

    var testDescription: String { name }
}

private let bigChunk = String(repeating: "0123456789abcdef", count: 256)  // 4096 bytes

let validChunkedBodies: [ValidChunkedCase] = [
    .init("last-chunk only", "0\r\n\r\n", payload: ""),
    .init("one chunk", "5\r\nhello\r\n0\r\n\r\n", payload: "hello"),
    .init("several chunks, then a pipelined request", "5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n\r\n",
          after: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", payload: "hello, world"),
    .init("hex digits in both cases", "a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n",
          payload: "0123456789abcdefghij"),
    .init("payload bytes that look like framing", "7\r\n\r\n0\r\n\r\n\r\n0\r\n\r\n", payload: "\r\n0\r\n\r\n"),
    .init("extensions with token and quoted values",
          "5;name=value;flag;q=\"a \\\"b\\\" \u{E9};\"\r\nhello\r\n0\r\n\r\n",
          payload: "hello"),
    .init("1 ;ext spacing (BWS before ';' is allowed)", "1 ;ext\r\nx\r\n0\r\n\r\n", payload: "x"),
    .init("BWS around every part of an extension", "1\t; a = b ;c= \"d\"\t; e\r\nx\r\n0\r\n\r\n", payload: "x"),
    .init("extension on the last-chunk", "0;done=yes\r\n\r\n", payload: ""),
    .init("trailers", "3\r\nabc\r\n0\r\nX-Checksum: 900150983cd24fb0\r\nX-Empty:\r\nX-Text: caf\u{E9} \r\n\r\n",
          after: "next", payload: "abc"),
    .init("leading zeros up to 16 digits", "0000000000000003\r\nabc\r\n0000000000000000\r\n\r\n", payload: "abc"),
    .init("a 4 KiB chunk", "1000\r\n" + bigChunk + "\r\n0\r\n\r\n", payload: bigChunk),
    .init("size line of exactly maxChunkLineBytes", "1;" + String(repeating: "e", count: 4094) + "\r\nx\r\n0\r\n\r\n",
          payload: "x"),
]

let rejectedChunkedBodies: [RejectedChunkedCase] = [
    // chunk-size (RFC 9112 §7.1)
    .init("FFFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFFF\r\n", .chunkSizeOverflow, at: 15),
    .init("just above Int64.max / 2", "4000000000000000\r\n", .chunkSizeOverflow, at: 15),
    .init("17 digits with leading zeros", "00000000000000001\r\n", .chunkSizeOverflow, at: 16),
    .init("0x10", "0x10\r\n", .invalidChunkSize, at: 1),
    .init("sign", "+5\r\nhello\r\n", .invalidChunkSize, at: 0),
    .init("leading whitespace", " 5\r\nhello\r\n", .invalidChunkSize, at: 0),
    .init("empty size", "\r\n", .invalidChunkSize, at: 0),
    .init("non-hex digit", "5g\r\n", .invalidChunkSize, at: 1),
    .init("NUL after the size", "5\0\r\n", .invalidChunkSize, at: 1),
    // Line ends
    .init("bare LF after the size", "5\nhello\r\n", .invalidChunkLineEnd, at: 1),
    .init("bare CR after the size", "5\rhello\r\n", .invalidChunkLineEnd, at: 2),
    .init("data longer than the size", "5\r\nhelloX\r\n", .invalidChunkLineEnd, at: 8),
    .init("bare LF after data", "5\r\nhello\n0\r\n\r\n", .invalidChunkLineEnd, at: 8),
    .init("bare CR after data", "5\r\nhello\r0\r\n\r\n", .invalidChunkLineEnd, at: 9),
    .init("bare LF ending the trailers", "0\r\n\n", .invalidChunkLineEnd, at: 3),
    .init("bare CR ending the trailers", "0\r\n\r0", .invalidChunkLineEnd, at: 4),
    .init("bare LF after a trailer", "0\r\nX: y\nZ: 1\r\n\r\n", .invalidChunkLineEnd, at: 7),
    .init("bare LF in an extension", "5;a\nhello\r\n", .invalidChunkLineEnd, at: 3),
    // chunk-ext (RFC 9112 §7.1.1)
    .init("whitespace without extension", "5 \r\nhello\r\n", .invalidChunkExtension, at: 2),
    .init("empty extension", "5;\r\nhello\r\n", .invalidChunkExtension, at: 2),
    .init("extension without name", "5;=v\r\nhello\r\n", .invalidChunkExtension, at: 2),
    .init("extension without value", "5;a=\r\nhello\r\n", .invalidChunkExtension, at: 4),
    .init("whitespace at the end of an extension name", "5;a \r\nhello\r\n", .invalidChunkExtension, at: 4),
    .init("whitespace at the end of an extension value", "5;a=b \r\nhello\r\n", .invalidChunkExtension, at: 6),
    .init("DEL in an extension name", "5;a\u{7F}\r\nhello\r\n", .invalidChunkExtension, at: 3),
    .init("non-token value", "5;a=b/c\r\nhello\r\n", .invalidChunkExtension, at: 5),
    .init("control byte in a quoted value", "5;a=\"x\u{1}\"\r\nhello\r\n", .invalidChunkExtension, at: 6),
    .init("unterminated quoted value", "5;a=\"x\r\nhello\r\n", .invalidChunkExtension, at: 6),
    .init("control byte in a quoted pair", "5;a=\"\\\0\"\r\nhello\r\n", .invalidChunkExtension, at: 6),
    .init("bytes after a quoted value", "5;a=\"x\"y\r\nhello\r\n", .invalidChunkExtension, at: 7),
    .init("size line over maxChunkLineBytes", "1;" + String(repeating: "e", count: 4095) + "\r\nx\r\n0\r\n\r\n",
          .chunkLineTooLong, at: 4096),
    // Trailers (RFC 9112 §7.1.2), lexed like header fields
    .init("NUL in a trailer value", "0\r\nX: a\0b\r\n\r\n", .invalidTrailer, at: 7),
    .init("obs-fold in trailers", "0\r\nX: a\r\n b\r\n\r\n", .invalidTrailer, at: 9),
    .init("whitespace before a trailer colon", "0\r\nX : a\r\n\r\n", .invalidTrailer, at: 4),
    .init("trailer without colon", "0\r\nX\r\n\r\n", .invalidTrailer, at: 4),
    .init("trailer section over maxTrailerBytes",
          "0\r\nX: " + String(repeating: "v", count: 16384) + "\r\n\r\n", .trailerTooLarge, at: 3 + 16384),
]

@Suite("ChunkedDecoder")
struct ChunkedDecoderTests {
    private typealias Support = HTTPTestSupport

    @Test("decodes valid bodies, whole, split at every offset and byte by byte", arguments: validChunkedBodies)
    func decodesValidBodies(_ valid: ValidChunkedCase) {
        let bytes = valid.body + valid.after
        let expected = Support.Decoded.ended(payload: valid.payload, at: valid.body.count)
        for feeding in Support.feedings(bytes.count, everySplitLimit: 4096) {
            #expect(Support.decode(bytes, cuts: feeding.cuts) == expected, "\(feeding.name)")
            #expect(Support.scan(bytes, cuts: feeding.cuts) == .success(valid.body.count), "\(feeding.name)")
        }
    }

    @Test("rejects malformed bodies at the offending byte", arguments: rejectedChunkedBodies)
    func rejectsBodies(_ rejected: RejectedChunkedCase) {
        let failure = HTTPParseFailure(rejected.error, at: rejected.at)
        for feeding in Support.feedings(rejected.raw.count) {
            #expect(Support.decode(rejected.raw, cuts: feeding.cuts) == .failed(rejected.error, at: rejected.at),
                    "\(feeding.name)")
            #expect(Support.scan(rejected.raw, cuts: feeding.cuts) == .failure(failure), "\(feeding.name)")
        }
        #expect(rejected.error.status == 400)
    }

    @Test("classifies framing, data and end with next")
    func classifiesSteps() {
        let bytes = Support.bytes("5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\nrest")
        var decoder = ChunkedDecoder()
        var steps: [ChunkedStep] = []
        var offset = 0
        while !decoder.isFinished {
            let step = decoder.next(bytes.span.extracting(offset...))
            steps.append(step)
            switch step {
            case .framing(let count), .data(let count), .end(let count): offset += count
            case .failed:
                Issue.record("unexpected \(step)")
                return
            }
        }
        #expect(steps == [.framing(7), .data(5), .end(13)])
        // A finished decoder consumes nothing more until reset.
        #expect(decoder.next(bytes.span.extracting(offset...)) == .end(0))
        #expect(decoder.scan(bytes.span.extracting(offset...)) == .ended(at: 0))

        decoder.reset()
        #expect(!decoder.isFinished)
        #expect(decoder.scan(Support.bytes("0\r\n\r\n").span) == .ended(at: 5))
    }

    @Test("splits data at the end of the input and resumes it")
    func resumesData() {
        var decoder = ChunkedDecoder()
        #expect(decoder.next(Support.bytes("a\r\n").span) == .framing(3))
        #expect(decoder.next(Support.bytes("abcd").span) == .data(4))
        #expect(decoder.next(Support.bytes("efghij\r\n0").span) == .data(6))
        #expect(decoder.next(Support.bytes("\r\n0\r\n").span) == .framing(5))
        #expect(decoder.next(Support.bytes("\r\n").span) == .end(2))
    }

    @Test("accepts the largest chunk size and counts its data")
    func acceptsLargestChunkSize() {
        var decoder = ChunkedDecoder()
        #expect(decoder.scan(Support.bytes("3FFFFFFFFFFFFFFF\r\n").span) == .consumedAll)
        let megabyte = [UInt8](repeating: 0x61, count: 1 << 20)
        for _ in 0..<4 {
            #expect(decoder.scan(megabyte.span) == .consumedAll)
        }
        #expect(decoder.next(megabyte.span) == .data(megabyte.count))
        #expect(!decoder.isFinished)
    }

    @Test("a failed decoder repeats its error")
    func repeatsFailure() {
        var decoder = ChunkedDecoder()
        #expect(decoder.scan(Support.bytes("5\r\nhello\r\nzz").span) == .failed(.invalidChunkSize, at: 10))
        #expect(decoder.scan(Support.bytes("0\r\n\r\n").span) == .failed(.invalidChunkSize, at: 0))
    }

    @Test("honours configured limits")
    func honoursConfiguredLimits() {
        var limits = HTTPLimits()
        limits.maxChunkLineBytes = 3
        limits.maxTrailerBytes = 8
        let cases: [(String, Result<Int?, HTTPParseFailure>)] = [
            ("1;a\r\nx\r\n0\r\n\r\n", .success(13)),
            ("1;ab\r\nx\r\n", .failure(HTTPParseFailure(.chunkLineTooLong, at: 3))),
            ("0\r\nX: 1\r\n\r\n", .success(11)),
            ("0\r\nX: 12\r\n\r\n", .failure(HTTPParseFailure(.trailerTooLarge, at: 11))),
        ]
        for (raw, expected) in cases {
            #expect(Support.scan(Support.bytes(raw), cuts: [], limits: limits) == expected, "\(raw)")
        }
    }
}
