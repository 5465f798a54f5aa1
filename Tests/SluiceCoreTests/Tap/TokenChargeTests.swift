import Testing
@testable import SluiceCore

@Suite("TokenCharge")
struct TokenChargeTests {
    private static func usage(_ prompt: Int64, _ completion: Int64, _ total: Int64) -> TokenUsage {
        TokenUsage(promptTokens: prompt, completionTokens: completion, totalTokens: total)
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var reported: TokenUsage?
        var prompt: Int64
        var completion: Int64
        var expected: TokenCharge
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        .init(name: "no usage: the estimate", reported: nil, prompt: 30, completion: 12,
              expected: TokenCharge(tokens: 42, source: .estimated, estimate: usage(30, 12, 42))),
        .init(name: "no usage and nothing seen: an estimate of 0", reported: nil, prompt: 0, completion: 0,
              expected: TokenCharge(tokens: 0, source: .estimated, estimate: usage(0, 0, 0))),
        .init(name: "reported usage wins over a smaller estimate", reported: usage(19, 10, 29), prompt: 50,
              completion: 2, expected: TokenCharge(tokens: 29, source: .reported, estimate: nil)),
        .init(name: "reported total is charged as reported (vLLM total before completion)",
              reported: usage(12, 3, 16), prompt: 1, completion: 3,
              expected: TokenCharge(tokens: 16, source: .reported, estimate: nil)),
        .init(name: "short usage (Anthropic message_start only): reported prompt + the deltas",
              reported: usage(25, 1, 26), prompt: 80, completion: 40,
              expected: TokenCharge(tokens: 65, source: .estimated, estimate: usage(25, 40, 65))),
        .init(name: "negative estimates count 0", reported: nil, prompt: -5, completion: -1,
              expected: TokenCharge(tokens: 0, source: .estimated, estimate: usage(0, 0, 0))),
        .init(name: "sums saturate", reported: nil, prompt: .max, completion: 1,
              expected: TokenCharge(tokens: .max, source: .estimated, estimate: usage(.max, 1, .max))),
    ]

    @Test("charges reported usage, else the estimate", arguments: cases)
    func decides(_ testCase: Case) {
        #expect(TokenCharge(reported: testCase.reported, promptEstimate: testCase.prompt,
                            completionEstimate: testCase.completion) == testCase.expected)
    }
}
