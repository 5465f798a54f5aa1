import Testing

@testable import SluiceCore

/// The retry rows: another server gets the request only before any response byte reached the client, only while the
/// request is whole, and a stale pooled connection is replayed on the same server before any retry is considered.
/// `retry: true` in a row stands for the session's policy check (retry_on, tries left, body kept, budget) passing.
extension ExchangeStateMachineTests {
    static let unavailable = "upstream answered 503"

    static var retries: [Row] {
        [
            Row(name: "503 from the first server: retried, the second server's answer forwarded and pooled", steps: request() + [
                (.headSent, .none), (.final(retryStatus: 503), .retry(attempt: 2, after: unavailable, reason: .status(503))),
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
            ], phase: .idle),
            Row(name: "reset before the head: retried on another server", steps: request() + [
                (.headSent, .none), (.upstreamClosed(retry: true), .retry(attempt: 2, after: closedEarly.message, reason: .reset)),
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
            ], phase: .idle),
            Row(name: "a stale pooled connection is replayed on its server before any retry", steps: request() + [
                (.headSent, .none), (.upstreamClosed(reused: true, retry: true), .replay),
                (.headSent, .none), (.upstreamClosed(retry: true), .retry(attempt: 2, after: closedEarly.message, reason: .reset)),
            ], phase: .exchange),
            Row(name: "tries exhausted: the last failure is the client's answer", steps: request() + [
                (.connectFailed(retry: true), .retry(attempt: 2, after: refused.message, reason: .connectError)),
                (.headSent, .none), (.upstreamClosed(retry: true), .retry(attempt: 3, after: closedEarly.message, reason: .reset)),
                (.headSent, .none), (.upstreamClosed(retry: false), .respond(closedEarly, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
            Row(name: "a status not retried (policy or budget): forwarded as it came", steps: request() + [
                (.headSent, .none), (.final(retryStatus: nil), .forward(close: false)), (.headQueued, .none), (.ended(), .reuseUpstream), finished,
            ], phase: .idle),
            Row(name: "body still arriving: retried with the kept part, the connection closes only if it is still arriving at the head",
                steps: request(.head(.post, body: true)) + [
                    (.headSent, .none), (.final(retryStatus: 503), .retry(attempt: 2, after: unavailable, reason: .status(503))),
                    (.bodyReceived, .none), (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                    (.ended(), .reuseUpstream), finished,
                ], phase: .idle),
            Row(name: "the upstream stopped taking the body, then answered 503: the kept request is retried whole",
                steps: request(.head(.post, body: true)) + [
                    (.headSent, .none), (.writeFailed(retryPossible: true), .pauseSendingRequest), (.writeFailed(retryPossible: true), .none),
                    (.final(retryStatus: 503), .retry(attempt: 2, after: unavailable, reason: .status(503))),
                    (.bodyReceived, .none), (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                    (.ended(), .reuseUpstream), finished,
                ], phase: .idle),
            Row(name: "stopped taking the body, then an answer not retried (413): forwarded, the kept bytes dropped, closed",
                steps: request(.head(.post, body: true)) + [
                    (.headSent, .none), (.writeFailed(retryPossible: true), .pauseSendingRequest),
                    (.final(), .forward(close: true)), (.headQueued, .none), (.ended(pending: true), .closeUpstream), lingered,
                ], phase: .lingering, closeAfterResponse: true),
            Row(name: "stopped taking a whole body, then closed: retried on reset with every byte kept", steps: request(.head(.post, body: true)) + [
                (.bodyReceived, .none), (.headSent, .none), (.writeFailed(retryPossible: true), .pauseSendingRequest),
                (.upstreamClosed(retry: true), .retry(attempt: 2, after: closedEarly.message, reason: .reset)),
            ], phase: .exchange),
            Row(name: "1xx relayed, then a 503: still before the response, retried", steps: request() + [
                (.headSent, .none), (.interim, .forwardInterim(relay: true)),
                (.final(retryStatus: 503), .retry(attempt: 2, after: unavailable, reason: .status(503))),
            ], phase: .exchange),
            Row(name: "connect timeout retried; a first-byte timeout is answered, never retried", steps: request() + [
                (.deadline(.connect, retry: true), .retry(attempt: 2, after: timeout(.connect).message, reason: .connectError)),
                (.headSent, .none), (.deadline(.firstByte, retry: true), .respond(firstByte, close: false, dropUnsentRequest: false)), finished,
            ], phase: .idle),
        ]
    }

    /// Hostile orders: every one would replay a request the client already saw answered, or one whose bytes are gone.
    static var retriesRefused: [Row] {
        [
            Row(name: "reset after the head reached the client: truncated, never retried", steps: request() + [
                (.headSent, .none), (.final(), .forward(close: false)), (.headQueued, .none),
                (.upstreamClosed(retry: true), .truncate(reason: "upstream closed mid-body", end: .upstreamAbort)),
            ], phase: .exchange),
            Row(name: "a whole request whose unsent bytes were dropped (not kept): a 503 is forwarded, never retried short",
                steps: request(.head(.post, body: true)) + [
                    (.bodyReceived, .none), (.headSent, .none), (.writeFailed(retryPossible: false), .stopSendingRequest),
                    (.final(retryStatus: 503), .forward(close: true)),
                ], phase: .exchange, closeAfterResponse: true),
            Row(name: "the upstream stopped taking the body (dropped): a reset is answered, not retried", steps: request(.head(.post, body: true)) + [
                (.headSent, .none), (.writeFailed(), .stopSendingRequest),
                (.upstreamClosed(retry: true), .respond(closedEarly, close: true, dropUnsentRequest: false)), lingered,
            ], phase: .lingering),
            Row(name: "a final head accepted, then parsed again after waiting for room: forwarded, never retried", steps: request() + [
                (.headSent, .none), (.interim, .forwardInterim(relay: true)), (.final(), .forward(close: false)),
                (.headDidNotFit(behindQueued: true), .none), (.final(retryStatus: 503), .forward(close: false)),
            ], phase: .exchange),
            Row(name: "client gone while a retry was possible: aborted, nothing retried", steps: request() + [
                (.headSent, .none), (.clientEOF, .abort(reason: "client closed the connection", end: .clientAbort)),
                (.upstreamClosed(retry: true), .closeUpstream),
            ], phase: .exchange),
        ]
    }

    @Test func retriesHappenOnlyBeforeTheResponse() { Self.check(Self.retries) }
    @Test func noRetryOnceTheClientSawAResponseOrTheRequestIsGone() { Self.check(Self.retriesRefused) }

    @Test func mayRetryFollowsTheExchange() {
        var machine = Machine()
        #expect(!machine.mayRetry)
        for (input, _) in Self.request() { _ = input.apply(&machine) }
        #expect(machine.mayRetry)
        _ = Input.headSent.apply(&machine)
        _ = Input.final().apply(&machine)
        #expect(!machine.mayRetry)
        _ = Input.headQueued.apply(&machine)
        #expect(!machine.mayRetry)
    }
}
