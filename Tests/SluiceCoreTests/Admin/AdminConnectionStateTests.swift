import Testing

@testable import SluiceCore

/// The admin connection's state machine: sequences of events with times, and the action and phase each one
/// must give. No socket and no clock: the tests are the timeline.
@Suite struct AdminConnectionStateTests {
    private static let limits = AdminLimits(headTimeoutMilliseconds: 5_000, writeTimeoutMilliseconds: 10_000,
                                            maxConnections: 4, maxHeadBytes: 64, answerTimeoutMilliseconds: 30_000)
    private static let healthz = AdminRequest(method: .get, path: "/healthz")
    private static let reload = AdminRequest(method: .post, path: "/reload")

    private enum Event {
        case received(AdminHeadProgress, at: Int64)
        case peerClosed
        case wrote(remaining: Int)
        case failed
        case tick(at: Int64)
        case evict
        /// The shell routed the reply to an answer from another thread.
        case awaitAnswer(at: Int64)
        /// That answer arrived; `writes` is what `answered` must return (the step's action is then `.wait`).
        case answered(at: Int64, writes: Bool)
    }

    private struct Step {
        var event: Event
        var action: AdminConnectionState.Action
        var phase: AdminConnectionState.Phase
    }

    private struct Case {
        var name: String
        var steps: [Step]
    }

    private static let cases: [Case] = [
        Case(name: "a probe: head at once, answer written whole", steps: [
            Step(event: .received(.complete(healthz), at: 3), action: .respond(.route(healthz)), phase: .writing),
            Step(event: .wrote(remaining: 0), action: .close(.answered), phase: .closed(.answered)),
        ]),
        Case(name: "a head in pieces, then a response the client takes slowly", steps: [
            Step(event: .received(.incomplete(bufferFull: false), at: 1), action: .wait, phase: .readingHead),
            Step(event: .received(.incomplete(bufferFull: false), at: 2), action: .wait, phase: .readingHead),
            Step(event: .received(.complete(healthz), at: 3), action: .respond(.route(healthz)), phase: .writing),
            Step(event: .wrote(remaining: 100), action: .wait, phase: .writing),
            Step(event: .tick(at: 10_002), action: .wait, phase: .writing),
            Step(event: .wrote(remaining: 0), action: .close(.answered), phase: .closed(.answered)),
        ]),
        Case(name: "slow loris: every byte in time, the head deadline still counts from the accept", steps: [
            Step(event: .received(.incomplete(bufferFull: false), at: 1_000), action: .wait, phase: .readingHead),
            Step(event: .tick(at: 1_000), action: .wait, phase: .readingHead),
            Step(event: .received(.incomplete(bufferFull: false), at: 4_000), action: .wait, phase: .readingHead),
            Step(event: .tick(at: 4_999), action: .wait, phase: .readingHead),
            Step(event: .tick(at: 5_000), action: .close(.headTimeout), phase: .closed(.headTimeout)),
            Step(event: .tick(at: 6_000), action: .wait, phase: .closed(.headTimeout)),
        ]),
        Case(name: "connected and silent", steps: [
            Step(event: .tick(at: 5_000), action: .close(.headTimeout), phase: .closed(.headTimeout)),
        ]),
        Case(name: "a reader that never reads: closed at the write deadline, counted from the response", steps: [
            Step(event: .received(.complete(healthz), at: 4_000), action: .respond(.route(healthz)), phase: .writing),
            Step(event: .wrote(remaining: 500_000), action: .wait, phase: .writing),
            Step(event: .tick(at: 5_000), action: .wait, phase: .writing),
            Step(event: .tick(at: 13_999), action: .wait, phase: .writing),
            Step(event: .tick(at: 14_000), action: .close(.writeTimeout), phase: .closed(.writeTimeout)),
        ]),
        Case(name: "head larger than the buffer", steps: [
            Step(event: .received(.incomplete(bufferFull: true), at: 5), action: .respond(.headTooLarge), phase: .writing),
        ]),
        Case(name: "malformed head", steps: [
            Step(event: .received(.malformed("bad request line"), at: 5), action: .respond(.badRequest("bad request line")),
                 phase: .writing),
            Step(event: .wrote(remaining: 0), action: .close(.answered), phase: .closed(.answered)),
        ]),
        Case(name: "end of stream before the head", steps: [
            Step(event: .received(.incomplete(bufferFull: false), at: 1), action: .wait, phase: .readingHead),
            Step(event: .peerClosed, action: .close(.peerClosed), phase: .closed(.peerClosed)),
        ]),
        Case(name: "half-close after the head: the answer is still written", steps: [
            Step(event: .received(.complete(healthz), at: 1), action: .respond(.route(healthz)), phase: .writing),
            Step(event: .peerClosed, action: .wait, phase: .writing),
            Step(event: .wrote(remaining: 0), action: .close(.answered), phase: .closed(.answered)),
        ]),
        Case(name: "bytes after the head are ignored", steps: [
            Step(event: .received(.complete(healthz), at: 1), action: .respond(.route(healthz)), phase: .writing),
            Step(event: .received(.malformed("pipelined"), at: 2), action: .wait, phase: .writing),
        ]),
        Case(name: "reset while writing", steps: [
            Step(event: .received(.complete(healthz), at: 1), action: .respond(.route(healthz)), phase: .writing),
            Step(event: .failed, action: .close(.failed), phase: .closed(.failed)),
            Step(event: .failed, action: .wait, phase: .closed(.failed)),
        ]),
        Case(name: "evicted while reading, then nothing more happens", steps: [
            Step(event: .evict, action: .close(.evicted), phase: .closed(.evicted)),
            Step(event: .received(.complete(healthz), at: 2), action: .wait, phase: .closed(.evicted)),
            Step(event: .evict, action: .wait, phase: .closed(.evicted)),
            Step(event: .wrote(remaining: 0), action: .wait, phase: .closed(.evicted)),
        ]),
        Case(name: "POST /reload answered in time: written from the answer on, with a fresh write deadline", steps: [
            Step(event: .received(.complete(reload), at: 1), action: .respond(.route(reload)), phase: .writing),
            Step(event: .awaitAnswer(at: 1), action: .wait, phase: .awaitingAnswer),
            // Neither the write deadline (1 + 10 s) nor a half-close ends a connection that waits.
            Step(event: .tick(at: 10_001), action: .wait, phase: .awaitingAnswer),
            Step(event: .peerClosed, action: .wait, phase: .awaitingAnswer),
            Step(event: .wrote(remaining: 0), action: .wait, phase: .awaitingAnswer),
            Step(event: .answered(at: 20_000, writes: true), action: .wait, phase: .writing),
            Step(event: .tick(at: 29_999), action: .wait, phase: .writing),
            Step(event: .tick(at: 30_000), action: .close(.writeTimeout), phase: .closed(.writeTimeout)),
        ]),
        Case(name: "POST /reload not answered in time: the overdue answer is written instead, a late answer is dropped", steps: [
            Step(event: .received(.complete(reload), at: 1), action: .respond(.route(reload)), phase: .writing),
            Step(event: .awaitAnswer(at: 1), action: .wait, phase: .awaitingAnswer),
            Step(event: .tick(at: 30_000), action: .wait, phase: .awaitingAnswer),
            Step(event: .tick(at: 30_001), action: .answerOverdue, phase: .writing),
            Step(event: .answered(at: 30_002, writes: false), action: .wait, phase: .writing),
            Step(event: .wrote(remaining: 0), action: .close(.answered), phase: .closed(.answered)),
        ]),
        Case(name: "an awaiting connection evicted: its answer finds it closed", steps: [
            Step(event: .received(.complete(reload), at: 1), action: .respond(.route(reload)), phase: .writing),
            Step(event: .awaitAnswer(at: 1), action: .wait, phase: .awaitingAnswer),
            Step(event: .evict, action: .close(.evicted), phase: .closed(.evicted)),
            Step(event: .answered(at: 5, writes: false), action: .wait, phase: .closed(.evicted)),
        ]),
        Case(name: "awaitAnswer outside the writing phase changes nothing", steps: [
            Step(event: .awaitAnswer(at: 1), action: .wait, phase: .readingHead),
            Step(event: .tick(at: 5_000), action: .close(.headTimeout), phase: .closed(.headTimeout)),
        ]),
    ]

