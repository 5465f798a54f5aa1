/// The response half of `inject_usage`: the body's payload, out of the upstream's framing, goes through
/// `UsageEventFilter` event by event; events it forwards go to the client re-framed (one chunk each, or plain for an
/// HTTP/1.0 client), the usage-only event sluice asked for is dropped. The tap sees every byte, the dropped event
/// included, so the record and the token budget get the backend's usage. An event is held only until its blank line
/// (LLM servers write one event per write, so this costs no latency in practice); anything that does not parse as
/// the usage chunk is forwarded unchanged.
extension ClientSession {
    /// Room kept in `clientOut` for a chunk's size line and CRLF and the last chunk.
    private static let framingRoom = 32
    /// How much a piece can grow on its way out: every event becomes a chunk with up to 9 bytes of framing
    /// (5 hex digits, two CRLFs), and the shortest event is one byte (a blank line), so at most tenfold.
    private static let worstGrowth = 10

    /// Whether the response head says `text/event-stream`: only event streams are filtered.
    static func isEventStream(_ head: ResponseHead, _ source: Span<UInt8>) -> Bool {
        guard let field = HeadRewriter.field(named: "content-type", in: head.fields, source) else { return false }
        return SluiceCore.isEventStream(source.extracting(field.value))
    }

    /// Moves filtered payload from `upstreamIn` to `clientOut`; returns false when it has to wait (no input, or the
    /// client queue is full).
    func relayFiltered(_ buffer: ByteBuffer, input: FilteredInput, rechunk: Bool) -> Bool {
        let out = takeBuffer(&clientOut)
        let held = usageHeld?.readableCount ?? 0
        if out.writableCount < held + 2 * Self.framingRoom { out.compact() }
        // A piece is taken whole (the chunk decoder has moved past it), so it is cut to what fits at worst.
        let room = (out.writableCount - held - Self.framingRoom) / Self.worstGrowth
        guard room > 0 else { return false }
        let available = buffer.readableCount
        switch input {
        case .chunked:
            guard available > 0, let observer = responseObserver else { return false }
            let step = buffer.withReadableSpan(from: 0, to: min(available, room)) { observer.chunks.next($0) }
            switch step {
            case .framing(let count):
                buffer.consume(count)
            case .data(let count):
                filterPayload(buffer, count, into: out, rechunk: rechunk)
            case .end(let count):
                buffer.consume(count)
                endFiltered(out, rechunk: rechunk)
            case .failed(let error, _):
                carryOut(machine.responseBodyFailed("invalid chunked framing from upstream: \(error.message)"))
                return false
            }
        case .contentLength(let remaining):
            guard available > 0 else { return false }
            let taken = Int(min(Int64(min(available, room)), remaining))
            filterPayload(buffer, taken, into: out, rechunk: rechunk)
            if Int64(taken) == remaining {
                endFiltered(out, rechunk: rechunk)
            } else {
                responseBody = .filtered(input: .contentLength(remaining: remaining - Int64(taken)), rechunk: rechunk)
            }
        case .untilClose:
            guard available > 0 else { return false }
            filterPayload(buffer, min(available, room), into: out, rechunk: rechunk)
        case .closed:
            if available > 0 {
                filterPayload(buffer, min(available, room), into: out, rechunk: rechunk)
            } else {
                endFiltered(out, rechunk: rechunk)
            }
        }
        return true
    }

    /// The upstream closed a close-delimited filtered body: what is still queued is its end.
    func filteredUpstreamClosed(rechunk: Bool) {
        closeUpstream()
        responseBody = .filtered(input: .closed, rechunk: rechunk)
        _ = takeBuffer(&upstreamIn)
        processResponseBytes()
    }

    /// Feeds `buffer[0..<count]` (payload) to the tap and the filter, emits or holds each event, and consumes it all;
    /// `count` was cut so that its worst growth fits `clientOut`.
    private func filterPayload(_ buffer: ByteBuffer, _ count: Int, into out: ByteBuffer, rechunk: Bool) {
        guard let filter = usageFilter else { preconditionFailure("a filtered body without its filter") }
        var offset = 0
        while offset < count {
            let step = buffer.withReadableSpan(from: offset, to: count) { filter.events.next($0) }
            switch step {
            case .needMore:
                observeResponse(buffer, offset..<count)
                _ = takeBuffer(&usageHeld).append(from: buffer, offset..<count)
                offset = count
            case .complete(let consumed, let drop):
                observeResponse(buffer, offset..<(offset + consumed))
                if drop {
                    usageHeld?.clear()
                } else {
                    emit(buffer, offset..<(offset + consumed), into: out, rechunk: rechunk)
                }
                offset += consumed
            case .forward:
                observeResponse(buffer, offset..<count)
                emit(buffer, offset..<count, into: out, rechunk: rechunk)
                offset = count
            }
        }
        buffer.consume(count)
        releaseIfEmpty(&usageHeld)
    }

    /// Writes the held bytes and `buffer[range]` to the client as one piece (one chunk when re-chunking).
    private func emit(_ buffer: ByteBuffer, _ range: Range<Int>, into out: ByteBuffer, rechunk: Bool) {
        let held = usageHeld?.readableCount ?? 0
        let total = held + range.count
        guard total > 0 else { return }
        if rechunk { Self.appendChunkSize(total, to: out) }
        if let usageHeld, held > 0 {
            out.append(from: usageHeld, 0..<held)
            usageHeld.clear()
        }
        if !range.isEmpty { out.append(from: buffer, range) }
        if rechunk { out.append("\r\n") }
    }

    /// The body ended: an unfinished event is forwarded (only a complete usage chunk is ever dropped), then the last chunk.
    private func endFiltered(_ out: ByteBuffer, rechunk: Bool) {
        if usageFilter?.events.finish() ?? false {
            usageHeld?.clear()
        } else {
            emit(out, 0..<0, into: out, rechunk: rechunk)
        }
        releaseIfEmpty(&usageHeld)
        if rechunk { out.append("0\r\n\r\n") }
        responseFinished()
    }

    /// `size` in hex and CRLF, a chunk's size line (RFC 9112 §7.1).
    private static func appendChunkSize(_ size: Int, to out: ByteBuffer) {
        let digits: StaticString = "0123456789abcdef"
        var shift = (Int.bitWidth - size.leadingZeroBitCount + 3) / 4 * 4 - 4
        while shift >= 0 {
            out.append(byte: digits.utf8Start[(size >> shift) & 0xF])
            shift -= 4
        }
        out.append("\r\n")
    }
}

/// The usage filter's state, made once per connection that injects usage (`ClientSession.usageFilter`).
final class UsageFilterState {
    var events = UsageEventFilter()
}
