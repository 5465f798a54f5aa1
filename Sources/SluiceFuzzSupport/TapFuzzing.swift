import SluiceCore

/// Properties of the body taps (WHATWG HTML §9.2.6 event streams, the JSON usage reader, the request tap):
/// - a response body fed whole, split at any offsets and one byte per call gives the same observation (events,
///   timing, usage, model, content events and the completion estimate), the same capture and the same truncation,
///   read as an event stream, as JSON and as other;
/// - an event stream without CR reads the same with its LFs turned into CRLF or into CR (all three are line ends);
/// - with usage reading off, the framing and timing are unchanged and no usage, model or content is reported;
/// - a request body fed whole or split gives the same model, stream flag, limit verdict, text bytes and capture.
public enum TapFuzzing {
    /// Checks every tap property on `bytes`; traps on a violation.
    public static func check(_ bytes: [UInt8]) {
        var choices = FuzzChoices(bytes, salt: 4)
        let captureLimit = [0, 1 + choices.below(64), 4096][choices.below(3)]
        let plans = choices.cutPlans(count: bytes.count, everyOffsetUpTo: 32)
        for kind in [ResponseTap.Kind.eventStream, .json, .other] {
            var tap = ResponseTap(captureLimit: captureLimit)
            let whole = run(&tap, kind: kind, bytes, cuts: [])
            for cuts in plans {
                let split = run(&tap, kind: kind, bytes, cuts: cuts)
                guard split == whole else {
                    propertyFailed("response tap: split body observed differently",
                                   "input \(escaped(bytes))\nkind \(kind) captureLimit \(captureLimit)\ncuts \(cuts)\nwhole \(whole)\nsplit \(split)")
                }
            }
            let blind = run(&tap, kind: kind, bytes, cuts: [], readsUsage: false)
            var expected = whole.observation
            expected.usage = nil
            expected.model = nil
            expected.contentEvents = 0
            expected.firstContentEventAt = nil
            expected.estimatedCompletionTokens = 0
            guard blind.observation == expected else {
                propertyFailed("response tap: turning usage reading off changed the framing",
                               "input \(escaped(bytes))\nkind \(kind)\nwith usage \(whole)\nwithout \(blind)")
            }
            if kind == .eventStream, !bytes.contains(13) {
                let crlf = bytes.flatMap { $0 == 10 ? [13, 10] : [$0] }
                let cr = bytes.map { $0 == 10 ? 13 : $0 }
                for (name, variant) in [("CRLF", crlf), ("CR", cr)] {
                    let other = run(&tap, kind: kind, variant, cuts: [])
                    guard other == whole else {
                        propertyFailed("response tap: LF and \(name) line ends observed differently",
                                       "input \(escaped(bytes))\ncaptureLimit \(captureLimit)\nLF \(whole)\n\(name) \(other)")
                    }
                }
            }
        }
        request(bytes, choices: &choices, plans: plans)
    }

    /// What a response tap reported after a body.
    struct ResponseOutcome: Equatable {
        var observation: ResponseObservation
        var captured: [UInt8]
        var captureTruncated: Bool
    }

    /// Feeds `bytes` to `tap`, reset for `kind`, in pieces cut at `cuts` (empty pieces included), all at the same
    /// time, then finishes the body.
    private static func run(_ tap: inout ResponseTap, kind: ResponseTap.Kind, _ bytes: [UInt8], cuts: [Int],
                            readsUsage: Bool = true) -> ResponseOutcome {
        tap.reset(kind: kind, readsUsage: readsUsage)
        var start = 0
        for cut in cuts + [bytes.count] {
            tap.observe(bytes.span.extracting(start..<cut), now: 7)
            start = cut
        }
        tap.finish(now: 7)
        let outcome = ResponseOutcome(observation: tap.observation, captured: tap.withCapturedText { array($0) },
                                      captureTruncated: tap.captureTruncated)
        guard outcome.observation.eventCount == tap.dispatchedEventCount,
              outcome.observation.lastEventAt == tap.latestEventAt,
              outcome.observation.model.map({ $0.utf8.count <= UsageReader.maxModelBytes * 3 }) ?? true
        else {
            propertyFailed("response tap: observation disagrees with its cheap accessors",
                           "input \(escaped(bytes))\nkind \(kind)\n\(outcome)")
        }
        return outcome
    }

    /// What a request tap reported after a body.
    struct RequestOutcome: Equatable {
        var model: String?
        var stream: Bool?
        var exceededLimit: Bool
        var textBytes: Int
        var captured: [UInt8]
        var captureTruncated: Bool
    }

    private static func request(_ bytes: [UInt8], choices: inout FuzzChoices, plans: [[Int]]) {
        let maxBodyBytes = choices.chance(2) ? 1 << 20 : choices.below(bytes.count + 2)
        var tap = RequestTap(maxBodyBytes: maxBodyBytes, captureLimit: choices.below(48))
        func run(_ cuts: [Int]) -> RequestOutcome {
            tap.reset()
            var start = 0
            for cut in cuts + [bytes.count] {
                tap.observe(bytes.span.extracting(start..<cut))
                start = cut
            }
            return RequestOutcome(model: tap.model, stream: tap.stream, exceededLimit: tap.exceededLimit,
                                  textBytes: tap.textBytes, captured: tap.withCapturedBody { array($0) }, captureTruncated: tap.captureTruncated)
        }
        let whole = run([])
        for cuts in plans {
            let split = run(cuts)
            guard split == whole else {
                propertyFailed("request tap: split body observed differently",
                               "input \(escaped(bytes))\nmaxBodyBytes \(maxBodyBytes)\ncuts \(cuts)\nwhole \(whole)\nsplit \(split)")
            }
        }
    }

    private static func array(_ span: Span<UInt8>) -> [UInt8] {
        (0..<span.count).map { span[$0] }
    }
}
