import Testing

@testable import SluiceCore

/// The reuse decisions as tables: every combination of facts, including the ones the request-desync defects
/// produced (a response that ended while body bytes were still owed).
@Suite struct ExchangeReuseTests {
    @Test func anUpstreamIsPooledOnlyWhenBothMessagesEndedWholeAndCleanly() {
        // Every combination of the four facts: exactly one may pool.
        for written in [true, false] {
            for clean in [true, false] {
                for keepAlive in [true, false] {
                    for hungUp in [true, false] {
                        let facts = ExchangeReuse.UpstreamFacts(requestWrittenWhole: written, responseEndedCleanly: clean,
                                                                serverKeepsAlive: keepAlive, hungUp: hungUp)
                        #expect(ExchangeReuse.mayPoolUpstream(facts) == (written && clean && keepAlive && !hungUp), "\(facts)")
                    }
                }
            }
        }
    }

    private struct ClientRow {
        var name: String
        var receivedWhole: Bool
        var closeRequested: Bool
        var unsent: Int
        var expected: ExchangeReuse.ClientNext
    }

    @Test func clientInputAfterAResponseIsNeverParsedFromABody() {
        let rows = [
            ClientRow(name: "request done, keep-alive", receivedWhole: true, closeRequested: false, unsent: 0,
                      expected: .nextRequest(discardingBodyBytes: 0)),
            // The 401-before-the-body case: framed bytes the upstream never took are dropped, the rest is pipelined.
            ClientRow(name: "early answer, body received, partly unsent", receivedWhole: true, closeRequested: false, unsent: 65_536,
                      expected: .nextRequest(discardingBodyBytes: 65_536)),
            // Hostile: the rest of the body is still coming; anything read next would be body, so close.
            ClientRow(name: "early answer, body still arriving", receivedWhole: false, closeRequested: false, unsent: 4_096, expected: .close),
            ClientRow(name: "early answer, body still arriving, nothing buffered", receivedWhole: false, closeRequested: false, unsent: 0,
                      expected: .close),
            ClientRow(name: "Connection: close", receivedWhole: true, closeRequested: true, unsent: 0, expected: .close),
            ClientRow(name: "draining with bytes unsent", receivedWhole: true, closeRequested: true, unsent: 10, expected: .close),
        ]
        for row in rows {
            #expect(ExchangeReuse.clientNext(requestReceivedWhole: row.receivedWhole, closeRequested: row.closeRequested,
                                             unsentBodyBytes: row.unsent) == row.expected, "\(row.name)")
        }
    }

    @Test func onlyIdempotentRequestsWithNothingConsumedAreReplayed() {
        let idempotent: [HTTPMethod] = [.get, .head, .options, .trace, .put, .delete]
        let notIdempotent: [HTTPMethod] = [.post, .patch, .connect, .other]
        for method in idempotent {
            #expect(ExchangeReuse.mayReplay(method: method, alreadyReplayed: false, bodyBytesSent: 0, responseBytesRead: false, headKept: true))
            #expect(!ExchangeReuse.mayReplay(method: method, alreadyReplayed: true, bodyBytesSent: 0, responseBytesRead: false, headKept: true))
            #expect(!ExchangeReuse.mayReplay(method: method, alreadyReplayed: false, bodyBytesSent: 1, responseBytesRead: false, headKept: true))
            #expect(!ExchangeReuse.mayReplay(method: method, alreadyReplayed: false, bodyBytesSent: 0, responseBytesRead: true, headKept: true))
            #expect(!ExchangeReuse.mayReplay(method: method, alreadyReplayed: false, bodyBytesSent: 0, responseBytesRead: false, headKept: false))
        }
        // A POST with Content-Length: 0 consumed no body byte, and still must not run twice.
        for method in notIdempotent {
            #expect(!ExchangeReuse.mayReplay(method: method, alreadyReplayed: false, bodyBytesSent: 0, responseBytesRead: false, headKept: true),
                    "\(method)")
        }
    }
}
