/// Response bodies sluice need not see go from the upstream socket to the client socket through a pipe
/// (`SplicePipe`), never through user space. Only bodies whose bytes matter to nobody qualify: framed by
/// Content-Length or by the close, on plain connections both sides, not read by the tap (not an event stream or JSON,
/// no capture) and not filtered. Everything else (heads, event streams, chunked bodies, TLS) is copied as before.
/// The pipe is the body's queue: the upstream is read only while the pipe has room, so a slow client pauses its
/// upstream exactly as the buffers' watermarks do.
extension ClientSession {
    /// Whether the next upstream read of this body goes through the pipe: the body qualifies and nothing of it is
    /// queued in the buffers (those bytes go first, so the order on the wire holds).
    var splicesNow: Bool {
        guard spliceAllowed else { return false }
        switch response {
        case .body(.contentLength), .body(.untilClose): break
        default: return false
        }
        return responseSendEnd == 0 && (upstreamIn?.readableCount ?? 0) == 0 && (clientOut?.readableCount ?? 0) == 0
    }

    /// Decided once the response head is accepted.
    func decideSplice(tapped: Bool, upstreamTLS: Bool) {
        spliceAllowed = !tapped && captureResponseBytes == 0 && !upstreamTLS && clientTransport.tls == nil
    }

    /// Moves what the upstream has into the pipe (as much as the pipe and the body's length allow); returns true if
    /// it moved bytes. Same bookkeeping as a read: the body's remaining length, the end, timers and counters.
    func spliceFromUpstream(_ connection: UpstreamConnection) -> Bool {
        guard let pipe = splice ?? loop.splicePipes.take() else {
            spliceAllowed = false  // no descriptors for a pipe now: this body is copied
            return false
        }
        splice = pipe
        var want = pipe.room
        if case .body(.contentLength(let remaining)) = response { want = Int(min(Int64(want), remaining)) }
        guard want > 0 else { return false }
        let result: IOResult<Int>
        do { result = try pipe.fill(from: connection.rawFD, count: want) } catch {
            if error.isUnsupported && pipe.queued == 0 {
                spliceAllowed = false  // a socket that cannot splice: this body is copied
                return true
            }
            upstreamEndOfStream(error: error)
            return false
        }
        switch result {
        case .wouldBlock:
            // EAGAIN says the socket is empty or the pipe's slots are full, and only the first is a reason to wait for
            // the next readiness edge: with bytes in the pipe the read is tried again after they drain.
            if pipe.queued == 0 { connection.readable = false }
            return false
        case .processed(0):
            connection.readable = false
            upstreamEndOfStream(error: nil)
            return false
        case .processed(let count):
            // A short splice does not mean the socket is drained (the pipe may have run out of slots), so the
            // connection stays readable until a splice finds it empty.
            times.lastUpstreamRead = loop.now
            loop.metrics.addUpstreamBytesReceived(count)
            if case .body(.contentLength(let remaining)) = response {
                if Int64(count) == remaining {
                    noteBytesAfterSplicedBody(connection)
                    responseFinished()
                } else {
                    responseBody = .contentLength(remaining: remaining - Int64(count))
                }
            }
            updateUpstreamPause()
            return true
        }
    }

    /// A spliced body is read to its exact length, so bytes the server sent after it stay in the socket where no
    /// read sees them; one peek finds them, and such a connection is not reused (its next response would be them).
    private func noteBytesAfterSplicedBody(_ connection: UpstreamConnection) {
        switch try? Syscall.peekByte(connection.rawFD) {
        case .processed(1): machine.upstreamSentBytesAfterResponse()
        case .processed: connection.hangup = true
        case .wouldBlock: break
        case nil: connection.hangup = true
        }
    }

    /// Moves the pipe's bytes to the client; returns true if it wrote. Called by `flushToClient` once the buffers
    /// are empty.
    func flushSplice(_ pipe: SplicePipe) -> Bool {
        let result: IOResult<Int>
        do { result = try pipe.drain(to: clientFD) } catch {
            carryOut(machine.clientWriteFailed(error.description))
            return false
        }
        guard case .processed(let written) = result, written > 0 else {
            clientWritable = false
            return false
        }
        times.lastClientWriteProgress = loop.now
        record.responseBytes += Int64(written)
        loop.metrics.addClientBytesSent(written)
        if pipe.queued > 0 { clientWritable = false }
        updateUpstreamPause()
        finishIfFlushed()
        return true
    }

    /// The exchange is over: an empty pipe goes back to the loop, one holding bytes of a cut-short body is closed.
    func releaseSplice() {
        spliceAllowed = false
        guard let pipe = splice else { return }
        splice = nil
        loop.splicePipes.give(pipe)
    }
}
