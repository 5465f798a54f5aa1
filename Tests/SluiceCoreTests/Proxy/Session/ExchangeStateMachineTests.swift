import Testing

@testable import SluiceCore

/// Every transition of the exchange as a row: a sequence of inputs, the action each must return, and the state the
/// connection ends in. No socket, no clock: the facts a session would report are written in the row.
@Suite struct ExchangeStateMachineTests {
    typealias Machine = ExchangeStateMachine
    typealias Action = ExchangeStateMachine.Action

    /// One input with the facts the session reports alongside it.
    enum Input {
        case bytes
        case head(HTTPMethod = .get, keepAlive: Bool = true, http10: Bool = false, body: Bool = false, draining: Bool = false)
        case reject(ProxyError)
        case admit
        case rateLimited
        case accepted
        case bodyReceived
        case bodyFailed(ProxyError)
        case headSent
        case connectFailed(retry: Bool = false)
        case writeFailed(retryPossible: Bool = false)
        case upstreamFailed(ProxyError)
        case interim
        case switchingProtocols(webSocket: Bool = false)
        case webSocketUpgrade
        case tunnelOpened
        case tunnelUpstreamEnded(failure: String? = nil)
        case final(keepAlive: Bool = true, upstreamClose: Bool = false, clientClose: Bool = false, retryStatus: Int? = nil)
        case headQueued
        case headDidNotFit(behindQueued: Bool)
        case ended(bytesAfterEnd: Bool = false, pending: Bool = false, hungUp: Bool = false)
        case bytesAfterResponse
        case upstreamClosed(reused: Bool = false, bodySent: Int64 = 0, read: Bool = false, headKept: Bool = true, retry: Bool = false)
        case bodyFramingFailed
        case clientEOF
        case clientHungUp(pending: Bool)
        case clientWriteFailed
        case flushed(unsent: Int = 0, draining: Bool = false)
        case drain(pending: Bool)
        case deadline(ExchangeDeadlines.Expiry, retry: Bool = false)
        case plainHTTPOnTLS
        case refusedAtAccept
        case shutDown

        func apply(_ m: inout Machine) -> Action {
            switch self {
            case .bytes: m.requestBegan(); return .none
            case .head(let method, let keepAlive, let http10, let body, let draining):
                m.requestHeadParsed(method: method, keepAlive: keepAlive, http10: http10, hasBody: body, draining: draining)
                return .none
            case .reject(let error): return m.requestRejected(error)
            case .admit: return m.admission(.admitted)
            case .rateLimited: return m.admission(.rejected(limited))
            case .accepted: return m.requestAccepted()
            case .bodyReceived: m.requestBodyReceived(); return .none
            case .bodyFailed(let error): return m.requestBodyFailed(error)
            case .headSent: m.requestHeadSent(); return .none
            case .connectFailed(let retry): return m.upstreamConnectFailed(refused, retry: retry)
            case .writeFailed(let retryPossible): return m.upstreamWriteFailed(retryPossible: retryPossible)
            case .upstreamFailed(let error): return m.upstreamFailed(error)
            case .interim: return m.responseHeadParsed(.interim, badResponse: bad)
            case .switchingProtocols(let webSocket): return m.responseHeadParsed(.switchingProtocols(webSocket: webSocket), badResponse: bad)
            case .webSocketUpgrade: m.requestIsWebSocketUpgrade(); return .none
            case .tunnelOpened: m.tunnelOpened(); return .none
            case .tunnelUpstreamEnded(let failure): return m.tunnelUpstreamEnded(failure: failure)
            case .final(let keepAlive, let upstreamClose, let clientClose, let retryStatus):
                return m.responseHeadParsed(.init(kind: .final, serverKeepsAlive: keepAlive, upstreamEndsAtClose: upstreamClose,
                                                  clientEndsAtClose: clientClose, retryStatus: retryStatus), badResponse: bad)
            case .headQueued: m.responseHeadQueued(); return .none
            case .headDidNotFit(let behind): return m.responseHeadDidNotFit(behindQueuedHeads: behind, error: tooLarge)
            case .ended(let after, let pending, let hungUp): return m.responseEnded(bytesAfterEnd: after, requestBytesPending: pending, hungUp: hungUp)
            case .bytesAfterResponse: m.upstreamSentBytesAfterResponse(); return .none
            case .upstreamClosed(let reused, let bodySent, let read, let kept, let retry):
                return m.upstreamClosed(.init(connectionReused: reused, bodyBytesSent: bodySent, responseBytesRead: read, headKept: kept),
                                        retry: retry, beforeHead: closedEarly, midBody: "upstream closed mid-body")
            case .bodyFramingFailed: return m.responseBodyFailed("bad chunk")
            case .clientEOF: return m.clientEndOfStream()
            case .clientHungUp(let pending): return m.clientHungUp(inputPending: pending)
            case .clientWriteFailed: return m.clientWriteFailed("EPIPE")
            case .flushed(let unsent, let draining): return m.outputFlushed(unsentBodyBytes: unsent, draining: draining)
            case .drain(let pending): return m.drain(inputPending: pending)
            case .deadline(let expiry, let retry): return m.deadlineReached(expiry, error: timeout(expiry), retryConnect: retry)
            case .plainHTTPOnTLS: return m.answeredPlainHTTPOnTLS()
            case .refusedAtAccept: return m.refusedAtAccept(overloaded)
            case .shutDown: return m.shutDown()
            }
        }
    }

