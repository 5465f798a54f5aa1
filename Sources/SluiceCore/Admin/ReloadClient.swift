/// What `sluice reload` prints and how it exits.
public struct ReloadReport: Equatable, Sendable {
    /// For stdout (the outcome when it applied, or where to see it), nil for nothing.
    public var out: String?
    /// For stderr: an error line and a `hint:` line, or warnings.
    public var err: String?
    /// 0 applied (or signal sent without --admin), 1 anything else.
    public var exitCode: Int32
}

/// `sluice reload`: `POST /reload` to the admin listener and wait for its answer, or send SIGHUP to a pid and,
/// given the admin address too, poll `GET /reload-status` until a reload that began after the signal has ended.
/// The IO is here; what a reply means is decided by the pure functions below it, which the unit tests cover.
public enum ReloadClient {
    /// Runs the command (blocking; the CLI's main thread).
    public static func run(_ options: ReloadOptions) -> ReloadReport {
        let deadline = Syscall.monotonicMilliseconds() + Int64(options.timeoutMilliseconds)
        if let pid = options.pid { return signal(pid, admin: options.admin, deadline: deadline, timeout: options.timeoutMilliseconds) }
        guard let admin = options.admin else { return failure("nothing to reload", hint: "give --admin ADDR or --pid N") }
        let reply: AdminHTTPReply
        do { reply = try AdminHTTPClient.request("POST", "/reload", to: admin, deadline: deadline) } catch {
            return unreachable(admin, error, timeout: options.timeoutMilliseconds, waitingFor: "the reload")
        }
        return report(forPost: reply, admin: admin)
    }

    /// `--pid`: SIGHUP, after checking the process is sluice; with `admin`, the outcome read from /reload-status.
    private static func signal(_ pid: Int32, admin: ListenAddress?, deadline: Int64, timeout: Int) -> ReloadReport {
        if let name = Syscall.processName(pid), !name.hasPrefix("sluice") {
            // SIGHUP's default action ends a process: a wrong pid must not cost someone their program.
            return failure("pid \(pid) is \(ConfigValues.quoted(name)), not sluice; no signal sent",
                           hint: "check the pid, e.g. `pgrep -x sluice`")
        }
        var startedBefore = 0
        if let admin {
            // Read first: the reload the signal causes is the first that begins after this count.
            let status: AdminHTTPReply
            do { status = try AdminHTTPClient.request("GET", "/reload-status", to: admin, deadline: deadline) } catch {
                return unreachable(admin, error, timeout: timeout, waitingFor: "/reload-status", signalSent: false)
            }
            switch baseline(status, pid: pid, admin: admin) {
            case .success(let started): startedBefore = started
            case .failure(let error): return error.report
            }
        }
        do { try Syscall.sendHangup(to: pid) } catch {
            if error.isNoSuchProcess { return failure("no process with pid \(pid)", hint: "check the pid, e.g. `pgrep -x sluice`") }
            if error.isPermissionDenied {
                return failure("not permitted to signal pid \(pid)", hint: "run sluice reload as the user sluice runs as")
            }
            return failure("cannot signal pid \(pid): \(error.description)", hint: "check the pid, e.g. `pgrep -x sluice`")
        }
        guard let admin else {
            return ReloadReport(out: "SIGHUP sent to pid \(pid); the outcome is sluice's next \"SIGHUP: configuration reloaded\" or "
                                + "\"SIGHUP: reload failed\" log line, and GET /reload-status on its admin listener "
                                + "(add --admin ADDR to wait for it here)", err: nil, exitCode: 0)
        }
        while true {
            Syscall.sleep(milliseconds: 50)
            let status: AdminHTTPReply
            do { status = try AdminHTTPClient.request("GET", "/reload-status", to: admin, deadline: deadline) } catch {
                return unreachable(admin, error, timeout: timeout, waitingFor: "the reload", signalSent: true)
            }
            if let report = report(forStatus: status, after: startedBefore, admin: admin) { return report }
            if Syscall.monotonicMilliseconds() >= deadline {
                return failure("SIGHUP sent to pid \(pid), but no reload finished within \(seconds(timeout))",
                               hint: "is \(admin) the admin listener of pid \(pid)? GET /reload-status shows the last reload; "
                               + "wait longer with --timeout")
            }
        }
    }

    // MARK: - What replies mean (pure)

