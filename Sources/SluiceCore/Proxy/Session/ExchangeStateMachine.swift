/// Every decision about a client connection and its exchange, as a value: one mutating method per input, each
/// returning the `Action` the session carries out (swift-nio's protocol state machines; STYLE habit 1). No sockets,
/// no clock, no buffers: the session reports what happened (a head parsed, a connect failed, the upstream closed,
/// a deadline passed) with the few facts the decision needs, and does the IO the action names.
///
/// The invariants the request-desync defects broke are properties of this type:
/// - an upstream connection is reused only when the whole request was written and the response ended cleanly
///   (`responseEnded`, through `ExchangeReuse.mayPoolUpstream`);
/// - a request is replayed only when idempotent, nothing of its body went out and nothing of its response was read
///   (`upstreamClosed`, through `ExchangeReuse.mayReplay`);
/// - body bytes the upstream never took are discarded or the connection closes, never parsed as a request
///   (`outputFlushed`, through `ExchangeReuse.clientNext`).
struct ExchangeStateMachine {
    private(set) var phase: ConnectionPhase = .idle
    private(set) var request: RequestProgress = .receivedWhole
    private(set) var response: ResponseProgress = .awaitingHead
    private(set) var method: HTTPMethod = .get
    private(set) var clientIsHTTP10 = false
    /// A response byte (or head) was queued to the client for this exchange.
    private(set) var responseStarted = false
    /// The connection closes once this exchange's response is out.
    private(set) var closeAfterResponse = false
    /// Nothing the upstream did rules out another request on its connection.
    private(set) var upstreamReusable = true
    /// The rewritten head went out whole on the current upstream connection.
    private(set) var requestHeadWritten = false
    private(set) var replayed = false
    /// Servers this exchange was sent to: 1, plus one per retry.
    private(set) var attempts = 1
    /// A final response head was accepted for forwarding (it may still wait for room in the client queue).
    private(set) var finalHeadAccepted = false
    /// The upstream stopped taking the request and its unsent bytes were kept for a retry (`pauseSendingRequest`):
    /// a forwarded answer drops them and closes the connection after the response.
    private(set) var requestSendingStopped = false
    /// The response body ends with the upstream's close.
    private(set) var bodyEndsAtUpstreamClose = false
    /// Requests answered on this connection before the current one.
    private(set) var requestsServed = 0
    /// The request was forwarded as a WebSocket upgrade: a 101 accepting it opens a tunnel.
    private(set) var tunnelRequested = false

    var requestStillArriving: Bool { request == .receivingBody }

    // MARK: - Client inputs

    /// The first byte of a request arrived on an idle connection.
    mutating func requestBegan() {
        guard phase == .idle else { illegal("request began", "phase \(phase)") }
        phase = .readingHead
    }

    /// A request head was parsed; `draining`: the process is shutting down, so this is the connection's last.
    mutating func requestHeadParsed(method: HTTPMethod, keepAlive: Bool, http10: Bool, hasBody: Bool, draining: Bool) {
        guard phase == .readingHead else { illegal("request head parsed", "phase \(phase)") }
        phase = .exchange
        self.method = method
        clientIsHTTP10 = http10
        request = hasBody ? .receivingBody : .receivedWhole
        response = .awaitingHead
        responseStarted = false
        closeAfterResponse = !keepAlive || http10 || draining
        upstreamReusable = true
        requestHeadWritten = false
        replayed = false
        attempts = 1
        finalHeadAccepted = false
        requestSendingStopped = false
        bodyEndsAtUpstreamClose = false
        tunnelRequested = false
    }

    /// The request goes upstream as a WebSocket upgrade (its route allows it; a bodiless HTTP/1.1 GET): a 101
    /// accepting it opens a tunnel.
    mutating func requestIsWebSocketUpgrade() {
        guard phase == .exchange, request == .receivedWhole, !clientIsHTTP10 else { illegal("WebSocket upgrade", "request \(request)") }
        tunnelRequested = true
    }

    /// The request is refused before it is forwarded (malformed, no route, too large, CONNECT, a head timeout): it
    /// is answered and the connection closes, since the rest of its bytes cannot be trusted to frame a next request.
    mutating func requestRejected(_ error: ProxyError) -> Action {
        guard phase != .closed, phase != .lingering else { illegal("request rejected", "phase \(phase)") }
        request = .dropped
        return respond(error, close: true, dropUnsentRequest: true)
    }

