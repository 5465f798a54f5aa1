/// What an exchange costs a route's token budgets, decided once when its record is written.
///
/// A budget must not have a free path: OpenAI-compatible servers report usage in a stream only when the client
/// asked for it (`stream_options.include_usage`), a client may leave before the usage chunk, and some backends
/// never report. So reported usage is charged when there is some, and otherwise an estimate made by the taps:
/// prompt tokens from the request's text (`RequestTap.estimatedPromptTokens`), completion tokens from the output
/// deltas or text (`ResponseObservation.estimatedCompletionTokens`). The completion record keeps the two apart:
/// `usage` is only ever what the backend reported, `estimated_usage` what was charged in its place.
public struct TokenCharge: Equatable, Sendable {
    /// Where the charged count came from (the record's `usage_source`).
    public enum Source: String, Sendable {
        /// The backend's usage, charged as reported.
        case reported
        /// The taps' estimate (`estimate`), in place of missing or short usage.
        case estimated
    }

    /// Tokens to charge (0 charges nothing).
    public var tokens: Int64
    public var source: Source
    /// The estimate charged, by part; nil when the reported usage was charged.
    public var estimate: TokenUsage?

    public init(tokens: Int64, source: Source, estimate: TokenUsage?) {
        self.tokens = tokens
        self.source = source
        self.estimate = estimate
    }

    /// Decides the charge.
    ///
    /// - No usage reported: the estimate, prompt + completion.
    /// - Usage reported with at least as many completion tokens as the estimate: the reported total.
    /// - Usage reported with fewer completion tokens than the output deltas seen: the reported prompt tokens plus
    ///   the estimated completion, marked estimated. Anthropic reports `output_tokens: 1` in `message_start` and
    ///   the real count only in the final `message_delta`, so a client gone before the end would otherwise pay
    ///   one output token for a whole answer. Each delta holds at least one token, so a complete report is never
    ///   below the estimate and this never overcharges one.
    ///
    /// Sums saturate at `Int64.max` rather than trap.
    public init(reported: TokenUsage?, promptEstimate: Int64, completionEstimate: Int64) {
        let prompt = max(0, promptEstimate)
        let completion = max(0, completionEstimate)
        guard let reported else {
            let estimate = TokenUsage(promptTokens: prompt, completionTokens: completion,
                                      totalTokens: Self.sum(prompt, completion))
            self.init(tokens: estimate.totalTokens, source: .estimated, estimate: estimate)
            return
        }
        guard completion > reported.completionTokens else {
            self.init(tokens: reported.totalTokens, source: .reported, estimate: nil)
            return
        }
        let estimate = TokenUsage(promptTokens: reported.promptTokens, completionTokens: completion,
                                  totalTokens: Self.sum(reported.promptTokens, completion))
        self.init(tokens: estimate.totalTokens, source: .estimated, estimate: estimate)
    }

    private static func sum(_ a: Int64, _ b: Int64) -> Int64 {
        let (total, overflow) = a.addingReportingOverflow(b)
        return overflow ? .max : total
    }
}
