@testable import SluiceCore

// The response tap as it was before JSONPushScanner (commit a382bd1), verbatim but for its name and its reader
// (`ReferenceUsageReader`): the differential tests run every corpus stream through it and the shipped tap.

struct ReferenceResponseTap: Sendable {
    /// How the body is read; the proxy chooses from the response's `Content-Type`.
    enum Kind: Sendable {
        /// `text/event-stream`: SSE framing; each event's data is a JSON document.
        case eventStream
        /// `application/json`: the body is one JSON document.
        case json
        /// Anything else: only the capture, if on.
        case other
    }

    /// Field names are matched against `data` as they stream and never buffered; the length counter saturates here
    /// so that a name of any length keeps the state fixed-size.
    static let maxFieldNameBytes = 16

    /// Where the SSE parser is in a line.
    private enum LineState: UInt8, Sendable {
        /// At the stream's start, matching a UTF-8 BOM (`bomMatched` bytes so far).
        case byteOrderMark
        /// At the first byte of a line.
        case lineStart
        /// Inside a field name (`nameLength`, `nameIsDataPrefix`).
        case fieldName
        /// Just after `data:`: one space is dropped (§9.2.6 "If value starts with a U+0020 SPACE character").
        case dataValueStart
        /// Inside the value of a `data` field.
        case dataValue
        /// Inside a comment or the value of another field: skipped to the line end.
        case skippedRest
    }

    /// EF BB BF, packed with the first byte lowest.
    private static let byteOrderMark: UInt32 = 0xBF_BB_EF
    /// "data", packed with the first byte lowest.
    private static let dataName: UInt32 = 0x61_74_61_64

    // MARK: Exchange settings
    /// How the current body is read; `.other` until the first `reset(kind:)`.
    private(set) var kind: Kind = .other
    /// Whether usage and the model are read from the JSON; when no one consumes them (no completion log,
    /// no token budget) only the SSE framing and timing are followed, which is most of the per-byte work saved.
    private var readsUsage = true
    /// Set by `finish`; later input is ignored.
    private var finished = false

    // MARK: SSE framing
    private var line: LineState = .byteOrderMark
    private var bomMatched = 0
    /// The previous byte was a CR, so an LF now belongs to the same line end (it may come in the next piece).
    private var afterCarriageReturn = false
    /// Bytes of the current field name, saturating at `maxFieldNameBytes + 1`.
    private var nameLength = 0
    /// Whether the field name so far is a prefix of `data`.
    private var nameIsDataPrefix = false
    /// `now` of the call in which the current line began.
    private var lineStartedAt: Int64 = 0
    /// The event being read has had a field line / a `data` field line.
    private var eventHasField = false
    private var eventHasData = false

    // MARK: What was learned
    private var eventCount = 0
    private var firstDataEventAt: Int64?
    private var lastEventAt: Int64?
    private var maxGap: Int64 = 0
    private var firstContentEventAt: Int64?
    private var firstByteAt: Int64?
    private var reader = ReferenceUsageReader()
    private var capture: CaptureBuffer

    /// - Parameter captureLimit: when > 0, also keep the first `captureLimit` bytes of text (for SSE each `data`
    ///   line's value followed by LF, i.e. one JSON document per line for one-line events; for other kinds the
    ///   body itself), in storage allocated once here.
    init(captureLimit: Int = 0) {
        capture = CaptureBuffer(limit: captureLimit)
    }

    /// Prepares for a new response body read as `kind`, reusing all storage. With `readsUsage` false the
    /// observation never reports usage or a model.
    mutating func reset(kind: Kind, readsUsage: Bool = true) {
        self.kind = kind
        self.readsUsage = readsUsage
        finished = false
        line = .byteOrderMark
        bomMatched = 0
        afterCarriageReturn = false
        nameLength = 0
        nameIsDataPrefix = false
        eventHasField = false
        eventHasData = false
        eventCount = 0
        firstDataEventAt = nil
        lastEventAt = nil
        maxGap = 0
        firstContentEventAt = nil
        firstByteAt = nil
        reader.reset()
        capture.reset()
        if kind == .json && readsUsage { reader.beginDocument() }
    }

