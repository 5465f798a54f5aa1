// WebSocket tunnels: after a `101 Switching Protocols`, sluice relays the bytes of each direction unchanged. This
// reader follows one direction's frames alongside the relay, for three things:
// - counting messages (and pings, pongs, the close code) for the completion record;
// - knowing where the last complete frame ended (`boundary`), so that on drain sluice can end each direction with
//   its own close frame (1001, going away) without cutting a frame in half, which the peer would take for garbage;
// - the OpenAI Realtime usage tap: the usage in each `response.done` text message from the server, summed.

/// Reads one direction of a WebSocket tunnel as frames (RFC 6455 §5.2) without altering or keeping a byte.
///
/// Contract: `scan` every byte of the direction, in order, in pieces split anywhere (a frame header included);
/// read the counters between calls or at the end. Between calls it keeps only the frame header read so far (at
/// most 14 bytes, decoded into fields as they arrive), how much of the current payload is left, and the
/// `UsageReader` state. Payload not read for usage is skipped arithmetically, so the cost of a call depends on the
/// call's bytes only, never on how long the stream has run; all state is inline, so `scan` never allocates.
///
/// It is a reader, not a validator: only what breaks framing (see `lost`) stops it. UTF-8 of text payloads,
/// extension negotiation and minimal length encoding are the endpoints' business.
///
/// A value owned by one tunnel on its loop thread.
struct WebSocketFrames: Sendable {
    /// Which way the bytes flow; fixes whether frames must be masked (RFC 6455 §5.1: client frames always are,
    /// server frames never).
    enum Direction: Sendable {
        case fromClient
        case fromServer
    }

    /// RFC 6455 §5.2 opcodes this reader tells apart; 3-7 and 0xB-0xF are reserved.
    private enum Opcode {
        static let continuation: UInt8 = 0x0
        static let text: UInt8 = 0x1
        static let binary: UInt8 = 0x2
        static let close: UInt8 = 0x8
        static let ping: UInt8 = 0x9
        static let pong: UInt8 = 0xA
    }

    /// The largest payload of a control frame (RFC 6455 §5.5).
    static let maxControlPayload = 125
    /// The most reason bytes `closeFrame` sends: a control payload minus the 2-byte code.
    static let maxCloseReasonBytes = maxControlPayload - 2
    /// What a close frame without a payload reports (RFC 6455 §7.1.5, "No Status Rcvd").
    static let noStatusCode: UInt16 = 1005

    // MARK: Settings (fixed at init)
    let direction: Direction
    /// Whether text messages from the server are read for usage (only when someone consumes it: the completion
    /// log or a token budget), which is the only per-payload-byte work.
    private let readsUsage: Bool

    // MARK: What was learned
    /// Stream bytes scanned so far.
    private(set) var position: Int64 = 0
    /// Stream position just after the last complete frame (0 before any): equals `position` when the stream is at
    /// a frame boundary.
    private(set) var boundary: Int64 = 0
    /// Complete data messages: a text or binary frame with FIN set, or a continuation frame with FIN set that ends
    /// a fragmented message.
    private(set) var messages = 0
    /// Control frames seen, each counted once complete.
    private(set) var pings = 0
    private(set) var pongs = 0
    /// Status code of the first close frame: its 2-byte code, 1005 when the close frame had no payload (or a
    /// 1-byte one, which carries no whole code); nil before any close frame.
    private(set) var closeCode: UInt16?
    /// The stream broke framing: reserved opcode (3-7, 0xB-0xF), control frame with payload > 125 or without FIN,
    /// a fromClient frame without the mask bit or a fromServer frame with it, a 64-bit length with the top bit
    /// set, a continuation frame with no message open, a new data frame while a fragmented message is open. From
    /// then on nothing is tracked: counts, `boundary` and `closeCode` stay as they were, `position` keeps counting.
    private(set) var lost = false

    // MARK: The frame being read
    /// Header bytes of the current frame read so far; 0 at a frame boundary.
    private var headerRead = 0
    /// The whole header's length, known once its second byte is read (2 + 0/2/8 extended length + 0/4 mask key).
    private var headerLength = 2
    /// Whether the header is complete and `remaining` payload bytes follow.
    private var inPayload = false
    /// First header byte: FIN, RSV1-3, opcode.
    private var firstByte: UInt8 = 0
    /// The mask bit of the second header byte: the payload is masked (always for `.fromClient`).
    private var masked = false
    /// Payload length: the 7-bit field, then the extended length as its bytes arrive (network byte order).
    private var length: UInt64 = 0
    /// The masking key, first wire byte most significant.
    private var maskKey: UInt32 = 0
    /// Payload bytes of the current frame not yet scanned.
    private var remaining: Int64 = 0
    /// A text or binary frame without FIN began a message that is not yet ended.
    private var messageOpen = false
    /// Close-code bytes of the current close frame read so far (0-2), and their unmasked value.
    private var codeBytesRead = 0
    private var codeValue: UInt16 = 0