    /// The report for `POST /reload`'s answer.
    static func report(forPost reply: AdminHTTPReply, admin: ListenAddress) -> ReloadReport {
        guard let body = AdminJSON.parse(reply.body), let result = body["result"]?.string else {
            return failure("\(admin) answered \(reply.status) to POST /reload, not a reload outcome",
                           hint: "is \(admin) sluice's admin listener (--admin, or the admin block's listen)?")
        }
        if result == "pending" {
            return failure("the reload has not finished: \(body["error"]?.string ?? "no outcome yet")",
                           hint: "GET /reload-status on \(admin) shows its outcome once it ends")
        }
        return report(forOutcome: body)
    }

    /// The report for one outcome object (`ReloadOutcome.json`, or `{"result":"failed","error":…}`).
    static func report(forOutcome outcome: AdminJSON) -> ReloadReport {
        let generation = outcome["generation"]?.int
        let requests = outcome["requests"]?.int ?? 1
        guard outcome["result"]?.string == "applied" else {
            let error = outcome["error"]?.string ?? "no error given"
            let hint = generation.map { "the running configuration (generation \($0)) stays; fix the file and reload again" }
                ?? (error.contains("without a configuration file") ? "only a sluice started with --config FILE can reload"
                                                                    : "the running configuration stays")
            return failure("reload failed: \(error)", hint: hint)
        }
        var line = "reload applied (generation \(generation.map(String.init) ?? "?")"
        if requests > 1 {
            // Honest about coalescing: this reload also answered requests that arrived while the previous one ran.
            line += "; it also served \(requests - 1) other request\(requests == 2 ? "" : "s") that arrived meanwhile"
        }
        line += ")"
        var warnings: [String] = []
        if case .array(let kept)? = outcome["kept"] {
            warnings = kept.compactMap(\.string).map { "sluice: warning: \($0)" }
        }
        return ReloadReport(out: line, err: warnings.isEmpty ? nil : warnings.joined(separator: "\n"), exitCode: 0)
    }

    /// What `GET /reload-status` says before the signal: how many reloads had begun (`success`), or why waiting
    /// for one makes no sense (`failure`, no signal sent).
    static func baseline(_ reply: AdminHTTPReply, pid: Int32, admin: ListenAddress) -> Result<Int, ReportError> {
        guard reply.status == 200, let status = AdminJSON.parse(reply.body), let started = status["started"]?.int else {
            return .failure(ReportError(failure("\(admin) answered \(reply.status) to GET /reload-status, not a reload status; no signal sent",
                                                hint: "is \(admin) sluice's admin listener (--admin, or the admin block's listen)?")))
        }
        if let owner = status["pid"]?.int, owner != Int(pid) {
            return .failure(ReportError(failure("the admin listener at \(admin) belongs to pid \(owner), not \(pid); no signal sent",
                                                hint: "give the pid and the admin address of the same sluice")))
        }
        if status["reloadable"]?.bool == false {
            return .failure(ReportError(failure("pid \(pid) runs without a configuration file: SIGHUP would only reopen its "
                                                + "completion log; no signal sent",
                                                hint: "only a sluice started with --config FILE can reload")))
        }
        return .success(started)
    }

    /// The report once `GET /reload-status` shows a reload numbered above `startedBefore` as the last one; nil
    /// while it does not.
    static func report(forStatus reply: AdminHTTPReply, after startedBefore: Int, admin: ListenAddress) -> ReloadReport? {
        guard reply.status == 200, let status = AdminJSON.parse(reply.body) else {
            return failure("\(admin) answered \(reply.status) to GET /reload-status", hint: "GET /reload-status shows the last reload")
        }
        guard let last = status["last"], let number = last["reload"]?.int, number > startedBefore else { return nil }
        return report(forOutcome: last)
    }

    /// The report when the admin listener could not be asked.
    static func unreachable(_ admin: ListenAddress, _ error: AdminHTTPError, timeout: Int, waitingFor what: String,
                            signalSent: Bool? = nil) -> ReloadReport {
        let sent = signalSent.map { $0 ? "SIGHUP was sent; " : "no signal sent; " } ?? ""
        switch error {
        case .unreachable(let reason):
            return failure("cannot reach the admin listener at \(admin): \(reason)",
                           hint: "\(sent)is sluice running with --admin \(admin) (or listen \(admin) in its admin block)? "
                           + "without one, `sluice reload --pid N` signals it")
        case .timedOut:
            return failure("no answer from \(admin) within \(seconds(timeout)) while waiting for \(what)",
                           hint: "\(sent)the reload may still be running: GET /reload-status shows it; wait longer with --timeout")
        case .failed(let reason):
            return failure("talking to the admin listener at \(admin): \(reason)",
                           hint: "\(sent)is \(admin) sluice's admin listener?")
        }
    }

