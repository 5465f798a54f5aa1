/// What one exchange's completion record gathers while the exchange runs, as one value: `beginRecord` replaces it
/// in one assignment, so nothing of an earlier exchange on the connection leaks into the next one's record.
/// Loop thread only. Times are loop microseconds unless named otherwise.
struct ExchangeRecord {
    /// An exchange began and its record is not written yet.
    var pending = false
    /// Wall clock at the start, microseconds since the epoch (the record's `ts`).
    var wallClock: Int64 = 0
    var startedAt: Int64 = 0
    /// How the exchange ended, once decided (nil: it completes, unless the connection closes first).
    var end: CompletionRecord.End?
    var error: String?
    /// Whose fault, and the JSON `error.type`, of the response sluice generated instead of forwarding one, if it
    /// did (the type is a literal: storing it copies no bytes).
    var generatedSource: ProxyError.Source?
    var generatedType: String?
    var method = ""
    var path = ""
    var traceparent: String?
    /// The upstream's own X-Request-Id when it differs from the one sluice sent (the client receives the upstream's).
    var upstreamRequestID: String?
    var routeMatched = false
    /// The exchange reached the point of contacting its upstream (an address goes in the record, tokens are charged).
    var upstreamContacted = false
    /// The label of the server chosen last (retries choose again).
    var server: String?
    var status = 0
    var responseHeadAt: Int64 = 0
    var requestBytes: Int64 = 0
    var responseBytes: Int64 = 0
    /// When the current backpressure pause began, and the pauses' total so far.
    var pausedSince: Int64 = 0
    var pausedTotal: Int64 = 0
    var peakQueued = 0
    var rateLimitKeyHash: String?
    var rateLimitDecision: String?
    /// What the request body said, kept after its observer went back to the loop.
    var requestModel: String?
    /// The prompt tokens the request body's text is estimated at (`RequestTap.estimatedPromptTokens`).
    var promptEstimate: Int64 = 0
    var capturedRequestText: String?
    var captureTruncated = false
}
