/// One response header field produced by ``RateLimitHeaders``.
public struct RateLimitHeaderField: Sendable, Equatable, CustomStringConvertible {
    /// Field name, in the capitalisation clients conventionally see.
    public var name: String
    /// Field value (ASCII).
    public var value: String

    /// Creates a field.
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }

    /// `Name: value`.
    public var description: String { "\(name): \(value)" }
}

/// Renders rate-limit state as the response fields and 429 body LLM clients understand. Pure
/// functions of a grant or rejection; they allocate (once per request, never per chunk).
///
/// Three vocabularies, because clients differ:
/// - IETF `RateLimit-Policy` / `RateLimit` (draft-ietf-httpapi-ratelimit-headers, Structured
///   Field lists, RFC 9651). One policy per limit of each rule, named `"RULE-requests"`,
///   `"RULE-concurrent"` and `"RULE-tokens"`. A token bucket is described as quota `q` = the
///   burst over window `w` = the seconds an empty bucket takes to refill, so `q/w` is the
///   sustained rate and `q` the burst: `10/s burst 20` is `q=20;w=2`. `r` is what is left,
///   `t` the seconds until the bucket is full again. Concurrency uses `qu="concurrent-requests"`
///   and no window; token budgets `qu="tokens"` (a unit not in the draft's registry: there is
///   none for LLM tokens).
/// - OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, which the official SDKs
///   and many dashboards read: limit = burst, remaining, and the time until full in Go's
///   duration syntax (`1s`, `6m0s`, `20ms`). One value each, so when a route has several
///   requests (or token) rules the most restrictive one is shown: fewest remaining, then the
///   longest reset.
/// - `Retry-After` (RFC 9110 §10.2.3) in whole seconds on 429, which the OpenAI SDKs honour.
public enum RateLimitHeaders {
    /// Fields for a forwarded response: `RateLimit-Policy`, `RateLimit` and the OpenAI-style
    /// remaining-budget fields. Empty when the route has no rules.
    public static func fields(for grant: AdmissionGrant) -> [RateLimitHeaderField] {
        fields(statuses: grant.statuses, retryAfterSeconds: nil)
    }

    /// Fields for the 429: `Retry-After` first, then the same fields as a forwarded response.
    public static func fields(for rejection: RateLimitRejection) -> [RateLimitHeaderField] {
        fields(statuses: rejection.statuses, retryAfterSeconds: rejection.retryAfterSeconds)
    }

    /// The fields for `statuses`, preceded by `Retry-After` when `retryAfterSeconds` is given.
    public static func fields(statuses: [RateLimitStatus], retryAfterSeconds: Int64?) -> [RateLimitHeaderField] {
        var fields: [RateLimitHeaderField] = []
        if let retryAfterSeconds { fields.append(RateLimitHeaderField("Retry-After", String(retryAfterSeconds))) }
        var policies: [String] = []
        var states: [String] = []
        for status in statuses {
            let name = status.name
            if let requests = status.requests {
                policies.append("\(sfString(name + "-requests"));q=\(requests.limit);w=\(requests.windowSeconds)")
                states.append("\(sfString(name + "-requests"));r=\(requests.remaining);t=\(requests.resetSeconds)")
            }
            if let concurrent = status.concurrent {
                policies.append("\(sfString(name + "-concurrent"));q=\(concurrent.limit);qu=\"concurrent-requests\"")
                states.append("\(sfString(name + "-concurrent"));r=\(concurrent.remaining)")
            }
            if let tokens = status.tokens {
                policies.append("\(sfString(name + "-tokens"));q=\(tokens.limit);w=\(tokens.windowSeconds);qu=\"tokens\"")
                states.append("\(sfString(name + "-tokens"));r=\(tokens.remaining);t=\(tokens.resetSeconds)")
            }
        }
        if !policies.isEmpty {
            fields.append(RateLimitHeaderField("RateLimit-Policy", policies.joined(separator: ", ")))
            fields.append(RateLimitHeaderField("RateLimit", states.joined(separator: ", ")))
        }
        for (suffix, buckets) in [("requests", statuses.compactMap(\.requests)), ("tokens", statuses.compactMap(\.tokens))] {
            guard let tightest = mostRestrictive(buckets) else { continue }
            fields.append(RateLimitHeaderField("x-ratelimit-limit-\(suffix)", String(tightest.limit)))
            fields.append(RateLimitHeaderField("x-ratelimit-remaining-\(suffix)", String(tightest.remaining)))
            fields.append(RateLimitHeaderField("x-ratelimit-reset-\(suffix)", openAIDuration(nanoseconds: tightest.resetNanoseconds)))
        }
        return fields
    }

