/// Everything the completion log says about one exchange, including rejected and failed ones.
///
/// The producing loop fills one record per exchange (its strings are built once per exchange, never
/// per chunk) and hands it to ``CompletionQueue``; the writer thread renders it with
/// ``writeJSON(into:)``. The type holds no request or response header values at all: there is
/// no field that could carry `Authorization`, `x-api-key` or a cookie, so none can be logged by
/// mistake. Captured bodies are opt-in per route and must be truncated by the producer.
public struct CompletionRecord: Sendable {
    /// How an exchange ended. `rawValue` is the spelling in the JSON line and the `end` label
    /// of `sluice_exchanges_total`.
    public enum End: String, Sendable, CaseIterable {
        /// The whole response reached the client.
        case complete
        /// The client closed or reset before the response was complete.
        case clientAbort = "client_abort"
        /// The upstream closed or reset in the middle of the response.
        case upstreamAbort = "upstream_abort"
        /// No usable response: connect refused, malformed head, upstream protocol error.
        case upstreamError = "upstream_error"
        /// The upstream connection was not established in time.
        case timeoutConnect = "timeout_connect"
        /// The upstream sent no response head in time.
        case timeoutFirstByte = "timeout_first_byte"
        /// Neither side moved a byte for the idle timeout.
        case timeoutIdle = "timeout_idle"
        /// The exchange exceeded its total time budget.
        case timeoutTotal = "timeout_total"
        /// The client did not take response bytes in time (its receive window stayed full).
        case clientWriteTimeout = "client_write_timeout"
        /// Answered 429 by the rate limiter; never reached an upstream.
        case rejectedRateLimit = "rejected_rate_limit"
        /// Answered 4xx because the request could not be parsed or broke a limit.
        case rejectedBadRequest = "rejected_bad_request"
        /// Cut short because sluice was shutting down and the drain period ran out.
        case drain
        /// Answered 503 at once: `max_connections` client connections were open.
        case rejectedOverload = "rejected_overload"
        /// Answered 502: the route's upstream name has not resolved since start-up (or the reload that added it).
        case upstreamUnresolved = "upstream_unresolved"
        /// A tunnel (WebSocket) ended because the client closed its side.
        case tunnelClientClosed = "tunnel_client_closed"
        /// A tunnel ended because the upstream closed its side.
        case tunnelUpstreamClosed = "tunnel_upstream_closed"
        /// A tunnel carried no byte either way for `tunnel_idle`: sluice closed it (a close frame 1001 to each side).
        case tunnelIdleTimeout = "tunnel_idle_timeout"

        /// The ends a tunnel can have (`sluice_tunnel_ends_total` writes these).
        public static let tunnelEnds: [End] = [.tunnelClientClosed, .tunnelUpstreamClosed, .tunnelIdleTimeout, .clientAbort, .upstreamAbort,
                                               .clientWriteTimeout, .drain]

        /// Position in `allCases`, used as a metrics array index without a search.
        public var ordinal: Int {
            switch self {
            case .complete: 0
            case .clientAbort: 1
            case .upstreamAbort: 2
            case .upstreamError: 3
            case .timeoutConnect: 4
            case .timeoutFirstByte: 5
            case .timeoutIdle: 6
            case .timeoutTotal: 7
            case .clientWriteTimeout: 8
            case .rejectedRateLimit: 9
            case .rejectedBadRequest: 10
            case .drain: 11
            case .rejectedOverload: 12
            case .upstreamUnresolved: 13
            case .tunnelClientClosed: 14
            case .tunnelUpstreamClosed: 15
            case .tunnelIdleTimeout: 16
            }
        }
    }

    // MARK: Identity