    /// An error line and its hint, exit 1.
    static func failure(_ message: String, hint: String) -> ReloadReport {
        ReloadReport(out: nil, err: CommandLineError(message, hint: hint).description, exitCode: 1)
    }

    /// `report` as an `Error`, for `Result`.
    struct ReportError: Error, Equatable {
        let report: ReloadReport
        init(_ report: ReloadReport) { self.report = report }
    }

    private static func seconds(_ milliseconds: Int) -> String {
        milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
    }
}

/// A reply from the admin listener.
struct AdminHTTPReply: Equatable, Sendable {
    var status: Int
    var body: String
}

/// Why the admin listener could not be asked.
enum AdminHTTPError: Error, Equatable {
    /// Resolving or connecting failed (refused, no route): nobody listens there.
    case unreachable(String)
    /// The deadline passed (connecting, or waiting for the answer).
    case timedOut
    /// The connection broke, or the answer was not HTTP.
    case failed(String)
}

/// A blocking HTTP/1.1 client for one request to the admin listener, which answers every request with
/// `Connection: close`: the answer is read to end of stream. The CLI only.
enum AdminHTTPClient {
    /// Answers larger than this are not the admin listener's.
    static let maxReplyBytes = 1 << 20

    /// Sends `METHOD PATH` to `address` and returns the answer, or throws once `deadline` (monotonic ms) passes.
    static func request(_ method: String, _ path: String, to address: ListenAddress, deadline: Int64) throws(AdminHTTPError) -> AdminHTTPReply {
        // A wildcard listen address is reached on loopback.
        let host = ["0.0.0.0", "*"].contains(address.host) ? "127.0.0.1" : address.host == "::" ? "::1" : address.host
        let target: SocketAddress
        let socket: FileDescriptor
        do {
            target = try SocketAddress.resolve(host: host, port: address.port)
            socket = try Syscall.tcpSocket(family: target.family)
        } catch {
            throw .unreachable(error.description)
        }
        let fd = socket.rawValue
        let connecting: IOResult<Void>
        do { connecting = try Syscall.connect(fd, target) } catch { throw .unreachable(error.description) }
        if case .wouldBlock = connecting {
            try wait(fd, for: .writable, until: deadline)
            let code = Syscall.pendingError(fd)
            if code != 0 { throw .unreachable(SystemError(call: "connect", errno: code).description) }
        }
        let head = "\(method) \(path) HTTP/1.1\r\nHost: \(address)\r\nUser-Agent: sluice-reload\r\nContent-Length: 0\r\n"
            + "Connection: close\r\n\r\n"
        var pending = Array(head.utf8)[...]
        while !pending.isEmpty {
            try wait(fd, for: .writable, until: deadline)
            let result: IOResult<Int>
            do {
                result = try pending.withUnsafeBytes { (bytes) throws(SystemError) -> IOResult<Int> in
                    try Syscall.write(fd, bytes, UnsafeRawBufferPointer(start: nil, count: 0))
                }
            } catch { throw .failed("\(error)") }
            if case .processed(let count) = result { pending = pending.dropFirst(count) }
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            try wait(fd, for: .readable, until: deadline)
            let result: IOResult<Int>
            do {
                result = try chunk.withUnsafeMutableBytes { (space) throws(SystemError) -> IOResult<Int> in try Syscall.read(fd, into: space) }
            } catch { throw .failed("\(error)") }
            guard case .processed(let count) = result else { continue }
            if count == 0 { break }
            received += chunk[..<count]
            guard received.count <= maxReplyBytes else { throw .failed("the answer is larger than 1 MiB") }
        }
        guard let reply = parse(received) else { throw .failed("the answer is not HTTP") }
        return reply
    }

    /// Waits until `fd` is ready for `events`, or throws `timedOut` at `deadline`.
    private static func wait(_ fd: Int32, for ready: Syscall.Readiness, until deadline: Int64) throws(AdminHTTPError) {
        guard Syscall.waitReady(fd, for: ready, milliseconds: deadline - Syscall.monotonicMilliseconds()) else {
            throw .timedOut
        }
    }

    /// Status and body of a whole response read to end of stream; nil when it is not `HTTP/1.x NNN …`.
    static func parse(_ bytes: [UInt8]) -> AdminHTTPReply? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = bytes.indices.first(where: { bytes[$0...].starts(with: separator) }) else { return nil }
        let statusLine = String(decoding: bytes[..<end].prefix { $0 != 13 }, as: UTF8.self)
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3, let status = Int(parts[1]) else { return nil }
        return AdminHTTPReply(status: status, body: String(decoding: bytes[(end + 4)...], as: UTF8.self))
    }
}