    /// Reads the next piece of the body, received at `now` (loop microseconds: the session passes `ProxyLoop.nowMicroseconds`; the tap only subtracts times).
    mutating func observe(_ bytes: Span<UInt8>, now: Int64) {
        guard !finished else { return }
        if firstByteAt == nil && bytes.count > 0 { firstByteAt = now }
        switch kind {
        case .eventStream:
            readEventStream(bytes, now: now)
        case .json:
            reader.feed(bytes)
            capture.append(bytes)
        case .other:
            capture.append(bytes)
        }
    }

    /// Ends the body. A JSON body's usage is committed if it was complete; an SSE event without its closing blank
    /// line is not dispatched (§9.2.6: "Once the end of the file is reached, any pending data must be discarded").
    /// `now` is accepted for symmetry with `observe`; no time is taken from it.
    mutating func finish(now: Int64) {
        guard !finished else { return }
        finished = true
        if kind == .json {
            reader.endDocument()
            if reader.contentDocuments > 0 { firstContentEventAt = now }
        }
    }

    /// What was learned so far. Builds the model `String`: read it at the end of an exchange.
    var observation: ResponseObservation {
        ResponseObservation(eventCount: eventCount, firstDataEventAt: firstDataEventAt, lastEventAt: lastEventAt,
                            maxGap: maxGap, usage: reader.usage, model: reader.model,
                            contentEvents: reader.contentDocuments, firstContentEventAt: firstContentEventAt,
                            estimatedCompletionTokens: estimatedCompletionTokens)
    }

    /// See `ResponseObservation.estimatedCompletionTokens`.
    private var estimatedCompletionTokens: Int64 {
        switch kind {
        case .eventStream: Int64(reader.outputDeltas)
        case .json: Int64((reader.outputTextBytes + 3) / 4)
        case .other: 0
        }
    }

    /// Calls `body` with the captured text (empty when capture is off).
    func withCapturedText<R>(_ body: (Span<UInt8>) -> R) -> R {
        capture.withBytes(body)
    }

    /// Whether text was dropped because the capture limit was reached.
    var captureTruncated: Bool { capture.truncated }

    /// Events dispatched so far; unlike `observation`, cheap enough to read after every piece.
    var dispatchedEventCount: Int { eventCount }
    /// `now` of the latest dispatched event; cheap, like `dispatchedEventCount`.
    var latestEventAt: Int64? { lastEventAt }
    /// `now` of the first `observe` call that had bytes: a non-SSE body's time to first token. Nil before any.
    var firstBodyByteAt: Int64? { firstByteAt }

    // MARK: - SSE (WHATWG HTML §9.2.6 "Interpreting an event stream")

