/// A WebSocket tunnel: after the upstream's 101 the exchange relays bytes both ways through the same buffers,
/// watermarks and loop turn as a stream (client bytes queue in `clientIn` for the upstream, upstream bytes in
/// `upstreamIn` for the client), untouched; a frame tracker per direction counts messages for the record, finds the
/// frame boundaries a closing frame may follow, and reads OpenAI Realtime usage from the server's text messages.
extension ClientSession {
    /// The route allows WebSocket and the request can be one (RFC 6455 §4.1: a bodiless HTTP/1.1 GET): it goes
    /// upstream with its Upgrade field. Returns false when it was refused (an upgrade request with a body).
    func acceptWebSocketUpgrade(_ head: RequestHead) -> Bool {
        guard head.upgradesToWebSocket, settings.routes[routeIndex].websocket, head.method == .get, head.version == .http1_1
        else { return true }
        guard requestIsComplete else {
            rejectRequest(.upgradeWithBody)
            return false
        }
        machine.requestIsWebSocketUpgrade()
        return true
    }

    /// The upstream accepted the upgrade: its 101 goes to the client (with `Connection: Upgrade` and `Upgrade:
    /// websocket` written from the parsed head) and the tunnel opens. Bytes either side sent after its head are the
    /// first tunnel bytes. Returns false when the head waits for room or the exchange ended.
    func openTunnel(headLength: Int, buffer: ByteBuffer, parsers: HeadParsers, out: ByteBuffer, queuedBefore: Int) -> Bool {
        let head = parsers.response.head
        if !waitingForHeadRoom { serverAnswered(status: head.status) }
        stopKeepingForRetry()
        let written = buffer.withReadableSpan {
            HeadRewriter.writeResponseHead(into: out, source: $0, head: head, requestID: nil, close: false, upgrade: true)
        }
        guard written != nil else { return headDidNotFit(out, queuedBefore: queuedBefore) }
        dropUpstreamHead()
        machine.tunnelOpened()
        record.status = head.status
        record.responseHeadAt = loop.nowMicroseconds
        buffer.consume(headLength)
        releaseParsers()
        responseBody = .tunnel
        tunnel = TunnelRelay(openedAt: loop.nowMicroseconds)
        times.lastTunnelTraffic = loop.now
        loop.metrics.addActiveTunnels(1)
        frameTunnelInput()
        return true
    }

    /// Client bytes read into `clientIn` past the last framed one go to the upstream as they are.
    func frameTunnelInput() {
        guard let tunnel, let buffer = clientIn else { return }
        let end = buffer.readableCount
        guard end > requestSendEnd else { return }
        buffer.withReadableSpan(from: requestSendEnd, to: end) { tunnel.fromClient.scan($0) }
        if tunnel.closedFirstByClient == nil, tunnel.fromClient.closeCode != nil { tunnel.closedFirstByClient = true }
        record.requestBytes += Int64(end - requestSendEnd)
        requestSendEnd = end
        times.lastTunnelTraffic = loop.now
        updateClientPause()
    }

    /// Upstream bytes read into `upstreamIn` past the last framed one go to the client as they are.
    func relayTunnelOutput(_ buffer: ByteBuffer) {
        guard let tunnel else { return }
        let end = buffer.readableCount
        guard end > responseSendEnd else { return }
        let messagesBefore = tunnel.fromServer.messages
        buffer.withReadableSpan(from: responseSendEnd, to: end) { tunnel.fromServer.scan($0) }
        if tunnel.closedFirstByClient == nil, tunnel.fromServer.closeCode != nil { tunnel.closedFirstByClient = false }
        responseSendEnd = end
        times.lastTunnelTraffic = loop.now
        if messagesBefore == 0, tunnel.fromServer.messages > 0 { tunnel.firstServerMessageAt = loop.nowMicroseconds }
    }

    /// Bytes of the tunnel written to the upstream (`toUpstream`) or to the client, for the record and the metrics.
    func countTunnelBytes(_ count: Int, toUpstream: Bool) {
        guard count > 0, let tunnel else { return }
        if toUpstream {
            tunnel.clientBytes += Int64(count)
        } else {
            tunnel.upstreamBytes += Int64(count)
        }
        loop.metrics.addTunnelBytes(count, toUpstream: toUpstream)
    }

    /// Which side ended a tunnel that closed cleanly: the one whose close frame came first (RFC 6455 §7: the server
    /// closes TCP first, even when the client began the closing handshake), else the one that closed TCP.
    func tunnelEnd(closedByClient: Bool) -> CompletionRecord.End {
        (tunnel?.closedFirstByClient ?? closedByClient) ? .tunnelClientClosed : .tunnelUpstreamClosed
    }

