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
    let count = contentTypeValue.count
    var index = 0
    while index < count, HTTPByte.isWhitespace(contentTypeValue[index]) { index += 1 }
    let mediaType = index..<min(index + 17, count)
    guard HTTPByte.equals(contentTypeValue, mediaType, "text/event-stream", ignoringCase: true) else { return false }
    index = mediaType.upperBound
    while index < count, HTTPByte.isWhitespace(contentTypeValue[index]) { index += 1 }
    return index == count || contentTypeValue[index] == HTTPByte.semicolon
}
