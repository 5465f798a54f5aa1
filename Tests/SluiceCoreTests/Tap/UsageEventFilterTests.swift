import Testing
@testable import SluiceCore

private typealias Fixtures = TapFixtures

/// A usage-only chunk as OpenAI sends it for `include_usage`.
private let usageChunk = #"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"# + "\n\n"
private let contentChunk = #"data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}"# + "\n\n"
private let done = "data: [DONE]\n\n"

/// `text` with the first occurrence of `block` removed.
private func without(_ block: String, in text: String) -> String {
    guard let range = text.range(of: block) else { return text }
    var result = text
    result.removeSubrange(range)
    return result
}

private let openAIUsageBlock: String = {
    let text = Fixtures.openAIChatStream
    let start = text.range(of: #"data: {"id":"chatcmpl-AkP3xKsZ2mTZ9","object":"chat.completion.chunk","created":1735000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_f785eb5f47","choices":[],"#)!
    let end = text.range(of: "\n\n", range: start.upperBound..<text.endIndex)!
    return String(text[start.lowerBound..<end.upperBound])
}()

private let vLLMUsageBlock = #"data: {"id":"chatcmpl-9a1b2c","object":"chat.completion.chunk","created":1730000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":12,"total_tokens":15,"completion_tokens":3}}"# + "\n\n"

struct FilterCase: Sendable, CustomTestStringConvertible {
    var name: String
    var stream: String
    var expected: String
    var testDescription: String { name }
}

private let filterCases: [FilterCase] = [
    .init(name: "OpenAI stream: the usage chunk goes, [DONE] stays", stream: Fixtures.openAIChatStream,
          expected: without(openAIUsageBlock, in: Fixtures.openAIChatStream)),
    .init(name: "vLLM stream", stream: Fixtures.vLLMStream, expected: without(vLLMUsageBlock, in: Fixtures.vLLMStream)),
    .init(name: "CRLF line ends", stream: Fixtures.withLineEnds(Fixtures.openAIChatStream, "\r\n"),
          expected: Fixtures.withLineEnds(without(openAIUsageBlock, in: Fixtures.openAIChatStream), "\r\n")),
    .init(name: "CR line ends", stream: Fixtures.withLineEnds(Fixtures.openAIChatStream, "\r"),
          expected: Fixtures.withLineEnds(without(openAIUsageBlock, in: Fixtures.openAIChatStream), "\r")),
    .init(name: "a usage chunk last, ended by a lone CR", stream: contentChunk + usageChunk.dropLast(2) + "\r\r",
          expected: contentChunk),
    .init(name: "multi-line data", stream: contentChunk + "data: {\"choices\":[],\ndata: \"usage\":{}}\n\n" + done,
          expected: contentChunk + done),
    .init(name: "a stream without usage is unchanged", stream: Fixtures.openAIChatStreamWithoutUsage,
          expected: Fixtures.openAIChatStreamWithoutUsage),
    .init(name: "continuous usage on content chunks is kept", stream: Fixtures.vLLMContinuousUsageStream,
          expected: Fixtures.vLLMContinuousUsageStream),
    .init(name: "Anthropic events are kept", stream: Fixtures.anthropicStream, expected: Fixtures.anthropicStream),
    .init(name: "a usage chunk with an id field is kept", stream: "id: 7\n" + usageChunk, expected: "id: 7\n" + usageChunk),
    .init(name: "a usage chunk with a comment is kept", stream: ": c\n" + usageChunk, expected: ": c\n" + usageChunk),
    .init(name: "usage null is kept", stream: "data: {\"choices\":[],\"usage\":null}\n\n",
          expected: "data: {\"choices\":[],\"usage\":null}\n\n"),
    .init(name: "choices not empty is kept", stream: "data: {\"choices\":[{}],\"usage\":{}}\n\n",
          expected: "data: {\"choices\":[{}],\"usage\":{}}\n\n"),
    .init(name: "choices missing is kept", stream: "data: {\"usage\":{}}\n\n", expected: "data: {\"usage\":{}}\n\n"),
    .init(name: "nested choices and usage do not count", stream: "data: {\"x\":{\"choices\":[],\"usage\":{}}}\n\n",
          expected: "data: {\"x\":{\"choices\":[],\"usage\":{}}}\n\n"),
    .init(name: "malformed JSON is kept", stream: "data: {\"choices\":[],\"usage\":{}\n\n",
          expected: "data: {\"choices\":[],\"usage\":{}\n\n"),
    .init(name: "an unfinished usage chunk at the end is kept", stream: contentChunk + usageChunk.dropLast(1),
          expected: contentChunk + usageChunk.dropLast(1)),
    .init(name: "extra blank lines and keepalives stay", stream: ": ping\n\n\n" + usageChunk + "\n" + done,
          expected: ": ping\n\n\n" + "\n" + done),
]

@Suite("UsageEventFilter")
struct UsageEventFilterTests {
    private typealias Support = TapTestSupport

    /// Plays the proxy: holds a block's bytes until the filter decides, forwards or drops them.
    static func run(_ filter: inout UsageEventFilter, _ bytes: [UInt8], cuts: [Int]) -> [UInt8] {
        filter.reset()
        var out: [UInt8] = []
        var held: [UInt8] = []
        for range in Support.pieces(bytes.count, cuts: cuts) {
            var rest = Array(bytes[range])
            while !rest.isEmpty {
                switch filter.next(rest.span) {
                case .needMore:
                    held += rest
                    rest = []
                case .forward:
                    out += held + rest
                    held = []
                    rest = []
                case .complete(let consumed, let drop):
                    if !drop { out += held + rest[..<consumed] }
                    held = []
                    rest = Array(rest[consumed...])
                }
            }
        }
        if !filter.finish() { out += held }
        return out
    }

    @Test("removes exactly the usage-only chunk, whole, split at every offset and byte by byte", arguments: filterCases)
    func filters(_ filterCase: FilterCase) {
        let bytes = Support.bytes(filterCase.stream)
        var filter = UsageEventFilter()
        for feeding in Support.feedings(bytes.count) {
            let out = Self.run(&filter, bytes, cuts: feeding.cuts)
            #expect(String(decoding: out, as: UTF8.self) == filterCase.expected, "\(feeding.name)")
        }
    }

    @Test("a block longer than the cap is forwarded as it comes, and filtering resumes after it")
    func longBlock() {
        let long = "data: {\"choices\":[],\"usage\":{},\"pad\":\"" + String(repeating: "x", count: UsageEventFilter.maxBlockBytes)
            + "\"}\n\n"
        let bytes = Support.bytes(long + usageChunk + done)
        var filter = UsageEventFilter()
        for cuts in [[], [100], [UsageEventFilter.maxBlockBytes + 1], [UsageEventFilter.maxBlockBytes + 60]] {
            let out = Self.run(&filter, bytes, cuts: cuts)
            #expect(String(decoding: out, as: UTF8.self) == long + done, "cuts \(cuts)")
        }
        filter.reset()
        var steps: [UsageEventStep] = []
        let chunk = Array(bytes[0..<(UsageEventFilter.maxBlockBytes + 1)])
        steps.append(filter.next(chunk.span))
        #expect(steps == [.forward], "held bytes are bounded")
    }
}
