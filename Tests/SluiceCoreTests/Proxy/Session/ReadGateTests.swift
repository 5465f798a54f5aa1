import Testing

@testable import SluiceCore

/// The watermark gate both sides use: a sequence of queue sizes and the crossing each must report.
@Suite struct ReadGateTests {
    @Test func pausesAtTheHighMarkAndResumesOnlyAtTheLowOne() {
        let rows: [(queued: Int, change: ReadGate.Change?, open: Bool)] = [
            (0, nil, true), (99, nil, true), (100, .paused, false), (150, nil, false), (100, nil, false),
            // Between the marks nothing changes in either direction (no flapping at one mark).
            (75, nil, false), (51, nil, false), (50, .resumed, true), (75, nil, true), (99, nil, true), (100, .paused, false),
            (0, .resumed, true), (0, nil, true),
        ]
        var gate = ReadGate()
        let marks = ReadGate.Watermarks(high: 100, low: 50)
        for (step, row) in rows.enumerated() {
            #expect(gate.queueChanged(to: row.queued, marks) == row.change, "step \(step): \(row.queued) bytes")
            #expect(gate.isOpen == row.open, "step \(step)")
        }
    }
}