    // MARK: Usage
    /// The current frame's payload is being fed to `reader`.
    private var readingUsage = false
    /// Made on the first message read for usage: a tunnel holds about half a kilobyte less while it has none (the
    /// client direction never does). Copied before a write when shared, so the type stays a value.
    private var usageReader: UsageReaderBox?
    /// The sum over the messages that reported usage; nil when none did.
    private var usageSum: TokenUsage?
    /// A sum overflowed `Int64`: no usage is reported rather than a wrapped one (as `ReportedUsage` does).
    private var usageOverflowed = false

    /// - Parameter readsUsage: read the usage of the server's single-frame, uncompressed text messages; ignored
    ///   for `.fromClient`.
    init(direction: Direction, readsUsage: Bool) {
        self.direction = direction
        self.readsUsage = readsUsage && direction == .fromServer
    }

    /// Token usage summed over the server's text messages that were a single frame (FIN set on the first frame),
    /// not compressed (RSV1 clear: permessage-deflate, RFC 7692 §6), and whose payload parsed as complete JSON
    /// reporting usage (OpenAI Realtime: one `response.done` per response, each that response's usage). Nil when
    /// none did, when usage is not read, or when a sum overflowed. Fragmented and compressed messages are skipped.
    var usage: TokenUsage? { usageOverflowed ? nil : usageSum }

    /// Reads the next bytes of the stream (any split). Never allocates: no arrays, no `String`. Header bytes are
    /// looked at one by one (at most 14 per frame); payload is crossed in one step unless fed to the usage reader.
    /// Owning thread: the tunnel's loop thread.
    mutating func scan(_ bytes: Span<UInt8>) {
        let start = position
        position += Int64(bytes.count)
        var index = 0
        while index < bytes.count && !lost {
            if !inPayload {
                readHeaderByte(bytes[index])
                index += 1
                if inPayload && remaining == 0 { endFrame(at: start + Int64(index)) }
                continue
            }
            let take = Int(min(remaining, Int64(bytes.count - index)))
            if codeBytesRead < 2 && firstByte & 0x0F == Opcode.close && closeCode == nil {
                readCloseCode(bytes.extracting(index..<index + take))
            }
            if readingUsage { feedUsage(bytes.extracting(index..<index + take)) }
            index += take
            remaining -= Int64(take)
            if remaining == 0 { endFrame(at: start + Int64(index)) }
        }
    }

    // MARK: - Frames

    /// Takes one header byte; validates once the first two are in, and starts the payload when the header is whole.
    private mutating func readHeaderByte(_ byte: UInt8) {
        switch headerRead {
        case 0:
            firstByte = byte
        case 1:
            guard startHeader(secondByte: byte) else {
                lost = true
                return
            }
        default:
            let lengthEnd = headerLength - (masked ? 4 : 0)
            if headerRead < lengthEnd {
                length = length << 8 | UInt64(byte)
                // §5.2: the 64-bit length's "most significant bit MUST be 0"; that also keeps `remaining` an Int64.
                if headerRead == lengthEnd - 1 && length >> 63 != 0 {
                    lost = true
                    return
                }
            } else {
                maskKey = maskKey << 8 | UInt32(byte)
            }
        }
        headerRead += 1
        if headerRead == headerLength { startPayload() }
    }

    /// Reads the second header byte and checks the frame against the direction and the open message. Returns
    /// false when the stream broke framing.
    private mutating func startHeader(secondByte: UInt8) -> Bool {
        let opcode = firstByte & 0x0F
        let fin = firstByte & 0x80 != 0
        let isMasked = secondByte & 0x80 != 0
        let length7 = secondByte & 0x7F
        switch opcode {
        case Opcode.continuation:
            guard messageOpen else { return false }
        case Opcode.text, Opcode.binary:
            guard !messageOpen else { return false }
        case Opcode.close, Opcode.ping, Opcode.pong:
            // §5.5: control frames are never fragmented and carry at most 125 bytes (so never 126/127).
            guard fin && Int(length7) <= Self.maxControlPayload else { return false }
        default:
            return false  // reserved: only an extension defines these, and none that sluice can read is in use
        }
        guard isMasked == (direction == .fromClient) else { return false }
        masked = isMasked
        let extended = length7 == 126 ? 2 : length7 == 127 ? 8 : 0
        length = extended == 0 ? UInt64(length7) : 0  // else the extended bytes build it
        maskKey = 0
        headerLength = 2 + extended + (isMasked ? 4 : 0)
        return true
    }

    /// The header is whole: sets up the payload's bookkeeping and, for a qualifying message, the usage document.
    private mutating func startPayload() {
        inPayload = true
        remaining = Int64(length)  // < 2^63: checked in `readHeaderByte`
        codeBytesRead = 0
        codeValue = 0
        // Only a whole message in one frame is read: a fragment alone is not a JSON document, and a compressed
        // (RSV1) payload is deflate output.
        let fin = firstByte & 0x80 != 0
        let compressed = firstByte & 0x40 != 0
        readingUsage = readsUsage && fin && !compressed && firstByte & 0x0F == Opcode.text
        if readingUsage {
            let box = usageReaderForWriting()
            box.reader.reset()
            box.reader.beginDocument()
        }
    }

