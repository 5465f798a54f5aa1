@testable import SluiceCore

/// Helpers for the tap tests, in a namespace so that they cannot clash with other folders' tests.
enum TapTestSupport {
    /// The UTF-8 bytes of `text`.
    static func bytes(_ text: String) -> [UInt8] {
        Array(text.utf8)
    }

    /// The bytes of a span, to compare.
    static func array(_ span: Span<UInt8>) -> [UInt8] {
        (0..<span.count).map { span[$0] }
    }

    /// Every way of feeding `count` bytes that the split tests compare: whole, split once at each offset (for inputs
    /// up to `everySplitLimit` bytes, as that is quadratic), and one byte per call.
    static func feedings(_ count: Int, everySplitLimit: Int = 4096) -> [(name: String, cuts: [Int])] {
        var feedings: [(name: String, cuts: [Int])] = [("whole", [])]
        if count <= everySplitLimit {
            feedings += (0...count).map { ("split at \($0)", [$0]) }
        }
        feedings.append(("byte by byte", Array(0...count)))
        return feedings
    }

    /// The pieces of `count` bytes cut at `cuts` (ascending), empty pieces included.
    static func pieces(_ count: Int, cuts: [Int]) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start = 0
        for cut in cuts + [count] {
            ranges.append(start..<cut)
            start = cut
        }
        return ranges
    }

    /// What a response tap reports after a body.
    struct ResponseOutcome: Equatable, CustomStringConvertible {
        var observation: ResponseObservation
        var captured: [UInt8]
        var captureTruncated: Bool

        var description: String {
            "\(observation) captured=\(String(decoding: captured, as: UTF8.self).debugDescription)"
                + (captureTruncated ? " (truncated)" : "")
        }
    }

    /// Feeds `bytes` to `tap` (after `reset(kind:)`) in pieces cut at `cuts`, the i-th piece at `now(i)`, then
    /// finishes at `finishAt`.
    static func run(_ tap: inout ResponseTap, kind: ResponseTap.Kind, _ bytes: [UInt8], cuts: [Int] = [],
                    now: (Int) -> Int64 = { _ in 7 }, finishAt: Int64 = 7) -> ResponseOutcome {
        tap.reset(kind: kind)
        for (number, range) in pieces(bytes.count, cuts: cuts).enumerated() {
            tap.observe(bytes.span.extracting(range), now: now(number))
        }
        tap.finish(now: finishAt)
        return ResponseOutcome(observation: tap.observation, captured: tap.withCapturedText { array($0) },
                               captureTruncated: tap.captureTruncated)
    }

    /// `run` on a fresh tap.
    static func run(kind: ResponseTap.Kind, _ bytes: [UInt8], cuts: [Int] = [], captureLimit: Int = 0,
                    now: (Int) -> Int64 = { _ in 7 }) -> ResponseOutcome {
        var tap = ResponseTap(captureLimit: captureLimit)
        return run(&tap, kind: kind, bytes, cuts: cuts, now: now)
    }
}