    /// The verdict of the route's rate limits. A rejected request's body is never forwarded; bodiless requests
    /// pipelined behind it stay and are answered in order once the 429 is out.
    mutating func admission(_ verdict: Admission) -> Action {
        guard phase == .exchange, response == .awaitingHead else { illegal("admission verdict", "phase \(phase), response \(response)") }
        switch verdict {
        case .admitted:
            return .none
        case .rejected(let error):
            let close = request == .receivingBody || closeAfterResponse
            if close { request = .dropped }
            return respond(error, close: close, dropUnsentRequest: close)
        }
    }

    /// A verdict on a request's admission.
    enum Admission: Equatable {
        case admitted
        case rejected(ProxyError)
    }

    /// The request was accepted (routed, admitted, its upstream head written): connect, unless the body's framing
    /// already failed and an answer is queued.
    mutating func requestAccepted() -> Action {
        guard phase == .exchange, response == .awaitingHead else { return .none }
        return .connect(attempt: 1, poolAllowed: true)
    }

    /// The request body reached its framed end.
    mutating func requestBodyReceived() {
        guard phase == .exchange else { illegal("request body received", "phase \(phase)") }
        if request == .receivingBody { request = .receivedWhole }
    }

    /// The request body turned out bad (framing, size, a stall) after forwarding began: the upstream gets nothing
    /// more of it; a response already under way is cut, otherwise the client gets the error.
    mutating func requestBodyFailed(_ error: ProxyError) -> Action {
        guard phase == .exchange else { illegal("request body failed", "phase \(phase)") }
        upstreamReusable = false
        request = .dropped
        guard !responseStarted else { return abort(error.message, error.end) }
        return respond(error, close: true, dropUnsentRequest: true)
    }

    /// The client's read side reached EOF.
    mutating func clientEndOfStream() -> Action {
        switch phase {
        case .idle, .readingHead, .lingering: return close()
        case .exchange: return abort("client closed the connection", .clientAbort)
        case .tunnel: return tunnelSideClosed(byClient: true)
        case .closed: return .none
        }
    }

    /// The client hung up (EPOLLHUP/ERR). `inputPending`: bytes may still be read before the EOF. A client gone while
    /// a response is owed cancels the exchange, which is what stops a paid generation (nginx treats EOF the same way).
    mutating func clientHungUp(inputPending: Bool) -> Action {
        switch phase {
        case .exchange:
            guard !inputPending || request != .receivingBody else { return .none }
            return abort("client closed the connection", .clientAbort)
        case .tunnel:
            return inputPending ? .none : tunnelSideClosed(byClient: true)
        case .idle, .readingHead:
            return inputPending ? .none : close()
        case .lingering, .closed:
            return .none
        }
    }

    /// Writing to the client failed.
    mutating func clientWriteFailed(_ reason: String) -> Action {
        switch phase {
        case .lingering: return close()
        case .closed: return .none
        case .idle, .readingHead, .exchange, .tunnel: return abort("client write failed: \(reason)", .clientAbort)
        }
    }

    /// A plain-HTTP request reached a TLS listener: it was answered in one write, and the connection lingers out.
    mutating func answeredPlainHTTPOnTLS() -> Action {
        finishConnection(linger: true)
    }

    /// A connection accepted over `max_connections` is refused with `error` and closed.
    mutating func refusedAtAccept(_ error: ProxyError) -> Action {
        guard phase == .idle else { illegal("refused at accept", "phase \(phase)") }
        request = .dropped
        return respond(error, close: true, dropUnsentRequest: false)
    }

    /// The process is draining. `inputPending`: an idle connection has request bytes waiting (sent right after
    /// accept, or after the last read), so closing it would leave that client an empty EOF and no record.
    mutating func drain(inputPending: Bool) -> Action {
        switch phase {
        case .idle: return inputPending ? .serve : close()
        case .exchange:
            closeAfterResponse = true
            return .none
        // A tunnel runs on until the drain deadline (`shutDown`), as a stream does.
        case .tunnel, .readingHead, .lingering, .closed: return .none
        }
    }