    /// Wall clock at the start of the exchange, microseconds since the Unix epoch (UTC).
    public var timestampMicroseconds: Int64
    /// The `X-Request-Id` sluice sent upstream.
    public var requestID: String
    /// The client's `traceparent` (W3C Trace Context) if it sent one.
    public var traceparent: String?
    /// The upstream's own `X-Request-Id` when it differs from `requestID` (the client received the upstream's);
    /// the key appears only then.
    public var upstreamRequestID: String?
    /// The client's IP address (the peer of the connection; no port, so records group by client).
    public var clientAddress: String
    /// The matched route's prefix; nil when no route matched.
    public var route: String?
    public var method: String
    /// The request target. Written without its query string unless ``includeQuery`` is set,
    /// since queries often carry keys and personal data.
    public var path: String
    public var includeQuery: Bool
    /// The upstream's configured name; nil when none was contacted.
    public var upstreamName: String?
    /// The server that served the last try (`address:port`); nil when none was chosen.
    public var upstreamAddress: String?
    /// Servers the request was sent to: 1, plus one per retry; 0 when none.
    public var tries: Int
    /// How the upstream's affinity key chose the server: `hit`, `spill`, `none` (no key); nil when the upstream
    /// has no `affinity` or no server was chosen.
    public var affinity: String?
    /// The status sent to the client, 0 if none was sent.
    public var status: Int

    // MARK: Volume and timing (milliseconds, measured in microseconds on the loop's monotonic clock)

    /// Bytes received from the client: head and body.
    public var requestBytes: Int64
    /// Bytes sent to the client: head and body.
    public var responseBytes: Int64
    /// SSE events seen in the response (0 for other content types).
    public var sseEvents: Int
    /// Until the response head arrived; nil if it never did.
    public var ttfbMilliseconds: Double?
    /// Until the first SSE `data:` event (time to first event), whatever it carried; nil if there was none.
    public var ttfeMilliseconds: Double?
    /// Until the first output (time to first token): the first content-bearing SSE event (an OpenAI-style
    /// non-empty `content`/`reasoning_content`/`tool_calls`/`text` delta, Anthropic's `content_block_delta`),
    /// or the first body byte of a non-SSE response; nil if there was none.
    public var ttftMilliseconds: Double?
    /// Time per output token after the first: (end − first token) / (completion tokens − 1), from reported
    /// usage; nil when unknown or when at most one token was reported.
    public var tpotMilliseconds: Double?
    /// Reported completion tokens / seconds from the first token to the end; nil when unknown or no time passed.
    public var tokensPerSecond: Double?
    public var durationMilliseconds: Double
    /// Longest time between two SSE events.
    public var maxGapMilliseconds: Double
    /// Total time reads from the upstream were paused because the client was slow.
    public var pausedMilliseconds: Double
    /// Highest number of response bytes queued towards the client.
    public var peakQueuedBytes: Int

    // MARK: Policy and content

    /// Hash of the rate-limit key (e.g. 16 hex digits); the key itself is never logged.
    public var rateLimitKeyHash: String?
    /// `"allowed"`, `"rejected"`, or nil when no rate limit applied.
    public var rateLimitDecision: String?
    public var model: String?
    /// Nil renders `"usage": null`: the stream carried no usage.
    public var usage: TokenUsage?
    /// `"reported"` when the backend reported usage and that was what counted, `"estimated"` when a token budget
    /// was charged an estimate instead (`estimatedUsage`), nil otherwise (no usage, nothing charged): the key
    /// is then left out.
    public var usageSource: String?
    /// The estimate charged to the route's token budgets in place of missing or short usage; never in `usage`.
    public var estimatedUsage: TokenUsage?
    public var end: End
    /// A short reason for a failed exchange, e.g. `"connect: ECONNREFUSED"`.
    public var error: String?
    /// For a response sluice generated: whose fault it was (`client`, `upstream`, `internal`) and the `error.type`
    /// its JSON body carried (`upstream_timeout`, `rate_limit_exceeded`, …); written only when set, last.
    public var errorSource: String?
    public var errorType: String?
    /// Index of the loop (worker thread) that served the exchange.
    public var worker: Int
    /// The captured request body, already cut to the route's capture limit; nil when capture is off.
    public var capturedRequestBody: String?
    /// The captured response text (for SSE, the concatenated `data:` payloads), already cut.
    public var capturedResponseText: String?
    /// True when either capture was cut at the limit.
    public var captureTruncated: Bool
    /// What a tunnel carried (the exchange became one with a 101); nil, and the key left out, otherwise.
    public var tunnel: Tunnel?