    /// Feeds the current message's payload to the usage reader.
    private mutating func feedUsage(_ bytes: Span<UInt8>) {
        usageReaderForWriting().reader.feed(bytes)
    }

    /// The usage reader, made on first use and copied first when another copy of this value shares it.
    private mutating func usageReaderForWriting() -> UsageReaderBox {
        // No local reference before the check: it would count as a second owner.
        if usageReader == nil {
            usageReader = UsageReaderBox()
        } else if !isKnownUniquelyReferenced(&usageReader!) {
            usageReader = UsageReaderBox(copying: usageReader!)
        }
        return usageReader!
    }

    /// Reads the first two payload bytes of a close frame, unmasking them (§5.3: byte i uses key byte i mod 4).
    private mutating func readCloseCode(_ bytes: Span<UInt8>) {
        var index = 0
        while codeBytesRead < 2 && index < bytes.count {
            var byte = bytes[index]
            if masked { byte ^= UInt8(truncatingIfNeeded: maskKey >> (24 - 8 * codeBytesRead)) }
            codeValue = codeValue << 8 | UInt16(byte)
            codeBytesRead += 1
            index += 1
        }
    }

    /// The current frame ended at stream position `end`: counts it and moves the boundary.
    private mutating func endFrame(at end: Int64) {
        let fin = firstByte & 0x80 != 0
        switch firstByte & 0x0F {
        case Opcode.text, Opcode.binary, Opcode.continuation:
            if fin { messages += 1 }
            messageOpen = !fin
        case Opcode.ping:
            pings += 1
        case Opcode.pong:
            pongs += 1
        default:  // close: the only other opcode `startHeader` lets through
            if closeCode == nil { closeCode = codeBytesRead == 2 ? codeValue : Self.noStatusCode }
        }
        if readingUsage {
            readingUsage = false
            let box = usageReaderForWriting()
            box.reader.endDocument()
            if let found = box.reader.usage { add(found) }
        }
        inPayload = false
        headerRead = 0
        boundary = end
    }

    private mutating func add(_ found: TokenUsage) {
        guard let sum = usageSum else {
            usageSum = found
            return
        }
        let (prompt, overflowPrompt) = sum.promptTokens.addingReportingOverflow(found.promptTokens)
        let (completion, overflowCompletion) = sum.completionTokens.addingReportingOverflow(found.completionTokens)
        let (total, overflowTotal) = sum.totalTokens.addingReportingOverflow(found.totalTokens)
        if overflowPrompt || overflowCompletion || overflowTotal { usageOverflowed = true }
        usageSum = TokenUsage(promptTokens: prompt, completionTokens: completion, totalTokens: total)
    }

    // MARK: - Close frame

    /// The frame sluice sends to end a tunnel: FIN + close opcode, the 2-byte `code`, then `reason` (UTF-8, at most
    /// `maxCloseReasonBytes`; a longer one is cut at a character boundary, so the peer never sees invalid UTF-8,
    /// which §8.1 makes it fail the connection for). Masked with `maskKey` (its most significant byte is the first
    /// key byte on the wire) when non-nil, as frames towards the server must be (§5.3); unmasked otherwise.
    /// Allocates the returned array: call it once per tunnel end, on any thread.
    static func closeFrame(code: UInt16, reason: StaticString, maskKey: UInt32?) -> [UInt8] {
        reason.withUTF8Buffer { text in
            var reasonCount = min(text.count, maxCloseReasonBytes)
            // Back off over continuation bytes (10xxxxxx) so a multi-byte character is not cut in half.
            while reasonCount < text.count && reasonCount > 0 && text[reasonCount] & 0xC0 == 0x80 {
                reasonCount -= 1
            }
            let payloadCount = 2 + reasonCount
            var frame: [UInt8] = []
            frame.reserveCapacity(2 + 4 + payloadCount)
            frame.append(0x80 | Opcode.close)
            frame.append((maskKey == nil ? 0 : 0x80) | UInt8(payloadCount))
            let payloadStart: Int
            if let maskKey {
                for shift in stride(from: 24, through: 0, by: -8) {
                    frame.append(UInt8(truncatingIfNeeded: maskKey >> UInt32(shift)))
                }
                payloadStart = frame.count
            } else {
                payloadStart = frame.count
            }
            frame.append(UInt8(code >> 8))
            frame.append(UInt8(truncatingIfNeeded: code))
            frame.append(contentsOf: text[0..<reasonCount])
            if let maskKey {
                for index in payloadStart..<frame.count {
                    let keyIndex = (index - payloadStart) % 4
                    frame[index] ^= UInt8(truncatingIfNeeded: maskKey >> UInt32(24 - 8 * keyIndex))
                }
            }
            return frame
        }
    }
}

/// The usage reader of one `WebSocketFrames`, boxed so a tunnel that reads no usage does not carry it. Only its
/// owner's loop thread touches it, and a shared box is copied before a write (`isKnownUniquelyReferenced`).
final class UsageReaderBox: @unchecked Sendable {
    var reader: UsageReader

    init() {
        reader = UsageReader()
    }

    init(copying other: UsageReaderBox) {
        reader = other.reader
    }
}