    static let limited = ProxyError.rateLimited("requests 1/s")
    static let refused = ProxyError.unreachable("cannot connect to upstream")
    static let bad = ProxyError.badResponse("upstream switched protocols, which was not requested")
    static let tooLarge = ProxyError.badResponse("upstream response head is too large to forward")
    static let closedEarly = ProxyError.badResponse("upstream closed before sending a complete response head")
    static let overloaded = ProxyError.overloaded(limit: 10)
    static let malformed = ProxyError.malformedBody(.invalidChunkSize)
    static let stalled = ProxyError.requestBodyStalled(milliseconds: 60_000)
    static let firstByte = ProxyError.upstreamTimeout("no response", end: .timeoutFirstByte)
    static func timeout(_ expiry: ExchangeDeadlines.Expiry) -> ProxyError {
        switch expiry {
        case .requestHead: .requestHeadTimeout(milliseconds: 10_000)
        case .clientWrite: .clientWriteStalled(milliseconds: 20_000)
        case .connect: .upstreamTimeout("connect timed out", end: .timeoutConnect)
        case .firstByte: firstByte
        case .total: .upstreamTimeout("total", end: .timeoutTotal)
        case .upstreamIdle: .upstreamTimeout("idle", end: .timeoutIdle)
        case .clientBodyIdle: stalled
        case .idle, .linger: .connectionTimedOut
        case .tunnelIdle: .tunnelIdle(milliseconds: 3_600_000)
        }
    }

    struct Row {
        var name: String
        var steps: [(Input, Action)]
        var phase: ConnectionPhase
        /// Checked after the last step when given.
        var closeAfterResponse: Bool? = nil
    }

    /// A request up to a connect: bytes, head, admission, accepted.
    static func request(_ head: Input = .head(), admitted: Bool = false) -> [(Input, Action)] {
        var steps: [(Input, Action)] = [(.bytes, .none), (head, .none)]
        if admitted { steps.append((.admit, .none)) }
        steps.append((.accepted, .connect(attempt: 1, poolAllowed: true)))
        return steps
    }

    static let finished: (Input, Action) = (.flushed(), .nextRequest(discardingBodyBytes: 0))
    static let lingered: (Input, Action) = (.flushed(), .finish(linger: true))

