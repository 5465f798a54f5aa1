import Testing

@testable import SluiceCore

/// Every timeout as a row: the phase and facts, the times the session recorded, and what must be next and what
/// must have expired at a given moment. No clock is read and nothing sleeps.
@Suite struct ExchangeDeadlinesTests {
    private static let limits = ExchangeDeadlines.Limits(
        timeouts: Timeouts(clientHeader: 10_000, clientBodyIdle: 60_000, clientKeepAlive: 30_000, clientWrite: 20_000,
                           upstreamConnect: 5_000, upstreamFirstByte: 300_000, upstreamIdle: 120_000, total: 0),
        handshake: 3_000, linger: 2_000)

    private struct Row {
        var name: String
        var facts: ExchangeDeadlines.Facts
        var times: ExchangeDeadlines.Times
        var next: Int64
        /// What has expired at `next` (and nothing one millisecond before).
        var expiry: ExchangeDeadlines.Expiry?
    }

    private static var rows: [Row] {
        typealias F = ExchangeDeadlines.Facts
        typealias T = ExchangeDeadlines.Times
        return [
            Row(name: "fresh connection, no byte", facts: F(phase: .idle), times: T(acceptedAt: 100), next: 10_100, expiry: .idle(tlsHandshake: false)),
            Row(name: "TLS handshake pending: the shorter of handshake and head", facts: F(phase: .idle, handshakePending: true),
                times: T(acceptedAt: 100), next: 3_100, expiry: .idle(tlsHandshake: true)),
            Row(name: "keep-alive between requests", facts: F(phase: .idle, requestsServed: 2), times: T(acceptedAt: 100, idleSince: 5_000),
                next: 35_000, expiry: .idle(tlsHandshake: false)),
            Row(name: "first head counts from accept (slow loris)", facts: F(phase: .readingHead), times: T(acceptedAt: 100, headStartedAt: 9_000),
                next: 10_100, expiry: .requestHead),
            Row(name: "later head counts from its first byte", facts: F(phase: .readingHead, requestsServed: 1),
                times: T(acceptedAt: 100, headStartedAt: 9_000), next: 19_000, expiry: .requestHead),
            Row(name: "connecting", facts: F(phase: .exchange, connecting: true), times: T(exchangeStartedAt: 1_000, connectStartedAt: 1_000),
                next: 6_000, expiry: .connect),
            Row(name: "thinking model: first byte", facts: F(phase: .exchange, awaitingResponseHead: true),
                times: T(exchangeStartedAt: 1_000, requestSentAt: 1_500), next: 301_500, expiry: .firstByte),
            Row(name: "request not sent yet: no first-byte clock", facts: F(phase: .exchange, awaitingResponseHead: true),
                times: T(exchangeStartedAt: 1_000), next: Int64.max, expiry: nil),
            Row(name: "streaming: upstream idle", facts: F(phase: .exchange, relayingBody: true),
                times: T(exchangeStartedAt: 1_000, lastUpstreamRead: 50_000), next: 170_000, expiry: .upstreamIdle),
            Row(name: "paused by a slow client: no idle clock, only the write clock", facts: F(phase: .exchange, clientOutputPending: true),
                times: T(exchangeStartedAt: 1_000, lastUpstreamRead: 50_000, lastClientWriteProgress: 60_000), next: 80_000, expiry: .clientWrite),
            Row(name: "client write wins over upstream idle when both passed",
                facts: F(phase: .exchange, relayingBody: true, clientOutputPending: true),
                times: T(exchangeStartedAt: 1_000, lastUpstreamRead: 1_000, lastClientWriteProgress: 101_000), next: 121_000, expiry: .clientWrite),
            Row(name: "request body stalled", facts: F(phase: .exchange, readingRequestBody: true),
                times: T(exchangeStartedAt: 1_000, lastClientRead: 2_000), next: 62_000, expiry: .clientBodyIdle),
            Row(name: "body clock starts at the exchange when nothing was read since", facts: F(phase: .exchange, readingRequestBody: true),
                times: T(exchangeStartedAt: 1_000, lastClientRead: 500), next: 61_000, expiry: .clientBodyIdle),
            Row(name: "tunnel: idle either way", facts: F(phase: .tunnel),
                times: T(exchangeStartedAt: 1_000, lastUpstreamRead: 1_000, lastTunnelTraffic: 4_000), next: 3_604_000, expiry: .tunnelIdle),
            Row(name: "tunnel with a client that stopped reading: the write clock first", facts: F(phase: .tunnel, clientOutputPending: true),
                times: T(exchangeStartedAt: 1_000, lastClientWriteProgress: 5_000, lastTunnelTraffic: 6_000), next: 25_000, expiry: .clientWrite),
            Row(name: "tunnel: no first-byte, upstream-idle or body clocks, whatever the facts say",
                facts: F(phase: .tunnel, connecting: true, awaitingResponseHead: true, relayingBody: true, readingRequestBody: true),
                times: T(exchangeStartedAt: 1_000, connectStartedAt: 1_000, requestSentAt: 1_000, lastUpstreamRead: 1_000, lastClientRead: 1_000,
                         lastTunnelTraffic: 1_000), next: 3_601_000, expiry: .tunnelIdle),
            Row(name: "lingering close", facts: F(phase: .lingering), times: T(lingerStartedAt: 7_000), next: 9_000, expiry: .linger),
            Row(name: "closed", facts: F(phase: .closed), times: T(acceptedAt: 1), next: Int64.max, expiry: nil),
        ]
    }

