import SluiceCore

/// Properties of the request and response head parsers (RFC 9112 §2-§6) on arbitrary bytes:
/// - parsing the input whole, split at any offsets and one byte per call gives the same result and the same head
///   (the restartable-parser contract: the state between calls is only a state and an offset);
/// - a parser that completed or failed repeats its result, and a reset parser is as good as a new one;
/// - a complete head ends with CRLF CRLF inside the input and every range in it lies inside the head;
/// - a failure's offset is the offending byte: the bytes before it alone are not yet an error (`.needMore`).
/// Each runs with the default limits and with small limits drawn from the input, so the limit checks are reached.
public enum HeadFuzzing {
    /// Checks every request-head property on `bytes`; traps on a violation.
    public static func request(_ bytes: [UInt8]) {
        var choices = FuzzChoices(bytes, salt: 1)
        for limits in [HTTPLimits(), choices.smallHeadLimits()] {
            var parser = RequestHeadParser(limits: limits)
            let whole = parseRequest(&parser, bytes, cuts: [])
            checkRequest(whole, bytes)
            for cuts in choices.cutPlans(count: bytes.count) {
                parser.reset()
                let split = parseRequest(&parser, bytes, cuts: cuts)
                guard split == whole else {
                    propertyFailed("request head: split parse differs from whole parse",
                                   "input \(escaped(bytes))\nlimits \(limits)\ncuts \(cuts)\nwhole \(whole)\nsplit \(split)")
                }
            }
            if case .failed(_, let at) = whole.result {
                var fresh = RequestHeadParser(limits: limits)
                let before = fresh.parse(bytes.span.extracting(0..<at))
                guard before == .needMore else {
                    propertyFailed("request head: the bytes before the failure offset are already an error",
                                   "input \(escaped(bytes))\nlimits \(limits)\nwhole \(whole)\nprefix(\(at)) \(before)")
                }
            }
        }
    }

    /// Checks every response-head property on `bytes`, answering GET, HEAD and CONNECT; traps on a violation.
    public static func response(_ bytes: [UInt8]) {
        var choices = FuzzChoices(bytes, salt: 2)
        let limitsChoices = [HTTPLimits(), choices.smallHeadLimits()]
        for limits in limitsChoices {
            for method in [HTTPMethod.get, .head, .connect] {
                var parser = ResponseHeadParser(limits: limits)
                let whole = parseResponse(&parser, bytes, cuts: [], method: method)
                checkResponse(whole, bytes)
                for cuts in choices.cutPlans(count: bytes.count, everyOffsetUpTo: method == .get ? 48 : 0) {
                    parser.reset()
                    let split = parseResponse(&parser, bytes, cuts: cuts, method: method)
                    guard split == whole else {
                        propertyFailed("response head: split parse differs from whole parse",
                                       "input \(escaped(bytes))\nlimits \(limits)\nmethod \(method)\ncuts \(cuts)\nwhole \(whole)\nsplit \(split)")
                    }
                }
                if case .failed(_, let at) = whole.result {
                    var fresh = ResponseHeadParser(limits: limits)
                    let before = fresh.parse(bytes.span.extracting(0..<at), requestMethod: method)
                    guard before == .needMore else {
                        propertyFailed("response head: the bytes before the failure offset are already an error",
                                       "input \(escaped(bytes))\nlimits \(limits)\nmethod \(method)\nwhole \(whole)\nprefix(\(at)) \(before)")
                    }
                }
            }
        }
    }

    /// What one way of feeding a head produced.
    struct Outcome<Head: Equatable>: Equatable {
        var result: HeadParseResult
        /// The head, when the result is `.complete`.
        var head: Head?
    }

    /// Feeds growing prefixes ending at each cut, then all of `bytes`, as a connection would; stops at the first
    /// result other than `.needMore`, then checks that one more call repeats it.
    private static func parseRequest(_ parser: inout RequestHeadParser, _ bytes: [UInt8],
                                     cuts: [Int]) -> Outcome<RequestHead> {
        let span = bytes.span
        var result = HeadParseResult.needMore
        for cut in cuts + [bytes.count] where result == .needMore {
            result = parser.parse(span.extracting(0..<cut))
        }
        let again = parser.parse(span)
        guard again == result else {
            propertyFailed("request head: a settled parser did not repeat its result",
                           "input \(escaped(bytes))\ncuts \(cuts)\nfirst \(result)\nagain \(again)")
        }
        if case .complete = result { return Outcome(result: result, head: parser.head) }
        return Outcome(result: result, head: nil)
    }

