import Glibc
import SluiceCore
import SluiceOrigin

let version = "0.1.0"

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

/// Starts the loops for `config` and logs the ready line.
func serve(_ config: Config) -> RunningProxy {
    let running: RunningProxy
    do { running = try ProxyServer.start(config: config) } catch {
        fail("cannot start", ["error": .string(error.description)])
    }
    var routes = "["
    for (position, route) in config.routes.enumerated() {
        if position > 0 { routes += "," }
        routes += "{\"prefix\":"
        OpLog.appendQuoted(route.prefix, to: &routes)
        routes += ",\"upstream\":"
        OpLog.appendQuoted(route.upstream, to: &routes)
        routes += "}"
    }
    routes += "]"
    var sinks: [String] = []
    if let file = config.log.file { sinks.append(file) }
    if config.log.stdout { sinks.append("stdout") }
    OpLog.info("ready", ["version": .string(version), "workers": .int(config.workers), "listeners": .strings(running.listeners),
                         "admin": running.admin.map { .string($0) } ?? .json("null"),
                         "routes": .json(routes), "upstreams": .strings(config.upstreams.map { "\($0.name)=\($0.scheme.rawValue)://\($0.host):\($0.port)" }),
                         "completion_log": .strings(sinks)])
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

func waitForSignals(_ signals: sigset_t, _ running: RunningProxy) -> Never {
    var signals = signals
    while true {
        var received: Int32 = 0
        guard sigwait(&signals, &received) == 0 else { continue }
        switch received {
        case SIGHUP:
            // logrotate: records written from now on go to a freshly opened file.
            running.completionWriter?.reopen()
            OpLog.info("SIGHUP: completion log reopened; configuration reload is not implemented yet")
        default:
            OpLog.info("stopping", ["signal": .int(Int(received))])
            if !running.stop(within: 2_000) { OpLog.warn("stopped before every record was written") }
            exit(0)
        }
    }
}

let command: CommandLineCommand
do { command = try CommandLineCommand.parse(Array(CommandLine.arguments.dropFirst())) } catch {
    printToStderr("sluice: \(error.description)\n\n\(CommandLineCommand.helpText)")
    exit(2)
}

switch command {
case .help:
    print(CommandLineCommand.helpText)
case .version:
    print("sluice \(version)")
case .check(let path):
    do {
        _ = try Config.load(overrides: CommandLineOverrides(configPath: path))
        print("\(path): ok")
    } catch {
        printToStderr(error.description)
        exit(1)
    }
case .run(let overrides):
    let config: Config
    do { config = try Config.load(overrides: overrides) } catch {
        fail("invalid configuration", ["file": .string(error.file), "line": .int(error.line), "error": .string(error.description)])
    }
    let signals = blockSignals()
    let running = serve(config)
    waitForSignals(signals, running)
case .demo(var overrides):
    let signals = blockSignals()
    let backend: DemoBackend
    do { backend = try DemoBackend(host: "127.0.0.1", port: 0) } catch {
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
        sluice demo: a mock OpenAI-compatible backend on 127.0.0.1:\(backend.port), sluice in front on \(address).
        Stream a chat completion through the proxy (tokens arrive one by one):

          curl -N http://\(address)/v1/chat/completions -H 'Content-Type: application/json' \\
            -d '{"model":"sluice-demo","stream":true,"messages":[{"role":"user","content":"hello"}]}'

        Press Ctrl-C to stop.
        """)
    fflush(nil)
    waitForSignals(signals, running)
}
