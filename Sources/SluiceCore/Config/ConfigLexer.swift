/// One non-empty line of a config file, split into tokens, comments removed.
struct ConfigLine: Equatable {
    /// 1-based line number in the file.
    var number: Int
    /// Whitespace-separated words; `{` and `}` are always tokens of their own.
    var tokens: [String]
}

/// Splits config file bytes into lines of tokens.
///
/// Rules: lines end at `\n` (a `\r` before it is whitespace, so CRLF files work); spaces, tabs
/// and `\r` separate tokens; a `#` at the start of a token begins a comment that runs to the
/// end of the line; `{` and `}` are tokens even without surrounding spaces. Any other control
/// byte is an error, which is how binary garbage is turned away on its first line. Invalid
/// UTF-8 inside a token becomes U+FFFD; such tokens never validate, so they fail later with
/// the line number. A leading UTF-8 byte order mark is skipped.
enum ConfigLexer {
    /// Tokenizes `bytes`; only lines with at least one token are returned.
    /// - Throws: ``ConfigError`` at the first line holding a control character.
    static func lines(_ bytes: [UInt8], file: String) throws(ConfigError) -> [ConfigLine] {
        var result: [ConfigLine] = []
        var lineNumber = 1
        var start = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        while start < bytes.count {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            var tokens: [String] = []
            var index = start
            scan: while index < end {
                let byte = bytes[index]
                switch byte {
                case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                    index += 1
                case UInt8(ascii: "#"):
                    break scan
                case UInt8(ascii: "{"), UInt8(ascii: "}"):
                    tokens.append(byte == UInt8(ascii: "{") ? "{" : "}")
                    index += 1
                case 0x00..<0x20, 0x7F:
                    let hex = String(byte, radix: 16, uppercase: true)
                    throw ConfigError(
                        file: file, line: lineNumber,
                        message: "unexpected control character 0x\(hex.count < 2 ? "0" + hex : hex) (is this a text file?)")
                default:
                    let tokenStart = index
                    while index < end, !isDelimiter(bytes[index]) { index += 1 }
                    tokens.append(String(decoding: bytes[tokenStart..<index], as: UTF8.self))
                }
            }
            if !tokens.isEmpty { result.append(ConfigLine(number: lineNumber, tokens: tokens)) }
            lineNumber += 1
            start = end + 1
        }
        return result
    }

    /// Bytes that end a token: whitespace, braces and control characters (the latter so the
    /// scan loop reports them).
    private static func isDelimiter(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: " ")
            || byte == UInt8(ascii: "{") || byte == UInt8(ascii: "}")
    }
}
