/// `inject_usage`: the one case where sluice changes bytes. A streaming chat/completions request that does not ask
/// for usage is sent with `stream_options.include_usage` (so token budgets and the record get the backend's own
/// count), and the usage-only event that brings is removed from the response, so the client receives what the
/// backend would have sent it. Everything else about the exchange is unchanged.
extension ClientSession {
    /// The largest request body that is held and edited: the client queue must take it whole before reads pause at
    /// the high watermark (a held body that cannot complete would stall). Larger bodies go unchanged.
    var maxInjectedBody: Int64 { Int64(watermarks.high) }

    /// A POST to a `…completions` path with a Content-Length body small enough to hold, without `Expect:
    /// 100-continue` (that client waits for the upstream's 100 before sending the body sluice would wait for). The
    /// body itself decides the rest once complete (`StreamUsageRequest.edit`: streaming, usage not already asked for).
    func mayInjectUsage(head: RequestHead, pathRange: Range<Int>, buffer: ByteBuffer) -> Bool {
        guard head.method == .post, !head.expectContinue, case .contentLength(let length) = head.framing, length > 0,
              length <= maxInjectedBody else { return false }
        let suffix: StaticString = "completions"
        return buffer.withReadableSpan { source in
            var end = pathRange.upperBound
            for offset in pathRange where source[offset] == UInt8(ascii: "?") {
                end = offset
                break
            }
            let count = suffix.utf8CodeUnitCount
            guard end - pathRange.lowerBound >= count else { return false }
            return HTTPByte.equals(source, (end - count)..<end, suffix, ignoringCase: false)
        }
    }

    /// The held body is complete: finish the upstream head with the Content-Length of the body that goes, edited
    /// (then it travels in `upstreamOut` right after the head) or as received (from `clientIn`, as usual).
    func releaseHeldRequest() {
        usageInjection = .off
        guard let out = upstreamOut else { return }
        let bodyLength = requestSendEnd
        let headEnd = out.readableCount
        if let body = clientIn, let edit = body.withReadableSpan(from: 0, to: bodyLength, { StreamUsageRequest.edit(for: $0) }) {
            // Once per request, on an opt-in route: the edited copy is the only allocation this feature makes.
            var edited: [UInt8] = []
            edited.reserveCapacity(bodyLength + edit.lengthChange)
            body.withReadableSpan(from: 0, to: bodyLength) { edit.apply(to: $0, into: &edited) }
            let fits = out.append("Content-Length: ") && out.append(decimal: edited.count) && out.append("\r\n\r\n")
                && edited.withUnsafeBufferPointer { out.append($0.span) }
            if fits {
                body.consume(bodyLength)
                requestSendEnd = 0
                releaseIfEmpty(&clientIn)
                usageInjection = .injected
                let filter = usageFilter ?? UsageFilterState()
                filter.events.reset()
                usageFilter = filter
                return
            }
            out.truncate(toReadable: headEnd)
        }
        guard out.append("Content-Length: ") && out.append(decimal: bodyLength) && out.append("\r\n\r\n") else {
            return rejectRequest(.headTooLarge("request head is too large to forward"))
        }
    }
}