    /// A WebSocket tunnel's traffic after the 101, each way.
    public struct Tunnel: Sendable, Equatable {
        /// Bytes written to the upstream (from the client) and to the client (from the upstream).
        public var clientBytes: Int64
        public var upstreamBytes: Int64
        /// Whole data messages each side sent (control frames not counted).
        public var clientMessages: Int
        public var upstreamMessages: Int
        /// The code of the close frame each side sent (1005 for one without a code); nil when it sent none.
        public var clientCloseCode: Int?
        public var upstreamCloseCode: Int?
        /// From the 101 to the first whole message from the upstream; nil when none came.
        public var firstUpstreamMessageMilliseconds: Double?
        /// From the 101 to the end.
        public var durationMilliseconds: Double

        public init(clientBytes: Int64, upstreamBytes: Int64, clientMessages: Int, upstreamMessages: Int, clientCloseCode: Int?,
                    upstreamCloseCode: Int?, firstUpstreamMessageMilliseconds: Double?, durationMilliseconds: Double) {
            self.clientBytes = clientBytes
            self.upstreamBytes = upstreamBytes
            self.clientMessages = clientMessages
            self.upstreamMessages = upstreamMessages
            self.clientCloseCode = clientCloseCode
            self.upstreamCloseCode = upstreamCloseCode
            self.firstUpstreamMessageMilliseconds = firstUpstreamMessageMilliseconds
            self.durationMilliseconds = durationMilliseconds
        }
    }

    /// A record with the identity fields set and everything else empty: status 0, zero counts,
    /// timings unset, `end` `.complete`. The loop fills the rest as the exchange progresses.
    public init(timestampMicroseconds: Int64, requestID: String, clientAddress: String, method: String,
                path: String, worker: Int) {
        self.timestampMicroseconds = timestampMicroseconds
        self.requestID = requestID
        self.traceparent = nil
        self.upstreamRequestID = nil
        self.clientAddress = clientAddress
        self.route = nil
        self.method = method
        self.path = path
        self.includeQuery = false
        self.upstreamName = nil
        self.upstreamAddress = nil
        self.tries = 0
        self.affinity = nil
        self.status = 0
        self.requestBytes = 0
        self.responseBytes = 0
        self.sseEvents = 0
        self.ttfbMilliseconds = nil
        self.ttfeMilliseconds = nil
        self.ttftMilliseconds = nil
        self.tpotMilliseconds = nil
        self.tokensPerSecond = nil
        self.durationMilliseconds = 0
        self.maxGapMilliseconds = 0
        self.pausedMilliseconds = 0
        self.peakQueuedBytes = 0
        self.rateLimitKeyHash = nil
        self.rateLimitDecision = nil
        self.model = nil
        self.usage = nil
        self.usageSource = nil
        self.estimatedUsage = nil
        self.end = .complete
        self.error = nil
        self.worker = worker
        self.capturedRequestBody = nil
        self.capturedResponseText = nil
        self.captureTruncated = false
        self.tunnel = nil
    }
}

// MARK: - JSON line

