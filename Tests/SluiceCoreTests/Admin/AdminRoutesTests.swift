import Testing

@testable import SluiceCore

/// What each admin request is answered, with readiness and the metrics text injected.
@Suite struct AdminRoutesTests {
    private struct Case {
        var reply: AdminReply
        var ready = true
        var status: Int
        var body: String
        var headOnly = false
        var rendersMetrics = false
    }

    private static func get(_ path: String) -> AdminReply { .route(AdminRequest(method: .get, path: path)) }

    private static let cases: [Case] = [
        Case(reply: get("/healthz"), status: 200, body: "ok\n"),
        Case(reply: get("/healthz"), ready: false, status: 200, body: "ok\n"),
        Case(reply: get("/readyz"), status: 200, body: "ready\n"),
        Case(reply: get("/readyz"), ready: false, status: 503, body: "draining\n"),
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
        let response = AdminRoutes.response(to: testCase.reply, isReady: testCase.ready) {
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
