import Testing
@testable import SluiceCore

/// A JSON text and what the scanner must report for it: the tokens, then `complete`, `incomplete` (valid so far
/// but unfinished at the end) or `failed@N` (N: the offending byte's offset in the whole text).
struct JSONScanCase: Sendable, CustomTestStringConvertible {
    var name: String
    var text: [UInt8]
    var expected: [String]

    init(_ name: String, _ text: String, _ expected: [String]) {
        self.name = name
        self.text = TapTestSupport.bytes(text)
        self.expected = expected
    }

    init(_ name: String, bytes: [UInt8], _ expected: [String]) {
        self.name = name
        self.text = bytes
        self.expected = expected
    }

    var testDescription: String { name }
}

private let longString = String(repeating: "abcdefgh", count: 25)  // 200 bytes
private let longStringKept = String(longString.prefix(128))

let jsonScanCases: [JSONScanCase] = [
    // Structure
    .init("empty object", "{}", ["{", "}", "complete"]),
    .init("empty array with whitespace", " \t\r\n[ ]\n", ["[", "]", "complete"]),
    .init("members and nesting", #"{"a":1,"b":[true,false,null],"c":{"d":"e"},"":""}"#,
          ["{", "k:a", "n:1", "k:b", "[", "true", "false", "null", "]", "k:c", "{", "k:d", "s:e", "}", "k:", "s:",
           "}", "complete"]),
    .init("whitespace between every token", "\t{\n\"a\" :\r\n[ 1 , 2 ] ,\"b\":\"c\" }\t",
          ["{", "k:a", "[", "n:1", "n:2", "]", "k:b", "s:c", "}", "complete"]),
    .init("32 levels (the limit)", String(repeating: "[", count: 32) + String(repeating: "]", count: 32),
          Array(repeating: "[", count: 32) + Array(repeating: "]", count: 32) + ["complete"]),
    // Numbers (RFC 8259 §6): integers that fit Int64 are exact, anything else nil
    .init("numbers",
          "[0,-0,12,-12,1.5,1e3,1E+3,1e-3,-0.0e0,9223372036854775807,9223372036854775808,-9223372036854775807,"
            + "99999999999999999999999]",
          ["[", "n:0", "n:0", "n:12", "n:-12", "n:nil", "n:nil", "n:nil", "n:nil", "n:nil", "n:9223372036854775807",
           "n:nil", "n:-9223372036854775807", "n:nil", "]", "complete"]),
    .init("top-level number ended by the end of the text", "42", ["n:42", "complete"]),
    .init("top-level number ended by whitespace", "-7 \n", ["n:-7", "complete"]),
    .init("top-level literal and string", " true ", ["true", "complete"]),
    .init("top-level string", #""x""#, ["s:x", "complete"]),
    // Strings (RFC 8259 §7)
    .init("escapes", #"["\"\\\/\b\f\n\r\t\u0041\u00e9\u20AC\ud83d\ude00"]"#,
          ["[", "s:\"\\/\u{8}\u{C}\n\r\tA\u{E9}\u{20AC}\u{1F600}", "]", "complete"]),
    .init("lone surrogates become U+FFFD", #"["\ud800x\udc00\ud800\ud800\ude00\udbff"]"#,
          ["[", "s:\u{FFFD}x\u{FFFD}\u{FFFD}\u{10200}\u{FFFD}", "]", "complete"]),
    .init("escaped member name", #"{"\u0075sage":null}"#, ["{", "k:usage", "null", "}", "complete"]),
    .init("raw UTF-8 and DEL in a string", "[\"caf\u{E9} \u{7F}\u{1F600}\"]",
          ["[", "s:caf\u{E9} \u{7F}\u{1F600}", "]", "complete"]),
    .init("a string longer than the text buffer is cut and marked", "[\"\(longString)\",\"short\"]",
          ["[", "s:\(longStringKept)…", "s:short", "]", "complete"]),
    // Unfinished texts: valid so far
    .init("empty text", "", ["incomplete"]),
    .init("open object", #"{"a":"#, ["{", "k:a", "incomplete"]),
    .init("open string", #"["abc"#, ["[", "incomplete"]),
    .init("number without digits", "-", ["incomplete"]),
    .init("number without fraction digits", "1.", ["incomplete"]),
    .init("unfinished escape", #"["\u00"#, ["[", "incomplete"]),
    // Rejected texts, at the offending byte
    .init("trailing comma in an object", #"{"a":1,}"#, ["{", "k:a", "n:1", "failed@7"]),
    .init("trailing comma in an array", "[1,]", ["[", "n:1", "failed@3"]),
    .init("missing colon", #"{"a" 1}"#, ["{", "k:a", "failed@5"]),
    .init("single-quoted name", "{'a':1}", ["{", "failed@1"]),
    .init("unquoted name", "{a:1}", ["{", "failed@1"]),
    .init("leading zero", "[01]", ["[", "failed@2"]),
    .init("dot without digits", "[1.]", ["[", "failed@3"]),
    .init("exponent without digits", "[1e]", ["[", "failed@3"]),
    .init("exponent sign without digits", "[1e+]", ["[", "failed@4"]),
    .init("minus without digits", "[-]", ["[", "failed@2"]),
    .init("plus sign", "+1", ["failed@0"]),
    .init("leading dot", ".5", ["failed@0"]),
    .init("two dots", "1.5.3", ["n:nil", "failed@3"]),
    .init("truncated literal", "[tru]", ["[", "failed@4"]),
    .init("wrong literal", "[nul1]", ["[", "failed@4"]),
    .init("literal followed by a letter", "truex", ["true", "failed@4"]),
    .init("unknown escape", #""a\x""#, ["failed@3"]),
    .init("bad hex digit", #""\u12G4""#, ["failed@5"]),
    .init("raw LF in a string", "\"a\nb\"", ["failed@2"]),
    .init("NUL in a string", "\"a\0\"", ["failed@2"]),
    .init("extra closing brace", #"{"a":1}}"#, ["{", "k:a", "n:1", "}", "failed@7"]),
    .init("garbage after the value", #"{"a":1} x"#, ["{", "k:a", "n:1", "}", "failed@8"]),
    .init("two top-level values", "{} {}", ["{", "}", "failed@3"]),
    .init("missing comma", "[1 2]", ["[", "n:1", "failed@3"]),
    .init("mismatched brackets", #"{"a":1]"#, ["{", "k:a", "n:1", "failed@6"]),
    .init("closing bracket first", "]", ["failed@0"]),
    .init("33 levels", String(repeating: "[", count: 33), Array(repeating: "[", count: 32) + ["failed@32"]),
    .init("SSE end marker", "[DONE]", ["[", "failed@1"]),
    .init("a BOM is not JSON", bytes: [0xEF, 0xBB, 0xBF] + TapTestSupport.bytes("{}"), ["failed@0"]),
]

@Suite("JSONScanner")
struct JSONScannerTests {
    private typealias Support = TapTestSupport

    /// Scans `bytes` given to a fresh scanner in pieces cut at `cuts`; see `JSONScanCase`.
    static func scan(_ bytes: [UInt8], cuts: [Int]) -> [String] {
        var scanner = JSONScanner()
        var tokens: [String] = []
        var calls = 0
        for range in Support.pieces(bytes.count, cuts: cuts) {
            let piece = bytes.span.extracting(range)
            var offset = 0
            feeding: while true {
                calls += 1
                // Every call consumes a byte or ends a token, and a token ends at most once per byte, so a scanner
                // that makes no progress shows up here instead of hanging the test.
                guard calls <= 2 * bytes.count + 2 * cuts.count + 4 else {
                    tokens.append("no progress")
                    return tokens
                }
                switch scanner.next(piece.extracting(offset...)) {
                case .needMore:
                    break feeding
                case .token(let token, let consumed):
                    offset += consumed
                    tokens.append(render(token, scanner))
                case .failed(let at):
                    tokens.append("failed@\(range.lowerBound + offset + at)")
                    #expect(scanner.next(piece) == .failed(at: 0), "a failed scanner stays failed")
                    return tokens
                }
            }
        }
        if let token = scanner.finish() { tokens.append(render(token, scanner)) }
        tokens.append(scanner.isComplete ? "complete" : "incomplete")
        return tokens
    }

    private static func render(_ token: JSONToken, _ scanner: JSONScanner) -> String {
        let text = scanner.text.withBytes { String(decoding: Support.array($0), as: UTF8.self) }
            + (scanner.text.overflowed ? "…" : "")
        switch token {
        case .objectStart: return "{"
        case .objectEnd: return "}"
        case .arrayStart: return "["
        case .arrayEnd: return "]"
        case .key: return "k:" + text
        case .string: return "s:" + text
        case .number(let value): return "n:" + (value.map { "\($0)" } ?? "nil")
        case .bool(let value): return "\(value)"
        case .null: return "null"
        }
    }

    @Test("tokenizes, whole, split at every offset and byte by byte", arguments: jsonScanCases)
    func tokenizes(_ scanCase: JSONScanCase) {
        for feeding in Support.feedings(scanCase.text.count) {
            #expect(Self.scan(scanCase.text, cuts: feeding.cuts) == scanCase.expected, "\(feeding.name)")
        }
    }

    @Test("tracks depth and restarts after reset")
    func tracksDepthAndResets() {
        var scanner = JSONScanner()
        let text = Support.bytes(#"{"a":[{"#)
        var depths: [Int] = []
        var offset = 0
        while case .token(_, let consumed) = scanner.next(text.span.extracting(offset...)) {
            offset += consumed
            depths.append(scanner.depth)
        }
        #expect(depths == [1, 1, 2, 3])
        #expect(!scanner.isComplete && !scanner.isFailed)

        #expect(scanner.next(Support.bytes("]").span) == .failed(at: 0))
        #expect(scanner.isFailed)
        scanner.reset()
        #expect(scanner.depth == 0 && !scanner.isFailed)
        #expect(scanner.next(Support.bytes("[]").span) == .token(.arrayStart, consumed: 1))
        #expect(scanner.next(Support.bytes("]").span) == .token(.arrayEnd, consumed: 1))
        #expect(scanner.isComplete)
    }

    @Test("a number ends before its terminator, which the next call reads")
    func numberEndsBeforeTerminator() {
        var scanner = JSONScanner()
        #expect(scanner.next(Support.bytes("[12").span) == .token(.arrayStart, consumed: 1))
        #expect(scanner.next(Support.bytes("12").span) == .needMore)
        #expect(scanner.next(Support.bytes("]").span) == .token(.number(12), consumed: 0))
        #expect(scanner.next(Support.bytes("]").span) == .token(.arrayEnd, consumed: 1))
        #expect(scanner.finish() == nil)
        #expect(scanner.isComplete)
    }
}
