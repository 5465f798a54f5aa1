import Foundation
import SluiceFuzzSupport
import Testing

/// The chunked fuzz target's properties over its seed corpus, in every `swift test` run: the fuzz target and the
/// unit tests share `ChunkedBody`'s reassembly, so a change to it (or to the decoder) that breaks a fuzz property
/// shows up here without libFuzzer. A violated property traps, which fails the run with the property's message.
@Suite struct ChunkedFuzzSeedTests {
    /// The seeds in `Tests/Corpus/SluiceFuzzChunked`, found from this file's path (tests run from any directory).
    static let seeds: [URL] = {
        let corpus = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Corpus/SluiceFuzzChunked")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: corpus.path)) ?? []
        return names.sorted().map { corpus.appendingPathComponent($0) }
    }()

    @Test func corpusIsThere() {
        #expect(Self.seeds.count >= 5, "Tests/Corpus/SluiceFuzzChunked holds the fuzz target's seeds")
    }

    @Test(arguments: seeds)
    func seedKeepsTheFuzzProperties(_ seed: URL) throws {
        let bytes = [UInt8](try Data(contentsOf: seed))
        ChunkedFuzzing.check(bytes)
    }

    /// The shared reassembly on one body: the fuzz target and `HTTPTestSupport.decode` both see this result.
    @Test func sharedReassemblyDecodesAndScansOneBody() {
        let body = Array("5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nT: v\r\n\r\n".utf8)
        let expected = ChunkedBody.Decoded.ended(payload: Array("hello world".utf8), at: body.count)
        for cuts in [[], [1], [4, 9], Array(1..<body.count)] {
            #expect(ChunkedBody.decode(body + Array("GET".utf8), cuts: cuts) == expected, "cuts \(cuts)")
            #expect(ChunkedBody.scan(body, cuts: cuts) == expected.scanned, "cuts \(cuts)")
        }
        #expect(ChunkedBody.decode(Array("5\r\nhel".utf8), cuts: []) == .consumedAll(payload: Array("hel".utf8)))
        #expect(ChunkedBody.scan(Array("zz\r\n".utf8), cuts: []) == .failed(.invalidChunkSize, at: 0))
    }
}
