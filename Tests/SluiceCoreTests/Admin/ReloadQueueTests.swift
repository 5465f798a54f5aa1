import Testing

@testable import SluiceCore

/// Reload serialization and coalescing (`ReloadQueue`), the outcome's JSON, and the reload endpoints' answers
/// (`AdminReloadRoutes`): sequences of requests and results, and what each must give.
@Suite struct ReloadQueueTests {
    private static let applied = ReloadAttempt.applied(kept: [])
    private static let broken = ReloadAttempt.failed(ReloadFailure(error: "p.conf:3: unknown key 'x'", file: "p.conf", line: 3,
                                                                   isConfiguration: true))

    private enum Event {
        case request(ReloadTrigger, waiter: UInt64?)
        case finished(ReloadAttempt)
        case close
    }

    private enum Expected: Equatable {
        case admission(ReloadQueue.Admission)
        /// The finished reload's number, the generation after it, its waiters, and the next batch's number.
        case finished(reload: Int, generation: Int, waiters: [UInt64], next: Int?)
        case nothingRan
        case dropped([UInt64])
    }

    private struct Case {
        var name: String
        var steps: [(Event, Expected)]
        var started: Int
        var generation: Int
    }

    private static func batch(_ reload: Int, _ trigger: ReloadTrigger, requests: Int = 1, waiters: [UInt64] = []) -> ReloadQueue.Batch {
        ReloadQueue.Batch(reload: reload, trigger: trigger, requests: requests, waiters: waiters)
    }

    private static let cases: [Case] = [
        Case(name: "one signal, applied", steps: [
            (.request(.signal, waiter: nil), .admission(.start(batch(1, .signal)))),
            (.finished(applied), .finished(reload: 1, generation: 2, waiters: [], next: nil)),
        ], started: 1, generation: 2),
        Case(name: "a failed reload keeps the generation", steps: [
            (.request(.admin, waiter: 7), .admission(.start(batch(1, .admin, waiters: [7])))),
            (.finished(broken), .finished(reload: 1, generation: 1, waiters: [7], next: nil)),
        ], started: 1, generation: 1),
        Case(name: "requests during a reload wait for one more, which serves them all", steps: [
            (.request(.admin, waiter: 1), .admission(.start(batch(1, .admin, waiters: [1])))),
            (.request(.signal, waiter: nil), .admission(.queued(behind: 1, queued: 1))),
            (.request(.admin, waiter: 2), .admission(.queued(behind: 1, queued: 2))),
            (.request(.admin, waiter: 3), .admission(.queued(behind: 1, queued: 3))),
            (.finished(applied), .finished(reload: 1, generation: 2, waiters: [1], next: 2)),
            (.request(.admin, waiter: 4), .admission(.queued(behind: 2, queued: 1))),
            (.finished(broken), .finished(reload: 2, generation: 2, waiters: [2, 3], next: 3)),
            (.finished(applied), .finished(reload: 3, generation: 3, waiters: [4], next: nil)),
            (.request(.signal, waiter: nil), .admission(.start(batch(4, .signal)))),
        ], started: 4, generation: 3),
        Case(name: "a result with nothing running is ignored", steps: [
            (.finished(applied), .nothingRan),
        ], started: 0, generation: 1),
        Case(name: "closing drops the queued requests and refuses later ones; the running one ends", steps: [
            (.request(.admin, waiter: 1), .admission(.start(batch(1, .admin, waiters: [1])))),
            (.request(.admin, waiter: 2), .admission(.queued(behind: 1, queued: 1))),
            (.request(.signal, waiter: nil), .admission(.queued(behind: 1, queued: 2))),
            (.close, .dropped([2])),
            (.request(.admin, waiter: 3), .admission(.refused)),
            (.finished(applied), .finished(reload: 1, generation: 2, waiters: [1], next: nil)),
        ], started: 1, generation: 2),
    ]

