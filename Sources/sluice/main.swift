import Glibc
import SluiceCore
import SluiceOrigin

/// Writes human text to stderr (CLI usage errors and `check` results, which are for people, not log collectors).
func printToStderr(_ text: String) {
    var text = text + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// Prints a start-up or configuration failure as one JSON line and exits 1.
func fail(_ message: String, _ fields: KeyValuePairs<String, OpLog.Value> = [:]) -> Never {
    OpLog.error(message, fields)
    exit(1)
}

/// The routes of `config` as a JSON array of {prefix, upstream}, for the ready and reloaded lines.
func routesJSON(_ config: Config) -> String {
    var routes = "["
    for (position, route) in config.routes.enumerated() {
        if position > 0 { routes += "," }
        routes += "{\"prefix\":"
        OpLog.appendQuoted(route.prefix, to: &routes)
        routes += ",\"upstream\":"
        OpLog.appendQuoted(route.upstream, to: &routes)
        routes += "}"
    }
    return routes + "]"
}

/// Starts the loops for `config`, then the reload thread when there is a file to re-read (`overrides`), and only
/// then logs the ready line: a `POST /reload` sent as soon as sluice said ready must find reloads enabled.
func serve(_ config: Config, reloading overrides: CommandLineOverrides? = nil) -> RunningProxy {
    warnAboutUnverifiedUpstreams(config)
    let running: RunningProxy
    do { running = try ProxyServer.start(config: config) } catch {
        if let file = error.file, error.line > 0 {
            fail("cannot start", ["file": .string(file), "line": .int(error.line), "error": .string(error.description)])
        }
        if let address = error.address {
            // StartError carries no errno; this phrase is the one ProxyServer.bind and the admin start use for
            // EADDRINUSE from another process (test_cli.py pins the whole line, so a reworded message shows).
            guard error.description.contains("in use by another process") else {
                fail("cannot start", ["address": .string(address), "error": .string(error.description)])
            }
            let flag = config.admin?.description == address ? "--admin" : "--listen"
            fail("cannot start", ["address": .string(address), "error": .string(error.description),
                                  "hint": .string("another process listens there; choose another with \(flag)")])
        }
        fail("cannot start", ["error": .string(error.description)])
    }
    if let overrides {
        // SIGHUP and POST /reload share one reload thread, so they never run at once (see ReloadQueue).
        do { try running.reloads.enable { batch in reload(running, overrides, batch) } } catch {
            fail("cannot start the reload thread", ["error": .string(error.description)])
        }
    }
    var sinks: [String] = []
    if let file = config.log.file { sinks.append(file) }
    if config.log.stdout { sinks.append("stdout") }
    OpLog.info("ready", ["version": .string(BuildInfo.version), "commit": .string(BuildInfo.commit),
                         "workers": .int(config.workers), "listeners": .strings(running.listeners),
                         "tls_listeners": .strings(running.tlsListeners),
                         "admin": running.admin.map { .string($0) } ?? .json("null"),
                         "routes": .json(routesJSON(config)), "upstreams": .strings(config.upstreams.map { "\($0.name)=\($0.description)" }),
                         // Routed upstreams whose names are retried in the background (/readyz is 503 until they resolve).
                         "unresolved_upstreams": .strings(running.unresolvedUpstreams.map(\.name)),
                         "completion_log": .strings(sinks),
                         // The same reading ProxySettings made: start-up has already raised the soft limit.
                         "max_connections": .int(config.effectiveMaxConnections(openFileLimit: Syscall.openFileLimit())),
                         "open_file_limit": .int(Syscall.openFileLimit())])
    return running
}

/// Blocks the calling thread on SIGTERM/SIGINT/SIGHUP; workers inherit the blocked mask, so signals come here.
func blockSignals() -> sigset_t {
    var signals = sigset_t()
    sigemptyset(&signals)
    sigaddset(&signals, SIGTERM)
    sigaddset(&signals, SIGINT)
    sigaddset(&signals, SIGHUP)
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    return signals
}

/// Serves signals until the process exits: SIGHUP reopens the completion log and asks for a reload (when a config
/// file is in use; `overrides` are applied again, as at start-up), which the reload thread runs; SIGTERM/SIGINT drain.
func waitForSignals(_ signals: sigset_t, _ running: RunningProxy, reloading overrides: CommandLineOverrides?) -> Never {
    var signals = signals
    while true {
        var received: Int32 = 0
        guard sigwait(&signals, &received) == 0 else { continue }
        switch received {
        case SIGHUP:
            // logrotate: records written from now on go to a freshly opened file.
            running.completionWriter?.reopen()
            if overrides != nil { _ = running.reloads.request(.signal) } else { OpLog.info("SIGHUP: completion log reopened") }
        default:
            drain(running, signals: signals, first: received)
        }
    }
}

/// `tls_verify off` is allowed but never silent.
func warnAboutUnverifiedUpstreams(_ config: Config) {
    for upstream in config.upstreams where upstream.tls?.verify == false {
        OpLog.warn("TLS verification is off for an upstream: its certificate and name are not checked",
                   ["upstream": .string(upstream.name), "server": .string(upstream.description)])
    }
}

/// Re-reads the configuration and applies it to new connections; a bad file keeps the running configuration.
/// Runs on the reload thread. Each outcome is one JSON line on stderr; a signal's lines keep their "SIGHUP: "
/// prefix, POST /reload's say "POST /reload: ".
func reload(_ running: RunningProxy, _ overrides: CommandLineOverrides, _ batch: ReloadQueue.Batch) -> ReloadAttempt {
    let prefix = batch.trigger == .signal ? "SIGHUP: " : "POST /reload: "
    let trigger = OpLog.Value.string(batch.trigger.rawValue)
    /// Logs the failure line (`detail` is the error field, as before the reload endpoint) and returns it.
    func failed(_ message: String, _ failure: ReloadFailure, detail: String, address: String? = nil) -> ReloadAttempt {
        if let file = failure.file {
            OpLog.error(prefix + message, ["file": .string(file), "line": .int(failure.line), "error": .string(detail),
                                           "trigger": trigger, "reload": .int(batch.reload), "requests": .int(batch.requests)])
        } else if let address {
            OpLog.error(prefix + message, ["address": .string(address), "error": .string(detail),
                                           "trigger": trigger, "reload": .int(batch.reload), "requests": .int(batch.requests)])
        } else {
            OpLog.error(prefix + message, ["error": .string(detail), "trigger": trigger, "reload": .int(batch.reload),
                                           "requests": .int(batch.requests)])
        }
        return .failed(failure)
    }
    let config: Config
    do { config = try Config.load(overrides: overrides) } catch {
        return failed("reload failed: invalid configuration; the running one stays",
                      ReloadFailure(error: error.description, file: error.file, line: error.line, isConfiguration: true),
                      detail: error.description)
    }
    warnAboutUnverifiedUpstreams(config)
    let kept: [String]
    do { kept = try running.reload(config) } catch {
        if let file = error.file, error.line > 0 {
            return failed("reload failed; the running configuration stays",
                          ReloadFailure(error: error.located(orIn: file), file: file, line: error.line, isConfiguration: true),
                          detail: error.description)
        }
        return failed("reload failed; the running configuration stays", ReloadFailure(error: error.description, isConfiguration: false),
                      detail: error.description, address: error.address)
    }
    for setting in kept { OpLog.warn("reload: setting needs a restart", ["setting": .string(setting)]) }
    OpLog.info(prefix + (batch.trigger == .signal ? "configuration reloaded, completion log reopened" : "configuration reloaded"),
               ["listeners": .strings(running.listeners), "routes": .json(routesJSON(running.config)),
                "trigger": trigger, "reload": .int(batch.reload), "requests": .int(batch.requests)])
    return .applied(kept: kept)
}

/// SIGTERM/SIGINT: stop accepting, let exchanges in flight finish for up to `drain_timeout`, abort what is left
/// (recorded as `drain`), flush the completion log and exit 0. A second SIGTERM/SIGINT skips the wait.
func drain(_ running: RunningProxy, signals: sigset_t, first: Int32) -> Never {
    let timeout = running.config.drainTimeout
    // Readiness turns false before the line says so: whoever reads "draining" sees /readyz at 503.
    running.beginDrain()
    OpLog.info("draining", ["signal": .int(Int(first)), "drain_timeout_ms": .int(timeout), "connections": .int(running.openConnections)])
    let deadline = Syscall.monotonicMilliseconds() + Int64(timeout)
    var signals = signals
    var wait = timespec(tv_sec: 0, tv_nsec: 20_000_000)
    while !running.isDrained {
        let remaining = deadline - Syscall.monotonicMilliseconds()
        if remaining <= 0 {
            OpLog.warn("drain timeout: aborting the exchanges still in flight", ["connections": .int(running.openConnections)])
            break
        }
        let received = sigtimedwait(&signals, nil, &wait)
        if received == SIGTERM || received == SIGINT {
            OpLog.warn("second signal: aborting the exchanges still in flight", ["connections": .int(running.openConnections)])
            break
        }
        if received == SIGHUP { running.completionWriter?.reopen() }
    }
    if !running.stop(within: 2_000) { OpLog.warn("stopped before every record was written") }
    OpLog.info("stopped")
    exit(0)
}

// SLUICE_LOG_LEVEL=debug shows per-connection detail (rejected requests, failed TLS handshakes); the
// default, info, keeps stderr to start-up, signals and trouble.
if let text = getenv("SLUICE_LOG_LEVEL").map({ String(cString: $0) }) {
    guard let level = OpLog.Level(name: text) else {
        printToStderr("sluice: SLUICE_LOG_LEVEL must be debug, info, warn or error, got '\(text)'")
        exit(2)
    }
    OpLog.minimumLevel = level
}

let command: CommandLineCommand
do { command = try CommandLineCommand.parse(Array(CommandLine.arguments.dropFirst())) } catch {
    // Two lines, the error and a hint, not the whole help: the help scrolled the error out of sight.
    printToStderr(error.description)
    exit(2)
}

switch command {
case .help:
    print(CommandLineCommand.helpText)
case .version:
    print(BuildInfo.versionLine)
case .reload(let options):
    Syscall.ignoreSIGPIPE()
    let report = ReloadClient.run(options)
    if let out = report.out { print(out) }
    if let err = report.err { printToStderr(err) }
    exit(report.exitCode)
case .check(let path):
    let config: Config
    do { config = try Config.load(overrides: CommandLineOverrides(configPath: path)) } catch {
        printToStderr(error.description)
        exit(1)
    }
    // Certificates and keys are read as a start would read them: a check that passes means they load.
    do { _ = try ProxySettings.tlsContexts(config) } catch {
        printToStderr(error.located(orIn: path))
        exit(1)
    }
    // Names are looked up as a start would look them up: `check` says what start-up will do with each.
    let findings = UpstreamNameCheck.findings(config, file: path)
    findings.forEach { printToStderr($0.description) }
    if findings.contains(where: { $0.severity == .error }) { exit(1) }
    print("\(path): ok")
case .run(let overrides):
    let config: Config
    do { config = try Config.load(overrides: overrides) } catch {
        fail("invalid configuration", ["file": .string(error.file), "line": .int(error.line), "error": .string(error.description)])
    }
    let signals = blockSignals()
    // Without a file there is nothing to re-read: the flags do not change.
    let reloading = overrides.configPath == nil ? nil : overrides
    let running = serve(config, reloading: reloading)
    waitForSignals(signals, running, reloading: reloading)
case .demo(var overrides):
    let signals = blockSignals()
    let backend: DemoBackend
    let backendPort = UInt16(overrides.backendPort ?? 0)
    do { backend = try DemoBackend(host: "127.0.0.1", port: backendPort) } catch {
        // One line, like a busy --listen address: what, where, and the flag that moves it.
        if let error = error as? DemoBackendError, error.errno == EADDRINUSE {
            fail("cannot start the demo backend", ["address": .string("127.0.0.1:\(backendPort)"), "error": .string(error.description),
                                                   "hint": .string("another process listens there; choose another with --backend-port (0 picks a free port)")])
        }
        fail("cannot start the demo backend", ["error": .string("\(error)")])
    }
    backend.start()
    overrides.upstreamURL = "http://127.0.0.1:\(backend.port)"
    if overrides.listeners.isEmpty { overrides.listeners = [Config.defaultListenAddress] }
    let config: Config
    do { config = try Config.load(overrides: overrides) } catch {
        fail("invalid configuration", ["error": .string(error.description)])
    }
    let running = serve(config)
    let address = running.listeners.first ?? "127.0.0.1:8080"
    print("""
        sluice demo: a mock LLM backend (OpenAI /v1/chat/completions, Anthropic /v1/messages) on 127.0.0.1:\(backend.port),
        sluice in front on \(address).
        Stream a chat completion through the proxy (tokens arrive one by one):

          curl -N http://\(address)/v1/chat/completions -H 'Content-Type: application/json' \\
            -d '{"model":"sluice-demo","stream":true,"messages":[{"role":"user","content":"hello"}]}'

        Press Ctrl-C to stop.
        """)
    fflush(nil)
    waitForSignals(signals, running, reloading: nil)
}
