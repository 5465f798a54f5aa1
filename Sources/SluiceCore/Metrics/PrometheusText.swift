/// Builds a Prometheus text exposition (format 0.0.4,
/// https://prometheus.io/docs/instrumenting/exposition_formats/): `# HELP` and `# TYPE` lines
/// followed by samples, `\n` line ends, label values escaped.
struct PrometheusText {
    /// The `Content-Type` of a response carrying this text.
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private(set) var text = ""

    /// Starts a metric family. `type` is `counter`, `gauge` or `histogram`.
    mutating func family(_ name: String, type: String, help: String) {
        text += "# HELP "
        text += name
        text += " "
        // HELP text escapes only backslash and line feed (the format's rule; quotes stay).
        for character in help.unicodeScalars {
            switch character {
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            default: text.unicodeScalars.append(character)
            }
        }
        text += "\n# TYPE "
        text += name
        text += " "
        text += type
        text += "\n"
    }

    /// Appends `name{label="value",…} value`.
    mutating func sample(_ name: String, labels: KeyValuePairs<String, String> = [:], value: String) {
        text += name
        if !labels.isEmpty {
            text += "{"
            var first = true
            for (label, labelValue) in labels {
                if !first { text += "," }
                first = false
                text += label
                text += "=\""
                Self.appendEscapedLabelValue(labelValue, to: &text)
                text += "\""
            }
            text += "}"
        }
        text += " "
        text += value
        text += "\n"
    }

    mutating func sample(_ name: String, labels: KeyValuePairs<String, String> = [:], value: Int) {
        sample(name, labels: labels, value: String(value))
    }

    /// Label values escape backslash, double quote and line feed; everything else, including
    /// any UTF-8, passes through.
    static func appendEscapedLabelValue(_ value: String, to text: inout String) {
        for character in value.unicodeScalars {
            switch character {
            case "\\": text += "\\\\"
            case "\"": text += "\\\""
            case "\n": text += "\\n"
            default: text.unicodeScalars.append(character)
            }
        }
    }

    /// A measured value (CPU seconds, a start time) in the shortest form that reads back as the same `Double`,
    /// e.g. `0.37` or `1732199190.47`; the format's `NaN`, `+Inf` and `-Inf` where Swift would print `nan`, `inf`.
    static func decimal(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        return String(value)
    }

    /// Microseconds as decimal seconds with no trailing zeros: 5000 → `0.005`, 1000000 → `1`,
    /// 2500000 → `2.5`. Exact, unlike printing a `Double`, so bucket labels are stable.
    static func seconds(microseconds: Int) -> String {
        let negative = microseconds < 0
        let magnitude = microseconds.magnitude
        var result = negative ? "-" : ""
        result += String(magnitude / 1_000_000)
        var fraction = magnitude % 1_000_000
        if fraction != 0 {
            var digits = 6
            while fraction % 10 == 0 {
                fraction /= 10
                digits -= 1
            }
            let text = String(fraction)
            result += "."
            result += String(repeating: "0", count: digits - text.count)
            result += text
        }
        return result
    }
}
