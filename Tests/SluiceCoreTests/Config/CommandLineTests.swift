import Testing

@testable import SluiceCore

/// `CommandLineCommand.parse`: accepted forms and every rejection.
@Suite struct CommandLineTests {
    static let any = ListenAddress(host: "0.0.0.0", port: 80)
    static let v6 = ListenAddress(host: "::1", port: 81)
    static let metrics = ListenAddress(host: "127.0.0.1", port: 9901)

    @Test(arguments: [
        ([], CommandLineCommand.run(CommandLineOverrides())),
        (["--config", "p.conf"], .run(CommandLineOverrides(configPath: "p.conf"))),
        (["--config=p.conf"], .run(CommandLineOverrides(configPath: "p.conf"))),
        (["--config=a=b.conf"], .run(CommandLineOverrides(configPath: "a=b.conf"))),
        (["--listen", ":80", "--listen=[::1]:81"], .run(CommandLineOverrides(listeners: [any, v6]))),
        (["--upstream", "http://h:1", "--workers", "4"], .run(CommandLineOverrides(upstreamURL: "http://h:1", workers: 4))),
        (["--workers=256", "--upstream=https://h"], .run(CommandLineOverrides(upstreamURL: "https://h", workers: 256))),
        (["--config", "c", "--listen", ":80", "--upstream", "http://h", "--workers", "1"],
         .run(CommandLineOverrides(configPath: "c", listeners: [any], upstreamURL: "http://h", workers: 1))),
        (["check", "--config", "x.conf"], .check(configPath: "x.conf")),
        (["check", "--config=x.conf"], .check(configPath: "x.conf")),
        (["demo"], .demo(CommandLineOverrides())),
        (["demo", "--listen", ":80", "--workers", "2"], .demo(CommandLineOverrides(listeners: [any], workers: 2))),
        (["--log-file", "/var/log/c.jsonl"], .run(CommandLineOverrides(logFile: "/var/log/c.jsonl"))),
        (["--log-file=c.jsonl"], .run(CommandLineOverrides(logFile: "c.jsonl"))),
        (["--log-file", "-"], .run(CommandLineOverrides(logFile: "-"))),  // only a leading "--" means a missing value
        (["--log-stdout"], .run(CommandLineOverrides(logStdout: true))),
        (["--log-stdout", "--workers", "2"], .run(CommandLineOverrides(workers: 2, logStdout: true))),
        (["--admin", "127.0.0.1:9901"], .run(CommandLineOverrides(admin: metrics))),
        (["--admin=[::1]:81"], .run(CommandLineOverrides(admin: v6))),
        (["--config", "c", "--log-file", "l", "--log-stdout", "--admin", "127.0.0.1:9901"],
         .run(CommandLineOverrides(configPath: "c", logFile: "l", logStdout: true, admin: metrics))),
        (["demo", "--log-stdout", "--admin", "127.0.0.1:9901", "--log-file", "d.jsonl"],
         .demo(CommandLineOverrides(logFile: "d.jsonl", logStdout: true, admin: metrics))),
        (["demo", "--backend-port", "8000"], .demo(CommandLineOverrides(backendPort: 8000))),
        (["demo", "--backend-port=0", "--listen", ":80"], .demo(CommandLineOverrides(listeners: [any], backendPort: 0))),
        (["demo", "--backend-port", "65535"], .demo(CommandLineOverrides(backendPort: 65535))),
        (["--help"], .help),
        (["-h"], .help),
        (["check", "--help"], .help),
        (["--bogus", "-h"], .help),
        (["--help", "--version"], .help),
        (["--version"], .version),
        (["demo", "--version"], .version),
        (["reload", "--admin", "127.0.0.1:9901"], .reload(ReloadOptions(admin: metrics, pid: nil))),
        (["reload", "--pid", "1234"], .reload(ReloadOptions(admin: nil, pid: 1234))),
        (["reload", "--pid=1234", "--admin=127.0.0.1:9901", "--timeout", "2m"],
         .reload(ReloadOptions(admin: metrics, pid: 1234, timeoutMilliseconds: 120_000))),
        (["reload", "--timeout", "500ms", "--admin", "[::1]:81"], .reload(ReloadOptions(admin: v6, pid: nil, timeoutMilliseconds: 500))),
    ] as [([String], CommandLineCommand)])
    func accepted(arguments: [String], expected: CommandLineCommand) throws {
        #expect(try CommandLineCommand.parse(arguments) == expected)
    }

