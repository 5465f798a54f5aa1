import Testing

@testable import SluiceCore

/// `resolve_at_start` (top level and per upstream) and what `sluice check` reports about upstream names, with the
/// resolver injected: which names fail, at which line, as a warning or an error.
@Suite struct ResolveAtStartTests {
    /// Upstreams `a` (line 3, routed), `b` (line 7, routed) and `spare` (line 11, no route uses it).
    private static func file(top: String = "", a: String = "", b: String = "") -> String {
        """
        listen :8080
        \(top)
        upstream a {
            server http://a.invalid:8000
            \(a)
        }
        upstream b {
            server http://b.invalid
            \(b)
        }
        upstream spare {
            server https://spare.invalid
        }
        route / {
            upstream a
        }
        route /b/ {
            upstream b
        }

        """
    }

    struct ModeCase: Sendable, CustomTestStringConvertible {
        var name: String
        var text: String
        var modes: [ResolveAtStart]
        var testDescription: String { name }
    }

    static let modeCases = [
        ModeCase(name: "default", text: file(), modes: [.retry, .retry, .retry]),
        ModeCase(name: "top level", text: file(top: "resolve_at_start required"), modes: [.required, .required, .required]),
        ModeCase(name: "per upstream", text: file(b: "resolve_at_start required"), modes: [.retry, .required, .retry]),
        ModeCase(name: "an upstream overrides the top level", text: file(top: "resolve_at_start required", a: "resolve_at_start retry"),
                 modes: [.retry, .required, .required]),
    ]

    @Test(arguments: modeCases)
    func modes(_ row: ModeCase) throws {
        let config = try Config.parse(text: row.text, file: "p.conf")
        #expect(config.upstreams.map(\.resolveAtStart) == row.modes)
        #expect(config.upstreams.map { config.serverLine(of: $0) } == [4, 8, 12])
    }

    @Test(arguments: [("resolve_at_start always\n", 1, "resolve_at_start must be retry or required, got 'always'"),
                      ("resolve_at_start\n", 1, "resolve_at_start"),
                      ("resolve_at_start retry required\n", 1, "resolve_at_start"),
                      ("upstream x {\n  resolve_at_start maybe\n}\n", 2, "resolve_at_start must be retry or required, got 'maybe'"),
                      ("resolve_at_start retry\nresolve_at_start required\n", 2, "resolve_at_start")])
    func badValuesNameTheirLine(_ row: (text: String, line: Int, fragment: String)) {
        #expect {
            _ = try Config.parse(text: row.text + ConfigFileErrorTests.base, file: "p.conf")
        } throws: { error in
            guard let error = error as? ConfigError else { return false }
            return error.line == row.line && error.message.contains(row.fragment)
        }
    }

    /// A resolver that knows `known` (port 80 addresses) and fails every other name the way glibc words it.
    private static func resolver(knowing known: Set<String>) -> (String, UInt16) throws(SystemError) -> [SocketAddress] {
        { (host, port) throws(SystemError) in
            if let literal = SocketAddress(numericHost: host, port: port) { return [literal] }
            guard known.contains(host) else { throw SystemError(call: "getaddrinfo(\(host))", reason: "Name or service not known") }
            return [SocketAddress(numericHost: "127.0.0.1", port: port)!]
        }
    }

    struct CheckCase: Sendable, CustomTestStringConvertible {
        var name: String
        var text: String
        var known: Set<String>
        var expected: [String]
        var testDescription: String { name }
    }

    private static let spareUnused = "p.conf:11: warning: upstream 'spare' is not used by any route; start-up does not look up its name"
    private static let retryTail = "does not resolve here; start-up would retry it in the background, its routes answering 502 "
        + "upstream_unresolved and /readyz 503 until it resolves (resolve_at_start required refuses to start instead): "

    static let checkCases = [
        CheckCase(name: "every name resolves", text: file(), known: ["a.invalid", "b.invalid", "spare.invalid"], expected: [spareUnused]),
        CheckCase(name: "unresolved names warn at their server line", text: file(), known: [],
                  expected: ["p.conf:4: warning: upstream 'a' (a.invalid) " + retryTail + "getaddrinfo(a.invalid): Name or service not known",
                             "p.conf:8: warning: upstream 'b' (b.invalid) " + retryTail + "getaddrinfo(b.invalid): Name or service not known",
                             spareUnused,
                             "p.conf:12: warning: upstream 'spare' (spare.invalid) does not resolve: getaddrinfo(spare.invalid): Name or service not known"]),
        CheckCase(name: "required makes a routed name an error", text: file(b: "resolve_at_start required"), known: ["a.invalid"],
                  expected: ["p.conf:8: upstream 'b' (b.invalid) does not resolve, and resolve_at_start is required: start-up would refuse: "
                                + "getaddrinfo(b.invalid): Name or service not known",
                             spareUnused,
                             "p.conf:12: warning: upstream 'spare' (spare.invalid) does not resolve: getaddrinfo(spare.invalid): Name or service not known"]),
        // Start-up never looks an unused name up, so `required` cannot make it refuse: a warning only.
        CheckCase(name: "required does not apply to an upstream no route uses", text: file(top: "resolve_at_start required"),
                  known: ["a.invalid", "b.invalid"],
                  expected: [spareUnused,
                             "p.conf:12: warning: upstream 'spare' (spare.invalid) does not resolve: getaddrinfo(spare.invalid): Name or service not known"]),
    ]

    @Test(arguments: checkCases)
    func check(_ row: CheckCase) throws {
        let config = try Config.parse(text: row.text, file: "p.conf")
        let findings = UpstreamNameCheck.findings(config, file: "p.conf", lookup: Self.resolver(knowing: row.known))
        #expect(findings.map(\.description) == row.expected)
        #expect(findings.contains { $0.severity == .error } == row.expected.contains { !$0.contains(": warning: ") })
    }

    /// The shipped example passes `check` offline: its https upstream is not routed, so it only warns, and
    /// start-up would not look it up.
    @Test func theExampleOnlyWarnsOffline() throws {
        let config = try Config.load(overrides: CommandLineOverrides(configPath: ConfigFileTests.examplePath))
        let findings = UpstreamNameCheck.findings(config, file: "proxy.conf.example", lookup: Self.resolver(knowing: []))
        #expect(!findings.isEmpty && findings.allSatisfy { $0.severity == .warning })
        #expect(findings.allSatisfy { $0.description.contains("upstream 'hosted'") })
    }
}