    /// The process stops now (the drain deadline passed, or a second signal): an exchange in flight is cut and
    /// recorded as `drain`; any other connection just closes.
    mutating func shutDown() -> Action {
        switch phase {
        case .exchange: return abort("sluice is shutting down", .drain)
        case .tunnel: return closeTunnel("sluice is shutting down", .drain)
        case .idle, .readingHead, .lingering: return close()
        case .closed: return .none
        }
    }

    /// Every queued byte reached the client: an ended exchange finishes, an aborted one closes.
    mutating func outputFlushed(unsentBodyBytes: Int, draining: Bool) -> Action {
        if phase == .tunnel {
            // The upstream closed its side and everything it sent is out: the connection ends (never HTTP again).
            switch response {
            case .complete: return finishConnection(linger: true)
            case .aborted: return close()
            case .awaitingHead, .body: return .none
            }
        }
        guard phase == .exchange else { return .none }
        switch response {
        case .awaitingHead, .body:
            return .none
        case .aborted:
            return close()
        case .complete:
            requestsServed += 1
            let next = ExchangeReuse.clientNext(requestReceivedWhole: request == .receivedWhole,
                                                closeRequested: closeAfterResponse || draining, unsentBodyBytes: unsentBodyBytes)
            switch next {
            case .close: return finishConnection(linger: true)
            case .nextRequest(let discarding):
                phase = .idle
                return .nextRequest(discardingBodyBytes: discarding)
            }
        }
    }

    /// The connection closed (every path ends here).
    mutating func connectionClosed() {
        phase = .closed
    }

    // MARK: - Upstream inputs

    /// Whether the exchange is still at a point a retry may start: nothing of a response reached the client, the
    /// request is still whole (none of it refused or dropped) and no final head was accepted. The session asks
    /// before it spends the retry budget; every retrying input checks it again.
    var mayRetry: Bool {
        phase == .exchange && response == .awaitingHead && !responseStarted && !finalHeadAccepted && request != .dropped
    }

    /// A connect to a server failed or timed out. `retry`: the pool's policy allows another server (`retry_on
    /// connect_error`, retries and budget left, the request replayable); otherwise the client gets `error`.
    mutating func upstreamConnectFailed(_ error: ProxyError, retry: @autoclosure () -> Bool) -> Action {
        guard phase == .exchange else { return .none }
        guard mayRetry, retry() else { return upstreamFailed(error) }
        return retrying(after: error.message, .connectError)
    }

    /// The rewritten request head went out whole on the current upstream connection.
    mutating func requestHeadSent() {
        requestHeadWritten = true
    }

    /// Writing the request to the upstream failed. It may have answered early (a 413, a 503) before closing, so the
    /// read side decides: it relays that response, retries on another server, or sees the close. `retryPossible`:
    /// every byte sent so far is kept, so the request stays whole for a retry; otherwise its unsent bytes are dropped
    /// now and it is never retried (a replay would miss them).
    mutating func upstreamWriteFailed(retryPossible: Bool) -> Action {
        guard phase == .exchange, !requestSendingStopped else { return .none }
        upstreamReusable = false
        if retryPossible && mayRetry {
            requestSendingStopped = true
            return .pauseSendingRequest
        }
        closeAfterResponse = true
        if request != .dropped { request = .dropped }
        return .stopSendingRequest
    }

    /// The upstream failed (connect, TLS, a bad or late response): before any response byte the client gets `error`
    /// as a JSON response; after, the response is truncated so the client can tell.
    mutating func upstreamFailed(_ error: ProxyError) -> Action {
        guard phase == .exchange else { return .none }
        upstreamReusable = false
        guard !responseStarted else { return truncate(error.message, error.end) }
        return respond(error, close: request != .receivedWhole || closeAfterResponse, dropUnsentRequest: false)
    }

