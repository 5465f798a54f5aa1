import Testing

@testable import SluiceCore

/// What `sluice reload` makes of the admin listener's answers (`ReloadClient`), the JSON reader it uses
/// (`AdminJSON`) and its response parser (`AdminHTTPClient.parse`). The sockets and the signal are covered by
/// test_reload.py against the real binary.
@Suite struct ReloadClientTests {
    private static let admin = ListenAddress(host: "127.0.0.1", port: 9901)

    private static func reply(_ status: Int, _ body: String) -> AdminHTTPReply { AdminHTTPReply(status: status, body: body) }

    private static func failure(_ message: String, _ hint: String) -> ReloadReport {
        ReloadReport(out: nil, err: "sluice: \(message)\nhint: \(hint)", exitCode: 1)
    }

    @Test(arguments: [
        (reply(200, #"{"reload":3,"result":"applied","generation":3,"trigger":"admin","requests":1,"kept":[]}"#),
         ReloadReport(out: "reload applied (generation 3)", err: nil, exitCode: 0)),
        (reply(200, #"{"result":"applied","generation":4,"requests":3,"kept":["workers: 2 kept (a new worker count needs a restart)"]}"#),
         ReloadReport(out: "reload applied (generation 4; it also served 2 other requests that arrived meanwhile)",
                      err: "sluice: warning: workers: 2 kept (a new worker count needs a restart)", exitCode: 0)),
        (reply(200, #"{"result":"applied","generation":5,"requests":2}"#),
         ReloadReport(out: "reload applied (generation 5; it also served 1 other request that arrived meanwhile)", err: nil, exitCode: 0)),
        (reply(422, #"{"result":"failed","generation":2,"error":"/etc/p.conf:12: unknown key 'conect'","file":"/etc/p.conf","line":12}"#),
         failure("reload failed: /etc/p.conf:12: unknown key 'conect'",
                 "the running configuration (generation 2) stays; fix the file and reload again")),
        (reply(409, #"{"result":"failed","error":"sluice runs without a configuration file (--config): there is nothing to re-read"}"#),
         failure("reload failed: sluice runs without a configuration file (--config): there is nothing to re-read",
                 "only a sluice started with --config FILE can reload")),
        (reply(503, #"{"result":"failed","error":"sluice is draining; no reload runs any more"}"#),
         failure("reload failed: sluice is draining; no reload runs any more", "the running configuration stays")),
        (reply(503, #"{"result":"pending","error":"the reload has not finished after 60 s"}"#),
         failure("the reload has not finished: the reload has not finished after 60 s",
                 "GET /reload-status on 127.0.0.1:9901 shows its outcome once it ends")),
        (reply(404, "not found; try /metrics, /healthz or /readyz\n"),
         failure("127.0.0.1:9901 answered 404 to POST /reload, not a reload outcome",
                 "is 127.0.0.1:9901 sluice's admin listener (--admin, or the admin block's listen)?")),
    ])
    func postAnswer(reply: AdminHTTPReply, expected: ReloadReport) {
        #expect(ReloadClient.report(forPost: reply, admin: Self.admin) == expected)
    }

    @Test func baselineBeforeTheSignal() {
        let status = #"{"generation":1,"started":4,"in_progress":false,"queued":0,"reloadable":true,"pid":77,"last":null}"#
        #expect(ReloadClient.baseline(Self.reply(200, status), pid: 77, admin: Self.admin) == .success(4))
        #expect(ReloadClient.baseline(Self.reply(200, status), pid: 78, admin: Self.admin)
                == .failure(.init(Self.failure("the admin listener at 127.0.0.1:9901 belongs to pid 77, not 78; no signal sent",
                                               "give the pid and the admin address of the same sluice"))))
        let flagsOnly = #"{"generation":1,"started":0,"reloadable":false,"pid":77,"last":null}"#
        guard case .failure(let notReloadable) = ReloadClient.baseline(Self.reply(200, flagsOnly), pid: 77, admin: Self.admin) else {
            Issue.record("a sluice without a config file must not be signalled")
            return
        }
        #expect(notReloadable.report.err?.contains("runs without a configuration file") == true)
        guard case .failure = ReloadClient.baseline(Self.reply(404, "not found\n"), pid: 77, admin: Self.admin) else {
            Issue.record("a 404 is not a reload status")
            return
        }
    }

    @Test func waitsForAReloadThatBeganAfterTheSignal() {
        let last = { (reload: Int, result: String) in
            Self.reply(200, #"{"generation":2,"started":\#(reload),"last":{"reload":\#(reload),"result":"\#(result)","generation":2,"error":"p.conf:1: x"}}"#)
        }
        #expect(ReloadClient.report(forStatus: Self.reply(200, #"{"started":0,"last":null}"#), after: 0, admin: Self.admin) == nil)
        #expect(ReloadClient.report(forStatus: last(4, "applied"), after: 4, admin: Self.admin) == nil)
        #expect(ReloadClient.report(forStatus: last(5, "applied"), after: 4, admin: Self.admin)
                == ReloadReport(out: "reload applied (generation 2)", err: nil, exitCode: 0))
        #expect(ReloadClient.report(forStatus: last(5, "failed"), after: 4, admin: Self.admin)
                == Self.failure("reload failed: p.conf:1: x", "the running configuration (generation 2) stays; fix the file and reload again"))
    }

    @Test func unreachableIsOneErrorLineAndAHint() {
        let report = ReloadClient.unreachable(Self.admin, .unreachable("connect: Connection refused"), timeout: 30_000, waitingFor: "the reload")
        #expect(report == Self.failure("cannot reach the admin listener at 127.0.0.1:9901: connect: Connection refused",
                                       "is sluice running with --admin 127.0.0.1:9901 (or listen 127.0.0.1:9901 in its admin block)? "
                                       + "without one, `sluice reload --pid N` signals it"))
        let late = ReloadClient.unreachable(Self.admin, .timedOut, timeout: 1500, waitingFor: "the reload", signalSent: true)
        #expect(late.err == "sluice: no answer from 127.0.0.1:9901 within 1500ms while waiting for the reload\n"
                + "hint: SIGHUP was sent; the reload may still be running: GET /reload-status shows it; wait longer with --timeout")
    }

    @Test(arguments: [
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", AdminHTTPReply(status: 200, body: "{}")),
        ("HTTP/1.1 422 Unprocessable Content\r\nA: b\r\n\r\n", AdminHTTPReply(status: 422, body: "")),
        ("HTTP/1.0 500 x\r\n\r\nbody\r\n\r\nmore", AdminHTTPReply(status: 500, body: "body\r\n\r\nmore")),
        ("HTTP/1.1 200 OK\r\n", nil),
        ("SSH-2.0-OpenSSH\r\n\r\n", nil),
        ("HTTP/1.1 2000 OK\r\n\r\n", nil),
        ("", nil),
    ] as [(String, AdminHTTPReply?)])
    func responseParse(text: String, expected: AdminHTTPReply?) {
        #expect(AdminHTTPClient.parse(Array(text.utf8)) == expected)
    }
}

/// The JSON reader `sluice reload` uses on the admin listener's answers.
@Suite struct AdminJSONTests {
    @Test(arguments: [
        (#"{"a":1,"b":[true,false,null],"c":"x"}"#, AdminJSON.object(["a": .number(1), "b": .array([.bool(true), .bool(false), .null]),
                                                                      "c": .string("x")])),
        (" [ ] ", .array([])),
        ("{ }", .object([:])),
        (#""q\"\\\/\b\f\n\r\t""#, .string("q\"\\/\u{08}\u{0C}\n\r\t")),
        (#""\u00e9\u20AC\ud83d\ude00""#, .string("é€😀")),
        (#""\ud83d""#, .string("\u{FFFD}")),
        ("\"héllo\"", .string("héllo")),
        ("-12.5e1", .number(-125)),
        (#"{"n":{"m":{"k":[0]}}}"#, .object(["n": .object(["m": .object(["k": .array([.number(0)])])])])),
    ] as [(String, AdminJSON)])
    func parses(text: String, expected: AdminJSON) {
        #expect(AdminJSON.parse(text) == expected)
    }

    @Test(arguments: [
        "", "{", "}", "[1,]", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{a:1}", "\"unterminated", "\"tab\there\"", "tru", "nul", "1 2",
        "{\"a\":1}x", "\"\\x\"", "\"\\u12\"", String(repeating: "[", count: 40) + String(repeating: "]", count: 40),
    ])
    func rejects(text: String) {
        #expect(AdminJSON.parse(text) == nil)
    }

    @Test func accessors() {
        let value = AdminJSON.parse(#"{"n":3,"f":1.5,"s":"x","b":true}"#)
        #expect(value?["n"]?.int == 3)
        #expect(value?["f"]?.int == nil)
        #expect(value?["s"]?.string == "x")
        #expect(value?["b"]?.bool == true)
        #expect(value?["missing"] == nil)
        #expect(value?["s"]?["x"] == nil)
    }
}