extension CompletionRecord {
    /// Appends the record as one JSON object and a `\n`. Keys always appear, in this order, with
    /// `null` for absent values; the three capture keys appear only when something was captured
    /// (capture is off by default, and three nulls on every line would be noise), and `usage_source`
    /// and `estimated_usage` (after `usage`) only when set.
    ///
    /// Writer thread; allocates only when `out` must grow.
    public func writeJSON(into out: inout [UInt8]) {
        JSONBytes.appendRaw("{\"ts\":\"", to: &out)
        Self.appendTimestamp(microseconds: timestampMicroseconds, to: &out)
        JSONBytes.appendRaw("\",\"request_id\":", to: &out)
        JSONBytes.appendString(requestID, to: &out)
        if let upstreamRequestID {
            JSONBytes.appendRaw(",\"upstream_request_id\":", to: &out)
            JSONBytes.appendString(upstreamRequestID, to: &out)
        }
        JSONBytes.appendRaw(",\"traceparent\":", to: &out)
        JSONBytes.appendString(traceparent, to: &out)
        JSONBytes.appendRaw(",\"client\":", to: &out)
        JSONBytes.appendString(clientAddress, to: &out)
        JSONBytes.appendRaw(",\"route\":", to: &out)
        JSONBytes.appendString(route, to: &out)
        JSONBytes.appendRaw(",\"method\":", to: &out)
        JSONBytes.appendString(method, to: &out)
        JSONBytes.appendRaw(",\"path\":", to: &out)
        appendPath(to: &out)
        JSONBytes.appendRaw(",\"upstream\":", to: &out)
        JSONBytes.appendString(upstreamName, to: &out)
        JSONBytes.appendRaw(",\"server\":", to: &out)
        JSONBytes.appendString(upstreamAddress, to: &out)
        JSONBytes.appendRaw(",\"tries\":", to: &out)
        JSONBytes.appendInt(tries, to: &out)
        JSONBytes.appendRaw(",\"affinity\":", to: &out)
        JSONBytes.appendString(affinity, to: &out)
        JSONBytes.appendRaw(",\"status\":", to: &out)
        JSONBytes.appendInt(status, to: &out)
        JSONBytes.appendRaw(",\"request_bytes\":", to: &out)
        JSONBytes.appendInt(requestBytes, to: &out)
        JSONBytes.appendRaw(",\"response_bytes\":", to: &out)
        JSONBytes.appendInt(responseBytes, to: &out)
        JSONBytes.appendRaw(",\"sse_events\":", to: &out)
        JSONBytes.appendInt(sseEvents, to: &out)
        JSONBytes.appendRaw(",\"ttfb_ms\":", to: &out)
        Self.appendOptionalMilliseconds(ttfbMilliseconds, to: &out)
        JSONBytes.appendRaw(",\"ttfe_ms\":", to: &out)
        Self.appendOptionalMilliseconds(ttfeMilliseconds, to: &out)
        JSONBytes.appendRaw(",\"ttft_ms\":", to: &out)
        Self.appendOptionalMilliseconds(ttftMilliseconds, to: &out)
        JSONBytes.appendRaw(",\"tpot_ms\":", to: &out)
        Self.appendOptionalMilliseconds(tpotMilliseconds, to: &out)
        // Three decimals like the times: a rate, not a time, but the same fixed-point writer fits it.
        JSONBytes.appendRaw(",\"tokens_per_second\":", to: &out)
        Self.appendOptionalMilliseconds(tokensPerSecond, to: &out)
        JSONBytes.appendRaw(",\"duration_ms\":", to: &out)
        JSONBytes.appendMilliseconds(durationMilliseconds, to: &out)
        JSONBytes.appendRaw(",\"max_gap_ms\":", to: &out)
        JSONBytes.appendMilliseconds(maxGapMilliseconds, to: &out)
        JSONBytes.appendRaw(",\"paused_ms\":", to: &out)
        JSONBytes.appendMilliseconds(pausedMilliseconds, to: &out)
        JSONBytes.appendRaw(",\"peak_queued_bytes\":", to: &out)
        JSONBytes.appendInt(peakQueuedBytes, to: &out)
        JSONBytes.appendRaw(",\"rate_limit_key\":", to: &out)
        JSONBytes.appendString(rateLimitKeyHash, to: &out)
        JSONBytes.appendRaw(",\"rate_limit_decision\":", to: &out)
        JSONBytes.appendString(rateLimitDecision, to: &out)
        JSONBytes.appendRaw(",\"model\":", to: &out)
        JSONBytes.appendString(model, to: &out)
        JSONBytes.appendRaw(",\"usage\":", to: &out)
        Self.appendUsage(usage, to: &out)
        // Only when set, like the capture keys: most records have neither (no usage, no token budget), and a
        // record that stays the same size keeps the log's volume and a full pipe's record boundaries as they were.
        if let usageSource {
            JSONBytes.appendRaw(",\"usage_source\":", to: &out)
            JSONBytes.appendString(usageSource, to: &out)
        }
        if let estimatedUsage {
            JSONBytes.appendRaw(",\"estimated_usage\":", to: &out)
            Self.appendUsage(estimatedUsage, to: &out)
        }
        JSONBytes.appendRaw(",\"end\":\"", to: &out)
        var endName = end.rawValue // plain ASCII, no escaping needed
        endName.withUTF8 { out.append(contentsOf: $0) }
        JSONBytes.appendRaw("\",\"error\":", to: &out)
        JSONBytes.appendString(error, to: &out)
        JSONBytes.appendRaw(",\"worker\":", to: &out)
        JSONBytes.appendInt(worker, to: &out)
        if let tunnel { Self.appendTunnel(tunnel, to: &out) }
        if capturedRequestBody != nil || capturedResponseText != nil {
            JSONBytes.appendRaw(",\"request_body\":", to: &out)
            JSONBytes.appendString(capturedRequestBody, to: &out)
            JSONBytes.appendRaw(",\"response_text\":", to: &out)
            JSONBytes.appendString(capturedResponseText, to: &out)
            JSONBytes.appendRaw(",\"capture_truncated\":", to: &out)
            if captureTruncated {
                JSONBytes.appendRaw("true", to: &out)
            } else {
                JSONBytes.appendRaw("false", to: &out)
            }
        }
        if let errorSource, let errorType {
            JSONBytes.appendRaw(",\"error_source\":", to: &out)
            JSONBytes.appendString(errorSource, to: &out)
            JSONBytes.appendRaw(",\"error_type\":", to: &out)
            JSONBytes.appendString(errorType, to: &out)
        }
        JSONBytes.appendRaw("}\n", to: &out)
    }