    @Test(arguments: cases.indices)
    func sequence(_ index: Int) {
        let testCase = Self.cases[index]
        var queue = ReloadQueue()
        for (number, (event, expected)) in testCase.steps.enumerated() {
            let got: Expected
            switch event {
            case .request(let trigger, let waiter):
                got = .admission(queue.request(trigger, waiter: waiter))
            case .finished(let attempt):
                if let (outcome, waiters, next) = queue.finished(attempt, time: "T", durationMilliseconds: 1) {
                    got = .finished(reload: outcome.reload, generation: outcome.generation, waiters: waiters, next: next?.reload)
                    #expect(queue.last == outcome)
                } else {
                    got = .nothingRan
                }
            case .close:
                got = .dropped(queue.close())
            }
            #expect(got == expected, "\(testCase.name), step \(number)")
        }
        #expect(queue.started == testCase.started, "\(testCase.name)")
        #expect(queue.generation == testCase.generation, "\(testCase.name)")
    }

    @Test func coalescedBatchKeepsTheFirstTriggerAndCountsEveryRequest() {
        var queue = ReloadQueue()
        _ = queue.request(.admin, waiter: 1)
        _ = queue.request(.signal, waiter: nil)
        _ = queue.request(.admin, waiter: 9)
        let next = queue.finished(Self.applied, time: "T", durationMilliseconds: 0)?.next
        #expect(next == Self.batch(2, .signal, requests: 2, waiters: [9]))
        let outcome = queue.finished(Self.applied, time: "T", durationMilliseconds: 0)?.outcome
        #expect(outcome?.requests == 2 && outcome?.trigger == .signal)
    }

