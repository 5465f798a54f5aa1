@testable import SluiceCore
import SluiceFuzzSupport

/// Helpers for the HTTP tests, in a namespace so that they cannot clash with other folders' tests.
enum HTTPTestSupport {
    /// The UTF-8 bytes of `text`; "\r\n" and "\0" escapes give the exact bytes, "é" gives two obs-text bytes.
    static func bytes(_ text: String) -> [UInt8] {
        Array(text.utf8)
    }

    /// The text of `bytes[range]`.
    static func text(_ bytes: [UInt8], _ range: Range<Int>) -> String {
        String(decoding: bytes[range], as: UTF8.self)
    }

    /// `"name: value"` for each field, to compare with a table.
    static func fieldTexts(_ fields: [HeadField], in bytes: [UInt8]) -> [String] {
        fields.map { "\(text(bytes, $0.name)): \(text(bytes, $0.value))" }
    }

    /// Feeds growing prefixes of `bytes` ending at each of `cuts` and then at `bytes.count`, as a connection would
    /// (each call sees all earlier bytes plus new ones), and returns the first result other than `.needMore`.
    static func feed<Parser>(_ parser: inout Parser, _ bytes: [UInt8], cuts: some Sequence<Int>,
                             parse: (inout Parser, Span<UInt8>) -> HeadParseResult) -> HeadParseResult {
        let span = bytes.span
        for cut in cuts {
            let result = parse(&parser, span.extracting(0..<cut))
            if result != .needMore { return result }
        }
        return parse(&parser, span)
    }

    /// Every way of feeding `bytes` the split tests compare: whole, split once at each offset (only for inputs up to
    /// `everySplitLimit` bytes, as that is quadratic), and one byte more per call.
    static func feedings(_ count: Int, everySplitLimit: Int = 2048) -> [(name: String, cuts: [Int])] {
        var feedings: [(name: String, cuts: [Int])] = [("whole", [])]
        if count <= everySplitLimit {
            feedings += (0..<count).map { ("split at \($0)", [$0]) }
        }
        feedings.append(("byte by byte", Array(1..<max(count, 1))))
        return feedings
    }

    /// The outcome of decoding a chunked body with `ChunkedDecoder.next` (shared with the chunked fuzz target).
    typealias Decoded = ChunkedBody.Decoded

    /// Decodes `bytes` given to a fresh decoder as separate spans split at `cuts`, reassembling the payload from
    /// `.data` steps; offsets are translated to offsets of the whole input.
    static func decode(_ bytes: [UInt8], cuts: [Int], limits: HTTPLimits = HTTPLimits()) -> Decoded {
        ChunkedBody.decode(bytes, cuts: cuts, limits: limits)
    }

    /// Like `decode` but with `ChunkedDecoder.scan`; returns the end offset in the whole input, or nil if the body
    /// did not end, or the failure.
    static func scan(_ bytes: [UInt8], cuts: [Int],
                     limits: HTTPLimits = HTTPLimits()) -> Result<Int?, HTTPParseFailure> {
        switch ChunkedBody.scan(bytes, cuts: cuts, limits: limits) {
        case .ended(let at): .success(at)
        case .consumedAll: .success(nil)
        case .failed(let error, let at): .failure(HTTPParseFailure(error, at: at))
        }
    }
}
