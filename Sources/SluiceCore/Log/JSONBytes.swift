/// Appends JSON text (RFC 8259) to a byte array: the few pieces a completion record needs,
/// without Foundation and without building intermediate `String`s.
///
/// Used by the writer thread only; nothing here runs on a loop.
enum JSONBytes {
    /// Appends ASCII text that needs no escaping (keys, punctuation).
    @inline(__always)
    static func appendRaw(_ text: StaticString, to out: inout [UInt8]) {
        text.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    /// Appends a decimal integer.
    static func appendInt(_ value: Int64, to out: inout [UInt8]) {
        if value == 0 {
            out.append(UInt8(ascii: "0"))
            return
        }
        // Magnitude as UInt64 so Int64.min does not overflow on negation.
        var magnitude = value.magnitude
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0) // 24 bytes: room for the 20 digits of UInt64.max
        withUnsafeMutableBytes(of: &digits) { raw in
            var index = raw.count
            while magnitude > 0 {
                index -= 1
                raw[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            }
            out.append(contentsOf: raw[index...])
        }
    }

    @inline(__always)
    static func appendInt(_ value: Int, to out: inout [UInt8]) {
        appendInt(Int64(value), to: &out)
    }

    /// Appends a duration in milliseconds with exactly three decimals (microsecond resolution),
    /// e.g. `500.125`. Negative, NaN or infinite values are written as `0.000`: they can only come
    /// from a clock bug, and JSON has no spelling for NaN or infinity (RFC 8259 §6).
    static func appendMilliseconds(_ value: Double, to out: inout [UInt8]) {
        let microseconds: Int64
        if value.isFinite && value > 0 && value < 9.0e15 {
            microseconds = Int64((value * 1000).rounded())
        } else {
            microseconds = 0
        }
        appendInt(microseconds / 1000, to: &out)
        out.append(UInt8(ascii: "."))
        let fraction = Int(microseconds % 1000)
        out.append(UInt8(ascii: "0") + UInt8(fraction / 100))
        out.append(UInt8(ascii: "0") + UInt8(fraction / 10 % 10))
        out.append(UInt8(ascii: "0") + UInt8(fraction % 10))
    }

    /// Appends `text` as a quoted JSON string.
    static func appendString(_ text: String, to out: inout [UInt8]) {
        var text = text
        text.withUTF8 { appendString(utf8: $0, to: &out) }
    }

    /// Appends a quoted JSON string, or `null`.
    static func appendString(_ text: String?, to out: inout [UInt8]) {
        if let text {
            appendString(text, to: &out)
        } else {
            appendRaw("null", to: &out)
        }
    }

    /// Appends `bytes` as a quoted JSON string (RFC 8259 §7): `"` and `\` are escaped, control
    /// characters become `\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX` (DEL too, so a terminal showing
    /// the log cannot be driven by it), valid UTF-8 passes through, and each maximal invalid
    /// subpart becomes U+FFFD (Unicode §3.9, "U+FFFD substitution of maximal subparts") so the line
    /// stays valid JSON whatever bytes a client sent.
    static func appendString(utf8 bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var index = 0
        var runStart = 0 // start of bytes that pass through unchanged, copied in one append
        let count = bytes.count
        while index < count {
            let byte = bytes[index]
            if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") {
                index += 1
                continue
            }
            if byte >= 0x80 {
                let length = validSequenceLength(bytes, at: index)
                if length > 0 {
                    index += length
                    continue
                }
                flush(bytes, runStart..<index, to: &out)
                out.append(contentsOf: [0xEF, 0xBF, 0xBD] as [UInt8])
                index += invalidSubpartLength(bytes, at: index)
                runStart = index
                continue
            }
            flush(bytes, runStart..<index, to: &out)
            switch byte {
            case UInt8(ascii: "\""): appendRaw("\\\"", to: &out)
            case UInt8(ascii: "\\"): appendRaw("\\\\", to: &out)
            case 0x0A: appendRaw("\\n", to: &out)
            case 0x0D: appendRaw("\\r", to: &out)
            case 0x09: appendRaw("\\t", to: &out)
            case 0x08: appendRaw("\\b", to: &out)
            case 0x0C: appendRaw("\\f", to: &out)
            default:
                appendRaw("\\u00", to: &out)
                out.append(hexDigit(byte >> 4))
                out.append(hexDigit(byte & 0x0F))
            }
            index += 1
            runStart = index
        }
        flush(bytes, runStart..<count, to: &out)
        out.append(UInt8(ascii: "\""))
    }

    @inline(__always)
    private static func flush(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, to out: inout [UInt8]) {
        if !range.isEmpty { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[range])) }
    }

    @inline(__always)
    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }

    /// The allowed range of the second byte after lead `byte`, and the sequence length
    /// (RFC 3629 §4 table: no overlong forms, no surrogates, nothing above U+10FFFF);
    /// nil for a byte that cannot start a sequence.
    @inline(__always)
    private static func leadInfo(_ byte: UInt8) -> (length: Int, second: ClosedRange<UInt8>)? {
        switch byte {
        case 0xC2...0xDF: (2, 0x80...0xBF)
        case 0xE0: (3, 0xA0...0xBF)
        case 0xE1...0xEC, 0xEE...0xEF: (3, 0x80...0xBF)
        case 0xED: (3, 0x80...0x9F)
        case 0xF0: (4, 0x90...0xBF)
        case 0xF1...0xF3: (4, 0x80...0xBF)
        case 0xF4: (4, 0x80...0x8F)
        default: nil
        }
    }

    /// The length of the well-formed multi-byte sequence at `index`, or 0 if it is not one.
    private static func validSequenceLength(_ bytes: UnsafeBufferPointer<UInt8>, at index: Int) -> Int {
        guard let lead = leadInfo(bytes[index]), index + lead.length <= bytes.count,
              lead.second.contains(bytes[index + 1]) else { return 0 }
        for offset in 2..<lead.length where bytes[index + offset] & 0xC0 != 0x80 { return 0 }
        return lead.length
    }

    /// How many bytes one U+FFFD replaces: the lead plus the continuation bytes that still
    /// formed a valid prefix, at least 1.
    private static func invalidSubpartLength(_ bytes: UnsafeBufferPointer<UInt8>, at index: Int) -> Int {
        guard let lead = leadInfo(bytes[index]) else { return 1 }
        var length = 1
        while length < lead.length && index + length < bytes.count {
            let next = bytes[index + length]
            let allowed: ClosedRange<UInt8> = length == 1 ? lead.second : 0x80...0xBF
            guard allowed.contains(next) else { break }
            length += 1
        }
        return length
    }
}