    /// A response head was parsed. `interim`: a 1xx; `switchingProtocols`: a 101 (never requested, so a 502).
    /// For a final head: `serverKeepsAlive` (HTTP/1.1 or keep-alive, no `Connection: close`), `hasBody`,
    /// `upstreamEndsAtClose` (close-delimited from the upstream), `clientEndsAtClose` (the client's copy is
    /// delimited by our close: de-chunked for HTTP/1.0, or filtered without re-chunking).
    mutating func responseHeadParsed(_ head: ResponseHeadFacts, badResponse: @autoclosure () -> ProxyError) -> Action {
        guard phase == .exchange, response == .awaitingHead else { illegal("response head", "phase \(phase), response \(response)") }
        switch head.kind {
        case .switchingProtocols:
            // Only a WebSocket upgrade the request asked for, sent whole, switches; any other 101 would open a tunnel
            // the client never asked for (or, for `h2c`, one past the proxy's view), so it stays a bad response.
            guard tunnelRequested, head.upgradesToWebSocket, request == .receivedWhole, requestHeadWritten, !requestSendingStopped
            else { return upstreamFailed(badResponse()) }
            finalHeadAccepted = true
            return .openTunnel
        case .interim:
            return .forwardInterim(relay: !clientIsHTTP10)
        case .final:
            if let status = head.retryStatus, mayRetry { return retrying(after: "upstream answered \(status)", .status(status)) }
            finalHeadAccepted = true
            if requestSendingStopped {
                // No retry after all: the bytes kept for one are not sent, so the connection cannot frame what follows.
                closeAfterResponse = true
                request = .dropped
            }
            // Recomputed, not toggled, when a head that waited for room is parsed again: the same head, the same facts.
            if !head.serverKeepsAlive || head.upstreamEndsAtClose { upstreamReusable = false }
            if head.clientEndsAtClose || request != .receivedWhole { closeAfterResponse = true }
            bodyEndsAtUpstreamClose = head.upstreamEndsAtClose
            return .forward(close: closeAfterResponse)
        }
    }

    /// The 101 head is queued to the client: from here on the connection is a tunnel.
    mutating func tunnelOpened() {
        guard phase == .exchange, response == .awaitingHead, finalHeadAccepted, tunnelRequested else {
            illegal("tunnel opened", "phase \(phase), response \(response)")
        }
        phase = .tunnel
        responseStarted = true
        response = .body
        closeAfterResponse = true
        upstreamReusable = false
    }

    /// The upstream's side of an open tunnel ended: `failure` nil for a clean close (EOF), else what failed (a reset,
    /// a failed write, TLS): then nothing queued is worth sending, and both sides close now.
    mutating func tunnelUpstreamEnded(failure: String?) -> Action {
        guard phase == .tunnel, response == .body else { return .none }
        guard let failure else { return tunnelSideClosed(byClient: false) }
        return abort(failure, .upstreamAbort)
    }

    /// The final response head is queued to the client: the body (if any) follows.
    mutating func responseHeadQueued() {
        guard phase == .exchange, response == .awaitingHead else { illegal("response head queued", "response \(response)") }
        responseStarted = true
        response = .body
    }

    /// A response head did not fit the client queue (nothing of it was queued). Behind earlier queued heads (several
    /// 1xx) it waits for them to drain and is parsed again; alone in the queue it never fits, and the exchange fails.
    mutating func responseHeadDidNotFit(behindQueuedHeads: Bool, error: @autoclosure () -> ProxyError) -> Action {
        behindQueuedHeads ? .none : upstreamFailed(error())
    }

    /// The response reached its framed end. `bytesAfterEnd`: the upstream sent more than its framing allowed;
    /// `requestBytesPending`: framed request bytes not yet written (or left in the transport); `hungUp`: the
    /// upstream socket closed or failed.
    mutating func responseEnded(bytesAfterEnd: Bool, requestBytesPending: Bool, hungUp: Bool) -> Action {
        guard phase == .exchange, response == .body else { illegal("response ended", "response \(response)") }
        response = .complete
        let facts = ExchangeReuse.UpstreamFacts(requestWrittenWhole: request == .receivedWhole && requestHeadWritten && !requestBytesPending,
                                                responseEndedCleanly: !bytesAfterEnd, serverKeepsAlive: upstreamReusable, hungUp: hungUp)
        return ExchangeReuse.mayPoolUpstream(facts) ? .reuseUpstream : .closeUpstream
    }

    /// The upstream sent bytes after its response had ended: it broke framing, its connection is not reused.
    mutating func upstreamSentBytesAfterResponse() {
        upstreamReusable = false
    }

