import Testing

@testable import SluiceCore

/// A server's health as rows: what traffic and probes report, when, the event that must come back, and whether the
/// server takes new streams right after. Times are loop-clock milliseconds, written in the rows.
@Suite struct PassiveHealthTests {
    typealias Event = PassiveHealth.Event

    enum Report {
        /// Traffic saw a failure.
        case fail
        /// Traffic saw a good response head.
        case success
        case probe(passed: Bool)
        /// Nothing happens: only availability is looked at.
        case look
    }

    struct Step {
        var report: Report
        var at: Int64
        var event: Event?
        var available: Bool
        /// Whether anything beyond good standing is on record (nil: not checked).
        var clean: Bool?

        init(_ report: Report, at: Int64, _ event: Event? = nil, available: Bool, clean: Bool? = nil) {
            self.report = report
            self.at = at
            self.event = event
            self.available = available
            self.clean = clean
        }
    }

    struct Row: CustomTestStringConvertible {
        var name: String
        var config: PassiveHealthConfig
        var steps: [Step]
        var testDescription: String { name }
    }

    /// 3 failures in 1 s eject for 1 s, doubling up to 5 s.
    static let threeInASecond = PassiveHealthConfig(maxFails: 3, failWindow: 1_000, ejectTime: 1_000, maxEjectTime: 5_000)
    /// Every failure ejects (so the doubling shows step by step).
    static let everyFailure = PassiveHealthConfig(maxFails: 1, failWindow: 1_000, ejectTime: 1_000, maxEjectTime: 5_000)

    static let rows: [Row] = [
        Row(name: "failures eject only within one window", config: threeInASecond, steps: [
            Step(.fail, at: 0, available: true),
            Step(.fail, at: 500, available: true),
            // The window that began at 0 is over: this failure starts a new one.
            Step(.fail, at: 1_000, available: true),
            Step(.fail, at: 1_100, available: true),
            Step(.fail, at: 1_900, .ejected(until: 2_900, ejections: 1), available: false),
            Step(.look, at: 2_899, available: false),
            Step(.look, at: 2_900, available: true),
        ]),
        Row(name: "ejections double while failures go on, up to the cap", config: everyFailure, steps: [
            Step(.fail, at: 0, .ejected(until: 1_000, ejections: 1), available: false),
            // Streams that began before the ejection fail during it: no ejection on top of the ejection.
            Step(.fail, at: 500, available: false),
            Step(.fail, at: 1_000, .ejected(until: 3_000, ejections: 2), available: false),
            Step(.fail, at: 3_000, .ejected(until: 7_000, ejections: 3), available: false),
            Step(.fail, at: 7_000, .ejected(until: 12_000, ejections: 4), available: false),
            Step(.fail, at: 12_000, .ejected(until: 17_000, ejections: 5), available: false),
            Step(.look, at: 17_000, available: true),
        ]),
        Row(name: "a success ends the doubling, but not one during the ejection", config: everyFailure, steps: [
            Step(.fail, at: 0, .ejected(until: 1_000, ejections: 1), available: false),
            Step(.success, at: 500, available: false),
            Step(.fail, at: 1_000, .ejected(until: 3_000, ejections: 2), available: false),
            Step(.success, at: 3_000, available: true, clean: true),
            Step(.fail, at: 3_000, .ejected(until: 4_000, ejections: 1), available: false),
        ]),
        Row(name: "a success clears the failures counted so far", config: threeInASecond, steps: [
            Step(.fail, at: 0, available: true, clean: false),
            Step(.fail, at: 100, available: true),
            Step(.success, at: 200, available: true, clean: true),
            Step(.fail, at: 300, available: true),
            Step(.fail, at: 400, available: true),
            Step(.fail, at: 500, .ejected(until: 1_500, ejections: 1), available: false),
        ]),
        Row(name: "max_fails 0 turns passive ejection off", config: PassiveHealthConfig(maxFails: 0), steps:
            (0..<10).map { Step(.fail, at: Int64($0), available: true, clean: true) }),
        Row(name: "a failed probe takes the server out until one passes", config: threeInASecond, steps: [
            Step(.probe(passed: true), at: 0, available: true, clean: true),
            Step(.probe(passed: false), at: 100, .probeFailed, available: false, clean: false),
            Step(.probe(passed: false), at: 5_100, available: false),
            Step(.look, at: .max - 1, available: false),
            Step(.success, at: 6_000, available: false),
            Step(.probe(passed: true), at: 10_100, .probePassed(endedEjection: true), available: true, clean: true),
            Step(.probe(passed: true), at: 15_100, available: true),
        ]),
        Row(name: "a passing probe ends a passive ejection (the doubling goes on until traffic succeeds)", config: everyFailure, steps: [
            Step(.fail, at: 0, .ejected(until: 1_000, ejections: 1), available: false),
            Step(.probe(passed: true), at: 200, .probePassed(endedEjection: true), available: true),
            Step(.fail, at: 300, .ejected(until: 2_300, ejections: 2), available: false),
        ]),
        Row(name: "a probe passing after the ejection ran out reports nothing", config: everyFailure, steps: [
            Step(.fail, at: 0, .ejected(until: 1_000, ejections: 1), available: false),
            Step(.probe(passed: true), at: 1_500, available: true),
        ]),
        Row(name: "a failed probe outlasts a passive ejection", config: everyFailure, steps: [
            Step(.fail, at: 0, .ejected(until: 1_000, ejections: 1), available: false),
            Step(.probe(passed: false), at: 500, .probeFailed, available: false),
            Step(.look, at: 1_000, available: false),
            Step(.probe(passed: true), at: 5_500, .probePassed(endedEjection: true), available: true),
        ]),
        Row(name: "traffic can eject a server while probes fail it", config: everyFailure, steps: [
            Step(.probe(passed: false), at: 0, .probeFailed, available: false),
            Step(.fail, at: 10, .ejected(until: 1_010, ejections: 1), available: false),
            Step(.probe(passed: true), at: 500, .probePassed(endedEjection: true), available: true),
        ]),
    ]

    @Test(arguments: rows)
    func steps(_ row: Row) {
        var health = PassiveHealth(config: row.config)
        for (index, step) in row.steps.enumerated() {
            var event: Event?
            switch step.report {
            case .fail: event = health.failed(now: step.at)
            case .success: health.succeeded(now: step.at)
            case .probe(let passed): event = health.probed(passed: passed, now: step.at)
            case .look: break
            }
            #expect(event == step.event, "step \(index)")
            #expect(health.available(now: step.at) == step.available, "step \(index)")
            #expect(health.unavailableUntil <= step.at || !step.available, "step \(index): available means not out")
            if let clean = step.clean { #expect(health.isClean == clean, "step \(index)") }
        }
    }
}
