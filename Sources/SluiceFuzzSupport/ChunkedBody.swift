import SluiceCore

/// A whole chunked body (RFC 9112 §7.1) decoded from pieces, with each of `ChunkedDecoder`'s two entry points:
/// the reassembly both the chunked fuzz target (`ChunkedFuzzing`) and the unit tests
/// (`Tests/SluiceCoreTests/HTTP/ChunkedDecoderTests.swift`) compare against, kept in one place so that the two cannot
/// drift apart. Test support only: it allocates freely and is never on the forwarding path.
public enum ChunkedBody {
    /// What decoding a body with `ChunkedDecoder.next` produced; offsets are offsets of the whole input.
    public enum Decoded: Equatable, Sendable {
        /// The body ended at this offset, with this payload.
        case ended(payload: [UInt8], at: Int)
        /// The input ran out before the body ended.
        case consumedAll(payload: [UInt8])
        /// The decoder rejected the input at this offset.
        case failed(HTTPParseError, at: Int)

        /// What `ChunkedDecoder.scan` must report for the same input: the same outcome without the payload.
        public var scanned: Scanned {
            switch self {
            case .ended(_, let at): .ended(at: at)
            case .consumedAll: .consumedAll
            case .failed(let error, let at): .failed(error, at: at)
            }
        }
    }

    /// What decoding a body with `ChunkedDecoder.scan` produced; offsets are offsets of the whole input.
    public enum Scanned: Equatable, Sendable {
        /// The body ended at this offset.
        case ended(at: Int)
        /// The input ran out before the body ended.
        case consumedAll
        /// The decoder rejected the input at this offset.
        case failed(HTTPParseError, at: Int)
    }

    /// Decodes `bytes` given to a fresh decoder as separate spans cut at `cuts` (ascending offsets), reassembling the
    /// payload from the `.data` steps. Traps on a step of no bytes or past its span, which is a decoder bug (a
    /// caller looping on it would never end, or would read bytes it was not given).
    public static func decode(_ bytes: [UInt8], cuts: [Int], limits: HTTPLimits = HTTPLimits()) -> Decoded {
        decodeKeepingDecoder(bytes, cuts: cuts, limits: limits).decoded
    }

    /// `decode`, also returning the decoder as it was left, so that a caller can check that a finished or failed
    /// decoder repeats itself.
    public static func decodeKeepingDecoder(_ bytes: [UInt8], cuts: [Int],
                                            limits: HTTPLimits = HTTPLimits()) -> (decoded: Decoded, decoder: ChunkedDecoder) {
        var decoder = ChunkedDecoder(limits: limits)
        var payload: [UInt8] = []
        var segmentStart = 0
        for segmentEnd in cuts + [bytes.count] {
            let segment = bytes.span.extracting(segmentStart..<segmentEnd)
            var offset = 0
            while offset < segment.count {
                let base = segmentStart + offset
                let step = decoder.next(segment.extracting(offset...))
                switch step {
                case .framing(let count), .data(let count):
                    guard count > 0, count <= segment.count - offset else {
                        propertyFailed("chunked: a step of no bytes or past the input",
                                       "input \(escaped(bytes))\nlimits \(limits)\ncuts \(cuts)\nat \(base): \(step)")
                    }
                    if case .data = step { payload += bytes[base..<base + count] }
                    offset += count
                case .end(let count):
                    return (.ended(payload: payload, at: base + count), decoder)
                case .failed(let error, let at):
                    return (.failed(error, at: base + at), decoder)
                }
            }
            segmentStart = segmentEnd
        }
        return (.consumedAll(payload: payload), decoder)
    }

    /// Like `decode` with `ChunkedDecoder.scan`, which reports where the body ends without its payload.
    public static func scan(_ bytes: [UInt8], cuts: [Int], limits: HTTPLimits = HTTPLimits()) -> Scanned {
        var decoder = ChunkedDecoder(limits: limits)
        var segmentStart = 0
        for segmentEnd in cuts + [bytes.count] {
            switch decoder.scan(bytes.span.extracting(segmentStart..<segmentEnd)) {
            case .consumedAll: break
            case .ended(let at): return .ended(at: segmentStart + at)
            case .failed(let error, let at): return .failed(error, at: segmentStart + at)
            }
            segmentStart = segmentEnd
        }
        return .consumedAll
    }
}
