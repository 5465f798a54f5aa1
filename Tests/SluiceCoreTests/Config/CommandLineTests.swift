import Testing

@testable import SluiceCore

/// `CommandLineCommand.parse`: accepted forms and every rejection.
@Suite struct CommandLineTests {
    static let any = ListenAddress(host: "0.0.0.0", port: 80)
    static let v6 = ListenAddress(host: "::1", port: 81)

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

    @Test(arguments: ["--config", "--listen", "--upstream", "--workers", "--help", "-h", "--version", "check", "demo", "127.0.0.1:8080", "FILE: ok"])
    func helpMentions(word: String) {
        #expect(CommandLineCommand.helpText.contains(word))
    }
}
