import Testing

@testable import SluiceCore

/// Host and absolute-form authorities share one grammar; userinfo is refused and named.
@Suite struct HTTPAuthorityTests {
    private static let rows: [(String, HTTPAuthority.Verdict)] = [
        ("example.com", .valid),
        ("example.com:8080", .valid),
        ("example.com:", .valid),  // RFC 3986 §3.2.3: port = *DIGIT
        ("127.0.0.1:65535", .valid),
        ("[::1]", .valid),
        ("[::1]:443", .valid),
        ("[v1.fe80::a+en1]", .valid),
        ("", .valid),  // an empty Host: the target has no authority (RFC 9112 §3.2)
        ("user:pass@example.com", .userinfo(at: 9)),
        ("@example.com", .userinfo(at: 0)),
        ("example.com:65536", .invalid(at: 16)),
        ("example.com:99999", .invalid(at: 16)),
        ("example.com:80a", .invalid(at: 14)),
        ("example.com:80:90", .invalid(at: 14)),
        ("[::1", .invalid(at: 4)),
        ("[]", .invalid(at: 1)),
        ("[::1]x", .invalid(at: 5)),
        (":80", .invalid(at: 0)),
        ("exa mple.com", .invalid(at: 3)),
        ("example.com/", .invalid(at: 11)),
        ("ex\"ample", .invalid(at: 2)),
    ]

    @Test(arguments: rows) func authority(_ text: String, _ expected: HTTPAuthority.Verdict) {
        let bytes = Array(text.utf8)
        #expect(HTTPAuthority.check(bytes.span, 0..<bytes.count) == expected)
    }

    private static let targets: [(String, HTTPParseError?)] = [
        ("GET http://user:pass@127.0.0.1/x HTTP/1.1\r\nHost: a\r\n\r\n", .userinfoInTarget),
        ("GET http://@127.0.0.1/x HTTP/1.1\r\nHost: a\r\n\r\n", .userinfoInTarget),
        ("GET http://host:99999/x HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget),
        ("GET http://[::1/x HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget),
        ("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget),
        ("GET http://host?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget),
        ("GET http://host:8080/x HTTP/1.1\r\nHost: a\r\n\r\n", nil),
        ("GET HTTPS://[::1]:8443/x?y HTTP/1.1\r\nHost: a\r\n\r\n", nil),
        ("GET http://host HTTP/1.1\r\nHost: a\r\n\r\n", nil),
        ("GET / HTTP/1.1\r\nHost: user@host\r\n\r\n", .invalidFieldValue),
        ("GET / HTTP/1.1\r\nHost: host:70000\r\n\r\n", .invalidFieldValue),
    ]

    @Test(arguments: targets) func requestTargetsAndHostShareTheCheck(_ text: String, _ expected: HTTPParseError?) {
        var parser = RequestHeadParser()
        let bytes = Array(text.utf8)
        switch parser.parse(bytes.span) {
        case .complete: #expect(expected == nil)
        case .failed(let error, _): #expect(error == expected)
        case .needMore: Issue.record("incomplete: \(text)")
        }
    }
}