    @Test func eachTimeoutFiresAtItsDeadlineAndNotBefore() {
        for row in Self.rows {
            #expect(ExchangeDeadlines.next(row.facts, row.times, Self.limits) == row.next, "\(row.name)")
            guard row.next != Int64.max else {
                #expect(ExchangeDeadlines.expired(row.facts, row.times, Self.limits, now: 1 << 40) == nil, "\(row.name)")
                continue
            }
            #expect(ExchangeDeadlines.expired(row.facts, row.times, Self.limits, now: row.next - 1) == nil, "\(row.name)")
            #expect(ExchangeDeadlines.expired(row.facts, row.times, Self.limits, now: row.next) == row.expiry, "\(row.name)")
        }
    }

    @Test func theTotalLimitAppliesOnlyWhenSetAndComesBeforeIdleTimers() {
        var limits = Self.limits
        limits.timeouts.total = 30_000
        let facts = ExchangeDeadlines.Facts(phase: .exchange, relayingBody: true)
        let times = ExchangeDeadlines.Times(exchangeStartedAt: 1_000, lastUpstreamRead: 1_000)
        #expect(ExchangeDeadlines.next(facts, times, limits) == 31_000)
        #expect(ExchangeDeadlines.expired(facts, times, limits, now: 200_000) == .total)
        #expect(ExchangeDeadlines.expired(facts, times, Self.limits, now: 200_000) == .upstreamIdle)
        // A tunnel lives as long as it carries traffic: `total` is for one request and response.
        let tunnel = ExchangeDeadlines.Facts(phase: .tunnel)
        let tunnelTimes = ExchangeDeadlines.Times(exchangeStartedAt: 1_000, lastTunnelTraffic: 1_000_000)
        #expect(ExchangeDeadlines.next(tunnel, tunnelTimes, limits) == 4_600_000)
    }

    @Test func aLimitOfZeroNeverFires() {
        var limits = Self.limits
        limits.timeouts.upstreamFirstByte = 0
        let facts = ExchangeDeadlines.Facts(phase: .exchange, awaitingResponseHead: true)
        let times = ExchangeDeadlines.Times(exchangeStartedAt: 1_000, requestSentAt: 1_000)
        #expect(ExchangeDeadlines.next(facts, times, limits) == Int64.max)
        #expect(ExchangeDeadlines.expired(facts, times, limits, now: Int64.max - 1) == nil)
    }
}
