import SluiceCore

/// Properties of `ChunkedDecoder` (RFC 9112 §7.1):
/// - arbitrary bytes decoded whole, split at any offsets and one byte per call give the same payload and the same
///   end or failure (at the same offset of the whole input), with `next` and with `scan`, with the default limits
///   and with small ones; a finished or failed decoder repeats itself;
/// - round trip: the input taken as payload, framed into chunks of sizes drawn from it (leading zeros, both hex
///   cases, valid extensions, trailers, bytes after the body), decodes to exactly the input and ends exactly where
///   the body does, however it is split.
public enum ChunkedFuzzing {
    /// Checks both properties on `bytes`; traps on a violation.
    public static func check(_ bytes: [UInt8]) {
        var choices = FuzzChoices(bytes, salt: 3)
        differential(bytes, choices: &choices)
        roundTrip(bytes, choices: &choices)
    }

    typealias Decoded = ChunkedBody.Decoded
    typealias Scanned = ChunkedBody.Scanned

    private static func differential(_ bytes: [UInt8], choices: inout FuzzChoices) {
        for limits in [HTTPLimits(), choices.smallHeadLimits()] {
            let whole = decode(bytes, cuts: [], limits: limits)
            switch whole {
            case .ended(_, let at), .failed(_, let at):
                guard (0...bytes.count).contains(at) else {
                    propertyFailed("chunked: offset outside the input", "input \(escaped(bytes))\nlimits \(limits)\n\(whole)")
                }
            case .consumedAll:
                break
            }
            for cuts in choices.cutPlans(count: bytes.count) {
                let split = decode(bytes, cuts: cuts, limits: limits)
                guard split == whole else {
                    propertyFailed("chunked: split decode differs from whole decode",
                                   "input \(escaped(bytes))\nlimits \(limits)\ncuts \(cuts)\nwhole \(whole)\nsplit \(split)")
                }
                let scanned = ChunkedBody.scan(bytes, cuts: cuts, limits: limits)
                guard scanned == whole.scanned else {
                    propertyFailed("chunked: scan differs from next",
                                   "input \(escaped(bytes))\nlimits \(limits)\ncuts \(cuts)\nnext \(whole)\nscan \(scanned)")
                }
            }
        }
    }

    private static func roundTrip(_ payload: [UInt8], choices: inout FuzzChoices) {
        let (body, after) = frame(payload, choices: &choices)
        let input = body + after
        let expected = Decoded.ended(payload: payload, at: body.count)
        var plans = choices.cutPlans(count: input.count, everyOffsetUpTo: 0)
        plans.append([])
        for cuts in plans {
            let decoded = decode(input, cuts: cuts, limits: HTTPLimits())
            guard decoded == expected else {
                propertyFailed("chunked: framed payload does not decode to itself",
                               "payload \(escaped(payload))\nframed \(escaped(input))\ncuts \(cuts)\ndecoded \(decoded)")
            }
        }
    }

    /// Frames `payload` as a chunked body (RFC 9112 §7.1) with choices drawn from `choices`; returns the body and
    /// the bytes that follow it on the connection.
    static func frame(_ payload: [UInt8], choices: inout FuzzChoices) -> (body: [UInt8], after: [UInt8]) {
        let extensions = [";a", ";name=value", " ;x=1", "\t; q = \"a \\\" b\" ;flag", ";e=\"\"", ";tok=!#$%&'*+-.^_`|~"]
        let trailers = ["X-Checksum: abc\r\n", "X-Empty:\r\n", "Trailer-Field:  spaced value \t\r\n"]
        let maxChunk = [1, 3, 16, 200, 5000][choices.below(5)]
        var body: [UInt8] = []
        var offset = 0
        func sizeLine(_ size: Int) {
            var digits = String(size, radix: 16, uppercase: choices.chance(2))
            if choices.chance(4) {
                digits = String(repeating: "0", count: choices.below(17 - digits.count)) + digits
            }
            body += Array(digits.utf8)
            if choices.chance(3) { body += Array(extensions[choices.below(extensions.count)].utf8) }
            body += [13, 10]
        }
        while offset < payload.count {
            let size = min(1 + choices.below(maxChunk), payload.count - offset)
            sizeLine(size)
            body += payload[offset..<offset + size]
            body += [13, 10]
            offset += size
        }
        sizeLine(0)
        for _ in 0..<choices.below(3) { body += Array(trailers[choices.below(trailers.count)].utf8) }
        body += [13, 10]
        let after: [UInt8] = choices.chance(2) ? Array("GET / HTTP/1.1\r\n".utf8) : []
        return (body, after)
    }

    /// `ChunkedBody.decode` (which traps on a step of no bytes or past its span), and checks that a settled decoder
    /// repeats itself: `.end(0)` once finished, the same error at offset 0 once failed, whatever it is given next.
    static func decode(_ bytes: [UInt8], cuts: [Int], limits: HTTPLimits) -> Decoded {
        let result = ChunkedBody.decodeKeepingDecoder(bytes, cuts: cuts, limits: limits)
        var decoder = result.decoder
        switch result.decoded {
        case .ended:
            guard decoder.isFinished, decoder.next(bytes.span) == .end(0) else {
                propertyFailed("chunked: a finished decoder does not repeat .end(0)",
                               "input \(escaped(bytes))\nlimits \(limits)\ncuts \(cuts)")
            }
        case .failed(let error, _):
            guard decoder.next(bytes.span) == .failed(error, at: 0) else {
                propertyFailed("chunked: a failed decoder does not repeat its error",
                               "input \(escaped(bytes))\nlimits \(limits)\ncuts \(cuts)")
            }
        case .consumedAll:
            break
        }
        return result.decoded
    }
}