    /// The client closed its side: what it sent before (its close frame, typically) goes to the upstream in this
    /// turn, then both connections close.
    func tunnelClientClosed() {
        record.end = tunnelEnd(closedByClient: true)
        _ = flushToUpstream()
        close()
    }

    /// The upstream closed its side: its connection closes now; the client gets what is queued, then its connection
    /// ends (`outputFlushed`).
    func tunnelUpstreamClosed() {
        record.end = tunnelEnd(closedByClient: false)
        closeUpstream()
        finishIfFlushed()
    }

    /// sluice ends the tunnel (drain deadline, `tunnel_idle`): each direction's queued bytes are cut after the last
    /// whole frame and a close frame (1001, going away) follows, masked toward the upstream as a client's must be
    /// (RFC 6455 §5.3); both are written in this turn, then both connections close. A direction whose queued bytes
    /// begin mid-frame (part of the frame already went out), or whose framing was lost, gets no close frame: one
    /// inserted there would corrupt the frame under way.
    func closeTunnelGoingAway(reason: String, end: CompletionRecord.End) {
        record.end = end
        record.error = reason
        if let tunnel {
            appendGoingAway(to: &upstreamIn, sendEnd: &responseSendEnd, frames: tunnel.fromServer, maskKey: nil)
            appendGoingAway(to: &clientIn, sendEnd: &requestSendEnd, frames: tunnel.fromClient,
                            maskKey: UInt32(truncatingIfNeeded: loop.nextRandom()))
        }
        // The upstream first: once the client's output is out, the aborted exchange closes everything.
        _ = flushToUpstream()
        _ = flushToClient()
        close()
    }

    /// Cuts one direction's unsent bytes (`slot`, holding the stream's last bytes up to the tracker's `position`)
    /// after the last whole frame and appends a close frame 1001. Nothing is appended when the queued bytes begin
    /// inside a frame or the tracker lost the framing.
    private func appendGoingAway(to slot: inout ByteBuffer?, sendEnd: inout Int, frames: WebSocketFrames, maskKey: UInt32?) {
        guard !frames.lost else { return }
        let queued = Int64(slot?.readableCount ?? 0)
        let keep = frames.boundary - (frames.position - queued)
        guard keep >= 0, keep <= queued else { return }
        let buffer = takeBuffer(&slot)
        buffer.truncate(toReadable: Int(keep))
        let frame = WebSocketFrames.closeFrame(code: 1001, reason: "going away", maskKey: maskKey)
        if buffer.writableCount < frame.count { buffer.compact() }
        _ = frame.withUnsafeBufferPointer { buffer.append($0.span) }
        sendEnd = buffer.readableCount
    }

    /// The tunnel's part of the completion record and of the token budget; gives the relay up.
    func concludeTunnel(into line: inout CompletionRecord, usage: inout ObservedUsage) {
        guard let tunnel else { return }
        self.tunnel = nil
        loop.metrics.addActiveTunnels(-1)
        let now = loop.nowMicroseconds
        line.tunnel = CompletionRecord.Tunnel(
            clientBytes: tunnel.clientBytes, upstreamBytes: tunnel.upstreamBytes,
            clientMessages: tunnel.fromClient.messages, upstreamMessages: tunnel.fromServer.messages,
            clientCloseCode: tunnel.fromClient.closeCode.map(Int.init), upstreamCloseCode: tunnel.fromServer.closeCode.map(Int.init),
            firstUpstreamMessageMilliseconds: tunnel.firstServerMessageAt.map { Double($0 - tunnel.openedAt) / 1000 },
            durationMilliseconds: Double(now - tunnel.openedAt) / 1000)
        if let reported = tunnel.fromServer.usage {
            line.usage = reported
            line.usageSource = TokenCharge.Source.reported.rawValue
            usage = ObservedUsage(reported: reported, completionEstimate: 0)
        }
        loop.metrics.countTunnelEnd(line.end)
    }
}

/// What a session keeps while its exchange is a tunnel: made once per tunnel, at the 101.
final class TunnelRelay {
    /// Loop microseconds at the 101.
    let openedAt: Int64
    var fromClient = WebSocketFrames(direction: .fromClient, readsUsage: false)
    var fromServer = WebSocketFrames(direction: .fromServer, readsUsage: true)
    /// Tunnel bytes written to the upstream and to the client.
    var clientBytes: Int64 = 0
    var upstreamBytes: Int64 = 0
    var firstServerMessageAt: Int64?
    /// Whose close frame came first; nil before either sent one.
    var closedFirstByClient: Bool?

    init(openedAt: Int64) {
        self.openedAt = openedAt
    }
}
