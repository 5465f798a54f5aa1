import Testing
@testable import SluiceCore

/// A request body and the affinity key the scanner must find in it.
struct AffinityBodyKeyCase: Sendable, CustomTestStringConvertible {
    var name: String
    var key: AffinityKey
    var body: [UInt8]
    /// The bytes hashed into the key; nil when the body has none.
    var expected: [UInt8]?
    /// Whether `feed` alone decides (else only `finish` does).
    var decidedByFeed: Bool
    /// Body bytes read when the result is decided, when `decidedByFeed` (checked byte by byte); nil: not checked.
    var decidedAt: Int?

    init(_ name: String, _ key: AffinityKey, _ body: String, _ expected: String?, decidedByFeed: Bool = true,
         decidedAt: Int? = nil) {
        self.name = name
        self.key = key
        self.body = TapTestSupport.bytes(body)
        self.expected = expected.map(TapTestSupport.bytes)
        self.decidedByFeed = decidedByFeed
        self.decidedAt = decidedAt
    }

    var testDescription: String { name }
}

private let user = AffinityKey.json(["user"])
private let userID = AffinityKey.json(["metadata", "user_id"])
private let prompt16 = AffinityKey.prompt(bytes: 16)
private let prompt100 = AffinityKey.prompt(bytes: 100)

