import Testing

@testable import SluiceCore

/// Hostile input: garbage, huge lines, many lines, mutations of a valid file. The parser must
/// return a config or a `ConfigError` with a sane line, never trap.
@Suite struct ConfigRobustnessTests {
    /// Deterministic xorshift64* so failures reproduce.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 2_685_821_657_736_338_717
        }
    }

    /// Parses raw bytes through the same path as a file, returning the error if any.
    static func outcome(_ bytes: [UInt8]) -> ConfigError? {
        do {
            let draft = try ConfigParser.parse(bytes, file: "fuzz")
            _ = try draft.resolve(file: "fuzz", sourcePath: nil)
            return nil
        } catch {
            return error
        }
    }

    static func lineCount(_ bytes: [UInt8]) -> Int {
        bytes.count { $0 == UInt8(ascii: "\n") } + 1
    }

    @Test(arguments: 0..<4)
    func randomBytesNeverTrap(seed: Int) {
        var generator = Generator(state: 0x9E37_79B9_7F4A_7C15 &+ UInt64(seed))
        for _ in 0..<500 {
            let count = Int.random(in: 0..<400, using: &generator)
            // Half the runs draw from a config-like alphabet so the parser gets past line 1.
            let alphabet = Array("route upstream listen timeouts limits server {}#/\n\t :[]0123456789smhkg.".utf8)
            let bytes = (0..<count).map { _ in
                seed % 2 == 0 ? UInt8.random(in: 0...255, using: &generator) : alphabet.randomElement(using: &generator)!
            }
            if let error = Self.outcome(bytes) {
                #expect((0...Self.lineCount(bytes)).contains(error.line))
                #expect(error.file == "fuzz")
            }
        }
    }

    @Test func mutatedExampleNeverTraps() throws {
        let example = try ConfigFile.readAll(ConfigFileTests.examplePath)
        #expect(Self.outcome(example) == nil)
        var generator = Generator(state: 42)
        for _ in 0..<1_000 {
            var bytes = example
            for _ in 0..<Int.random(in: 1...8, using: &generator) {
                let index = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes.remove(at: index)
                case 1: bytes.insert(UInt8.random(in: 0...255, using: &generator), at: index)
                default: bytes[index] = UInt8.random(in: 0...255, using: &generator)
                }
            }
            if let error = Self.outcome(bytes) {
                #expect((0...Self.lineCount(bytes)).contains(error.line))
            }
        }
    }

    /// Inputs with one enormous line, built in the test so the test log stays short.
    enum HugeInput: String, CaseIterable {
        case unknownKey, listenValue, duration, size, routePrefix, manyValues

        var text: String {
            let mebibyte = 1 << 20
            return switch self {
            case .unknownKey: String(repeating: "k", count: mebibyte)
            case .listenValue: "listen " + String(repeating: "1", count: mebibyte)
            case .duration: "timeouts {\n total " + String(repeating: "9", count: 100_000) + "s\n}"
            case .size: "limits {\n max_request_body " + String(repeating: "9", count: 100_000) + "\n}"
            case .routePrefix: "route " + String(repeating: "x", count: mebibyte) + " {\n}"
            case .manyValues: "listen" + String(repeating: " :80", count: 100_000)
            }
        }

        /// Line the error must point at.
        var line: Int {
            switch self {
            case .duration, .size: 2
            default: 1
            }
        }
    }

    @Test(arguments: HugeInput.allCases)
    func hugeLinesGiveShortMessages(input: HugeInput) {
        let error = Self.outcome(Array(input.text.utf8))
        #expect(error?.line == input.line)
        // Quoted input is cut, so the message stays readable.
        #expect((error?.message.utf8.count ?? 0) < 400, "\(error?.message.prefix(500) ?? "")")
    }

    @Test func hugeCommentAndManyBlankLinesAreFine() {
        let text = "# " + String(repeating: "c", count: 1 << 20) + "\n" + String(repeating: "\n", count: 100_000)
            + ConfigFileErrorTests.base
        #expect(Self.outcome(Array(text.utf8)) == nil)
    }

    @Test(arguments: [
        ([0xFF, 0xFE, 0x20, 0x31], "unknown key '\u{FFFD}\u{FFFD}' at the top level"),
        ([0x6C, 0x69, 0x73, 0x74, 0x65, 0x6E, 0x20, 0xC3, 0x28, 0x3A, 0x38, 0x30], "bad listen address"),
        ([0x00], "unexpected control character 0x00"),
        ([0x0A, 0x0A, 0x7F], "unexpected control character 0x7F"),
    ] as [([UInt8], String)])
    func invalidUTF8AndBinary(bytes: [UInt8], fragment: String) {
        let error = Self.outcome(bytes)
        #expect(error?.message.contains(fragment) == true, "\(String(describing: error))")
    }

    @Test func messagesEscapeControlBytesFromFlags() {
        do {
            _ = try CommandLineCommand.parse(["--listen", "a\u{1B}[31m:1"])
            Issue.record("expected an error")
        } catch {
            #expect(!error.message.contains("\u{1B}"))
            #expect(error.message.contains("\\x1B"))
        }
    }
}