    private mutating func readEventStream(_ bytes: Span<UInt8>, now: Int64) {
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if afterCarriageReturn {
                afterCarriageReturn = false
                if byte == TapByte.lineFeed {  // the LF of a CRLF, possibly split across pieces
                    index += 1
                    continue
                }
            }
            switch line {
            case .byteOrderMark:
                if byte == UInt8(truncatingIfNeeded: Self.byteOrderMark >> UInt32(8 * bomMatched)) {
                    bomMatched += 1
                    index += 1
                    if bomMatched == 3 { line = .lineStart }
                } else {
                    line = .lineStart
                    if bomMatched > 0 {
                        // A partial BOM was the start of the first field name after all (EF and BB are not "d").
                        startFieldName(now: now)
                        nameLength = bomMatched
                        nameIsDataPrefix = false
                    }
                    // The byte is read again in the new state.
                }
            case .lineStart:
                index += 1
                if byte == TapByte.lineFeed || byte == TapByte.carriageReturn {
                    lineEnded(by: byte)
                    eventEnded(now: now)
                } else if byte == TapByte.colon {
                    line = .skippedRest  // a comment, such as a ": ping" keepalive
                } else {
                    startFieldName(now: now)
                    matchName(byte)
                }
            case .fieldName:
                index += 1
                if byte == TapByte.colon {
                    fieldNameEnded()
                    line = isDataField ? .dataValueStart : .skippedRest
                } else if byte == TapByte.lineFeed || byte == TapByte.carriageReturn {
                    // A line without a colon is a field with an empty value (§9.2.6).
                    fieldNameEnded()
                    if isDataField { dataLineEnded() }
                    lineEnded(by: byte)
                } else {
                    matchName(byte)
                }
            case .dataValueStart:
                line = .dataValue
                if byte == TapByte.space { index += 1 }
            case .dataValue:
                let end = Self.lineEnd(in: bytes, from: index)
                let value = bytes.extracting(index..<end)
                reader.feed(value)
                capture.append(value)
                index = end
                if end < bytes.count {
                    dataLineEnded()
                    lineEnded(by: bytes[end])
                    index += 1
                }
            case .skippedRest:
                index = Self.lineEnd(in: bytes, from: index)
                if index < bytes.count {
                    lineEnded(by: bytes[index])
                    index += 1
                }
            }
        }
    }

    /// The offset of the first CR or LF at or after `start`, or `bytes.count`.
    ///
    /// Data lines are nearly all of an SSE body, so this is the tap's hot loop: two vectorized searches (LF, then
    /// CR before it; CR alone may end a line, §9.2.5) cost less than one pass testing both bytes (measured with
    /// callgrind: a quarter of a SWAR loop's instructions on 256-byte lines). The searches go window by window
    /// so that a stream ending its lines with CR alone does not rescan the rest of the piece for an LF per line.
    private static func lineEnd(in bytes: Span<UInt8>, from start: Int) -> Int {
        var windowStart = start
        while windowStart < bytes.count {
            let windowEnd = min(windowStart + lineSearchWindow, bytes.count)
            let lineFeed = ByteSearch.firstIndex(of: TapByte.lineFeed, in: bytes, from: windowStart, to: windowEnd)
            let end = ByteSearch.firstIndex(of: TapByte.carriageReturn, in: bytes, from: windowStart, to: lineFeed)
            if end < windowEnd { return end }
            windowStart = windowEnd
        }
        return bytes.count
    }

    /// Longer than nearly every token event, short enough that a CR-only stream costs two searches per window.
    private static let lineSearchWindow = 1024

    private mutating func startFieldName(now: Int64) {
        line = .fieldName
        lineStartedAt = now
        nameLength = 0
        nameIsDataPrefix = true
    }

    /// Matches one more field-name byte against "data", without keeping the name.
    private mutating func matchName(_ byte: UInt8) {
        guard nameLength <= Self.maxFieldNameBytes else { return }
        nameIsDataPrefix = nameIsDataPrefix && nameLength < 4
            && byte == UInt8(truncatingIfNeeded: Self.dataName >> UInt32(8 * nameLength))
        nameLength += 1
    }

    private var isDataField: Bool { nameIsDataPrefix && nameLength == 4 }

    /// A field line's name is complete: the event now counts, and a `data` field starts (or continues) its JSON.
    private mutating func fieldNameEnded() {
        eventHasField = true
        guard isDataField else { return }
        if firstDataEventAt == nil { firstDataEventAt = lineStartedAt }
        if eventHasData {
            // §9.2.6: the data buffer joins an event's data lines with LF, which is JSON whitespace.
            let lineFeed = InlineArray<1, UInt8>(repeating: TapByte.lineFeed)
            reader.feed(lineFeed.span)
        } else {
            eventHasData = true
            if readsUsage { reader.beginDocument() }
        }
    }

    /// The capture keeps each data line followed by LF.
    private mutating func dataLineEnded() {
        capture.append(TapByte.lineFeed)
    }

    private mutating func lineEnded(by byte: UInt8) {
        line = .lineStart
        afterCarriageReturn = byte == TapByte.carriageReturn
    }

    /// A blank line: dispatches the event if it had a field.
    private mutating func eventEnded(now: Int64) {
        guard eventHasField else { return }
        eventCount += 1
        // Wrapping subtraction: a caller's clock cannot make the tap trap.
        if let last = lastEventAt, now &- last > maxGap { maxGap = now &- last }
        lastEventAt = now
        if eventHasData {
            let contentBefore = reader.contentDocuments
            reader.endDocument()
            if firstContentEventAt == nil && reader.contentDocuments > contentBefore { firstContentEventAt = now }
        }
        eventHasField = false
        eventHasData = false
    }
}
