/// Deterministic choices drawn from one fuzz input: where to split it, which limits to parse it with, how to frame
/// it. The same input always makes the same choices, so a reproducer replays exactly; a mutated input makes new ones.
struct FuzzChoices {
    private var state: UInt64

    /// Seeds the generator with FNV-1a over `bytes` and a per-property `salt`.
    init(_ bytes: [UInt8], salt: UInt64 = 0) {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325 ^ salt
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        state = hash
    }

    /// The next 64 random bits (splitmix64).
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }

    /// A number in `0..<bound`; 0 when `bound` <= 0.
    mutating func below(_ bound: Int) -> Int {
        bound <= 0 ? 0 : Int(next() % UInt64(bound))
    }

    /// True with probability 1/`oneIn`.
    mutating func chance(_ oneIn: Int) -> Bool {
        below(oneIn) == 0
    }

    /// The ways of cutting `count` bytes into pieces that every split property compares with the whole: for short
    /// inputs one cut at every offset (quadratic, so only there), otherwise one, two and three cuts at drawn
    /// offsets; always one byte per piece. Each plan is a list of ascending cut offsets in `0...count`.
    mutating func cutPlans(count: Int, everyOffsetUpTo limit: Int = 48) -> [[Int]] {
        var plans: [[Int]] = []
        if count <= limit {
            plans += (0...count).map { [$0] }
        } else {
            for cuts in 1...3 {
                plans.append((0..<cuts).map { _ in below(count + 1) }.sorted())
            }
        }
        plans.append(Array(0...count))
        return plans
    }
}

/// Stops the fuzzer with a message naming the property that failed and everything needed to rerun it as a unit test.
/// `fatalError` traps, libFuzzer catches the signal and writes the input to its artifact path.
func propertyFailed(_ property: String, _ details: @autoclosure () -> String) -> Never {
    fatalError("fuzz property failed: \(property)\n\(details())")
}

/// `bytes` as a Swift literal to paste into a unit test: a string with `\r`, `\n` and `\u{..}` escapes when every
/// byte is ASCII (so the literal's UTF-8 is exactly `bytes`), else a `[UInt8]` array.
func escaped(_ bytes: [UInt8]) -> String {
    guard bytes.allSatisfy({ $0 < 0x80 }) else {
        return "[" + bytes.map { "0x" + String($0, radix: 16) }.joined(separator: ", ") + "]"
    }
    var text = ""
    for byte in bytes {
        switch byte {
        case 0x0D: text += "\\r"
        case 0x0A: text += "\\n"
        case 0x5C: text += "\\\\"
        case 0x22: text += "\\\""
        case 0x20..<0x7F: text.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            let hex = String(byte, radix: 16)
            text += "\\u{" + hex + "}"
        }
    }
    return "\"" + text + "\""
}

/// The bytes a fuzz entry point was given, copied into an array (whose `span` the parsers take).
public func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}