    /// The upstream closed its side (or its socket failed). Before the head, a stale pooled connection gets the
    /// request again when that is safe; else another server gets it when `retry` (`retry_on reset`) allows;
    /// otherwise the client gets `beforeHead`. Mid-body, a close-delimited body
    /// ends here and any other is truncated (`midBody` says why).
    mutating func upstreamClosed(_ replay: ReplayFacts, retry: @autoclosure () -> Bool, beforeHead: @autoclosure () -> ProxyError,
                                 midBody: @autoclosure () -> String) -> Action {
        guard phase == .exchange else { return .closeUpstream }
        upstreamReusable = false
        switch response {
        case .awaitingHead:
            if replay.connectionReused, !responseStarted,
               ExchangeReuse.mayReplay(method: method, alreadyReplayed: replayed, bodyBytesSent: replay.bodyBytesSent,
                                       responseBytesRead: replay.responseBytesRead, headKept: replay.headKept) {
                replayed = true
                requestHeadWritten = false
                upstreamReusable = true
                return .replay
            }
            let error = beforeHead()
            if mayRetry, retry() { return retrying(after: error.message, .reset) }
            return upstreamFailed(error)
        case .body:
            return bodyEndsAtUpstreamClose ? .endResponseAtClose : truncate(midBody(), .upstreamAbort)
        case .complete, .aborted:
            return .closeUpstream
        }
    }

    /// The response body's framing from the upstream broke mid-body.
    mutating func responseBodyFailed(_ reason: String) -> Action {
        guard phase == .exchange else { return .none }
        upstreamReusable = false
        return truncate(reason, .upstreamAbort)
    }

    // MARK: - Deadlines

    /// A timeout passed (`ExchangeDeadlines.expired` says which). `error` describes it for the record or the client;
    /// `retryConnect`: a connect timeout may go to another server (as ``upstreamConnectFailed(_:retry:)``).
    mutating func deadlineReached(_ expiry: ExchangeDeadlines.Expiry, error: @autoclosure () -> ProxyError,
                                  retryConnect: @autoclosure () -> Bool) -> Action {
        switch expiry {
        case .idle, .linger:
            return close()
        case .requestHead:
            return requestRejected(error())
        case .clientWrite:
            let error = error()
            return abort(error.message, error.end)
        case .connect:
            return upstreamConnectFailed(error(), retry: retryConnect())
        case .firstByte, .total, .upstreamIdle:
            return upstreamFailed(error())
        case .clientBodyIdle:
            return requestBodyFailed(error())
        case .tunnelIdle:
            guard phase == .tunnel else { return .none }
            let error = error()
            return closeTunnel(error.message, error.end)
        }
    }

    // MARK: - Transitions shared by the inputs

    private mutating func retrying(after: String, _ reason: RetryCondition) -> Action {
        attempts += 1
        requestSendingStopped = false
        requestHeadWritten = false
        upstreamReusable = true
        bodyEndsAtUpstreamClose = false
        return .retry(attempt: attempts, after: after, reason: reason)
    }

    private mutating func respond(_ error: ProxyError, close: Bool, dropUnsentRequest: Bool) -> Action {
        phase = .exchange
        response = .complete
        responseStarted = true
        closeAfterResponse = close
        upstreamReusable = false
        return .respond(error, close: close, dropUnsentRequest: dropUnsentRequest)
    }

    private mutating func truncate(_ reason: String, _ end: CompletionRecord.End) -> Action {
        upstreamReusable = false
        response = .aborted
        closeAfterResponse = true
        return .truncate(reason: reason, end: end)
    }

    private mutating func abort(_ reason: String, _ end: CompletionRecord.End) -> Action {
        upstreamReusable = false
        response = .aborted
        return .abort(reason: reason, end: end)
    }

    private mutating func close() -> Action {
        .close
    }

    /// One side of an open tunnel closed cleanly.
    private mutating func tunnelSideClosed(byClient: Bool) -> Action {
        guard response == .body else { return .none }
        response = .complete
        return byClient ? .tunnelClientClosed : .tunnelUpstreamClosed
    }

    /// sluice ends an open tunnel itself.
    private mutating func closeTunnel(_ reason: String, _ end: CompletionRecord.End) -> Action {
        guard response == .body else { return close() }
        response = .aborted
        return .closeTunnel(reason: reason, end: end)
    }

    private mutating func finishConnection(linger: Bool) -> Action {
        phase = .lingering
        return .finish(linger: linger)
    }

    /// An input the current state cannot take: a bug in the session, so it traps (in one place).
    private func illegal(_ input: String, _ state: String) -> Never {
        preconditionFailure("ExchangeStateMachine: \(input) in \(state)")
    }
}
