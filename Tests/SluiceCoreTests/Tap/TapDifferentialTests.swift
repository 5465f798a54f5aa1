import Testing
@testable import SluiceCore

/// The shipped response tap against the one before `JSONPushScanner` (`ReferenceResponseTap`, kept in the tests):
/// the rewrite was for speed only, so every observation must be the same for every body and every split of it.
@Suite("Tap differential")
struct TapDifferentialTests {
    private typealias Support = TapTestSupport

    /// The reference tap's report on `bytes` fed in pieces cut at `cuts`, the i-th piece at time i.
    private static func reference(kind: ResponseTap.Kind, _ bytes: [UInt8], cuts: [Int]) -> ResponseObservation {
        var tap = ReferenceResponseTap()
        switch kind {
        case .eventStream: tap.reset(kind: .eventStream)
        case .json: tap.reset(kind: .json)
        case .other: tap.reset(kind: .other)
        }
        for (number, range) in Support.pieces(bytes.count, cuts: cuts).enumerated() {
            tap.observe(bytes.span.extracting(range), now: Int64(number))
        }
        tap.finish(now: 1_000_000)
        return tap.observation
    }

    private static func shipped(kind: ResponseTap.Kind, _ bytes: [UInt8], cuts: [Int]) -> ResponseObservation {
        var tap = ResponseTap()
        tap.reset(kind: kind)
        for (number, range) in Support.pieces(bytes.count, cuts: cuts).enumerated() {
            tap.observe(bytes.span.extracting(range), now: Int64(number))
        }
        tap.finish(now: 1_000_000)
        return tap.observation
    }

    private static var corpus: [(name: String, kind: ResponseTap.Kind, body: String)] {
        TapDifferentialCorpus.eventStreams.map { ($0.name, .eventStream, $0.body) }
            + TapDifferentialCorpus.jsonBodies.map { ($0.name, .json, $0.body) }
    }

    @Test("same observation as the reference, whole, split at every offset and byte by byte",
          arguments: TapDifferentialTests.corpus.map(\.name))
    func sameObservation(name: String) {
        let entry = Self.corpus.first { $0.name == name }!
        let bytes = Support.bytes(entry.body)
        let whole = Self.reference(kind: entry.kind, bytes, cuts: [])
        for feeding in Support.feedings(bytes.count, everySplitLimit: 2048) {
            // Times are piece numbers here, so they depend on the split; the rest must not.
            let expected = Self.reference(kind: entry.kind, bytes, cuts: feeding.cuts)
            let observed = Self.shipped(kind: entry.kind, bytes, cuts: feeding.cuts)
            #expect(observed == expected, "\(feeding.name)")
            #expect(observed.usage == whole.usage && observed.model == whole.model
                    && observed.contentEvents == whole.contentEvents && observed.eventCount == whole.eventCount
                    && observed.estimatedCompletionTokens == whole.estimatedCompletionTokens, "\(feeding.name)")
        }
    }

    /// The corpus streams with a few bytes changed (a seeded generator, so a failure reproduces): most mutants
    /// are invalid JSON somewhere, which tests that both taps discard exactly the same documents.
    @Test("same observation as the reference on mutated streams")
    func mutatedStreams() {
        var generator = SplitMix64(seed: 0x5EED_7A9)
        let alphabet = Array(#"{}[]:,"\ u0123456789abcdef-+.eE tnrl"#.utf8) + [0x0A, 0x0D, 0x09, 0x00, 0xC3, 0xA9]
        var compared = 0
        for entry in Self.corpus {
            let original = Support.bytes(entry.body)
            for _ in 0..<60 {
                var bytes = original
                for _ in 0..<Int(generator.next() % 3 + 1) where !bytes.isEmpty {
                    let position = Int(generator.next() % UInt64(bytes.count))
                    let replacement = alphabet[Int(generator.next() % UInt64(alphabet.count))]
                    switch generator.next() % 3 {
                    case 0: bytes[position] = replacement
                    case 1: bytes.insert(replacement, at: position)
                    default: bytes.remove(at: position)
                    }
                }
                var cuts: [Int] = []
                var cut = 0
                while true {
                    cut += Int(generator.next() % 40)
                    guard cut < bytes.count else { break }
                    cuts.append(cut)
                }
                let expected = Self.reference(kind: entry.kind, bytes, cuts: cuts)
                let observed = Self.shipped(kind: entry.kind, bytes, cuts: cuts)
                #expect(observed == expected, "\(entry.name): \(String(decoding: bytes, as: UTF8.self).debugDescription)")
                compared += 1
            }
        }
        #expect(compared == Self.corpus.count * 60)
    }

    /// Reader-level: what the observation does not show for streams (the output bytes, the counts by name).
    @Test("the reader reports the same counts, model and output bytes per document")
    func readerCounts() {
        for entry in TapDifferentialCorpus.eventStreams {
            var reader = UsageReader()
            var reference = ReferenceUsageReader()
            for line in entry.body.split(separator: "\n") where line.hasPrefix("data:") {
                let document = Support.bytes(String(line.dropFirst(5)))
                reader.beginDocument()
                reference.beginDocument()
                for range in Support.pieces(document.count, cuts: Array(stride(from: 3, to: document.count, by: 7))) {
                    reader.feed(document.span.extracting(range))
                    reference.feed(document.span.extracting(range))
                }
                reader.endDocument()
                reference.endDocument()
                #expect(reader.reportedUsage == reference.reportedUsage, "\(entry.name)")
                #expect(reader.model == reference.model, "\(entry.name)")
                #expect(reader.contentDocuments == reference.contentDocuments, "\(entry.name)")
                #expect(reader.outputDeltas == reference.outputDeltas, "\(entry.name)")
                #expect(reader.outputTextBytes == reference.outputTextBytes, "\(entry.name)")
            }
        }
    }

    /// The corpus is not vacuous: it reaches usage, a model, content and a rejected document.
    @Test("the corpus exercises usage, models, content and failures")
    func corpusCoverage() {
        let observations = TapDifferentialCorpus.eventStreams.map {
            Self.shipped(kind: .eventStream, Support.bytes($0.body), cuts: [])
        }
        #expect(observations.contains { $0.usage != nil })
        #expect(observations.contains { $0.model == String(repeating: "m", count: 128) })
        #expect(observations.contains { $0.model == "escaped-name" || $0.model == "b" })
        #expect(observations.contains { $0.contentEvents > 3 })
        let invalid = TapDifferentialCorpus.eventStreams.first { $0.name == "invalid documents" }!
        let invalidObservation = Self.shipped(kind: .eventStream, Support.bytes(invalid.body), cuts: [])
        // Only the 32-deep document and the one after it are valid: 3 + 4 prompt tokens would mean a bad one counted.
        #expect(invalidObservation.usage == TokenUsage(promptTokens: 4, completionTokens: 0, totalTokens: 4))
        #expect(invalidObservation.model == nil)
    }
}

/// A small seeded generator (SplitMix64), so that the mutation test is the same on every run.
private struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}
