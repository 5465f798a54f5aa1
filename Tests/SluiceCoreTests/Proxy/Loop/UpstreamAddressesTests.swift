import Testing

@testable import SluiceCore

/// The resolver's state machine, with lookups injected: what each refresh reports and which addresses stay in use.
@Suite struct UpstreamAddressesTests {
    private static func addresses(_ hosts: String...) -> [SocketAddress] {
        hosts.map { SocketAddress(numericHost: $0, port: 8000)! }
    }

    /// One step: a lookup answer (nil: it fails) at a time, and what `refresh` must say.
    private struct Step {
        var at: Int64
        var answer: [SocketAddress]?
        var expected: UpstreamAddresses.Refresh
        var inUse: [SocketAddress]
    }

    @Test func refreshesFollowTheNameAndKeepTheLastAddressesThroughFailures() throws {
        let a = Self.addresses("127.0.0.1"), b = Self.addresses("127.0.0.2", "127.0.0.3")
        // "localhost" resolves for real at creation (to loopback); the steps then answer for it.
        let upstream = try UpstreamAddresses(host: "localhost", port: 8000, refreshInterval: 1_000, now: 0)
        let steps = [
            Step(at: 999, answer: b, expected: .notDue, inUse: upstream.all),
            Step(at: 1_000, answer: a, expected: upstream.all == a ? .unchanged : .changed(a), inUse: a),
            Step(at: 2_000, answer: a, expected: .unchanged, inUse: a),
            Step(at: 3_000, answer: b, expected: .changed(b), inUse: b),
            Step(at: 3_500, answer: a, expected: .notDue, inUse: b),
            Step(at: 4_000, answer: nil, expected: .failed("lookup failed", first: true), inUse: b),
            Step(at: 5_000, answer: nil, expected: .failed("lookup failed", first: false), inUse: b),
            Step(at: 6_000, answer: b, expected: .recovered(b), inUse: b),
            Step(at: 7_000, answer: nil, expected: .failed("lookup failed", first: true), inUse: b),
            Step(at: 8_000, answer: a, expected: .recovered(a), inUse: a),
        ]
        for (index, step) in steps.enumerated() {
            let result = upstream.refresh(now: step.at) { (_, _) throws(SystemError) -> [SocketAddress] in
                guard let answer = step.answer else { throw SystemError(call: "lookup failed", errno: 0) }
                return answer
            }
            switch (result, step.expected) {
            case (.failed(_, let first), .failed(_, let expectedFirst)):
                #expect(first == expectedFirst, "step \(index)")
            default:
                #expect(result == step.expected, "step \(index)")
            }
            #expect(upstream.all == step.inUse, "step \(index)")
        }
    }

    @Test func theGenerationCountsChangesOnly() throws {
        let upstream = try UpstreamAddresses(host: "localhost", port: 8000, refreshInterval: 1_000, now: 0)
        let a = Self.addresses("127.0.0.1"), b = Self.addresses("127.0.0.2")
        let answers: [[SocketAddress]?] = [a, a, b, nil, b, a]
        var generations: [Int] = []
        for (index, answer) in answers.enumerated() {
            _ = upstream.refresh(now: Int64(index + 1) * 1_000) { (_, _) throws(SystemError) -> [SocketAddress] in
                guard let answer else { throw SystemError(call: "lookup failed", errno: 0) }
                return answer
            }
            generations.append(upstream.generation)
        }
        // "localhost" may already be 127.0.0.1: the first refresh changes nothing then.
        let first = generations[0]
        #expect(generations == [first, first, first + 1, first + 1, first + 1, first + 2])
        #expect(upstream.contains(a[0]) && !upstream.contains(b[0]))
    }

    @Test func aLiteralIsNeverLookedUpAgain() throws {
        let upstream = try UpstreamAddresses(host: "127.0.0.1", port: 8000, refreshInterval: 1_000, now: 0)
        var lookups = 0
        let result = upstream.refresh(now: 10_000) { (_, _) throws(SystemError) -> [SocketAddress] in
            lookups += 1
            return []
        }
        #expect(result == .notDue && lookups == 0)
        #expect(upstream.all == Self.addresses("127.0.0.1"))
    }

    @Test func offLooksUpOnlyAtCreation() throws {
        let upstream = try UpstreamAddresses(host: "localhost", port: 8000, refreshInterval: 0, now: 0)
        #expect(upstream.refresh(now: Int64.max) { (_, _) throws(SystemError) in Self.addresses("127.0.0.9") } == .notDue)
    }

    @Test func connectionsTakeTheAddressesInTurnPassingOverOnesThatFailed() throws {
        let upstream = try UpstreamAddresses(host: "localhost", port: 8000, refreshInterval: 1_000, now: 0)
        let three = Self.addresses("127.0.0.1", "127.0.0.2", "127.0.0.3")
        _ = upstream.refresh(now: 1_000) { (_, _) throws(SystemError) in three }
        #expect((0..<4).map { _ in upstream.next(now: 1_000) } == [three[0], three[1], three[2], three[0]])
        // The second fails: it is passed over until its down time is over.
        upstream.connectFailed(to: three[1], now: 2_000)
        #expect((0..<4).map { _ in upstream.next(now: 2_000) } == [three[2], three[0], three[2], three[0]])
        let back = 2_000 + UpstreamAddresses.downMilliseconds
        #expect((0..<3).map { _ in upstream.next(now: back) } == [three[1], three[2], three[0]])
        // All down: plain turns, so one that came back is found.
        for address in three { upstream.connectFailed(to: address, now: back) }
        #expect((0..<3).map { _ in upstream.next(now: back) } == [three[1], three[2], three[0]])
        // A lookup that keeps an address keeps its failure; a new address starts in good standing.
        let next = Self.addresses("127.0.0.3", "127.0.0.4")
        _ = upstream.refresh(now: back + 1_000) { (_, _) throws(SystemError) in next }
        #expect((0..<2).map { _ in upstream.next(now: back + 1_000) } == [next[1], next[1]])
        // A failure reported for an address the name no longer has changes nothing.
        upstream.connectFailed(to: three[0], now: back + 1_000)
        #expect(upstream.next(now: back + 1_000) == next[1])
    }

    @Test func anUnknownNameIsAnErrorNamingIt() {
        #expect(throws: SystemError.self) {
            _ = try UpstreamAddresses(host: "no-such-host.invalid", port: 80, refreshInterval: 1_000, now: 0)
        }
        do {
            _ = try UpstreamAddresses(host: "no-such-host.invalid", port: 80, refreshInterval: 1_000, now: 0)
        } catch {
            #expect(error.description.contains("no-such-host.invalid"))
        }
    }
}