    /// Each rejection: the message (a fragment) and the hint (exactly).
    @Test(arguments: [
        (["--lsiten", ":80"], "unknown flag '--lsiten'", "did you mean --listen? see sluice --help"),
        (["--lsiten=:80"], "unknown flag '--lsiten'", "did you mean --listen? see sluice --help"),
        (["--port", "80"], "unknown flag '--port'", "did you mean --listen? see sluice --help"),
        (["--definitely-not-a-flag"], "unknown flag '--definitely-not-a-flag'", "see sluice --help"),
        (["--verison"], "unknown flag '--verison'", "did you mean --version? see sluice --help"),
        (["-c", "x"], "unknown flag '-c'", "did you mean --config? see sluice --help"),
        (["check", "--conifg", "x"], "unknown flag '--conifg'", "did you mean --config? see sluice --help"),
        (["check", "--lsiten", "x"], "unknown flag '--lsiten'", "see sluice --help"),  // check takes no --listen
        (["--listen"], "missing value for --listen: expected ADDR", "e.g. --listen 127.0.0.1:8080"),
        (["--listen="], "missing value for --listen", "e.g. --listen 127.0.0.1:8080"),
        (["--listen", "--workers", "2"], "missing value for --listen", "e.g. --listen 127.0.0.1:8080"),
        (["--config"], "missing value for --config: expected FILE", "e.g. --config proxy.conf"),
        (["--listen", "nope"], "--listen: bad listen address 'nope': missing port", "see sluice --help"),
        (["--workers", "0"], "--workers must be a whole number from 1 to 256, got '0'", "e.g. --workers 4"),
        (["--workers", "x"], "--workers must be a whole number from 1 to 256, got 'x'", "e.g. --workers 4"),
        (["--workers=257"], "got '257'", "e.g. --workers 4"),
        (["--upstream", "ftp://x"], "--upstream: bad upstream URL 'ftp://x': unsupported scheme 'ftp'", "see sluice --help"),
        (["--upstream", "localhost:8000"], "--upstream: bad upstream URL 'localhost:8000': missing scheme", "see sluice --help"),
        (["--workers", "2", "--workers", "3"], "--workers given more than once", "keep one --workers; see sluice --help"),
        (["--config", "a", "--config", "b"], "--config given more than once", "keep one --config; see sluice --help"),
        (["--upstream", "http://a", "--upstream", "http://b"], "--upstream given more than once", "keep one --upstream; see sluice --help"),
        (["check"], "'sluice check' needs --config FILE", "e.g. `sluice check --config proxy.conf`"),
        (["check", "--listen", ":80"], "'--listen' is not accepted by 'sluice check'", "'sluice check' takes only --config; see sluice --help"),
        (["demo", "--upstream", "http://x"], "'--upstream' is not accepted by 'sluice demo'",
         "sluice demo runs its own backend; to proxy yours, run `sluice --upstream http://x`"),
        (["demo", "--config", "x"], "'--config' is not accepted by 'sluice demo'",
         "sluice demo runs its own backend; to proxy yours, run `sluice --config x`"),
        (["chekc"], "unknown command 'chekc'", "did you mean `sluice check`?"),
        (["chekc", "--config", "p.conf"], "unknown command 'chekc'", "did you mean `sluice check --config p.conf`?"),
        (["run"], "unknown command 'run'", "the commands are check, reload and demo; the proxy runs without one: see sluice --help"),
        (["relaod", "--admin", ":9901"], "unknown command 'relaod'", "did you mean `sluice reload --admin :9901`?"),
        (["reload"], "'sluice reload' needs --admin ADDR or --pid N",
         "e.g. `sluice reload --admin 127.0.0.1:9901` (the address of the admin listener)"),
        (["reload", "--timeout", "5s"], "'sluice reload' needs --admin ADDR or --pid N",
         "e.g. `sluice reload --admin 127.0.0.1:9901` (the address of the admin listener)"),
        (["reload", "--pid", "1"], "--pid must be a whole number from 2 to 2147483647, got '1'", "e.g. --pid 1234"),
        (["reload", "--pid", "abc"], "--pid must be a whole number from 2 to 2147483647, got 'abc'", "e.g. --pid 1234"),
        (["reload", "--pid"], "missing value for --pid: expected N", "e.g. --pid 1234"),
        (["reload", "--admin", ":1", "--timeout", "30"], "--timeout: duration needs a unit: '30' (use ms, s, m or h, e.g. 30s)",
         "see sluice --help"),
        (["reload", "--admin", ":1", "--timeout", "off"], "--timeout must be more than 0, got 'off'", "e.g. --timeout 30s"),
        (["reload", "--config", "p.conf"], "'--config' is not accepted by 'sluice reload'",
         "'sluice reload' takes --admin, --pid and --timeout; see sluice --help"),
        (["reload", "proxy.conf"], "unexpected argument 'proxy.conf'", "see sluice --help"),
        (["--pid", "12"], "'--pid' is only accepted by 'sluice reload'", "e.g. `sluice reload --pid 1234`"),
        (["demo", "--timeout", "1s"], "'--timeout' is only accepted by 'sluice reload'",
         "e.g. `sluice reload --admin 127.0.0.1:9901 --timeout 30s`"),
        (["reload", "--admin", ":1", "--prcoess", "1"], "unknown flag '--prcoess'", "see sluice --help"),
        (["--workers", "2", "demo"], "unexpected argument 'demo': a command comes first", "did you mean `sluice demo --workers 2`?"),
        (["check", "proxy.conf"], "unexpected argument 'proxy.conf'", "did you mean `sluice check --config proxy.conf`?"),
        (["check", "proxy"], "unexpected argument 'proxy'", "did you mean `sluice check --config proxy`?"),
        (["proxy.conf"], "unexpected argument 'proxy.conf'", "did you mean `sluice --config proxy.conf`?"),
        (["--workers", "2", "/etc/sluice/proxy.conf"], "unexpected argument '/etc/sluice/proxy.conf'",
         "did you mean `sluice --workers 2 --config /etc/sluice/proxy.conf`?"),
        (["--workers", "2", "my proxy.conf"], "unexpected argument 'my proxy.conf'",
         "did you mean `sluice --workers 2 --config 'my proxy.conf'`?"),
        (["--config", "a", "b.conf"], "unexpected argument 'b.conf'", "see sluice --help"),  // --config already given
        (["http://127.0.0.1:8000"], "unexpected argument 'http://127.0.0.1:8000'", "did you mean `sluice --upstream http://127.0.0.1:8000`?"),
        (["--upstream", "http://a", "127.0.0.1:9000"], "unexpected argument '127.0.0.1:9000'",
         "did you mean `sluice --upstream http://a --listen 127.0.0.1:9000`?"),
        (["demo", "http://x"], "unexpected argument 'http://x'", "see sluice --help"),  // the demo takes no upstream
        (["check", "--config", "a", "extra"], "unexpected argument 'extra'", "see sluice --help"),
        (["check", "a\u{1B}b"], "unexpected argument 'a\\x1Bb'", "see sluice --help"),  // control bytes are never echoed raw
        (["chekc", "--config", "a\u{1B}b"], "unknown command 'chekc'", "did you mean 'check'?"),
        (["--"], "unexpected argument '--'", "see sluice --help"),
        (["-"], "unexpected argument '-'", "see sluice --help"),
        (["--log-stdout=on"], "--log-stdout takes no value", "write --log-stdout alone"),
        (["--log-stdout="], "--log-stdout takes no value", "write --log-stdout alone"),
        (["--log-stdout", "on"], "unexpected argument 'on': --log-stdout takes no value", "write --log-stdout alone"),
        (["--log-stdout", "--log-stdout"], "--log-stdout given more than once", "keep one --log-stdout; see sluice --help"),
        (["--log-stdot"], "unknown flag '--log-stdot'", "did you mean --log-stdout? see sluice --help"),
        (["--logfile", "x"], "unknown flag '--logfile'", "did you mean --log-file? see sluice --help"),
        (["--log-file"], "missing value for --log-file: expected PATH", "e.g. --log-file /var/log/sluice/completions.jsonl"),
        (["--log-file", "--log-stdout"], "missing value for --log-file", "e.g. --log-file /var/log/sluice/completions.jsonl"),
        (["--log-file="], "missing value for --log-file", "e.g. --log-file /var/log/sluice/completions.jsonl"),
        (["--log-file", "a", "--log-file", "b"], "--log-file given more than once", "keep one --log-file; see sluice --help"),
        (["--admin"], "missing value for --admin: expected ADDR", "e.g. --admin 127.0.0.1:9901"),
        (["--admin", "9901"], "--admin: bad listen address '9901': missing port", "see sluice --help"),
        (["--admin", "http://127.0.0.1:9901"], "--admin: bad listen address 'http://127.0.0.1:9901': a listen address has no scheme",
         "see sluice --help"),
        (["--admin", ":1", "--admin", ":2"], "--admin given more than once", "keep one --admin; see sluice --help"),
        (["check", "--config", "c", "--admin", ":1"], "'--admin' is not accepted by 'sluice check'", "'sluice check' takes only --config; see sluice --help"),
        (["check", "--config", "c", "--log-stdout"], "'--log-stdout' is not accepted by 'sluice check'", "'sluice check' takes only --config; see sluice --help"),
        (["demo", "--config", "c", "--log-file", "x"], "'--config' is not accepted by 'sluice demo'",
         "sluice demo runs its own backend; to proxy yours, run `sluice --config c --log-file x`"),
        (["demo", "--lsiten", ":1"], "unknown flag '--lsiten'", "did you mean --listen? see sluice --help"),
        (["demo", "--backend-port"], "missing value for --backend-port: expected N", "e.g. --backend-port 8000"),
        (["demo", "--backend-port", "65536"], "--backend-port must be a whole number from 0 to 65535, got '65536'",
         "e.g. --backend-port 8000"),
        (["demo", "--backend-port", "-1"], "--backend-port must be a whole number from 0 to 65535, got '-1'", "e.g. --backend-port 8000"),
        (["demo", "--backend-port=x"], "--backend-port must be a whole number from 0 to 65535, got 'x'", "e.g. --backend-port 8000"),
        (["demo", "--backend-port", "1", "--backend-port", "2"], "--backend-port given more than once",
         "keep one --backend-port; see sluice --help"),
        (["demo", "--backend-prot", "1"], "unknown flag '--backend-prot'", "did you mean --backend-port? see sluice --help"),
        (["demo", "--backend", "1"], "unknown flag '--backend'", "did you mean --backend-port? see sluice --help"),
        (["--backend", "http://x"], "unknown flag '--backend'", "did you mean --upstream? see sluice --help"),
        (["--backend-port", "8000"], "'--backend-port' is only accepted by 'sluice demo'",
         "it places the demo's own backend, e.g. `sluice demo --backend-port 8000`; the proxy's backend is set with --upstream or --config"),
        (["check", "--config", "c", "--backend-port", "1"], "'--backend-port' is only accepted by 'sluice demo'",
         "it places the demo's own backend, e.g. `sluice demo --backend-port 8000`; the proxy's backend is set with --upstream or --config"),
    ])
    func rejected(arguments: [String], message: String, hint: String) {
        do {
            let command = try CommandLineCommand.parse(arguments)
            Issue.record("expected an error, got \(command)")
        } catch {
            #expect(error.message.contains(message), "\(error.message)")
            #expect(error.hint == hint)
            #expect(error.description == "sluice: \(error.message)\nhint: \(error.hint)")
            #expect(!error.description.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
        }
    }

