/// ASCII case-insensitive comparison of a field name with a lowercase literal (RFC 9110 §5.1: names are
/// case-insensitive), e.g. `fieldNameEquals(bytes, field.name, "content-type")`.
/// - Parameters:
///   - bytes: the bytes the head was parsed from.
///   - range: a `HeadField.name` (or any range) within `bytes`.
///   - lowercase: the name in lowercase ASCII; an uppercase letter in it never matches.
public func fieldNameEquals(_ bytes: Span<UInt8>, _ range: Range<Int>, _ lowercase: StaticString) -> Bool {
    HTTPByte.equals(bytes, range, lowercase, ignoringCase: true)
}

/// ASCII case-insensitive comparison of two ranges of `bytes`, e.g. a field name with one of
/// `RequestHead.connectionTokens` to find the fields a Connection header names as hop-by-hop (RFC 9110 §7.6.1).
public func fieldNameEquals(_ bytes: Span<UInt8>, _ range: Range<Int>, _ other: Range<Int>) -> Bool {
    guard range.count == other.count else { return false }
    for index in 0..<range.count
    where HTTPByte.lowercased(bytes[range.lowerBound + index]) != HTTPByte.lowercased(bytes[other.lowerBound + index]) {
        return false
    }
    return true
}

/// True for a Content-Type value whose media type is text/event-stream (RFC 9110 §8.3.1: type and subtype are
/// case-insensitive; OWS and parameters allowed, e.g. "text/event-stream; charset=utf-8"). The proxy uses it to
/// turn off response buffering for Server-Sent Events.
public func isEventStream(_ contentTypeValue: Span<UInt8>) -> Bool {
    guard let mediaType = mediaTypeRange(contentTypeValue) else { return false }
    return HTTPByte.equals(contentTypeValue, mediaType, "text/event-stream", ignoringCase: true)
}

/// True for a JSON media type: `application/json` or any `type/subtype+json` (RFC 6839 §3.1),
/// case-insensitive, parameters allowed. Used to read `usage` from non-streaming LLM answers.
public func isJSONMediaType(_ contentTypeValue: Span<UInt8>) -> Bool {
    guard let mediaType = mediaTypeRange(contentTypeValue) else { return false }
    if HTTPByte.equals(contentTypeValue, mediaType, "application/json", ignoringCase: true) { return true }
    guard mediaType.count > 5 else { return false }
    return HTTPByte.equals(contentTypeValue, (mediaType.upperBound - 5)..<mediaType.upperBound, "+json", ignoringCase: true)
}

/// The `type/subtype` part of a Content-Type value, without surrounding whitespace or parameters.
private func mediaTypeRange(_ value: Span<UInt8>) -> Range<Int>? {
    let count = value.count
    var start = 0
    while start < count, HTTPByte.isWhitespace(value[start]) { start += 1 }
    var end = start
    while end < count, value[end] != HTTPByte.semicolon { end += 1 }
    while end > start, HTTPByte.isWhitespace(value[end - 1]) { end -= 1 }
    return end > start ? start..<end : nil
}