    @Test(arguments: cases.indices)
    func timeline(_ index: Int) {
        let testCase = Self.cases[index]
        var state = AdminConnectionState(acceptedAt: 0, limits: Self.limits)
        for (number, step) in testCase.steps.enumerated() {
            let action: AdminConnectionState.Action
            switch step.event {
            case .received(let progress, let at): action = state.received(progress, now: at)
            case .peerClosed: action = state.peerClosed()
            case .wrote(let remaining): action = state.wrote(remaining: remaining)
            case .failed: action = state.failed()
            case .tick(let at): action = state.tick(now: at)
            case .evict: action = state.evict()
            case .awaitAnswer(let at):
                state.awaitAnswer(now: at)
                action = .wait
            case .answered(let at, let writes):
                #expect(state.answered(now: at) == writes, "\(testCase.name), step \(number)")
                action = .wait
            }
            #expect(action == step.action, "\(testCase.name), step \(number)")
            #expect(state.phase == step.phase, "\(testCase.name), step \(number)")
        }
    }

    /// (phase reached, accepted at) for each open connection, and which one the cap must close.
    struct VictimCase {
        var connections: [(reading: Bool, acceptedAt: Int64)]
        var victim: Int?
        /// The index of a writing connection that awaits an answer instead.
        var awaiting: Int? = nil
    }

    @Test(arguments: [
        VictimCase(connections: [], victim: nil),
        VictimCase(connections: [(true, 5)], victim: 0),
        // The oldest one still reading its head goes first, even when a writing one is older.
        VictimCase(connections: [(false, 1), (true, 9), (true, 4), (false, 2)], victim: 2),
        // All writing: the oldest of them.
        VictimCase(connections: [(false, 7), (false, 3), (false, 5)], victim: 1),
        VictimCase(connections: [(true, 7), (true, 3), (true, 5)], victim: 1),
        // One awaiting a reload (accepted at 1, `awaiting`) ranks with the writing ones: a reader goes first.
        VictimCase(connections: [(false, 1), (true, 9)], victim: 1, awaiting: 0),
        VictimCase(connections: [(false, 1), (false, 2)], victim: 0, awaiting: 0),
    ])
    func victimIsTheOldestPendingThenTheOldestWriting(_ victimCase: VictimCase) {
        let states = victimCase.connections.enumerated().map { index, connection in
            var state = AdminConnectionState(acceptedAt: connection.acceptedAt, limits: Self.limits)
            if !connection.reading { _ = state.received(.complete(Self.healthz), now: connection.acceptedAt) }
            if index == victimCase.awaiting { state.awaitAnswer(now: connection.acceptedAt) }
            return state
        }
        #expect(AdminConnectionState.victim(states) == victimCase.victim)
    }
}