    /// The closest flag by edit distance (dashes ignored), then a unique prefix, then a synonym; nil when
    /// nothing is plausibly meant.
    @Test(arguments: [
        ("--lsiten", "--listen"), ("--listn", "--listen"), ("-listen", "--listen"), ("---listen", "--listen"),
        ("--LISTEN", "--listen"), ("--wokrers", "--workers"), ("--worker", "--workers"), ("--upstram", "--upstream"),
        ("--confg", "--config"), ("--conf", "--config"), ("--admn", "--admin"), ("--log_file", "--log-file"),
        ("--logstdout", "--log-stdout"), ("--verion", "--version"), ("--hepl", "--help"),
        ("--up", "--upstream"), ("--work", "--workers"),
        ("--port", "--listen"), ("-p", "--listen"), ("--bind", "--listen"), ("-c", "--config"), ("-f", "--config"),
        ("--backend", "--backend-port"), ("--upstream-port", "--backend-port"), ("--threads", "--workers"), ("-j", "--workers"), ("--metrics", "--admin"),
        ("-v", "--version"), ("-V", "--version"), ("--log", "--log-file"),
    ])
    func suggestedFlag(typed: String, expected: String) {
        let all = CommandLineCommand.Flag.allCases.map(\.rawValue) + ["--help", "--version"]
        #expect(CommandLineCommand.suggestedFlag(for: typed, among: all) == expected)
    }

