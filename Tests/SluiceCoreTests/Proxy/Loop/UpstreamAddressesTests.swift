import Glibc
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

    @Test func refreshesFollowTheNameAndKeepTheLastAddressesThroughFailures() {
        let a = Self.addresses("127.0.0.1"), b = Self.addresses("127.0.0.2", "127.0.0.3")
        // "localhost" resolves for real at creation (to loopback); the steps then answer for it.
        let upstream = UpstreamAddresses(host: "localhost", port: 8000, refreshInterval: 1_000, now: 0)
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

    @Test func aLiteralIsNeverLookedUpAgain() {
        let upstream = UpstreamAddresses(host: "127.0.0.1", port: 8000, refreshInterval: 1_000, now: 0)
        var lookups = 0
        let result = upstream.refresh(now: 10_000) { (_, _) throws(SystemError) -> [SocketAddress] in
            lookups += 1
            return []
        }
        #expect(result == .notDue && lookups == 0)
        #expect(upstream.all == Self.addresses("127.0.0.1"))
    }

    @Test func offLooksUpOnlyAtCreation() {
        let upstream = UpstreamAddresses(host: "localhost", port: 8000, refreshInterval: 0, now: 0)
        #expect(upstream.refresh(now: Int64.max) { (_, _) throws(SystemError) in Self.addresses("127.0.0.9") } == .notDue)
    }

    /// A lookup that answers from a script: nil fails (with the resolver's wording), and every call is counted.
    private final class Script {
        var answers: [[SocketAddress]?]
        var calls: [Int64] = []
        init(_ answers: [[SocketAddress]?]) { self.answers = answers }

        func refresh(_ upstream: UpstreamAddresses, at now: Int64) -> UpstreamAddresses.Refresh {
            upstream.refresh(now: now) { (_, _) throws(SystemError) -> [SocketAddress] in
                self.calls.append(now)
                let answer = self.answers.removeFirst()
                guard let answer else { throw SystemError(call: "getaddrinfo(llm.invalid)", reason: "Name or service not known") }
                return answer
            }
        }
    }

    private static func unresolved(refreshInterval: Int) -> UpstreamAddresses {
        UpstreamAddresses(host: "llm.invalid", port: 8000, refreshInterval: refreshInterval, now: 0) { (host, _) throws(SystemError) in
            throw SystemError(call: "getaddrinfo(\(host))", reason: "Name or service not known")
        }
    }

    @Test func aNameThatDoesNotResolveAtCreationHasNoAddressAndSaysWhy() {
        let upstream = Self.unresolved(refreshInterval: 30_000)
        #expect(!upstream.isResolved)
        #expect(upstream.unresolvedReason == "getaddrinfo(llm.invalid): Name or service not known")
        #expect(upstream.creationFailure == upstream.unresolvedReason)
        #expect(upstream.all.isEmpty && upstream.count == 0)
    }

    /// Retries: 1 s, then doubling up to `resolve_interval` (or its default when off); failures after the one
    /// creation reported are not "first" (one log line per streak); the first answer is `.resolved`, and from then
    /// on the name follows `resolve_interval` like any other (off: never again).
    @Test(arguments: [(interval: 10_000, retries: [1_000, 3_000, 7_000, 15_000, 25_000, 35_000] as [Int64], then: 45_000 as Int64?),
                      (interval: 0, retries: [1_000, 3_000, 7_000, 15_000, 31_000, 61_000, 91_000], then: nil),
                      (interval: 500, retries: [500, 1_000, 1_500], then: 2_000)])
    func anUnresolvedNameIsRetriedWithBackoffUntilItResolves(_ schedule: (interval: Int, retries: [Int64], then: Int64?)) {
        let upstream = Self.unresolved(refreshInterval: schedule.interval)
        let found = Self.addresses("127.0.0.1", "127.0.0.2")
        let script = Script(Array(repeating: nil, count: schedule.retries.count - 1) + [found, found])
        var results: [UpstreamAddresses.Refresh] = []
        // Step every 100 ms: a lookup happens exactly when one is due, and not before.
        for now in stride(from: Int64(0), through: schedule.then.map { $0 + 100 } ?? schedule.retries.last! + 1_000, by: 100) {
            let result = script.refresh(upstream, at: now)
            if result != .notDue { results.append(result) }
            if now < schedule.retries.last! { #expect(upstream.all.isEmpty && !upstream.isResolved, "at \(now)") }
        }
        #expect(script.calls == schedule.retries + (schedule.then.map { [$0] } ?? []))
        let failures = results.prefix(schedule.retries.count - 1)
        #expect(failures.allSatisfy { $0 == .failed("getaddrinfo(llm.invalid): Name or service not known", first: false) })
        #expect(results[schedule.retries.count - 1] == .resolved(found))
        #expect(upstream.isResolved && upstream.unresolvedReason == nil && upstream.all == found)
        if schedule.then != nil { #expect(results.last == .unchanged) }
    }

    @Test func anUpstreamNoRouteUsesIsNeverLookedUp() {
        var lookups = 0
        let upstream = UpstreamAddresses(host: "llm.invalid", port: 80, refreshInterval: 1_000, now: 0, lookUp: false) {
            (_, _) throws(SystemError) -> [SocketAddress] in
            lookups += 1
            return []
        }
        #expect(lookups == 0 && !upstream.isResolved && upstream.creationFailure == nil)
        #expect(Script([Self.addresses("127.0.0.1")]).refresh(upstream, at: .max - 1) == .notDue)
    }

    /// A reload whose lookup fails keeps the addresses the same name had, instead of turning a working route
    /// into 502s over a DNS blip; a different name (or none before) starts unresolved.
    @Test func aReloadKeepsThePreviousAddressesWhenItsLookupFails() {
        let before = Self.addresses("127.0.0.7")
        let previous = UpstreamAddresses(host: "llm.invalid", port: 8000, refreshInterval: 1_000, now: 0) { (_, _) throws(SystemError) in before }
        let failing: (String, UInt16) throws(SystemError) -> [SocketAddress] = { (host, _) throws(SystemError) in
            throw SystemError(call: "getaddrinfo(\(host))", reason: "Temporary failure in name resolution")
        }
        let reloaded = UpstreamAddresses(host: "llm.invalid", port: 8000, refreshInterval: 1_000, now: 5_000, previous: previous, lookup: failing)
        #expect(reloaded.isResolved && reloaded.all == before)
        #expect(reloaded.creationFailure == "getaddrinfo(llm.invalid): Temporary failure in name resolution")
        // The failure streak began at the reload (which logged it): the next failure is not a new one.
        #expect(Script([nil]).refresh(reloaded, at: 6_000) == .failed("getaddrinfo(llm.invalid): Name or service not known", first: false))
        let moved = UpstreamAddresses(host: "other.invalid", port: 8000, refreshInterval: 1_000, now: 5_000, previous: previous, lookup: failing)
        #expect(!moved.isResolved && moved.all.isEmpty)
    }

    /// getaddrinfo's failures are worded by gai_strerror, never by a stale errno (": Success").
    @Test(arguments: [(status: EAI_NONAME, errno: Int32(0), expected: "getaddrinfo(h.invalid): Name or service not known"),
                      (status: EAI_AGAIN, errno: Int32(0), expected: "getaddrinfo(h.invalid): Temporary failure in name resolution"),
                      (status: EAI_NONAME, errno: EAGAIN, expected: "getaddrinfo(h.invalid): Name or service not known"),
                      (status: EAI_SYSTEM, errno: EMFILE, expected: "getaddrinfo(h.invalid): Too many open files")])
    func resolverErrorsUseTheResolversWords(_ row: (status: Int32, errno: Int32, expected: String)) {
        #expect(SocketAddress.resolverError(host: "h.invalid", status: row.status, errno: row.errno).description == row.expected)
    }

    @Test func anUnknownNameIsAnErrorNamingItInTheResolversWords() {
        // RFC 6761 §6.4: .invalid never resolves (offline it fails too, with EAI_AGAIN or EAI_NONAME).
        #expect(throws: SystemError.self) { _ = try SocketAddress.resolveAll(host: "no-such-host.invalid", port: 80) }
        do {
            _ = try SocketAddress.resolveAll(host: "no-such-host.invalid", port: 80)
        } catch {
            #expect(error.description.hasPrefix("getaddrinfo(no-such-host.invalid): "))
            #expect(!error.description.hasSuffix("Success"), "\(error.description)")
            #expect(error.reason != nil || error.errno != 0)
        }
        let upstream = UpstreamAddresses(host: "no-such-host.invalid", port: 80, refreshInterval: 1_000, now: 0)
        #expect(upstream.unresolvedReason?.hasPrefix("getaddrinfo(no-such-host.invalid): ") == true)
    }
}
