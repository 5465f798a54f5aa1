import SluiceCore

/// Properties of `Config.parse(text:file:)` on arbitrary text:
/// - it returns a config or a `ConfigError` (never traps), the error naming the file and a line from 0 (not
///   line-specific) to the number of lines;
/// - it is deterministic: the same text parses to the same config or the same error;
/// - line ends and comments are only whitespace: the text with CRLF line ends, and the text with a comment
///   appended to every line, parse to the same config or the same error (line and message).
/// A config is not serialised back to text (there is no printer), so there is no parse-print-parse property.
public enum ConfigFuzzing {
    static let file = "fuzz.conf"

    /// Checks every config property on `bytes` (read as UTF-8, invalid sequences repaired); traps on a violation.
    public static func check(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        let outcome = parse(text)
        if case .failure(let error) = outcome {
            let lines = text.utf8.count { $0 == 10 } + 1
            guard error.file == file, (0...lines).contains(error.line) else {
                propertyFailed("config: error outside the file's lines",
                               "input \(escaped(Array(text.utf8)))\nlines \(lines)\nerror \(error)")
            }
        }
        let again = parse(text)
        guard again == outcome else {
            propertyFailed("config: parsing the same text twice differs",
                           "input \(escaped(Array(text.utf8)))\nfirst \(outcome)\nsecond \(again)")
        }
        // Edited as bytes: a String would treat CR LF as one Character. A byte order mark counts only at the very
        // start, where both variants keep it.
        let lines = Array(text.utf8).split(separator: 10, omittingEmptySubsequences: false).map(Array.init)
        let crlf: [UInt8] = [13, 10]
        let comment = Array(" # fuzz {".utf8)
        let variants = [
            ("CRLF line ends", Array(lines.joined(separator: crlf))),
            ("a comment on every line", Array(lines.map { $0 + comment }.joined(separator: [10]))),
        ]
        for (name, variant) in variants {
            let other = parse(String(decoding: variant, as: UTF8.self))
            guard other == outcome else {
                propertyFailed("config: \(name) changed the outcome",
                               "input \(escaped(Array(text.utf8)))\nvariant \(escaped(variant))\noriginal \(outcome)\nvariant \(other)")
            }
        }
    }

    private static func parse(_ text: String) -> Result<Config, ConfigError> {
        Result { () throws(ConfigError) in try Config.parse(text: text, file: file) }
    }
}