    @Test(arguments: ["--definitely-not-a-flag", "--", "-", "-x", "--quiet", String(repeating: "x", count: 500)])
    func noSuggestion(typed: String) {
        let all = CommandLineCommand.Flag.allCases.map(\.rawValue) + ["--help", "--version"]
        #expect(CommandLineCommand.suggestedFlag(for: typed, among: all) == nil)
    }

    /// Only flags the command accepts are suggested.
    @Test func suggestionsStayWithinTheCommand() {
        #expect(CommandLineCommand.suggestedFlag(for: "--port", among: ["--config", "--help", "--version"]) == nil)
        #expect(CommandLineCommand.suggestedFlag(for: "--conifg", among: ["--config", "--help", "--version"]) == "--config")
    }

    @Test(arguments: [
        ("proxy.conf", "proxy.conf"), ("/etc/a-b_c.conf", "/etc/a-b_c.conf"), ("[::1]:80", "[::1]:80"),
        ("my file", "'my file'"), ("it's", #"'it'\''s'"#), ("", "''"), ("$HOME", "'$HOME'"), ("a;b", "'a;b'"),
    ])
    func shellWord(word: String, expected: String) {
        #expect(CommandLineCommand.shellWord(word) == expected)
    }

    @Test(arguments: [
        "--config", "--listen", "--upstream", "--workers", "--help", "-h", "--version", "check", "demo", "127.0.0.1:8080",
        "FILE: ok", "--log-file PATH", "--log-stdout", "--admin ADDR", "/metrics", "127.0.0.1:9901",
        "--backend-port N", "/v1/messages", "reload", "--pid N", "--timeout DURATION", "POST /reload", "GET /reload-status",
        "reload applied (generation N)",
    ])
    func helpMentions(word: String) {
        #expect(CommandLineCommand.helpText.contains(word))
    }

    /// Help lines stay within 80 columns so `--help` reads well in any terminal.
    @Test func helpFitsIn80Columns() {
        for line in CommandLineCommand.helpText.split(separator: "\n") {
            #expect(line.count <= 80, "\(line)")
        }
    }
}
