/// The ASCII bytes and byte classes of the HTTP/1.1 grammar (RFC 9110 §5.5, §5.6; RFC 9112 §2.2).
/// Classes are `switch`es on the byte rather than lookup tables, which keeps them constant-folded and free of globals.
enum HTTPByte {
    static let htab: UInt8 = 0x09
    static let lf: UInt8 = 0x0A
    static let cr: UInt8 = 0x0D
    static let space: UInt8 = 0x20
    static let doubleQuote: UInt8 = 0x22
    static let asterisk: UInt8 = 0x2A
    static let comma: UInt8 = 0x2C
    static let dot: UInt8 = 0x2E
    static let slash: UInt8 = 0x2F
    static let zero: UInt8 = 0x30
    static let colon: UInt8 = 0x3A
    static let semicolon: UInt8 = 0x3B
    static let equals: UInt8 = 0x3D
    static let backslash: UInt8 = 0x5C
    static let delete: UInt8 = 0x7F

    /// tchar (RFC 9110 §5.6.2): the bytes of a token such as a method, field name or coding.
    @inline(__always)
    static func isTokenChar(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true  // DIGIT, ALPHA
        case 0x21, 0x23...0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E...0x60, 0x7C, 0x7E: true  // !#$%&'*+-.^_`|~
        default: false
        }
    }

    /// SP or HTAB: OWS and BWS (RFC 9110 §5.6.3).
    @inline(__always)
    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == space || byte == htab
    }

    /// field-vchar = VCHAR / obs-text (RFC 9110 §5.5): every byte above SP except DEL.
    @inline(__always)
    static func isFieldContent(_ byte: UInt8) -> Bool {
        byte > space && byte != delete
    }

    /// A CTL other than HTAB, or DEL: never allowed in a field line or reason phrase (RFC 9110 §5.5).
    @inline(__always)
    static func isForbiddenControl(_ byte: UInt8) -> Bool {
        (byte < space && byte != htab) || byte == delete
    }

    @inline(__always)
    static func isDigit(_ byte: UInt8) -> Bool {
        byte &- zero < 10
    }

    /// The value of a HEXDIG (either case), or nil.
    @inline(__always)
    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }

    /// The byte with A-Z mapped to a-z; only letters change (OR-ing 0x20 would also turn `^` into `~`).
    @inline(__always)
    static func lowercased(_ byte: UInt8) -> UInt8 {
        byte &- 0x41 < 26 ? byte | 0x20 : byte
    }

    /// The bytes of a Host value: uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2), i.e. unreserved,
    /// pct-encoded, sub-delims, ":" and the brackets of an IP-literal.
    static func isHostChar(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true  // DIGIT, ALPHA
        case 0x2D, 0x2E, 0x5F, 0x7E, 0x25: true  // - . _ ~ %
        case 0x21, 0x24, 0x26...0x2C, 0x3B, 0x3D: true  // ! $ & ' ( ) * + , ; =
        case 0x3A, 0x5B, 0x5D: true  // : [ ]
        default: false
        }
    }

    /// Whether `bytes[range]` equals the ASCII `literal`. With `ignoringCase`, letters of `bytes` are folded to
    /// lowercase, so `literal` must be lowercase.
    static func equals(_ bytes: Span<UInt8>, _ range: Range<Int>, _ literal: StaticString, ignoringCase: Bool) -> Bool {
        guard range.count == literal.utf8CodeUnitCount else { return false }
        return literal.withUTF8Buffer { expected in
            var index = 0
            while index < expected.count {
                let byte = bytes[range.lowerBound + index]
                if (ignoringCase ? lowercased(byte) : byte) != expected[index] { return false }
                index += 1
            }
            return true
        }
    }
}

/// Splits a comma-separated list (RFC 9110 §5.6.1) into elements trimmed of OWS, one per `next` call.
/// Empty elements are returned too; each field decides whether they are allowed.
struct HTTPListCursor {
    private var position: Int
    private let end: Int

    init(_ range: Range<Int>) {
        position = range.lowerBound
        end = range.upperBound
    }

    /// The next element of the list in `bytes` (the span the range was taken from), or nil after the last one.
    mutating func next(_ bytes: Span<UInt8>) -> Range<Int>? {
        // position == end + 1 marks "after the last element"; an empty list still yields one empty element.
        guard position <= end else { return nil }
        var start = position
        var stop = start
        while stop < end, bytes[stop] != HTTPByte.comma { stop += 1 }
        position = stop + 1
        while start < stop, HTTPByte.isWhitespace(bytes[start]) { start += 1 }
        while stop > start, HTTPByte.isWhitespace(bytes[stop - 1]) { stop -= 1 }
        return start..<stop
    }
}