    /// `parseRequest` for responses to `method`.
    private static func parseResponse(_ parser: inout ResponseHeadParser, _ bytes: [UInt8], cuts: [Int],
                                      method: HTTPMethod) -> Outcome<ResponseHead> {
        let span = bytes.span
        var result = HeadParseResult.needMore
        for cut in cuts + [bytes.count] where result == .needMore {
            result = parser.parse(span.extracting(0..<cut), requestMethod: method)
        }
        let again = parser.parse(span, requestMethod: method)
        guard again == result else {
            propertyFailed("response head: a settled parser did not repeat its result",
                           "input \(escaped(bytes))\ncuts \(cuts)\nfirst \(result)\nagain \(again)")
        }
        if case .complete = result { return Outcome(result: result, head: parser.head) }
        return Outcome(result: result, head: nil)
    }

    /// The invariants of a single result: offsets inside the input, a complete head ending in CRLF CRLF with every
    /// range inside it.
    private static func checkRequest(_ outcome: Outcome<RequestHead>, _ bytes: [UInt8]) {
        switch outcome.result {
        case .needMore:
            break
        case .failed(_, let at):
            guard (0...bytes.count).contains(at) else {
                propertyFailed("request head: failure offset outside the input", "input \(escaped(bytes))\n\(outcome)")
            }
        case .complete(let headLength):
            guard let head = outcome.head, endsWithEmptyLine(bytes, headLength) else {
                propertyFailed("request head: complete head does not end with CRLF CRLF",
                               "input \(escaped(bytes))\n\(outcome)")
            }
            var ranges = [head.methodRange, head.target] + head.connectionTokens
            ranges += head.fields.flatMap { [$0.name, $0.value] }
            let inside = ranges.allSatisfy { $0.lowerBound >= 0 && $0.upperBound <= headLength }
            guard inside, !head.methodRange.isEmpty, !head.target.isEmpty,
                  head.fields.allSatisfy({ !$0.name.isEmpty }), head.framing != .untilClose,
                  head.hostField.map({ head.fields.indices.contains($0) }) ?? true
            else {
                propertyFailed("request head: complete head is inconsistent", "input \(escaped(bytes))\n\(outcome)")
            }
        }
    }

    /// `checkRequest` for responses.
    private static func checkResponse(_ outcome: Outcome<ResponseHead>, _ bytes: [UInt8]) {
        switch outcome.result {
        case .needMore:
            break
        case .failed(_, let at):
            guard (0...bytes.count).contains(at) else {
                propertyFailed("response head: failure offset outside the input", "input \(escaped(bytes))\n\(outcome)")
            }
        case .complete(let headLength):
            guard let head = outcome.head, endsWithEmptyLine(bytes, headLength) else {
                propertyFailed("response head: complete head does not end with CRLF CRLF",
                               "input \(escaped(bytes))\n\(outcome)")
            }
            var ranges = [head.reason] + head.connectionTokens
            ranges += head.fields.flatMap { [$0.name, $0.value] }
            let inside = ranges.allSatisfy { $0.lowerBound >= 0 && $0.upperBound <= headLength }
            guard inside, (100...599).contains(head.status), head.fields.allSatisfy({ !$0.name.isEmpty }),
                  head.isInformational == (head.status < 200)
            else {
                propertyFailed("response head: complete head is inconsistent", "input \(escaped(bytes))\n\(outcome)")
            }
        }
    }

    private static func endsWithEmptyLine(_ bytes: [UInt8], _ headLength: Int) -> Bool {
        headLength >= 4 && headLength <= bytes.count && Array(bytes[headLength - 4..<headLength]) == [13, 10, 13, 10]
    }
}

extension FuzzChoices {
    /// Limits small enough for short inputs to reach them: a request line, head and trailer of a few dozen bytes,
    /// a handful of fields.
    mutating func smallHeadLimits() -> HTTPLimits {
        var limits = HTTPLimits()
        limits.maxRequestLineBytes = 1 + below(64)
        limits.maxHeadBytes = 1 + below(256)
        limits.maxFieldCount = below(8)
        limits.maxChunkLineBytes = 1 + below(32)
        limits.maxTrailerBytes = below(96)
        return limits
    }
}
