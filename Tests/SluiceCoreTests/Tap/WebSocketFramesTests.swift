import Testing
@testable import SluiceCore

/// Builds WebSocket frames (RFC 6455 §5.2) for the tests, independently of the reader under test.
private enum WS {
    static let continuation: UInt8 = 0x0, text: UInt8 = 0x1, binary: UInt8 = 0x2
    static let close: UInt8 = 0x8, ping: UInt8 = 0x9, pong: UInt8 = 0xA
    /// The masking key of RFC 6455 §5.7's examples.
    static let key: UInt32 = 0x37FA_213D

    /// One frame. `lengthBytes` forces the length form (0: 7-bit, 2: 16-bit, 8: 64-bit; nil: the shortest);
    /// `length` overrides the declared payload length (for hostile headers). Masked with `mask` when non-nil.
    static func frame(_ opcode: UInt8, _ payload: [UInt8] = [], fin: Bool = true, rsv1: Bool = false,
                      mask: UInt32? = nil, lengthBytes: Int? = nil, length: UInt64? = nil) -> [UInt8] {
        let declared = length ?? UInt64(payload.count)
        let form = lengthBytes ?? (declared < 126 ? 0 : declared <= 0xFFFF ? 2 : 8)
        var out: [UInt8] = [(fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode]
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        switch form {
        case 0: out.append(maskBit | UInt8(declared))
        case 2: out += [maskBit | 126] + (0..<2).map { UInt8(truncatingIfNeeded: declared >> (8 * (1 - $0))) }
        default: out += [maskBit | 127] + (0..<8).map { UInt8(truncatingIfNeeded: declared >> (8 * (7 - $0))) }
        }
        guard let mask else { return out + payload }
        let keyBytes = (0..<4).map { UInt8(truncatingIfNeeded: mask >> (24 - 8 * $0)) }
        return out + keyBytes + payload.enumerated().map { $0.element ^ keyBytes[$0.offset % 4] }
    }

    /// A frame from the server (unmasked).
    static func server(_ opcode: UInt8, _ payload: [UInt8] = [], fin: Bool = true, rsv1: Bool = false,
                       lengthBytes: Int? = nil) -> [UInt8] {
        frame(opcode, payload, fin: fin, rsv1: rsv1, lengthBytes: lengthBytes)
    }

    /// A frame from the client (masked with `key`).
    static func client(_ opcode: UInt8, _ payload: [UInt8] = [], fin: Bool = true, lengthBytes: Int? = nil) -> [UInt8] {
        frame(opcode, payload, fin: fin, mask: key, lengthBytes: lengthBytes)
    }

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// A close payload: the 2-byte code, then the reason.
    static func closePayload(_ code: UInt16, _ reason: String = "") -> [UInt8] {
        [UInt8(code >> 8), UInt8(code & 0xFF)] + bytes(reason)
    }

    /// An OpenAI Realtime `response.done` event, as the server sends it.
    static func responseDone(input: Int64, output: Int64, total: Int64) -> String {
        #"{"type":"response.done","event_id":"event_AB12","response":{"object":"realtime.response","id":"resp_1","status":"completed","output":[{"type":"message","content":[{"type":"audio","transcript":"Hi!"}]}],"usage":{"total_tokens":\#(total),"input_tokens":\#(input),"output_tokens":\#(output),"input_token_details":{"cached_tokens":0,"text_tokens":\#(input),"audio_tokens":0},"output_token_details":{"text_tokens":\#(output),"audio_tokens":0}}}}"#
    }

    static let done1 = bytes(responseDone(input: 127, output: 126, total: 253))
    static let done2 = bytes(responseDone(input: 10, output: 20, total: 30))
    static let created = bytes(#"{"type":"response.created","event_id":"e0","response":{"id":"resp_1","status":"in_progress","usage":null}}"#)
    static let usage1 = TokenUsage(promptTokens: 127, completionTokens: 126, totalTokens: 253)
}

/// What a reader reports after a stream.
private struct Outcome: Equatable, CustomStringConvertible {
    var position: Int64
    var boundary: Int64
    var messages: Int
    var pings: Int
    var pongs: Int
    var closeCode: UInt16?
    var lost: Bool
    var usage: TokenUsage?

    init(_ frames: WebSocketFrames) {
        position = frames.position
        boundary = frames.boundary
        messages = frames.messages
        pings = frames.pings
        pongs = frames.pongs
        closeCode = frames.closeCode
        lost = frames.lost
        usage = frames.usage
    }

    init(position: Int, boundary: Int, messages: Int, pings: Int, pongs: Int, closeCode: UInt16?, lost: Bool,
         usage: TokenUsage?) {
        self.position = Int64(position)
        self.boundary = Int64(boundary)
        self.messages = messages
        self.pings = pings
        self.pongs = pongs
        self.closeCode = closeCode
        self.lost = lost
        self.usage = usage
    }

    var description: String {
        "position=\(position) boundary=\(boundary) messages=\(messages) pings=\(pings) pongs=\(pongs) "
            + "close=\(closeCode.map(String.init) ?? "nil") lost=\(lost) usage=\(usage.map { "\($0)" } ?? "nil")"
    }
}

struct FramesCase: Sendable, CustomTestStringConvertible {
    var name: String
    var direction: WebSocketFrames.Direction = .fromServer
    var readsUsage = true
    var stream: [UInt8]
    var messages = 0
    var pings = 0
    var pongs = 0
    var closeCode: UInt16? = nil
    var lost = false
    /// The expected boundary; nil: the whole stream.
    var boundary: Int? = nil
    var usage: TokenUsage? = nil
    var testDescription: String { name }

    fileprivate var expected: Outcome {
        Outcome(position: stream.count, boundary: boundary ?? stream.count, messages: messages, pings: pings,
                pongs: pongs, closeCode: closeCode, lost: lost, usage: usage)
    }
}

private let hello = WS.bytes("hello")
private let big300 = [UInt8](repeating: 0x61, count: 300)
private let big70k = [UInt8](repeating: 0x62, count: 70_000)
/// A good frame before each hostile one: it must stay counted, and the boundary must stay after it.
private let goodServer = WS.server(WS.text, hello)
private let goodClient = WS.client(WS.text, hello)

private let framingCases: [FramesCase] = [
    .init(name: "empty stream", stream: []),
    .init(name: "one unmasked text frame", stream: WS.server(WS.text, hello), messages: 1),
    .init(name: "one masked text frame", direction: .fromClient, stream: WS.client(WS.text, hello), messages: 1),
    .init(name: "empty text and binary frames", stream: WS.server(WS.text) + WS.server(WS.binary), messages: 2),
    .init(name: "16-bit length, unmasked", stream: WS.server(WS.binary, big300) + goodServer, messages: 2),
    .init(name: "16-bit length, masked", direction: .fromClient, stream: WS.client(WS.binary, big300) + goodClient,
          messages: 2),
    .init(name: "64-bit length form for a short payload", stream: WS.server(WS.text, hello, lengthBytes: 8),
          messages: 1),
    .init(name: "64-bit length form, masked", direction: .fromClient,
          stream: WS.client(WS.text, hello, lengthBytes: 8) + WS.client(WS.ping, lengthBytes: 0), messages: 1,
          pings: 1),
    .init(name: "16-bit length form for an empty payload", stream: WS.server(WS.text, lengthBytes: 2), messages: 1),
    .init(name: "fragmented message with interleaved ping and pong",
          stream: WS.server(WS.text, WS.bytes("hel"), fin: false) + WS.server(WS.ping, WS.bytes("p"))
              + WS.server(WS.continuation, WS.bytes("l"), fin: false) + WS.server(WS.pong)
              + WS.server(WS.continuation, WS.bytes("o")) + goodServer,
          messages: 2, pings: 1, pongs: 1),
    .init(name: "fragmented masked binary message", direction: .fromClient,
          stream: WS.client(WS.binary, [1, 2], fin: false) + WS.client(WS.ping)
              + WS.client(WS.continuation, [3], fin: false) + WS.client(WS.continuation, [4]),
          messages: 1, pings: 1),
    .init(name: "pings and pongs", stream: WS.server(WS.ping, hello) + WS.server(WS.pong, hello) + WS.server(WS.ping),
          pings: 2, pongs: 1),
    .init(name: "close with code and reason, unmasked",
          stream: goodServer + WS.server(WS.close, WS.closePayload(1000, "bye")), messages: 1, closeCode: 1000),
    .init(name: "close with code, masked", direction: .fromClient,
          stream: WS.client(WS.close, WS.closePayload(4321, "done here")), closeCode: 4321),
    .init(name: "close without payload", stream: WS.server(WS.close), closeCode: 1005),
    .init(name: "close without payload, masked", direction: .fromClient, stream: WS.client(WS.close),
          closeCode: 1005),
    .init(name: "close with one payload byte carries no code", stream: WS.server(WS.close, [0x03]), closeCode: 1005),
    .init(name: "the first close frame's code is kept",
          stream: WS.server(WS.close, WS.closePayload(1001)) + WS.server(WS.close, WS.closePayload(1000)),
          closeCode: 1001),
    .init(name: "close with the maximum 125-byte payload",
          stream: WS.server(WS.close, WS.closePayload(1011, String(repeating: "r", count: 123))), closeCode: 1011),
    .init(name: "RSV2 and RSV3 are not framing", stream: [0xB1, 0x00], messages: 1),
    .init(name: "a frame half-received keeps the boundary at the last whole frame",
          stream: goodServer + Array(WS.server(WS.binary, big300).prefix(150)), messages: 1,
          boundary: goodServer.count),
    .init(name: "a header half-received keeps the boundary",
          stream: goodServer + Array(WS.server(WS.binary, big300).prefix(3)), messages: 1,
          boundary: goodServer.count),
    .init(name: "a masked header cut in the mask key", direction: .fromClient,
          stream: goodClient + Array(goodClient.prefix(4)), messages: 1, boundary: goodClient.count),
    .init(name: "a giant 64-bit length is skipped, not allocated",
          stream: goodServer + WS.frame(WS.binary, hello, lengthBytes: 8, length: UInt64(Int64.max)), messages: 1,
          boundary: goodServer.count),
    .init(name: "a giant 64-bit length, masked", direction: .fromClient,
          stream: goodClient + WS.frame(WS.binary, hello, mask: WS.key, lengthBytes: 8, length: 1 << 62),
          messages: 1, boundary: goodClient.count),
]

/// Each `lost` condition, after a good frame and before frames that must no longer count.
private let hostileCases: [FramesCase] = {
    /// `opened`: whole frames before the hostile one (a message's first fragment, pings) that still count.
    func lost(_ name: String, opened: [UInt8] = [], pings: Int = 0, _ hostile: [UInt8],
              direction: WebSocketFrames.Direction = .fromServer) -> FramesCase {
        let good = (direction == .fromServer ? goodServer : goodClient) + opened
        let after = direction == .fromServer
            ? WS.server(WS.text, hello) + WS.server(WS.ping) + WS.server(WS.close, WS.closePayload(1000))
            : WS.client(WS.text, hello) + WS.client(WS.ping) + WS.client(WS.close, WS.closePayload(1000))
        return FramesCase(name: "lost: " + name, direction: direction, stream: good + hostile + after, messages: 1,
                          pings: pings, lost: true, boundary: good.count)
    }
    return [
        lost("reserved data opcode 3", WS.server(0x3, hello)),
        lost("reserved data opcode 7", WS.server(0x7)),
        lost("reserved control opcode 0xB", WS.server(0xB)),
        lost("reserved control opcode 0xF", WS.server(0xF, hello)),
        lost("ping with 126 bytes", WS.server(WS.ping, [UInt8](repeating: 0, count: 126))),
        lost("close with a 16-bit length form", WS.server(WS.close, WS.closePayload(1000), lengthBytes: 2)),
        lost("pong with a 64-bit length form", WS.server(WS.pong, lengthBytes: 8)),
        lost("ping without FIN", WS.server(WS.ping, fin: false)),
        lost("close without FIN", WS.server(WS.close, WS.closePayload(1000), fin: false)),
        lost("an unmasked client frame", WS.server(WS.text, hello), direction: .fromClient),
        lost("a masked server frame", WS.client(WS.text, hello)),
        lost("a 64-bit length with the top bit set", WS.frame(WS.binary, hello, lengthBytes: 8, length: 1 << 63)),
        lost("a 64-bit length of all ones, masked",
             WS.frame(WS.binary, hello, mask: WS.key, lengthBytes: 8, length: .max), direction: .fromClient),
        lost("a continuation with no message open", WS.server(WS.continuation, hello)),
        lost("a continuation after a finished message", WS.server(WS.continuation, hello, fin: false)),
        lost("a new text frame inside a fragmented message", opened: WS.server(WS.binary, hello, fin: false),
             WS.server(WS.text, hello)),
        lost("a new binary frame inside a fragmented message, masked",
             opened: WS.client(WS.text, hello, fin: false) + WS.client(WS.ping), pings: 1,
             WS.client(WS.binary, hello), direction: .fromClient),
    ]
}()

/// `lost` after a fragment: the fragment's frame ended, so the boundary is after it (but no message completed).
private let lostAfterFragment = FramesCase(
    name: "lost: the boundary is after the last whole frame, even a fragment",
    stream: WS.server(WS.text, hello, fin: false) + WS.server(WS.ping) + WS.server(WS.text, hello) + goodServer,
    pings: 1, lost: true, boundary: WS.server(WS.text, hello).count + WS.server(WS.ping).count)

private let usageCases: [FramesCase] = [
    .init(name: "usage: one response.done", stream: WS.server(WS.text, WS.done1), messages: 1, usage: WS.usage1),
    .init(name: "usage: two response.done are summed",
          stream: WS.server(WS.text, WS.created) + WS.server(WS.text, WS.done1) + WS.server(WS.ping)
              + WS.server(WS.text, WS.done2),
          messages: 3, pings: 1, usage: TokenUsage(promptTokens: 137, completionTokens: 146, totalTokens: 283)),
    .init(name: "usage: a message without usage after one with usage adds nothing",
          stream: WS.server(WS.text, WS.done1) + WS.server(WS.text, WS.created) + WS.server(WS.text, WS.bytes("{}")),
          messages: 3, usage: WS.usage1),
    .init(name: "usage: a 64-bit length form is still one frame", stream: WS.server(WS.text, WS.done1, lengthBytes: 8),
          messages: 1, usage: WS.usage1),
    .init(name: "usage: usage null reports nothing", stream: WS.server(WS.text, WS.created), messages: 1),
    .init(name: "usage: a fragmented response.done is skipped",
          stream: WS.server(WS.text, Array(WS.done1.prefix(40)), fin: false) + WS.server(WS.ping)
              + WS.server(WS.continuation, Array(WS.done1.dropFirst(40))),
          messages: 1, pings: 1),
    .init(name: "usage: a fragmented one is skipped but a whole one after it counts",
          stream: WS.server(WS.text, Array(WS.done2.prefix(40)), fin: false)
              + WS.server(WS.continuation, Array(WS.done2.dropFirst(40))) + WS.server(WS.text, WS.done1),
          messages: 2, usage: WS.usage1),
    .init(name: "usage: a compressed (RSV1) response.done is skipped",
          stream: WS.server(WS.text, WS.done1, rsv1: true), messages: 1),
    .init(name: "usage: malformed JSON reports nothing",
          stream: WS.server(WS.text, Array(WS.done1.dropLast(1)) + WS.bytes("]")), messages: 1),
    .init(name: "usage: truncated JSON reports nothing",
          stream: WS.server(WS.text, Array(WS.done1.dropLast(1))), messages: 1),
    .init(name: "usage: a half-received frame reports nothing",
          stream: Array(WS.server(WS.text, WS.done1).dropLast(2)), boundary: 0),
    .init(name: "usage: a binary frame with the same bytes", stream: WS.server(WS.binary, WS.done1), messages: 1),
    .init(name: "usage: readsUsage false", readsUsage: false, stream: WS.server(WS.text, WS.done1), messages: 1),
    .init(name: "usage: never read from the client", direction: .fromClient,
          stream: WS.client(WS.text, WS.done1), messages: 1),
    .init(name: "usage: an overflowing sum reports none",
          stream: WS.server(WS.text, WS.bytes(WS.responseDone(input: 1, output: 1, total: .max)))
              + WS.server(WS.text, WS.done1),
          messages: 2),
    .init(name: "usage: lost after usage keeps the sum",
          stream: WS.server(WS.text, WS.done1) + WS.server(0x3) + WS.server(WS.text, WS.done2), messages: 1,
          lost: true, boundary: WS.server(WS.text, WS.done1).count, usage: WS.usage1),
]

private let allCases = framingCases + hostileCases + [lostAfterFragment] + usageCases

@Suite("WebSocketFrames")
struct WebSocketFramesTests {
    private typealias Support = TapTestSupport

    /// Scans `stream` in pieces cut at `cuts`.
    private static func run(_ row: FramesCase, cuts: [Int]) -> Outcome {
        var frames = WebSocketFrames(direction: row.direction, readsUsage: row.readsUsage)
        for range in Support.pieces(row.stream.count, cuts: cuts) {
            frames.scan(row.stream.span.extracting(range))
        }
        return Outcome(frames)
    }

    @Test("whole, split at every offset and byte by byte", arguments: allCases)
    func everySplit(_ row: FramesCase) {
        for feeding in Support.feedings(row.stream.count, everySplitLimit: 2048) {
            let outcome = Self.run(row, cuts: feeding.cuts)
            #expect(outcome == row.expected, "\(feeding.name)")
            if outcome != row.expected { return }  // one report per row, not one per offset
        }
    }

    @Test("split at every pair of offsets")
    func everyTwoSplits() {
        // Two cuts reach a header split twice (first bytes, extended length, mask key) with a piece in between.
        let names: Set = ["64-bit length form, masked", "fragmented message with interleaved ping and pong",
                          "close with code, masked", "lost: a 64-bit length of all ones, masked"]
        let rows = allCases.filter { names.contains($0.name) }
        #expect(rows.count == names.count)
        for row in rows {
            for first in 0...row.stream.count {
                for second in stride(from: first, through: row.stream.count, by: 1) {
                    let outcome = Self.run(row, cuts: [first, second])
                    #expect(outcome == row.expected, "\(row.name) cut at \(first), \(second)")
                    if outcome != row.expected { return }
                }
            }
        }
    }

    @Test("big payloads: 16-bit and 64-bit lengths, fed in chunks")
    func bigPayloads() {
        let stream = WS.server(WS.binary, big70k) + WS.server(WS.ping) + WS.server(WS.text, WS.done1)
            + WS.server(WS.binary, big300)
        let row = FramesCase(name: "big", stream: stream, messages: 3, pings: 1, usage: WS.usage1)
        #expect(WS.server(WS.binary, big70k)[1] == 127)
        for feeding in Support.feedings(stream.count, everySplitLimit: 0) {
            #expect(Self.run(row, cuts: feeding.cuts) == row.expected, "\(feeding.name)")
        }
        for chunk in [7, 1000, 4096, 65_536] {
            let cuts = Array(stride(from: chunk, to: stream.count, by: chunk))
            #expect(Self.run(row, cuts: cuts) == row.expected, "chunks of \(chunk)")
        }
        let masked = WS.client(WS.binary, big70k) + WS.client(WS.close, WS.closePayload(1001))
        let maskedRow = FramesCase(name: "big masked", direction: .fromClient, stream: masked, messages: 1,
                                   closeCode: 1001)
        #expect(Self.run(maskedRow, cuts: Array(stride(from: 5, to: masked.count, by: 5))) == maskedRow.expected)
    }

    @Test("boundary equals position exactly at each frame end")
    func boundaryAtEachFrameEnd() {
        let frames = [WS.server(WS.text, hello), WS.server(WS.ping), WS.server(WS.binary, big300, lengthBytes: 8),
                      WS.server(WS.text, WS.bytes("a"), fin: false), WS.server(WS.continuation),
                      WS.server(WS.close, WS.closePayload(1000))]
        var ends: Set<Int64> = []
        var total = 0
        for frame in frames {
            total += frame.count
            ends.insert(Int64(total))
        }
        let stream = frames.flatMap { $0 }
        var reader = WebSocketFrames(direction: .fromServer, readsUsage: true)
        for index in stream.indices {
            reader.scan(stream.span.extracting(index..<index + 1))
            #expect(reader.position == Int64(index + 1))
            #expect((reader.boundary == reader.position) == ends.contains(reader.position), "at \(index + 1)")
            #expect(reader.boundary <= reader.position)
        }
        #expect(reader.messages == 3 && reader.pings == 1 && reader.closeCode == 1000)
    }

    @Test("a lost stream keeps counting position only")
    func lostKeepsCountingPosition() {
        var reader = WebSocketFrames(direction: .fromServer, readsUsage: true)
        let stream = goodServer + WS.server(0x4)
        reader.scan(stream.span)
        #expect(reader.lost && reader.boundary == Int64(goodServer.count))
        let more = WS.server(WS.text, WS.done1)
        for _ in 0..<3 { reader.scan(more.span) }
        #expect(reader.position == Int64(stream.count + 3 * more.count))
        #expect(reader.messages == 1 && reader.usage == nil && reader.closeCode == nil)
    }

    // MARK: - closeFrame

    @Test("closeFrame 1001 going away, unmasked: the exact bytes")
    func closeFrameUnmasked() {
        let frame = WebSocketFrames.closeFrame(code: 1001, reason: "going away", maskKey: nil)
        #expect(frame == [0x88, 0x0C, 0x03, 0xE9] + WS.bytes("going away"))
    }

    @Test("closeFrame masked: header, key, and a payload that unmasks to code and reason")
    func closeFrameMasked() {
        let frame = WebSocketFrames.closeFrame(code: 1001, reason: "going away", maskKey: WS.key)
        #expect(frame.count == 2 + 4 + 12)
        #expect(Array(frame.prefix(6)) == [0x88, 0x8C, 0x37, 0xFA, 0x21, 0x3D])
        let key = Array(frame[2..<6])
        let unmasked = frame.dropFirst(6).enumerated().map { $0.element ^ key[$0.offset % 4] }
        #expect(unmasked == [0x03, 0xE9] + WS.bytes("going away"))
        #expect(frame == WS.frame(WS.close, WS.closePayload(1001, "going away"), mask: WS.key))
    }

    @Test("closeFrame round-trips through a scanner of each direction")
    func closeFrameRoundTrip() {
        for (direction, key) in [(WebSocketFrames.Direction.fromClient, WS.key as UInt32?), (.fromServer, nil)] {
            let frame = WebSocketFrames.closeFrame(code: 1001, reason: "going away", maskKey: key)
            let stream = (direction == .fromClient ? goodClient : goodServer) + frame
            for feeding in Support.feedings(stream.count) {
                var reader = WebSocketFrames(direction: direction, readsUsage: true)
                for range in Support.pieces(stream.count, cuts: feeding.cuts) {
                    reader.scan(stream.span.extracting(range))
                }
                #expect(reader.closeCode == 1001 && !reader.lost && reader.messages == 1,
                        "\(direction) \(feeding.name)")
                #expect(reader.boundary == Int64(stream.count))
            }
        }
    }

    @Test("closeFrame cuts a long reason to 123 bytes, never inside a character")
    func closeFrameLongReason() {
        let long = WebSocketFrames.closeFrame(
            code: 1001, reason: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            maskKey: nil)
        #expect(long.count == 2 + 125 && long[1] == 125)
        // 122 ASCII bytes then "é" (2 bytes): 124 bytes, so the whole "é" goes.
        let accented = WebSocketFrames.closeFrame(
            code: 1000, reason: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaé",
            maskKey: 0x0102_0304)
        #expect(accented[1] == 0x80 | 124)
        var reader = WebSocketFrames(direction: .fromClient, readsUsage: false)
        reader.scan(accented.span)
        #expect(reader.closeCode == 1000 && reader.boundary == Int64(accented.count))
        let empty = WebSocketFrames.closeFrame(code: 1000, reason: "", maskKey: nil)
        #expect(empty == [0x88, 0x02, 0x03, 0xE8])
    }

    /// The usage reader is boxed (made on first use), yet the type stays a value: a copy taken in the middle of a
    /// message finishes that message on its own, and neither copy sees the other's bytes.
    @Test("a copy taken mid-message reads usage on its own")
    func copiesDoNotShareTheUsageReader() {
        let frame = WS.server(WS.text, WS.done1)
        let half = frame.count / 2
        let head = Array(frame[..<half]), tail = Array(frame[half...])
        var original = WebSocketFrames(direction: .fromServer, readsUsage: true)
        original.scan(head.span)
        var copy = original
        copy.scan(tail.span)
        #expect(copy.usage == WS.usage1)
        #expect(original.usage == nil, "the copy's bytes must not reach the original's reader")
        original.scan(tail.span)
        #expect(original.usage == WS.usage1)
        copy.scan(WS.server(WS.text, WS.done2).span)
        #expect(copy.usage == TokenUsage(promptTokens: 137, completionTokens: 146, totalTokens: 283))
        #expect(original.usage == WS.usage1)
    }
}
