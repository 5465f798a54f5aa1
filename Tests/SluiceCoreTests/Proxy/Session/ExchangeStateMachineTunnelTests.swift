import Testing

@testable import SluiceCore

/// The tunnel rows: only a WebSocket upgrade the request asked for, sent whole, opens a tunnel; any other 101 is a
/// 502; a non-101 answer keeps the connection HTTP; an open tunnel ends on either side's close (cleanly or not),
/// on sluice's own deadlines (close frames to both sides), and never carries HTTP again.
extension ExchangeStateMachineTests {
    static let notWebSocket = ProxyError.badResponse("upstream switched to a protocol other than the WebSocket requested")

    /// An upgrade request accepted, its head sent, the 101 accepted and queued: an open tunnel.
    static var openTunnel: [(Input, Action)] {
        [(.bytes, .none), (.head(), .none), (.webSocketUpgrade, .none), (.accepted, .connect(attempt: 1, poolAllowed: true)),
         (.headSent, .none), (.switchingProtocols(webSocket: true), .openTunnel), (.tunnelOpened, .none)]
    }

    static var tunnelOpening: [Row] {
        [
            Row(name: "an upgrade answered 101 websocket: the tunnel opens", steps: openTunnel, phase: .tunnel, closeAfterResponse: true),
            Row(name: "a 101 nobody asked for stays a 502", steps: request() + [
                (.headSent, .none), (.switchingProtocols(webSocket: true), .respond(bad, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
            Row(name: "a 101 to another protocol (h2c) after a WebSocket upgrade: 502, no tunnel", steps: [
                (.bytes, .none), (.head(), .none), (.webSocketUpgrade, .none), (.accepted, .connect(attempt: 1, poolAllowed: true)),
                (.headSent, .none), (.switchingProtocols(webSocket: false), .respond(bad, close: false, dropUnsentRequest: false)),
            ], phase: .exchange),
            Row(name: "a 101 before the upgrade request went out whole: 502", steps: [
                (.bytes, .none), (.head(), .none), (.webSocketUpgrade, .none), (.accepted, .connect(attempt: 1, poolAllowed: true)),
                (.switchingProtocols(webSocket: true), .respond(bad, close: false, dropUnsentRequest: false)),
            ], phase: .exchange),
            Row(name: "a non-101 answer to an upgrade is an ordinary response; the connection stays HTTP", steps: [
                (.bytes, .none), (.head(), .none), (.webSocketUpgrade, .none), (.accepted, .connect(attempt: 1, poolAllowed: true)),
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
                (.bytes, .none), (.head(), .none), (.accepted, .connect(attempt: 1, poolAllowed: true)),
                (.headSent, .none), (.switchingProtocols(webSocket: true), .respond(bad, close: false, dropUnsentRequest: false)),
            ], phase: .exchange),
            Row(name: "an interim 100 before the 101 is relayed, the tunnel opens after it", steps: [
                (.bytes, .none), (.head(), .none), (.webSocketUpgrade, .none), (.accepted, .connect(attempt: 1, poolAllowed: true)),
                (.headSent, .none), (.interim, .forwardInterim(relay: true)), (.switchingProtocols(webSocket: true), .openTunnel),
                (.tunnelOpened, .none),
            ], phase: .tunnel),
            Row(name: "a retried upgrade opens its tunnel on the second server", steps: [
                (.bytes, .none), (.head(), .none), (.webSocketUpgrade, .none), (.accepted, .connect(attempt: 1, poolAllowed: true)),
                (.headSent, .none), (.final(retryStatus: 503), .retry(attempt: 2, after: unavailable, reason: .status(503))),
                (.headSent, .none), (.switchingProtocols(webSocket: true), .openTunnel), (.tunnelOpened, .none),
            ], phase: .tunnel),
        ]
    }

    static var tunnelEnds: [Row] {
        [
            Row(name: "the client closes: its bytes go up, both close", steps: openTunnel + [
                (.clientEOF, .tunnelClientClosed), (.clientEOF, .none),
            ], phase: .tunnel),
            Row(name: "the client hangs up with nothing left to read: as a close", steps: openTunnel + [
                (.clientHungUp(pending: true), .none), (.clientHungUp(pending: false), .tunnelClientClosed),
            ], phase: .tunnel),
            Row(name: "the upstream closes: what it sent goes out, then the connection ends (never HTTP again)", steps: openTunnel + [
                (.tunnelUpstreamEnded(), .tunnelUpstreamClosed), (.flushed(), .finish(linger: true)),
            ], phase: .lingering),
            Row(name: "the upstream resets: both cut now", steps: openTunnel + [
                (.tunnelUpstreamEnded(failure: "ECONNRESET"), .abort(reason: "ECONNRESET", end: .upstreamAbort)), (.flushed(), .close),
            ], phase: .tunnel),
            Row(name: "a write to the client fails: cut", steps: openTunnel + [
                (.clientWriteFailed, .abort(reason: "client write failed: EPIPE", end: .clientAbort)),
            ], phase: .tunnel),
            Row(name: "the client stops reading: client_write cuts it", steps: openTunnel + [
                (.deadline(.clientWrite), .abort(reason: timeout(.clientWrite).message, end: .clientWriteTimeout)),
            ], phase: .tunnel),
            Row(name: "tunnel_idle: sluice closes both sides with close frames", steps: openTunnel + [
                (.deadline(.tunnelIdle), .closeTunnel(reason: timeout(.tunnelIdle).message, end: .tunnelIdleTimeout)),
                (.deadline(.tunnelIdle), .close),
            ], phase: .tunnel),
            Row(name: "drain: the tunnel runs on until the deadline, then going-away frames to both", steps: openTunnel + [
                (.drain(pending: false), .none), (.flushed(draining: true), .none),
                (.shutDown, .closeTunnel(reason: "sluice is shutting down", end: .drain)),
            ], phase: .tunnel),
            Row(name: "bytes flushed while the tunnel is open end nothing", steps: openTunnel + [
                (.flushed(), .none), (.flushed(draining: true), .none),
            ], phase: .tunnel),
            Row(name: "an upstream end after the client's is ignored", steps: openTunnel + [
                (.clientEOF, .tunnelClientClosed), (.tunnelUpstreamEnded(), .none), (.tunnelUpstreamEnded(failure: "x"), .none),
            ], phase: .tunnel),
            Row(name: "stopping after the upstream closed (output still queued): close", steps: openTunnel + [
                (.tunnelUpstreamEnded(), .tunnelUpstreamClosed), (.shutDown, .close),
            ], phase: .tunnel),
        ]
    }

    @Test func onlyARequestedWebSocketUpgradeOpensATunnel() { Self.check(Self.tunnelOpening) }
    @Test func aTunnelEndsOnEitherSideAndOnSluicesDeadlines() { Self.check(Self.tunnelEnds) }

    @Test func anUpgradeWithABodyOrFromHTTP10IsNeverTunnelled() {
        // The session refuses an upgrade with a body before asking; asking anyway is a bug in the shell.
        var machine = Machine()
        _ = Input.bytes.apply(&machine)
        _ = Input.head().apply(&machine)
        #expect(!machine.tunnelRequested)
        machine.requestIsWebSocketUpgrade()
        #expect(machine.tunnelRequested)
        _ = Input.accepted.apply(&machine)
        _ = Input.headSent.apply(&machine)
        _ = Input.final().apply(&machine)
        _ = Input.headQueued.apply(&machine)
        _ = Input.ended().apply(&machine)
        _ = Self.finished.0.apply(&machine)
        _ = Input.bytes.apply(&machine)
        _ = Input.head().apply(&machine)
        #expect(!machine.tunnelRequested, "a next request starts without the last one's upgrade")
    }
}
