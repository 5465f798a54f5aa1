import Testing
@testable import SluiceCore

/// `key header NAME`: every spelling of one credential is one budget (issue 12, item 6), and
/// nothing that tells two credentials apart is normalised away.
@Suite struct HeaderKeyFormTests {
    static func limiter(header: String) -> RateLimiter {
        RL.limiter([RL.requests(1, per: 1000, key: .header(header))])
    }

    static func normalised(_ value: String, _ form: HeaderKeyForm) -> String {
        var bytes: [UInt8] = []
        form.forEachByte(of: Array(value.utf8)) { bytes.append($0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Spellings of `Bearer sk-AbC` that RFC 9110 §11 makes one credential.
    static let bearerSpellings = [
        "Bearer sk-AbC", "bearer sk-AbC", "BEARER sk-AbC", "bEaReR sk-AbC", "Bearer  sk-AbC",
        "Bearer\tsk-AbC", "Bearer \t sk-AbC", " Bearer sk-AbC", "Bearer sk-AbC ", "\t Bearer   sk-AbC \t",
    ]

    @Test(arguments: ["authorization", "Authorization", "proxy-authorization"])
    func everySpellingOfOneCredentialIsOneKey(header: String) {
        let limiter = Self.limiter(header: header)
        let keys = Set(Self.bearerSpellings.map { limiter.headerKey(rule: 0, value: Array($0.utf8)) })
        #expect(keys.count == 1)
        for spelling in Self.bearerSpellings {
            #expect(Self.normalised(spelling, .credentials) == "bearer sk-AbC", "\(spelling.debugDescription)")
        }
    }

    @Test(arguments: [
        // The credentials are case-sensitive (token68), and so is everything after the scheme.
        ("Bearer sk-abc", "Bearer sk-ABC"),
        ("Bearer sk-AbC", "Bearer sk-AbD"),
        ("Bearer sk-AbC", "Basic sk-AbC"),
        ("Bearer sk-AbC", "Bearer sk-AbC2"),
        ("Bearer sk-AbC", "Bearersk-AbC"),
        // Whitespace inside the credentials (auth-params) is not the scheme's separator.
        ("Digest a=1, b=2", "Digest a=1,b=2"),
        // A bare key (no scheme) keeps its case: lower-casing it would merge distinct keys.
        ("sk-AbC", "sk-abc"),
        ("Bearer", "bearer"),
        ("", "Bearer"),
    ])
    func differentCredentialsAreDifferentKeys(first: String, second: String) {
        let limiter = Self.limiter(header: "authorization")
        #expect(limiter.headerKey(rule: 0, value: Array(first.utf8)) != limiter.headerKey(rule: 0, value: Array(second.utf8)))
    }

    @Test(arguments: [
        ("Bearer sk-AbC", "bearer sk-AbC"),
        ("BASIC QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ("Digest  username=\"Mufasa\",  realm=\"X\" ", "digest username=\"Mufasa\",  realm=\"X\""),
        ("sk-AbC", "sk-AbC"),
        ("  sk-AbC\t", "sk-AbC"),
        ("Bearer", "Bearer"),
        ("", ""),
        (" \t ", ""),
        ("Bearer \t", "Bearer"),
    ])
    func credentialsForm(raw: String, expected: String) {
        #expect(Self.normalised(raw, .credentials) == expected)
    }

    @Test(arguments: [
        ("sk-AbC", "sk-AbC"),
        ("  sk-AbC \t", "sk-AbC"),
        ("Bearer  SK", "Bearer  SK"),
        ("BEARER x", "BEARER x"),
        ("", ""),
    ])
    func otherHeadersAreOnlyTrimmed(raw: String, expected: String) {
        #expect(Self.normalised(raw, .trimmed) == expected)
        let limiter = Self.limiter(header: "x-api-key")
        #expect(limiter.headerKey(rule: 0, value: Array(raw.utf8)) == limiter.headerKey(rule: 0, value: Array(expected.utf8)))
    }

    @Test func otherHeadersKeepTheirCase() {
        let limiter = Self.limiter(header: "x-api-key")
        #expect(limiter.headerKey(rule: 0, value: Array("Bearer x".utf8)) != limiter.headerKey(rule: 0, value: Array("bearer x".utf8)))
        #expect(limiter.headerKey(rule: 0, value: Array("sk-A".utf8)) != limiter.headerKey(rule: 0, value: Array("sk-a".utf8)))
    }

    @Test(arguments: [
        ("authorization", HeaderKeyForm.credentials), ("AUTHORIZATION", .credentials),
        ("proxy-authorization", .credentials), ("x-api-key", .trimmed), ("api-key", .trimmed), ("authorization2", .trimmed),
    ])
    func formFollowsTheHeaderName(name: String, form: HeaderKeyForm) {
        #expect(HeaderKeyForm(headerName: name) == form)
    }

    /// The normalised form of a value is the same whether the bytes come as an array or a slice
    /// (the proxy hashes a slice of its input buffer).
    @Test func sliceAndArrayAgree() {
        let limiter = Self.limiter(header: "authorization")
        let wire = Array("X: bearer  sk-AbC\r\n".utf8)
        #expect(limiter.headerKey(rule: 0, value: wire[3..<17]) == limiter.headerKey(rule: 0, value: Array("Bearer sk-AbC".utf8)))
    }
}