    /// `fields` as head lines, `Name: value\r\n` each, ready to splice into a response head.
    public static func serialize(_ fields: [RateLimitHeaderField]) -> [UInt8] {
        var bytes: [UInt8] = []
        for field in fields {
            bytes += field.name.utf8
            bytes += ": ".utf8
            bytes += field.value.utf8
            bytes += "\r\n".utf8
        }
        return bytes
    }

    /// The 429 body in OpenAI's error shape, so the official SDKs raise their rate-limit error:
    /// `{"error":{"message":"…","type":"rate_limit_exceeded","param":null,"code":"rate_limit_exceeded"}}`.
    /// Serve it as `application/json`.
    public static func body(for rejection: RateLimitRejection) -> [UInt8] {
        var text = #"{"error":{"message":"#
        text += jsonString(message(for: rejection))
        text += #","type":"rate_limit_exceeded","param":null,"code":"rate_limit_exceeded"}}"#
        return Array(text.utf8)
    }

    /// The human-readable reason, e.g. `Rate limit reached for per_user (requests): 10 per 1s.
    /// Retry after 1 s.`
    public static func message(for rejection: RateLimitRejection) -> String {
        let status = rejection.status
        var limit: String
        switch rejection.kind {
        case .requests:
            limit = status?.requests.map(rateText) ?? "limit reached"
        case .tokens:
            limit = status?.tokens.map(rateText) ?? "limit reached"
        case .concurrent:
            limit = status?.concurrent.map { "\($0.limit) concurrent requests" } ?? "limit reached"
        }
        limit = "Rate limit reached for \(rejection.name) (\(rejection.kind.rawValue)): \(limit)."
        return limit + " Retry after \(rejection.retryAfterSeconds) s."
    }

    /// `10 per 1s`, with ` (burst 20)` when the burst differs from the count.
    private static func rateText(_ bucket: RateLimitBucketStatus) -> String {
        let rate = bucket.rate
        return "\(rate.count) per \(rate.periodText)" + (rate.burst != rate.count ? " (burst \(rate.burst))" : "")
    }

    /// A duration in the form OpenAI uses for `x-ratelimit-reset-*`, which is Go's
    /// `time.Duration` string, after rounding up to whole milliseconds: `0s`, `20ms`, `1s`,
    /// `1.5s`, `6m0s`, `1h0m0s`. Rounding up means a client that waits that long finds the
    /// bucket full.
    public static func openAIDuration(nanoseconds: Int64) -> String {
        guard nanoseconds > 0 else { return "0s" }
        let milliseconds = nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1)
        if milliseconds < 1_000 { return "\(milliseconds)ms" }
        let hours = milliseconds / 3_600_000
        let minutes = milliseconds / 60_000 % 60
        let seconds = milliseconds / 1_000 % 60
        let fraction = milliseconds % 1_000
        var text = ""
        if hours > 0 { text += "\(hours)h" }
        if hours > 0 || minutes > 0 { text += "\(minutes)m" }
        text += "\(seconds)"
        if fraction > 0 {
            // Three digits, trailing zeros dropped: 500 → ".5", 64 → ".064".
            var digits = String(fraction)
            digits = String(repeating: "0", count: 3 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            text += "." + digits
        }
        return text + "s"
    }

    /// The bucket a client should heed: fewest remaining, then the longest until full.
    private static func mostRestrictive(_ buckets: [RateLimitBucketStatus]) -> RateLimitBucketStatus? {
        buckets.min { a, b in
            a.remaining != b.remaining ? a.remaining < b.remaining : a.resetNanoseconds > b.resetNanoseconds
        }
    }

    /// A Structured Field String (RFC 9651 §3.3.3): quotes, with `"` and `\` escaped.
    /// Rule names are plain, so the escaping is only a guard.
    static func sfString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"", "\\": out += "\\" + String(scalar)
            case " "..."~": out.unicodeScalars.append(scalar)
            default: out += "?"  // sf-string is printable ASCII only
            }
        }
        return out + "\""
    }

    /// A JSON string literal (RFC 8259 §7).
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{0}"..."\u{1F}":
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