let affinityJSONCases: [AffinityBodyKeyCase] = [
    .init("a top-level string", user, #"{"model":"m","user":"alice","stream":true}"#, "alice",
          decidedAt: 27),
    .init("a nested path", userID, #"{"model":"m","metadata":{"user_id":"u-1"}}"#, "u-1"),
    .init("three levels", .json(["a", "b", "c"]), #"{"a":{"x":1,"b":{"c":"deep"}}}"#, "deep"),
    .init("members inside arrays are skipped", user,
          #"{"messages":[{"user":"decoy"},[{"user":"decoy2"}]],"user":"real"}"#, "real"),
    .init("members of other objects are skipped", user,
          #"{"metadata":{"user":"decoy","x":{"user":"decoy2"}},"user":"real"}"#, "real"),
    .init("the path's inner members at other depths are skipped", userID,
          #"{"user_id":"top","x":{"metadata":{"user_id":"deep"}},"metadata":{"user_id":"right"}}"#, "right"),
    .init("strings holding quotes, backslashes and braces before the key", user,
          #"{"note":"a\"b\\c{\"user\":\"no\"}}","user":"bob"}"#, "bob"),
    .init("escaped quotes in the value, kept as sent", user, #"{"user":"a\"b\\"}"#, #"a\"b\\"#),
    .init("escapes in the value are not decoded", user, #"{"user":"caf\u00e9"}"#, #"caf\u00e9"#),
    .init("braces in the value", user, #"{"user":"{}[]:,"}"#, "{}[]:,"),
    .init("escapes in a member name are decoded", user, #"{"us\u0065r":"x"}"#, "x"),
    .init("a long member name before the key", user, "{\"\(String(repeating: "u", count: 300))\":1,\"user\":\"x\"}",
          "x"),
    .init("an integer", user, #"{"user":12345}"#, "12345", decidedAt: 14),
    .init("a number with fraction and exponent", user, #"{"user":-1.5e+3,"x":1}"#, "-1.5e+3"),
    .init("zero", user, #"{"user":0}"#, "0"),
    .init("a number ended by whitespace", userID, "{\"metadata\":{\"user_id\":7\n}}", "7"),
    .init("true", user, #"{"user":true}"#, "true"),
    .init("false", user, #"{"user":false}"#, "false"),
    .init("whitespace everywhere", userID,
          " \n{ \t\"metadata\" \r\n: {\n\"user_id\"\n:\t\"x y\" \n}\n}\n", "x y"),
    .init("duplicate members: the first wins", user, #"{"user":"first","user":"second"}"#, "first"),
    .init("a duplicate path object: the first wins", userID,
          #"{"metadata":{"a":1},"metadata":{"user_id":"x"}}"#, nil, decidedAt: 19),
    .init("a null first occurrence is not replaced", user, #"{"user":null,"user":"x"}"#, nil),
    .init("the path through a string", userID, #"{"metadata":"x","user_id":"y"}"#, nil),
    .init("the path through an array", userID, #"{"metadata":[{"user_id":"x"}]}"#, nil),
    .init("the path through null", userID, #"{"metadata":null}"#, nil),
    .init("an object value", user, #"{"user":{"id":"x"}}"#, nil),
    .init("an array value", user, #"{"user":["x"]}"#, nil),
    .init("a null value", user, #"{"user":null}"#, nil),
    .init("an empty string", user, #"{"user":""}"#, nil),
    .init("a missing member", user, #"{"model":"m","messages":[]}"#, nil, decidedAt: 27),
    .init("an empty object", user, "{}", nil),
    .init("an array body", user, #"[{"user":"x"}]"#, nil, decidedAt: 1),
    .init("a string body", user, #""user""#, nil),
    .init("a number body", user, "42", nil, decidedByFeed: false),
    .init("an empty body", user, "", nil, decidedByFeed: false),
    .init("whitespace only", user, " \n", nil, decidedByFeed: false),
    .init("form data", user, "user=x", nil),
    .init("malformed before the key", user, #"{"a":tru,"user":"x"}"#, nil),
    .init("a control character in a string before the key", user, "{\"a\":\"\u{1}\",\"user\":\"x\"}", nil),
    .init("a control character in the value", user, "{\"user\":\"a\u{1}\"}", nil),
    .init("a second colon", user, #"{"user"::"x"}"#, nil),
    .init("no colon", user, #"{"user" "x"}"#, nil),
    .init("malformed after the key: found first", user, #"{"user":"x",,]"#, "x"),
    .init("cut inside the value", user, #"{"user":"ali"#, nil, decidedByFeed: false),
    .init("cut inside a number", user, #"{"user":12"#, nil, decidedByFeed: false),
    .init("cut before the value", user, #"{"user": "#, nil, decidedByFeed: false),
    .init("cut before the key", user, #"{"model":"m","#, nil, decidedByFeed: false),
]

let affinityPromptCases: [AffinityBodyKeyCase] = [
    .init("messages shorter than N: its end", prompt16, #"{"messages":["hi"],"model":"m"}"#, #"["hi"]"#,
          decidedAt: 18),
    .init("messages of exactly N bytes", prompt16, #"{"messages":["abcdefghijkl"]}"#, #"["abcdefghijkl"]"#,
          decidedAt: 28),
    .init("messages longer than N: its first N bytes", prompt16,
          #"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#, #"[{"role":"user","#, decidedAt: 40),
    .init("a prompt string, quotes included", prompt16, #"{"prompt":"hello"}"#, #""hello""#),
    .init("a long prompt string", prompt16, #"{"prompt":"0123456789abcdefghij"}"#, #""0123456789abcde"#),
    .init("an input array", prompt16, #"{"input":["a","b"]}"#, #"["a","b"]"#),
    .init("escapes kept as sent", prompt16, #"{"prompt":"a\"\\\u00e9"}"#, #""a\"\\\u00e9""#),
    .init("input before messages", prompt16, #"{"input":"i","messages":["m"]}"#, #""i""#),
    .init("messages before prompt", prompt16, #"{"messages":["m"],"prompt":"p"}"#, #"["m"]"#),
    .init("prompt before input", prompt16, #"{"model":"x","prompt":"p","input":"i"}"#, #""p""#),
    .init("a duplicate messages: the first", prompt16, #"{"messages":["a"],"messages":["b"]}"#, #"["a"]"#),
    .init("nested decoys are skipped", prompt16,
          #"{"metadata":{"messages":["x"],"prompt":"y"},"tools":[{"input":"z"}],"prompt":"p"}"#, #""p""#),
    .init("a null input does not count", prompt16, #"{"input":null,"messages":["m"]}"#, #"["m"]"#),
    .init("an object input does not count", prompt16, #"{"input":{"messages":["n"]},"prompt":"p"}"#, #""p""#),
    .init("a number prompt does not count", prompt16, #"{"prompt":12,"input":"i"}"#, #""i""#),
    .init("whitespace inside the value is kept", prompt100, "{\"messages\" :\n [ \"a\" ,\t\"b\" ] }",
          "[ \"a\" ,\t\"b\" ]"),
    .init("strings holding brackets and braces", prompt100, #"{"messages":["]}\"[{",{"c":"]"}]}"#,
          #"["]}\"[{",{"c":"]"}]"#),
    .init("no prompt member", prompt16, #"{"model":"x","stream":true}"#, nil),
    .init("only members of other types", prompt16, #"{"prompt":null,"input":42}"#, nil),
    .init("not an object", prompt16, #"["messages"]"#, nil),
    .init("an empty body", prompt16, "", nil, decidedByFeed: false),
    .init("cut inside the value: what was read", prompt100, #"{"messages":[{"role":"us"#, #"[{"role":"us"#,
          decidedByFeed: false),
    .init("cut inside a number in the value", prompt100, #"{"messages":[1,23"#, "[1,23", decidedByFeed: false),
    .init("cut inside a prompt string", prompt100, #"{"prompt":"hel"#, #""hel"#, decidedByFeed: false),
    .init("cut before the value", prompt16, #"{"messages": "#, nil, decidedByFeed: false),
    .init("cut before the colon", prompt16, #"{"messages""#, nil, decidedByFeed: false),
    .init("malformed before N bytes of the value", prompt16, #"{"messages":[tru]}"#, nil),
    .init("malformed after N bytes of the value", prompt16, #"{"messages":["0123456789abcdef",x]}"#,
          #"["0123456789abcd"#),
    .init("malformed just at the N-th byte", .prompt(bytes: 3), #"{"messages":[1x]}"#, nil),
    .init("malformed just after the N-th byte", .prompt(bytes: 2), #"{"messages":[1x]}"#, "[1"),
    .init("malformed before the value", prompt16, #"{"a":{]"messages":["m"]}"#, nil),
]

@Suite("AffinityBodyKey")
struct AffinityBodyKeyTests {
    private typealias Support = TapTestSupport

    private static func hash(_ bytes: [UInt8]) -> UInt64 {
        SipHash24.hash(k0: AffinityBodyKey.hashKey.0, k1: AffinityBodyKey.hashKey.1, bytes: bytes)
    }

    /// Feeds `bytes` in pieces cut at `cuts` (after `reset`); returns what the last feed said, how many bytes were
    /// fed when it was decided, and what `finish` said. Checks that a decision never changes.
    private static func run(_ scanner: inout AffinityBodyKey, _ bytes: [UInt8], cuts: [Int], comment: String)
        -> (fed: AffinityBodyKey.Result, decidedAt: Int?, finished: AffinityBodyKey.Result) {
        scanner.reset()
        var last = AffinityBodyKey.Result.needMore
        var decidedAt: Int?
        for range in Support.pieces(bytes.count, cuts: cuts) {
            let result = scanner.feed(bytes.span.extracting(range))
            if decidedAt != nil {
                #expect(result == last, "a decision changed: \(comment)")
            } else if result != .needMore {
                decidedAt = range.upperBound
            }
            last = result
        }
        let finished = scanner.finish()
        #expect(scanner.finish() == finished, "finish twice: \(comment)")
        #expect(scanner.feed(Support.bytes("{\"user\":\"x\"}").span) == finished, "feed after finish: \(comment)")
        return (last, decidedAt, finished)
    }

    private static func check(_ bodyCase: AffinityBodyKeyCase) {
        let expected: AffinityBodyKey.Result = bodyCase.expected.map { .found(hash($0)) } ?? .absent
        var scanner = AffinityBodyKey(bodyCase.key)
        for feeding in Support.feedings(bodyCase.body.count) {
            let outcome = run(&scanner, bodyCase.body, cuts: feeding.cuts, comment: feeding.name)
            #expect(outcome.fed == (bodyCase.decidedByFeed ? expected : .needMore), "\(feeding.name)")
            #expect(outcome.finished == expected, "\(feeding.name)")
            if feeding.name == "byte by byte", let decidedAt = bodyCase.decidedAt {
                #expect(outcome.decidedAt == decidedAt, "decided after \(outcome.decidedAt ?? -1) bytes")
            }
        }
    }

    @Test("json PATH: whole, split at every offset and byte by byte", arguments: affinityJSONCases)
    func json(_ bodyCase: AffinityBodyKeyCase) {
        Self.check(bodyCase)
    }

    @Test("prompt SIZE: whole, split at every offset and byte by byte", arguments: affinityPromptCases)
    func prompt(_ bodyCase: AffinityBodyKeyCase) {
        Self.check(bodyCase)
    }

    @Test("a header key reads no body")
    func headerKey() {
        var scanner = AffinityBodyKey(.header("x-session-id"))
        #expect(scanner.feed(Support.bytes(#"{"user":"x"}"#).span) == .absent)
        #expect(scanner.finish() == .absent)
    }

    @Test("a body value hashes as a header holding the same bytes")
    func sameAsHeader() {
        #expect(AffinityBodyKey.hashKey.0 == ClientSession.affinityHashKey.0)
        #expect(AffinityBodyKey.hashKey.1 == ClientSession.affinityHashKey.1)
        var scanner = AffinityBodyKey(.json(["user"]))
        let result = scanner.feed(Support.bytes(#"{"user":"alice"}"#).span)
        #expect(result == .found(Self.hash(Support.bytes("alice"))))
    }

    @Test("reset starts over: one scanner, many requests")
    func reuse() {
        var scanner = AffinityBodyKey(.json(["user"]))
        for name in ["a", "b", "a"] {
            scanner.reset()
            let body = Support.bytes("{\"user\":\"\(name)\"}")
            #expect(scanner.feed(body.span) == .found(Self.hash(Support.bytes(name))))
        }
        scanner.reset()
        #expect(scanner.feed(Support.bytes("{\"user\":").span) == .needMore)
        scanner.reset()
        #expect(scanner.feed(Support.bytes(#"{"user":"c"}"#).span) == .found(Self.hash(Support.bytes("c"))))
    }

    // MARK: - Conversations

    private static func chat(system: String, _ turns: [(role: String, content: String)]) -> [UInt8] {
        let messages = ([("system", system)] + turns).map { "{\"role\":\"\($0.0)\",\"content\":\"\($0.1)\"}" }
        let members = "\"model\":\"llama-3\",\"stream\":true"
        return Support.bytes("{\(members),\"messages\":[\(messages.joined(separator: ","))]}")
    }

    private static func promptKey(_ body: [UInt8], bytes: Int = 2048) -> AffinityBodyKey.Result {
        var scanner = AffinityBodyKey(.prompt(bytes: bytes))
        let result = scanner.feed(body.span)
        return result == .needMore ? scanner.finish() : result
    }

    @Test("turns of one conversation share a key; another conversation gets another")
    func conversations() {
        let system = "You are a careful assistant. " + String(repeating: "Follow the house style. ", count: 100)
        let firstTurn = Self.chat(system: system, [("user", "What is a sluice?")])
        let secondTurn = Self.chat(system: system, [("user", "What is a sluice?"),
                                                    ("assistant", "A gate that controls water flow."),
                                                    ("user", "And a weir?")])
        let otherSystem = Self.chat(system: "You are terse. " + system, [("user", "What is a sluice?")])
        #expect(Self.promptKey(firstTurn) == Self.promptKey(secondTurn))
        #expect(Self.promptKey(firstTurn) != Self.promptKey(otherSystem))
        #expect(Self.promptKey(firstTurn) != .absent)

        // A short system prompt: the first user message is inside the N bytes, so it tells conversations apart.
        let shortA = Self.chat(system: "Be brief.", [("user", "Plan a trip to Lyon"), ("assistant", "Sure")])
        let shortA2 = Self.chat(system: "Be brief.", [("user", "Plan a trip to Lyon"), ("assistant", "Sure"),
                                                      ("user", "In May")])
        let shortB = Self.chat(system: "Be brief.", [("user", "Plan a trip to Oslo"), ("assistant", "Sure")])
        #expect(Self.promptKey(shortA, bytes: 96) == Self.promptKey(shortA2, bytes: 96))
        #expect(Self.promptKey(shortA, bytes: 96) != Self.promptKey(shortB, bytes: 96))
    }

    // MARK: - Hostile bodies

    @Test("a 10 MB prompt fed in 64 KiB pieces stops at N")
    func hugePrompt() {
        let body = Support.bytes("{\"prompt\":\"" + String(repeating: "x", count: 10 << 20) + "\"}")
        var scanner = AffinityBodyKey(.prompt(bytes: 2048))
        var fed = 0
        var result = AffinityBodyKey.Result.needMore
        while result == .needMore, fed < body.count {
            let end = min(fed + 65_536, body.count)
            result = scanner.feed(body.span.extracting(fed..<end))
            fed = end
        }
        #expect(fed == 65_536)
        #expect(result == .found(Self.hash(Support.bytes("\"" + String(repeating: "x", count: 2047)))))
    }

    @Test("a 10 MB json value cut by the read limit is no key")
    func hugeJSONValue() {
        let body = Support.bytes("{\"user\":\"" + String(repeating: "x", count: 10 << 20) + "\"}")
        var scanner = AffinityBodyKey(.json(["user"]))
        #expect(scanner.feed(body.span.extracting(0..<AffinityKey.bodyReadLimit)) == .needMore)
        #expect(scanner.finish() == .absent)
    }

    @Test("depth bombs are no key, in any feeding", arguments: [
        (AffinityKey.json(["user"]), "{\"a\":" + String(repeating: "[", count: 100_000), Int?.none),
        (AffinityKey.json(Array(repeating: "a", count: 40)), String(repeating: "{\"a\":", count: 50_000), Int?.none),
        (AffinityKey.prompt(bytes: 2048), "{\"messages\":" + String(repeating: "[", count: 100_000), Int?.none),
        // N bytes before the scanner's depth limit: found.
        (AffinityKey.prompt(bytes: 16), "{\"messages\":" + String(repeating: "[", count: 100_000), 16),
    ])
    func depthBomb(_ key: AffinityKey, _ text: String, _ promptBytes: Int?) {
        let body = Support.bytes(text)
        let expected: AffinityBodyKey.Result = promptBytes.map {
            .found(Self.hash(Array(repeating: TapByte.openBracket, count: $0)))
        } ?? .absent
        var scanner = AffinityBodyKey(key)
        for (name, cuts) in [("whole", []), ("4 KiB pieces", Array(stride(from: 0, to: body.count, by: 4096))),
                             ("byte by byte", Array(0...body.count))] {
            let outcome = Self.run(&scanner, body, cuts: cuts, comment: name)
            #expect(outcome.fed == expected, "\(name)")
            if name == "byte by byte" {
                // Given up at the scanner's depth limit, not at the end of the bomb.
                #expect((outcome.decidedAt ?? .max) < 300, "decided after \(outcome.decidedAt ?? -1) bytes")
            }
        }
    }
}
