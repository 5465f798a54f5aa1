/// The vocabulary of `ExchangeStateMachine`: where the request and response are, the facts its inputs take, and the
/// actions it returns.
extension ExchangeStateMachine {
    /// How far the current request has arrived from the client.
    enum RequestProgress: Equatable {
        /// The head is parsed and body bytes are still to come.
        case receivingBody
        /// The body reached its framed end (or there was none).
        case receivedWhole
        /// The rest of the request will not be forwarded (refused, or the upstream stopped taking it): whatever
        /// arrives after it cannot be told apart from body, so the connection closes after the response.
        case dropped
    }

    /// Where the response is.
    enum ResponseProgress: Equatable {
        /// Waiting for the (final) response head.
        case awaitingHead
        /// Relaying the body.
        case body
        /// The last body byte is queued to the client (or sluice queued its own response).
        case complete
        /// Cut short: what was queued goes out, then the client is closed without a clean end.
        case aborted
    }

    /// What the session does next. Associated values are named so a table test reads like the transition.
    enum Action: Equatable {
        case none
        /// Connect to the route's upstream, taking an idle pooled connection when `poolAllowed`.
        case connect(attempt: Int, poolAllowed: Bool)
        /// The attempt failed before any of its response reached the client (`reason`; `after` describes it) and
        /// the request goes to another server of the pool: close this connection (never pooled), stop counting the
        /// stream on its server, discard what it answered, and send the kept request to the next server.
        case retry(attempt: Int, after: String, reason: RetryCondition)
        /// A reused connection closed before answering: the kept head goes again on a new connection.
        case replay
        /// Answer with sluice's own response; close the connection after it when `close`; `dropUnsentRequest`:
        /// forget request bytes not yet forwarded (the rest of a body, pipelined requests).
        case respond(ProxyError, close: Bool, dropUnsentRequest: Bool)
        /// Relay the final response head, saying `Connection: close` when `close`.
        case forward(close: Bool)
        /// Relay an interim (1xx) head, or skip it for an HTTP/1.0 client (RFC 9110 §15.2).
        case forwardInterim(relay: Bool)
        /// The upstream stopped taking the request: send it nothing more and read on, to relay an early answer
        /// or see the close; the request's unsent bytes are dropped.
        case stopSendingRequest
        /// The upstream stopped taking the request while a retry may still send all of it to another server: send
        /// this one nothing more and read on, keeping every byte (its answer decides: a retry, or a forward that
        /// drops them then).
        case pauseSendingRequest
        /// A close-delimited response body ended with the upstream's close.
        case endResponseAtClose
        /// The response ended: give the upstream connection back to the pool.
        case reuseUpstream
        /// The response ended (or the exchange failed): close the upstream connection.
        case closeUpstream
        /// The response already began: send what was received, then close without the body's clean end.
        case truncate(reason: String, end: CompletionRecord.End)
        /// Cut the exchange now: close the upstream (stopping a paid generation) and the client.
        case abort(reason: String, end: CompletionRecord.End)
        /// The exchange is over and written: drop `discardingBodyBytes` framed body bytes the upstream never
        /// took, then parse whatever follows as the next request.
        case nextRequest(discardingBodyBytes: Int)
        /// The exchange is over and written, and the connection ends: shut the write side and discard input
        /// briefly (lingering close) so the response is not reset away.
        case finish(linger: Bool)
        /// Close the connection now.
        case close
        /// Draining found a request waiting on an idle connection: serve it.
        case serve
        /// The upstream accepted the WebSocket upgrade: relay its 101 head, then relay bytes both ways untouched.
        case openTunnel
        /// The client closed its side of a tunnel: what it sent before goes to the upstream in this turn, then both
        /// connections close (the upstream's end of a paid session comes at once).
        case tunnelClientClosed
        /// The upstream closed its side of a tunnel: its connection closes; what it sent still goes to the client,
        /// then the client's connection closes too.
        case tunnelUpstreamClosed
        /// sluice ends a tunnel (drain deadline, `tunnel_idle`): each direction's queued bytes are cut at the last
        /// whole frame, a WebSocket close frame (1001, going away) follows to each side in this turn, then both close.
        case closeTunnel(reason: String, end: CompletionRecord.End)
    }

    /// Facts about an upstream that closed before its response head, for the replay decision.
    struct ReplayFacts: Equatable {
        var connectionReused: Bool
        var bodyBytesSent: Int64
        var responseBytesRead: Bool
        var headKept: Bool
    }

    /// What `responseHeadParsed` needs of a response head.
    struct ResponseHeadFacts: Equatable {
        enum Kind: Equatable { case interim, switchingProtocols, final }
        var kind: Kind
        var serverKeepsAlive = true
        var upstreamEndsAtClose = false
        var clientEndsAtClose = false
        /// The status of a final head the pool's `retry_on` lists, when a retry is allowed (tries and budget left,
        /// the request replayable): the response is discarded and the request goes to another server.
        var retryStatus: Int?
        /// A 101's `Connection: upgrade` + `Upgrade: websocket`.
        var upgradesToWebSocket = false

        static let interim = ResponseHeadFacts(kind: .interim)
        static func switchingProtocols(webSocket: Bool) -> ResponseHeadFacts {
            ResponseHeadFacts(kind: .switchingProtocols, upgradesToWebSocket: webSocket)
        }
    }
}
