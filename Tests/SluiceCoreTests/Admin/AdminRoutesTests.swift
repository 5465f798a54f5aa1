import Testing

@testable import SluiceCore

/// What each admin request is answered, with readiness and the metrics text injected.
@Suite struct AdminRoutesTests {
    private struct Case {
        var reply: AdminReply
        var readiness = ReadinessReport.ready
        var status: Int
        var body: String
        var headOnly = false
        var rendersMetrics = false
    }

    private static func get(_ path: String) -> AdminReply { .route(AdminRequest(method: .get, path: path)) }

    private static let unresolved = UnresolvedUpstream(name: "backend", server: "llm-backend:8000",
                                                       reason: "getaddrinfo(llm-backend): Name or service not known")

    private static let cases: [Case] = [
        Case(reply: get("/healthz"), status: 200, body: "ok\n"),
        Case(reply: get("/healthz"), readiness: .draining, status: 200, body: "ok\n"),
        // Liveness is not readiness: a name that does not resolve yet is not cured by a restart.
        Case(reply: get("/healthz"), readiness: .unresolved([unresolved]), status: 200, body: "ok\n"),
        Case(reply: get("/readyz"), status: 200, body: "ready\n"),
        Case(reply: get("/readyz"), readiness: .draining, status: 503, body: "draining\n"),
        Case(reply: get("/readyz"), readiness: .unresolved([unresolved, UnresolvedUpstream(name: "b", server: "b.invalid:80", reason: "r")]),
             status: 503, body: "not ready: upstream 'backend' (llm-backend:8000) does not resolve yet: getaddrinfo(llm-backend): "
                 + "Name or service not known\nnot ready: upstream 'b' (b.invalid:80) does not resolve yet: r\n"),
        Case(reply: get("/metrics"), status: 200, body: "# metrics\n", rendersMetrics: true),
        Case(reply: .route(AdminRequest(method: .head, path: "/metrics")), status: 200, body: "# metrics\n", headOnly: true,
             rendersMetrics: true),
        Case(reply: .route(AdminRequest(method: .post, path: "/healthz")), status: 405, body: "use GET\n"),
        Case(reply: get("/"), status: 404, body: "not found; try /metrics, /healthz or /readyz\n"),
        Case(reply: get("/healthz/"), status: 404, body: "not found; try /metrics, /healthz or /readyz\n"),
        Case(reply: .badRequest("invalid request line"), status: 400, body: "invalid request line\n"),
        Case(reply: .headTooLarge, status: 431, body: "request head too large\n"),
    ]

    @Test(arguments: cases.indices)
    func response(_ index: Int) {
        let testCase = Self.cases[index]
        var rendered = false
        let response = AdminRoutes.response(to: testCase.reply, readiness: testCase.readiness) {
            rendered = true
            return "# metrics\n"
        }
        #expect(response.status == testCase.status)
        #expect(response.body == testCase.body)
        #expect(response.headOnly == testCase.headOnly)
        #expect(rendered == testCase.rendersMetrics, "metrics are rendered only for /metrics")
        let text = String(decoding: response.bytes, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 \(testCase.status) "))
        #expect(text.contains("\r\nContent-Length: \(testCase.body.utf8.count)\r\nConnection: close\r\n\r\n"))
        #expect(text.hasSuffix(testCase.headOnly ? "\r\n\r\n" : "\r\n\r\n" + testCase.body))
    }
}
