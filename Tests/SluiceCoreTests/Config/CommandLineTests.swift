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
        (["--help"], .help),
        (["-h"], .help),
        (["check", "--help"], .help),
        (["--bogus", "-h"], .help),
        (["--help", "--version"], .help),
        (["--version"], .version),
        (["demo", "--version"], .version),
    ] as [([String], CommandLineCommand)])
    func accepted(arguments: [String], expected: CommandLineCommand) throws {
        #expect(try CommandLineCommand.parse(arguments) == expected)
    }

    @Test(arguments: [
        (["--lsiten", ":80"], "unknown flag '--lsiten' (did you mean '--listen'?)"),
        (["--port", "80"], "unknown flag '--port'"),
        (["--verison"], "unknown flag '--verison' (did you mean '--version'?)"),
        (["-c", "x"], "unknown flag '-c'"),
        (["--listen"], "missing value for --listen: expected ADDR, e.g. --listen 127.0.0.1:8080"),
        (["--listen="], "missing value for --listen"),
        (["--listen", "--workers", "2"], "missing value for --listen"),
        (["--config"], "missing value for --config: expected FILE"),
        (["--listen", "nope"], "--listen: bad listen address 'nope': missing port"),
        (["--workers", "0"], "--workers must be a whole number from 1 to 256, got '0'"),
        (["--workers", "x"], "--workers must be a whole number from 1 to 256, got 'x'"),
        (["--workers=257"], "got '257'"),
        (["--upstream", "ftp://x"], "--upstream: bad upstream URL 'ftp://x': unsupported scheme 'ftp'"),
        (["--upstream", "localhost:8000"], "--upstream: bad upstream URL 'localhost:8000': missing scheme"),
        (["--workers", "2", "--workers", "3"], "--workers given more than once"),
        (["--config", "a", "--config", "b"], "--config given more than once"),
        (["--upstream", "http://a", "--upstream", "http://b"], "--upstream given more than once"),
        (["check"], "'sluice check' needs --config FILE"),
        (["check", "--listen", ":80"], "'--listen' is not accepted by 'sluice check'"),
        (["demo", "--upstream", "http://x"], "'--upstream' is not accepted by 'sluice demo'"),
        (["demo", "--config", "x"], "'--config' is not accepted by 'sluice demo'"),
        (["chekc"], "unknown command 'chekc' (did you mean 'check'?)"),
        (["run"], "unknown command 'run'"),
        (["--workers", "2", "demo"], "unexpected argument 'demo' (commands come first: sluice demo ...)"),
        (["check", "--config", "a", "extra"], "unexpected argument 'extra'"),
        (["--"], "unexpected argument '--'"),
        (["-"], "unexpected argument '-'"),
        (["--log-stdout=on"], "--log-stdout takes no value: write --log-stdout alone"),
        (["--log-stdout="], "--log-stdout takes no value"),
        (["--log-stdout", "on"], "unexpected argument 'on'"),
        (["--log-stdout", "--log-stdout"], "--log-stdout given more than once"),
        (["--log-stdot"], "unknown flag '--log-stdot' (did you mean '--log-stdout'?)"),
        (["--logfile", "x"], "unknown flag '--logfile' (did you mean '--log-file'?)"),
        (["--log-file"], "missing value for --log-file: expected PATH, e.g. --log-file /var/log/sluice/completions.jsonl"),
        (["--log-file", "--log-stdout"], "missing value for --log-file"),
        (["--log-file="], "missing value for --log-file"),
        (["--log-file", "a", "--log-file", "b"], "--log-file given more than once"),
        (["--admin"], "missing value for --admin: expected ADDR, e.g. --admin 127.0.0.1:9901"),
        (["--admin", "9901"], "--admin: bad listen address '9901': missing port"),
        (["--admin", "http://127.0.0.1:9901"], "--admin: bad listen address 'http://127.0.0.1:9901': a listen address has no scheme"),
        (["--admin", ":1", "--admin", ":2"], "--admin given more than once"),
        (["check", "--config", "c", "--admin", ":1"], "'--admin' is not accepted by 'sluice check'"),
        (["check", "--config", "c", "--log-stdout"], "'--log-stdout' is not accepted by 'sluice check'"),
        (["check", "--config", "c", "--log-file", "x"], "'--log-file' is not accepted by 'sluice check'"),
    ])
    func rejected(arguments: [String], message: String) {
        do {
            let command = try CommandLineCommand.parse(arguments)
            Issue.record("expected an error, got \(command)")
        } catch {
            #expect(error.file == "command line")
            #expect(error.line == 0)
            #expect(error.message.contains(message), "\(error.message)")
            #expect(error.description == "command line: \(error.message)")
        }
    }

    @Test(arguments: [
        "--config", "--listen", "--upstream", "--workers", "--help", "-h", "--version", "check", "demo", "127.0.0.1:8080",
        "FILE: ok", "--log-file PATH", "--log-stdout", "--admin ADDR", "/metrics", "127.0.0.1:9901",
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