    private static func appendTunnel(_ tunnel: Tunnel, to out: inout [UInt8]) {
        JSONBytes.appendRaw(",\"tunnel\":{\"protocol\":\"websocket\",\"client_bytes\":", to: &out)
        JSONBytes.appendInt(tunnel.clientBytes, to: &out)
        JSONBytes.appendRaw(",\"upstream_bytes\":", to: &out)
        JSONBytes.appendInt(tunnel.upstreamBytes, to: &out)
        JSONBytes.appendRaw(",\"client_messages\":", to: &out)
        JSONBytes.appendInt(tunnel.clientMessages, to: &out)
        JSONBytes.appendRaw(",\"upstream_messages\":", to: &out)
        JSONBytes.appendInt(tunnel.upstreamMessages, to: &out)
        JSONBytes.appendRaw(",\"client_close_code\":", to: &out)
        appendOptionalInt(tunnel.clientCloseCode, to: &out)
        JSONBytes.appendRaw(",\"upstream_close_code\":", to: &out)
        appendOptionalInt(tunnel.upstreamCloseCode, to: &out)
        JSONBytes.appendRaw(",\"first_upstream_message_ms\":", to: &out)
        appendOptionalMilliseconds(tunnel.firstUpstreamMessageMilliseconds, to: &out)
        JSONBytes.appendRaw(",\"duration_ms\":", to: &out)
        JSONBytes.appendMilliseconds(tunnel.durationMilliseconds, to: &out)
        JSONBytes.appendRaw("}", to: &out)
    }

