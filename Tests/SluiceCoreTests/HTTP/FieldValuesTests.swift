import Testing
@testable import SluiceCore

@Suite("Field helpers and byte classes")
struct FieldValuesTests {
    private typealias Support = HTTPTestSupport

    @Test("isEventStream", arguments: [
        ("text/event-stream", true),
        ("Text/Event-Stream", true),
        ("text/event-stream; charset=utf-8", true),
        ("text/event-stream;charset=utf-8", true),
        (" \ttext/event-stream \t", true),
        ("text/event-stream \t; x=y", true),
        ("", false),
        ("text/event", false),
        ("text/event-streams", false),
        ("text/event-stream x", false),
        ("text/plain", false),
        ("application/json", false),
        ("text/event-stream,text/plain", false),
        ("xtext/event-stream", false),
    ])
    func recognisesEventStreams(_ value: String, _ expected: Bool) {
        #expect(isEventStream(Support.bytes(value).span) == expected)
    }

    @Test("fieldNameEquals with a literal", arguments: [
        ("Content-Type", "content-type", true),
        ("CONTENT-TYPE", "content-type", true),
        ("content-type", "content-type", true),
        ("Content-Typ", "content-type", false),
        ("Content-Types", "content-type", false),
        ("a^b", "a~b", false),  // OR-ing 0x20 would fold '^' into '~'
        ("a@b", "a`b", false),
    ] as [(String, StaticString, Bool)])
    func comparesNamesWithLiterals(_ name: String, _ literal: StaticString, _ expected: Bool) {
        let bytes = Support.bytes("x" + name + "y")
        #expect(fieldNameEquals(bytes.span, 1..<1 + name.utf8.count, literal) == expected)
    }

    @Test("fieldNameEquals with a Connection token")
    func comparesNamesWithTokens() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-hop, Keep-Alive\r\nX-HOP: 1\r\nkeep-alive: t=5\r\n"
            + "X-Hops: 2\r\n\r\n"
        let bytes = Support.bytes(raw)
        var parser = RequestHeadParser()
        #expect(parser.parse(bytes.span) == .complete(headLength: bytes.count))
        let head = parser.head
        let named = head.fields.indices.filter { index in
            head.connectionTokens.contains { fieldNameEquals(bytes.span, head.fields[index].name, $0) }
        }
        #expect(named == [2, 3])
    }

    @Test("every error has a status and a message")
    func errorsHaveStatusAndMessage() {
        for error in HTTPParseError.allCases {
            let expected = switch error {
            case .requestLineTooLong: 414
            case .headTooLarge, .tooManyFields: 431
            case .unsupportedVersion: 505
            case .unimplementedTransferCoding: 501
            default: 400
            }
            #expect(error.status == expected, "\(error)")
            #expect(!error.message.isEmpty, "\(error)")
        }
        #expect(Set(HTTPParseError.allCases.map(\.message)).count == HTTPParseError.allCases.count)
        #expect(HTTPParseError.contentLengthWithTransferEncoding.message
            == "message has both Content-Length and Transfer-Encoding")
    }

    @Test("tchar is exactly the RFC 9110 §5.6.2 set")
    func tokenCharacters() {
        let tchar = Set(Support.bytes("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
        for byte in UInt8.min...UInt8.max {
            #expect(HTTPByte.isTokenChar(byte) == tchar.contains(byte), "\(byte)")
        }
    }

    @Test("field content, whitespace and control bytes partition every byte but CR and LF")
    func fieldByteClasses() {
        for byte in UInt8.min...UInt8.max where byte != HTTPByte.cr && byte != HTTPByte.lf {
            let classes = [HTTPByte.isFieldContent(byte), HTTPByte.isWhitespace(byte),
                           HTTPByte.isForbiddenControl(byte)]
            #expect(classes.filter { $0 }.count == 1, "\(byte)")
        }
    }

    @Test("list elements are split on commas and trimmed of OWS", arguments: [
        ("", [""]),
        ("a", ["a"]),
        (" a ,\tb\t, ,c", ["a", "b", "", "c"]),
        ("a,", ["a", ""]),
        (",", ["", ""]),
    ])
    func splitsLists(_ value: String, _ expected: [String]) {
        let bytes = Support.bytes(value)
        var cursor = HTTPListCursor(0..<bytes.count)
        var elements: [String] = []
        while let element = cursor.next(bytes.span) { elements.append(Support.text(bytes, element)) }
        #expect(elements == expected)
    }
}