    @Test(arguments: [
        (ReloadOutcome(reload: 3, generation: 2, trigger: .admin, requests: 1, time: "2025-01-02T03:04:05.006Z", durationMilliseconds: 4,
                       attempt: .applied(kept: ["workers: 2 kept"])),
         #"{"reload":3,"result":"applied","generation":2,"trigger":"admin","requests":1,"time":"2025-01-02T03:04:05.006Z","duration_ms":4,"kept":["workers: 2 kept"]}"#),
        (ReloadOutcome(reload: 4, generation: 2, trigger: .signal, requests: 2, time: "T", durationMilliseconds: 0, attempt: broken),
         #"{"reload":4,"result":"failed","generation":2,"trigger":"signal","requests":2,"time":"T","duration_ms":0,"error":"p.conf:3: unknown key 'x'","file":"p.conf","line":3}"#),
        (ReloadOutcome(reload: 5, generation: 2, trigger: .admin, requests: 1, time: "T", durationMilliseconds: 0,
                       attempt: .failed(ReloadFailure(error: "listen on 127.0.0.1:80: \"in use\"", isConfiguration: false))),
         #"{"reload":5,"result":"failed","generation":2,"trigger":"admin","requests":1,"time":"T","duration_ms":0,"error":"listen on 127.0.0.1:80: \"in use\""}"#),
    ])
    func outcomeJSON(outcome: ReloadOutcome, json: String) {
        #expect(outcome.json == json)
    }

    @Test func statusJSON() {
        var queue = ReloadQueue()
        #expect(queue.statusJSON(reloadable: false, pid: 42)
                == #"{"generation":1,"started":0,"in_progress":false,"queued":0,"reloadable":false,"pid":42,"last":null}"#)
        _ = queue.request(.signal, waiter: nil)
        _ = queue.finished(Self.applied, time: "T", durationMilliseconds: 2)
        _ = queue.request(.admin, waiter: 1)
        _ = queue.request(.admin, waiter: 2)
        #expect(queue.statusJSON(reloadable: true, pid: 42)
                == #"{"generation":2,"started":2,"in_progress":true,"queued":1,"reloadable":true,"pid":42,"last":{"reload":1,"result":"applied","generation":2,"trigger":"signal","requests":1,"time":"T","duration_ms":2,"kept":[]}}"#)
    }
}

/// `POST /reload` and `GET /reload-status` on the admin listener.
@Suite struct AdminReloadRoutesTests {
    private static func request(_ method: HTTPMethod, _ path: String, body: Bool = false) -> AdminRequest {
        AdminRequest(method: method, path: path, hasBody: body)
    }

    private static let status = #"{"generation":1}"#

    @Test(arguments: [
        (request(.post, "/reload"), AdminReloadRoute.startReload),
        (request(.get, "/reload"), .respond(AdminResponse(status: 405, reason: "Method Not Allowed", contentType: "text/plain",
                                                          body: "use POST to reload; GET /reload-status shows the last reload\n", allow: "POST"))),
        (request(.head, "/reload"), .respond(AdminResponse(status: 405, reason: "Method Not Allowed", contentType: "text/plain",
                                                           body: "use POST to reload; GET /reload-status shows the last reload\n", allow: "POST"))),
        (request(.post, "/reload", body: true), .respond(AdminResponse(status: 400, reason: "Bad Request", contentType: "application/json",
            body: #"{"result":"failed","error":"POST /reload takes no body; the configuration is re-read from its file"}"# + "\n"))),
        (request(.get, "/reload-status"), .respond(AdminResponse(status: 200, reason: "OK", contentType: "application/json", body: status + "\n"))),
        (request(.head, "/reload-status"), .respond(AdminResponse(status: 200, reason: "OK", contentType: "application/json",
                                                                  body: status + "\n", headOnly: true))),
        (request(.post, "/reload-status"), .respond(AdminResponse(status: 405, reason: "Method Not Allowed", contentType: "text/plain",
                                                                  body: "use GET\n", allow: "GET, HEAD"))),
    ])
    func route(request: AdminRequest, expected: AdminReloadRoute) {
        #expect(AdminReloadRoutes.route(request) { Self.status } == expected)
    }

    @Test(arguments: ["/metrics", "/readyz", "/reload/", "/reload-status/x", "/"])
    func otherPathsAreNotReloadRoutes(path: String) {
        var rendered = false
        #expect(AdminReloadRoutes.route(Self.request(.post, path)) {
            rendered = true
            return ""
        } == nil)
        #expect(!rendered)
    }

    private static func outcome(_ attempt: ReloadAttempt) -> ReloadOutcome {
        ReloadOutcome(reload: 1, generation: 2, trigger: .admin, requests: 1, time: "T", durationMilliseconds: 0, attempt: attempt)
    }

    @Test(arguments: [
        (outcome(.applied(kept: [])), 200),
        (outcome(.failed(ReloadFailure(error: "p.conf:1: x", file: "p.conf", line: 1, isConfiguration: true))), 422),
        (outcome(.failed(ReloadFailure(error: "p.conf: no listener", file: "p.conf", isConfiguration: true))), 422),
        (outcome(.failed(ReloadFailure(error: "listen on :80: in use", isConfiguration: false))), 500),
    ])
    func answerStatus(outcome: ReloadOutcome, status: Int) {
        let response = AdminReloadRoutes.response(to: outcome)
        #expect(response.status == status)
        #expect(response.body == outcome.json + "\n")
        #expect(response.contentType == "application/json")
    }

    @Test func refusalsAndTheOverdueAnswer() {
        #expect(AdminReloadRoutes.response(to: nil).status == 503)
        #expect(AdminReloadRoutes.response(refused: .draining).body.contains("draining"))
        let unavailable = AdminReloadRoutes.response(refused: .unavailable)
        #expect(unavailable.status == 409)
        #expect(unavailable.body.hasPrefix(#"{"result":"failed","error":"sluice runs without a configuration file"#))
        let overdue = AdminReloadRoutes.overdue(afterMilliseconds: 60_000)
        #expect(overdue.status == 503)
        #expect(overdue.body.hasPrefix(#"{"result":"pending","error":"the reload has not finished after 60 s"#))
    }

    @Test func allowFieldOnTheWire() {
        let text = String(decoding: AdminResponse(status: 405, reason: "Method Not Allowed", contentType: "text/plain", body: "x\n",
                                                  allow: "POST").bytes, as: UTF8.self)
        #expect(text == "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nAllow: POST\r\n"
                + "Connection: close\r\n\r\nx\n")
    }
}