    private static func appendOptionalInt(_ value: Int?, to out: inout [UInt8]) {
        if let value { JSONBytes.appendInt(value, to: &out) } else { JSONBytes.appendRaw("null", to: &out) }
    }

    /// Microseconds since the Unix epoch on the wall clock (a vDSO call, no syscall), for
    /// ``timestampMicroseconds``; taken once per exchange.
    public static func wallClockMicroseconds() -> Int64 {
        Syscall.wallClockMicroseconds()
    }

    /// The line as a `String` (tests and diagnostics).
    public var jsonLine: String {
        var out: [UInt8] = []
        writeJSON(into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// The path up to the first `?` (or `#`, which a client should not send but might),
    /// unless the route asked for the query.
    private func appendPath(to out: inout [UInt8]) {
        var path = path
        let includeQuery = includeQuery
        path.withUTF8 { bytes in
            var end = bytes.count
            if !includeQuery, let cut = bytes.firstIndex(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) {
                end = cut
            }
            JSONBytes.appendString(utf8: UnsafeBufferPointer(rebasing: bytes[..<end]), to: &out)
        }
    }

    /// `{"prompt_tokens":…,"completion_tokens":…,"total_tokens":…}`, or `null`.
    private static func appendUsage(_ usage: TokenUsage?, to out: inout [UInt8]) {
        guard let usage else {
            JSONBytes.appendRaw("null", to: &out)
            return
        }
        JSONBytes.appendRaw("{\"prompt_tokens\":", to: &out)
        JSONBytes.appendInt(usage.promptTokens, to: &out)
        JSONBytes.appendRaw(",\"completion_tokens\":", to: &out)
        JSONBytes.appendInt(usage.completionTokens, to: &out)
        JSONBytes.appendRaw(",\"total_tokens\":", to: &out)
        JSONBytes.appendInt(usage.totalTokens, to: &out)
        out.append(UInt8(ascii: "}"))
    }

    private static func appendOptionalMilliseconds(_ value: Double?, to out: inout [UInt8]) {
        if let value {
            JSONBytes.appendMilliseconds(value, to: &out)
        } else {
            JSONBytes.appendRaw("null", to: &out)
        }
    }

    /// RFC 3339 §5.6 in UTC with microseconds, e.g. `2025-01-31T23:59:59.123456Z` (the wall clock is read
    /// with microsecond resolution, so all six digits are measured). Computed with integer calendar
    /// arithmetic (H. Hinnant, "chrono-compatible low-level date algorithms", civil_from_days), so it needs
    /// neither Foundation nor the C library's time zone state.
    static func appendTimestamp(microseconds: Int64, to out: inout [UInt8]) {
        let dayMicroseconds: Int64 = 86_400_000_000
        var days = microseconds / dayMicroseconds
        var remainder = microseconds % dayMicroseconds
        if remainder < 0 { // floor division, for instants before 1970
            days -= 1
            remainder += dayMicroseconds
        }
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)

        func digits(_ value: Int64, _ width: Int) {
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            var value = max(0, value)
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                value %= divisor
                divisor /= 10
            }
        }
        digits(year, 4)
        out.append(UInt8(ascii: "-"))
        digits(month, 2)
        out.append(UInt8(ascii: "-"))
        digits(day, 2)
        out.append(UInt8(ascii: "T"))
        digits(remainder / 3_600_000_000, 2)
        out.append(UInt8(ascii: ":"))
        digits(remainder / 60_000_000 % 60, 2)
        out.append(UInt8(ascii: ":"))
        digits(remainder / 1_000_000 % 60, 2)
        out.append(UInt8(ascii: "."))
        digits(remainder % 1_000_000, 6)
        out.append(UInt8(ascii: "Z"))
    }
}