    static var completeExchanges: [Row] {
        [
            Row(name: "Content-Length response, upstream pooled, next request", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
            ], phase: .idle),
            Row(name: "chunked request body: connection pooled once the body is whole", steps: request(.head(.post, body: true)) + [
                (.headSent, .none), (.bodyReceived, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.ended(), .reuseUpstream), finished,
            ], phase: .idle),
            Row(name: "close-delimited response: the upstream's close ends it, client connection closes", steps: request() + [
                (.headSent, .none), (.final(keepAlive: false, upstreamClose: true, clientClose: true), .forward(close: true)),
                (.headQueued, .none), (.upstreamClosed(), .endResponseAtClose), (.ended(hungUp: true), .closeUpstream), lingered,
            ], phase: .lingering),
            Row(name: "HEAD / 204 / 304: no body, ended at the head", steps: request(.head(.head)) + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
            ], phase: .idle),
            Row(name: "1xx relayed, then the final head", steps: request() + [
                (.headSent, .none), (.interim, .forwardInterim(relay: true)), (.interim, .forwardInterim(relay: true)),
                (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
            ], phase: .idle),
            Row(name: "HTTP/1.0 client: 1xx skipped, chunked body de-chunked and ended by our close", steps: request(.head(http10: true)) + [
                (.headSent, .none), (.interim, .forwardInterim(relay: false)), (.final(clientClose: true), .forward(close: true)),
                (.headQueued, .none), (.ended(), .reuseUpstream), lingered,
            ], phase: .lingering),
            Row(name: "client asked Connection: close", steps: request(.head(keepAlive: false)) + [
                (.headSent, .none), (.final(), .forward(close: true)), (.headQueued, .none), (.ended(), .reuseUpstream), lingered,
            ], phase: .lingering),
            Row(name: "server said Connection: close: its connection is not pooled, the client's stays", steps: request() + [
                (.headSent, .none), (.final(keepAlive: false), .forward(close: false)), (.headQueued, .none), (.ended(), .closeUpstream), finished,
            ], phase: .idle),
            Row(name: "pipelining: the second request starts after the first finished", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
            ] + request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
            ], phase: .idle),
            Row(name: "bytes after the response's end: not pooled", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(bytesAfterEnd: true), .closeUpstream), finished,
            ], phase: .idle),
            Row(name: "bytes after the end arrive later: the next response does not pool it either", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.bytesAfterResponse, .none),
                (.ended(), .closeUpstream), finished,
            ], phase: .idle),
            Row(name: "the upstream hung up as the response ended: not pooled", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(hungUp: true), .closeUpstream), finished,
            ], phase: .idle),
        ]
    }

    static var desync: [Row] {
        [
            Row(name: "early answer with the body unsent: never pooled, the connection closes", steps: request(.head(.post, body: true)) + [
                (.headSent, .none), (.final(), .forward(close: true)), (.headQueued, .none), (.ended(pending: true), .closeUpstream), lingered,
            ], phase: .lingering, closeAfterResponse: true),
            Row(name: "early answer, body whole but unwritten: discarded, never parsed", steps: request(.head(.post, body: true)) + [
                (.bodyReceived, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(pending: true), .closeUpstream),
                (.flushed(unsent: 300), .nextRequest(discardingBodyBytes: 300)),
            ], phase: .idle),
            Row(name: "head never written whole: not pooled", steps: request() + [
                (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .closeUpstream), finished,
            ], phase: .idle),
            Row(name: "upstream stopped reading the body: stop sending, its early answer relayed, then close", steps: request(.head(.post, body: true)) + [
                (.headSent, .none), (.writeFailed(), .stopSendingRequest), (.final(), .forward(close: true)), (.headQueued, .none),
                (.ended(), .closeUpstream), lingered,
            ], phase: .lingering),
        ]
    }

    static var failures: [Row] {
        [
            Row(name: "malformed head: 4xx and close", steps: [(.bytes, .none), (.reject(.noRoute), .respond(.noRoute, close: true, dropUnsentRequest: true)), lingered],
                phase: .lingering),
            Row(name: "a rejected request with a body queued never connects", steps: [(.bytes, .none), (.head(.post, body: true), .none),
                (.bodyFailed(malformed), .respond(malformed, close: true, dropUnsentRequest: true)), (.accepted, .none), lingered],
                phase: .lingering),
            Row(name: "rate limited without a body: 429, pipelined requests stay", steps: [(.bytes, .none), (.head(), .none),
                (.rateLimited, .respond(limited, close: false, dropUnsentRequest: false)), finished], phase: .idle),
            Row(name: "rate limited with a body on its way: 429 and close", steps: [(.bytes, .none), (.head(.post, body: true), .none),
                (.rateLimited, .respond(limited, close: true, dropUnsentRequest: true)), lingered], phase: .lingering),
            Row(name: "rate limited Connection: close: answered and closed", steps: [(.bytes, .none), (.head(keepAlive: false), .none),
                (.rateLimited, .respond(limited, close: true, dropUnsentRequest: true)), lingered], phase: .lingering),
            Row(name: "connect refused, another server, then success", steps: request() + [
                (.connectFailed(retry: true), .retry(attempt: 2, after: refused.message, reason: .connectError)), (.headSent, .none),
                (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
            ], phase: .idle),
            Row(name: "every server refuses: 502 once the policy allows no more", steps: request() + [
                (.connectFailed(retry: true), .retry(attempt: 2, after: refused.message, reason: .connectError)),
                (.connectFailed(retry: true), .retry(attempt: 3, after: refused.message, reason: .connectError)),
                (.connectFailed(retry: false), .respond(refused, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
            Row(name: "one server refuses: 502, the client's connection stays", steps: request() + [
                (.connectFailed(), .respond(refused, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
            Row(name: "connect failed with the body still arriving: 502 and close", steps: request(.head(.post, body: true)) + [
                (.connectFailed(), .respond(refused, close: true, dropUnsentRequest: false)), lingered,
            ], phase: .lingering),
            Row(name: "101 never requested: 502", steps: request() + [
                (.headSent, .none), (.switchingProtocols(), .respond(bad, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
            Row(name: "head too large alone in the queue: 502", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headDidNotFit(behindQueued: false), .respond(tooLarge, close: false, dropUnsentRequest: false)),
                finished,
            ], phase: .idle),
            Row(name: "head behind queued 1xx heads waits, then goes", steps: request() + [
                (.headSent, .none), (.interim, .forwardInterim(relay: true)), (.final(), .forward(close: false)), (.headDidNotFit(behindQueued: true), .none),
                (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
            ], phase: .idle),
            Row(name: "upstream reset before the head: 502", steps: request() + [
                (.headSent, .none), (.upstreamClosed(), .respond(closedEarly, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
            Row(name: "upstream reset mid-body: truncated, then closed", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.upstreamClosed(read: true), .truncate(reason: "upstream closed mid-body", end: .upstreamAbort)), (.flushed(), .close),
            ], phase: .exchange, closeAfterResponse: true),
            Row(name: "chunk framing broken mid-body: truncated", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.bodyFramingFailed, .truncate(reason: "bad chunk", end: .upstreamAbort)), (.flushed(), .close),
            ], phase: .exchange),
            Row(name: "stale pooled connection: GET replayed once", steps: request() + [
                (.headSent, .none), (.upstreamClosed(reused: true), .replay), (.headSent, .none),
                (.upstreamClosed(reused: true), .respond(closedEarly, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
            Row(name: "stale pooled connection: POST never replayed", steps: request(.head(.post)) + [
                (.headSent, .none), (.upstreamClosed(reused: true), .respond(closedEarly, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
            Row(name: "no replay once body bytes went out", steps: request(.head(.put, body: true)) + [
                (.headSent, .none), (.upstreamClosed(reused: true, bodySent: 10), .respond(closedEarly, close: true, dropUnsentRequest: false)), lingered,
            ], phase: .lingering),
            Row(name: "no replay after part of the response was read", steps: request() + [
                (.headSent, .none), (.upstreamClosed(reused: true, read: true), .respond(closedEarly, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
            Row(name: "no replay on a fresh connection", steps: request() + [
                (.headSent, .none), (.upstreamClosed(reused: false), .respond(closedEarly, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
            Row(name: "chunked request body breaks before the response: 400 and close", steps: request(.head(.post, body: true)) + [
                (.headSent, .none), (.bodyFailed(malformed), .respond(malformed, close: true, dropUnsentRequest: true)), lingered,
            ], phase: .lingering),
            Row(name: "request body breaks after the response began: aborted", steps: request(.head(.post, body: true)) + [
                (.headSent, .none), (.final(), .forward(close: true)), (.headQueued, .none),
                (.bodyFailed(malformed), .abort(reason: malformed.message, end: malformed.end)),
            ], phase: .exchange),
            Row(name: "upstream failure after the head: truncated, not answered", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.upstreamFailed(firstByte), .truncate(reason: firstByte.message, end: firstByte.end)),
            ], phase: .exchange),
            Row(name: "refused at max_connections: 503 and close", steps: [(.refusedAtAccept, .respond(overloaded, close: true, dropUnsentRequest: false)), lingered],
                phase: .lingering),
            Row(name: "plain HTTP on a TLS listener: answered, lingering", steps: [(.plainHTTPOnTLS, .finish(linger: true))], phase: .lingering),
        ]
    }

    static var clientAborts: [Row] {
        [
            Row(name: "client EOF while idle: close", steps: [(.clientEOF, .close)], phase: .idle),
            Row(name: "client EOF before the head completed: close", steps: [(.bytes, .none), (.clientEOF, .close)], phase: .readingHead),
            Row(name: "client EOF while the upstream is thinking: abort (stops the generation)", steps: request() + [
                (.headSent, .none), (.clientEOF, .abort(reason: "client closed the connection", end: .clientAbort)),
            ], phase: .exchange),
            Row(name: "client EOF mid-body: abort", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.clientEOF, .abort(reason: "client closed the connection", end: .clientAbort)),
            ], phase: .exchange),
            Row(name: "hang-up with request body still readable: read on first", steps: request(.head(.post, body: true)) + [
                (.clientHungUp(pending: true), .none),
            ], phase: .exchange),
            Row(name: "hang-up with the request whole: abort", steps: request() + [
                (.clientHungUp(pending: true), .abort(reason: "client closed the connection", end: .clientAbort)),
            ], phase: .exchange),
            Row(name: "hang-up while idle with nothing left to read: close", steps: [(.clientHungUp(pending: false), .close)], phase: .idle),
            Row(name: "client write failed mid-body: abort", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.clientWriteFailed, .abort(reason: "client write failed: EPIPE", end: .clientAbort)),
            ], phase: .exchange),
            Row(name: "client write failed while lingering: close", steps: [(.plainHTTPOnTLS, .finish(linger: true)), (.clientWriteFailed, .close)],
                phase: .lingering),
        ]
    }

    static var deadlines: [Row] {
        [
            Row(name: "idle timeout: close", steps: [(.deadline(.idle(tlsHandshake: false)), .close)], phase: .idle),
            Row(name: "TLS handshake timeout: close", steps: [(.deadline(.idle(tlsHandshake: true)), .close)], phase: .idle),
            Row(name: "request head timeout: 408 and close", steps: [(.bytes, .none),
                (.deadline(.requestHead), .respond(timeout(.requestHead), close: true, dropUnsentRequest: true)), lingered], phase: .lingering),
            Row(name: "client write timeout: abort", steps: request() + [(.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.deadline(.clientWrite), .abort(reason: timeout(.clientWrite).message, end: .clientWriteTimeout))], phase: .exchange),
            Row(name: "connect timeout with another server: retried", steps: request() + [
                (.deadline(.connect, retry: true), .retry(attempt: 2, after: timeout(.connect).message, reason: .connectError))], phase: .exchange),
            Row(name: "connect timeout, no other address: 504", steps: request() + [
                (.deadline(.connect), .respond(timeout(.connect), close: false, dropUnsentRequest: false)), finished], phase: .idle),
            Row(name: "first byte timeout: 504", steps: request() + [(.headSent, .none),
                (.deadline(.firstByte), .respond(firstByte, close: false, dropUnsentRequest: false)), finished], phase: .idle),
            Row(name: "total timeout mid-body: truncated", steps: request() + [(.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.deadline(.total), .truncate(reason: "total", end: .timeoutTotal))], phase: .exchange),
            Row(name: "upstream idle mid-body: truncated", steps: request() + [(.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.deadline(.upstreamIdle), .truncate(reason: "idle", end: .timeoutIdle))], phase: .exchange),
            Row(name: "request body stalled: 408 and close", steps: request(.head(.post, body: true)) + [(.headSent, .none),
                (.deadline(.clientBodyIdle), .respond(stalled, close: true, dropUnsentRequest: true)), lingered], phase: .lingering),
            Row(name: "linger ran out: close", steps: [(.plainHTTPOnTLS, .finish(linger: true)), (.deadline(.linger), .close)], phase: .lingering),
        ]
    }

    static var drains: [Row] {
        [
            Row(name: "drain while idle: close", steps: [(.drain(pending: false), .close)], phase: .idle),
            Row(name: "drain while idle with a request waiting: serve it", steps: [(.drain(pending: true), .serve)], phase: .idle),
            Row(name: "drain while streaming: the exchange finishes, then the connection closes", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.drain(pending: false), .none),
                (.ended(), .reuseUpstream), lingered,
            ], phase: .lingering, closeAfterResponse: true),
            Row(name: "drain before the response head: it says Connection: close", steps: request() + [
                (.drain(pending: false), .none), (.headSent, .none), (.final(), .forward(close: true)), (.headQueued, .none), (.ended(), .reuseUpstream), lingered,
            ], phase: .lingering),
            Row(name: "a request parsed while draining is the connection's last", steps: request(.head(draining: true)) + [
                (.headSent, .none), (.final(), .forward(close: true)), (.headQueued, .none), (.ended(), .reuseUpstream), lingered,
            ], phase: .lingering),
            Row(name: "drain while a head is arriving: nothing yet", steps: [(.bytes, .none), (.drain(pending: false), .none)], phase: .readingHead),
            Row(name: "stopping while streaming: cut and recorded as drain", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.shutDown, .abort(reason: "sluice is shutting down", end: .drain)),
            ], phase: .exchange),
            Row(name: "stopping while idle or reading a head: close", steps: [(.shutDown, .close), (.bytes, .none), (.shutDown, .close)], phase: .readingHead),
            Row(name: "draining noticed at flush time: close", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), (.flushed(draining: true), .finish(linger: true)),
            ], phase: .lingering),
        ]
    }

    static func check(_ rows: [Row]) {
        for row in rows {
            var machine = Machine()
            for (index, (input, expected)) in row.steps.enumerated() {
                let action = input.apply(&machine)
                #expect(action == expected, "\(row.name): step \(index) (\(input))")
            }
            #expect(machine.phase == row.phase, "\(row.name): phase")
            if let close = row.closeAfterResponse { #expect(machine.closeAfterResponse == close, "\(row.name): closeAfterResponse") }
        }
    }

    @Test func completeExchangesPoolOnlyCleanUpstreams() { Self.check(Self.completeExchanges) }
    @Test func unsentBodyBytesAreNeverPooledOrParsed() { Self.check(Self.desync) }
    @Test func failuresAnswerBeforeTheHeadAndTruncateAfter() { Self.check(Self.failures) }
    @Test func aClientThatLeavesCancelsTheExchange() { Self.check(Self.clientAborts) }
    @Test func everyTimeoutHasItsAction() { Self.check(Self.deadlines) }
    @Test func drainFinishesExchangesAndClosesIdleConnections() { Self.check(Self.drains) }

    @Test func requestsServedCountsEveryAnsweredRequest() {
        var machine = Machine()
        for (input, _) in Self.request() + [(.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), Self.finished] {
            _ = input.apply(&machine)
        }
        #expect(machine.requestsServed == 1)
        _ = Input.bytes.apply(&machine)
        #expect(machine.requestsServed == 1)
    }

    @Test func aDroppedRequestIsNeverReportedStillArriving() {
        var machine = Machine()
        _ = Input.bytes.apply(&machine)
        _ = Input.head(.post, body: true).apply(&machine)
        #expect(machine.requestStillArriving)
        _ = machine.upstreamWriteFailed(retryPossible: false)
        #expect(!machine.requestStillArriving && machine.request == .dropped && machine.closeAfterResponse)
    }
}
