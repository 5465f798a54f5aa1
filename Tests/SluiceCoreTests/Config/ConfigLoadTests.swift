import Foundation
import Testing

@testable import SluiceCore

/// `Config.load(overrides:)`: file reading, flag override rules, and their errors.
@Suite struct ConfigLoadTests {
    /// Writes `text` to a fresh file under the temporary directory and returns its path.
    static func temporaryFile(_ text: String, name: String = "proxy.conf") throws -> String {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("sluice-config-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url.path
    }

    static let llm = "upstream llm {\n  server http://127.0.0.1:8000\n}\n"
    static let other = "upstream other {\n  server http://10.0.0.2:9000\n  max_idle 3\n}\n"

    /// One load: file text (nil = no file), flags, and either the expected result summary or
    /// an error fragment.
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var file: String?
        var overrides: CommandLineOverrides
        /// Expected `name=scheme://host:port` per upstream, in order.
        var upstreams: [String] = []
        /// Expected `prefix->upstream` per route, in lookup order.
        var routes: [String] = []
        var listeners: [String] = []
        var workers: Int?
        /// When set, the load must fail with this in the description.
        var error: String?
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "no file, no upstream", file: nil, overrides: CommandLineOverrides(),
             error: "command line: no upstream: pass --upstream URL or --config FILE"),
        Case(name: "no file, --listen only", file: nil, overrides: CommandLineOverrides(listeners: [ListenAddress(host: "::1", port: 1)]),
             error: "no upstream: pass --upstream URL or --config FILE"),
        Case(name: "no file, --upstream", file: nil, overrides: CommandLineOverrides(upstreamURL: "http://127.0.0.1:9000"),
             upstreams: ["default=http://127.0.0.1:9000"], routes: ["/->default"], listeners: ["127.0.0.1:8080"]),
        Case(name: "no file, all flags", file: nil,
             overrides: CommandLineOverrides(
                listeners: [ListenAddress(host: "::1", port: 9), ListenAddress(host: "0.0.0.0", port: 10)],
                upstreamURL: "https://api.example", workers: 3),
             upstreams: ["default=https://api.example:443"], routes: ["/->default"], listeners: ["[::1]:9", "0.0.0.0:10"], workers: 3),
        Case(name: "--listen replaces the file's listeners", file: "listen 127.0.0.1:8080\nlisten :81\n" + llm + "route / {\n upstream llm\n}\n",
             overrides: CommandLineOverrides(listeners: [ListenAddress(host: "0.0.0.0", port: 9000)]),
             upstreams: ["llm=http://127.0.0.1:8000"], routes: ["/->llm"], listeners: ["0.0.0.0:9000"]),
        Case(name: "--workers replaces workers", file: "workers 2\nlisten :1\n" + llm + "route / {\n upstream llm\n}\n",
             overrides: CommandLineOverrides(workers: 5),
             upstreams: ["llm=http://127.0.0.1:8000"], routes: ["/->llm"], listeners: ["0.0.0.0:1"], workers: 5),
        Case(name: "file workers kept without flag", file: "workers 2\nlisten :1\n" + llm + "route / {\n upstream llm\n}\n",
             overrides: CommandLineOverrides(),
             upstreams: ["llm=http://127.0.0.1:8000"], routes: ["/->llm"], listeners: ["0.0.0.0:1"], workers: 2),
        Case(name: "--upstream replaces the server behind route /",
             file: "listen :1\n" + other + llm + "route /v1/ {\n upstream other\n}\nroute / {\n upstream llm\n}\n",
             overrides: CommandLineOverrides(upstreamURL: "https://[::1]:8443"),
             upstreams: ["other=http://10.0.0.2:9000", "llm=https://[::1]:8443"], routes: ["/v1/->other", "/->llm"], listeners: ["0.0.0.0:1"]),
        Case(name: "--upstream adds default and / when there is no / route",
             file: "listen :1\n" + other + "route /v1/ {\n upstream other\n}\n",
             overrides: CommandLineOverrides(upstreamURL: "http://b:2"),
             upstreams: ["other=http://10.0.0.2:9000", "default=http://b:2"], routes: ["/v1/->other", "/->default"], listeners: ["0.0.0.0:1"]),
        Case(name: "--upstream completes a file with no upstream or route", file: "listen :1\n",
             overrides: CommandLineOverrides(upstreamURL: "http://b:2"),
             upstreams: ["default=http://b:2"], routes: ["/->default"], listeners: ["0.0.0.0:1"]),
        Case(name: "--upstream fills an upstream that has no server", file: "listen :1\nupstream llm {\n}\nroute / {\n upstream llm\n}\n",
             overrides: CommandLineOverrides(upstreamURL: "http://b:2"),
             upstreams: ["llm=http://b:2"], routes: ["/->llm"], listeners: ["0.0.0.0:1"]),
        Case(name: "--upstream cannot add default when the name is taken",
             file: "listen :1\nupstream default {\n server http://a\n}\nroute /v1/ {\n upstream default\n}\n",
             overrides: CommandLineOverrides(upstreamURL: "http://b:2"),
             error: "command line: --upstream would add upstream 'default' for route '/', but line 2 already declares an upstream named 'default'"),
        Case(name: "--listen supplies the missing listener", file: llm + "route / {\n upstream llm\n}\n",
             overrides: CommandLineOverrides(listeners: [ListenAddress(host: "127.0.0.1", port: 0)]),
             upstreams: ["llm=http://127.0.0.1:8000"], routes: ["/->llm"], listeners: ["127.0.0.1:0"]),
        Case(name: "file without listen and no --listen", file: llm + "route / {\n upstream llm\n}\n",
             overrides: CommandLineOverrides(), error: "proxy.conf: no listener: add 'listen ADDRESS'"),
        Case(name: "file errors keep their line", file: "listen :1\nwokers 2\n",
             overrides: CommandLineOverrides(upstreamURL: "http://b"), error: "proxy.conf:2: unknown key 'wokers'"),
        Case(name: "programmatic bad workers", file: nil, overrides: CommandLineOverrides(upstreamURL: "http://b", workers: 0),
             error: "command line: --workers must be a whole number from 1 to 256, got '0'"),
        Case(name: "programmatic bad upstream URL", file: nil, overrides: CommandLineOverrides(upstreamURL: "b:80"),
             error: "command line: --upstream: bad upstream URL 'b:80': missing scheme"),
    ]

    @Test(arguments: cases)
    func overrideRules(_ c: Case) throws {
        var overrides = c.overrides
        if let text = c.file {
            overrides.configPath = try Self.temporaryFile(text)
        }
        do {
            let config = try Config.load(overrides: overrides)
            #expect(c.error == nil, "expected an error containing \(c.error ?? "")")
            #expect(config.upstreams.map { "\($0.name)=\($0)" } == c.upstreams)
            #expect(config.routes.map { "\($0.prefix)->\($0.upstream)" } == c.routes)
            #expect(config.listeners.map(\.description) == c.listeners)
            #expect(config.workers == (c.workers ?? Config.defaultWorkerCount()))
            #expect(config.sourcePath == overrides.configPath)
        } catch {
            guard let expected = c.error else {
                Issue.record("unexpected error: \(error)")
                return
            }
            // Replace the temporary path with a stable name before comparing.
            let description = overrides.configPath.map { error.description.replacing($0, with: "proxy.conf") } ?? error.description
            #expect(description.contains(expected), "\(description)")
        }
    }

    /// One load exercising `--log-file`, `--log-stdout` and `--admin`. `$DIR` in the file
    /// text and in `logFile` stands for a fresh temporary directory (the config file's).
    struct LogCase: CustomTestStringConvertible, Sendable {
        var name: String
        /// Config file text (nil = no file; `--upstream` is then added).
        var file: String?
        var logFile: String? = nil
        var logStdout = false
        var admin: String? = nil
        var listen: String? = nil
        /// Expected log file (with `$DIR`), stdout and admin address.
        var expectedFile: String? = nil
        var expectedStdout = true
        var expectedAdmin: String? = nil
        /// When set, the load must fail with this in the description (`proxy.conf` stands
        /// for the temporary file's path).
        var error: String? = nil
        var testDescription: String { name }
    }

    static let minimal = "listen 127.0.0.1:8080\n" + llm + "route / {\n upstream llm\n}\n"

    static let logCases: [LogCase] = [
        LogCase(name: "no flags, no log block", file: minimal),
        LogCase(name: "--log-file alone turns stdout off", file: nil, logFile: "$DIR/c.jsonl",
                expectedFile: "$DIR/c.jsonl", expectedStdout: false),
        LogCase(name: "--log-stdout alone", file: nil, logStdout: true),
        LogCase(name: "--log-file and --log-stdout", file: nil, logFile: "$DIR/c.jsonl", logStdout: true,
                expectedFile: "$DIR/c.jsonl", expectedStdout: true),
        LogCase(name: "--log-file replaces the file's", file: minimal + "log {\n file $DIR/a.jsonl\n}\n", logFile: "$DIR/b.jsonl",
                expectedFile: "$DIR/b.jsonl", expectedStdout: false),
        LogCase(name: "--log-file replaces a file in a missing directory",
                file: minimal + "log {\n file /nonexistent-sluice-dir/a.jsonl\n}\n", logFile: "$DIR/b.jsonl",
                expectedFile: "$DIR/b.jsonl", expectedStdout: false),
        LogCase(name: "--log-file after file off", file: minimal + "log {\n file off\n}\n", logFile: "$DIR/b.jsonl",
                expectedFile: "$DIR/b.jsonl", expectedStdout: false),
        LogCase(name: "explicit stdout on survives --log-file", file: minimal + "log {\n stdout on\n}\n", logFile: "$DIR/b.jsonl",
                expectedFile: "$DIR/b.jsonl", expectedStdout: true),
        LogCase(name: "--log-stdout beats stdout off", file: minimal + "log {\n file $DIR/a.jsonl\n stdout off\n}\n", logStdout: true,
                expectedFile: "$DIR/a.jsonl", expectedStdout: true),
        LogCase(name: "file's log kept without flags", file: minimal + "log {\n file $DIR/a.jsonl\n}\n",
                expectedFile: "$DIR/a.jsonl", expectedStdout: false),
        LogCase(name: "--log-file in a missing directory", file: nil, logFile: "/nonexistent-sluice-dir/c.jsonl",
                error: "command line: --log-file: directory '/nonexistent-sluice-dir' does not exist"),
        LogCase(name: "--log-file is a directory", file: nil, logFile: "/tmp",
                error: "command line: --log-file: log file '/tmp' is a directory"),
        LogCase(name: "file's log directory missing", file: minimal + "log {\n file /nonexistent-sluice-dir/a.jsonl\n}\n",
                error: "proxy.conf:9: directory '/nonexistent-sluice-dir' does not exist"),
        LogCase(name: "programmatic empty --log-file", file: nil, logFile: "", error: "command line: --log-file needs a PATH"),

        LogCase(name: "--admin without a file", file: nil, admin: "127.0.0.1:9901", expectedAdmin: "127.0.0.1:9901"),
        LogCase(name: "--admin replaces the block's listen", file: minimal + "admin {\n listen 127.0.0.1:9901\n}\n",
                admin: "[::1]:9902", expectedAdmin: "[::1]:9902"),
        LogCase(name: "--admin fills an empty admin block", file: minimal + "admin {\n}\n",
                admin: "127.0.0.1:9902", expectedAdmin: "127.0.0.1:9902"),
        LogCase(name: "admin block kept without flags", file: minimal + "admin {\n listen 127.0.0.1:9901\n}\n",
                expectedAdmin: "127.0.0.1:9901"),
        LogCase(name: "empty admin block without --admin", file: minimal + "admin {\n}\n",
                error: "proxy.conf:8: the 'admin' block has no 'listen'"),
        LogCase(name: "--admin on the default listener", file: nil, admin: "127.0.0.1:8080",
                error: "command line: --admin '127.0.0.1:8080' is also a public listener (the default listener); give the admin listener its own port"),
        LogCase(name: "--admin on a file's listener", file: minimal, admin: "127.0.0.1:8080",
                error: "command line: --admin '127.0.0.1:8080' is also a public listener (line 1 of proxy.conf)"),
        LogCase(name: "--admin under a --listen wildcard", file: nil, admin: "127.0.0.1:9000", listen: ":9000",
                error: "command line: --admin '127.0.0.1:9000' overlaps public listener '0.0.0.0:9000' (from --listen)"),
        LogCase(name: "file's admin under a --listen wildcard", file: minimal + "admin {\n listen 127.0.0.1:9000\n}\n", listen: ":9000",
                error: "proxy.conf:9: admin listen address '127.0.0.1:9000' overlaps public listener '0.0.0.0:9000' (from --listen)"),
        LogCase(name: "--listen moves the public listener off the admin address",
                file: "listen 127.0.0.1:9901\n" + llm + "route / {\n upstream llm\n}\nadmin {\n listen 127.0.0.1:9901\n}\n",
                listen: "127.0.0.1:8080", expectedAdmin: "127.0.0.1:9901"),
        LogCase(name: "--admin moves the admin listener off a public address",
                file: "listen 127.0.0.1:9901\n" + llm + "route / {\n upstream llm\n}\nadmin {\n listen 127.0.0.1:9901\n}\n",
                admin: "127.0.0.1:9902", expectedAdmin: "127.0.0.1:9902"),
    ]

    @Test(arguments: logCases)
    func logAndAdminFlags(_ c: LogCase) throws {
        // A directory of its own per case, also when there is no config file.
        let configPath = try Self.temporaryFile(c.file ?? "")
        let directory = String(configPath.dropLast("/proxy.conf".count))
        func expand(_ text: String) -> String { text.replacing("$DIR", with: directory) }
        if let text = c.file {
            try Data(expand(text).utf8).write(to: URL(fileURLWithPath: configPath))
        }
        var overrides = CommandLineOverrides(
            configPath: c.file == nil ? nil : configPath,
            upstreamURL: c.file == nil ? "http://127.0.0.1:8000" : nil,
            logFile: c.logFile.map(expand), logStdout: c.logStdout,
            admin: try c.admin.map { try ListenAddress(parsing: $0) })
        if let listen = c.listen { overrides.listeners = [try ListenAddress(parsing: listen)] }
        do {
            let config = try Config.load(overrides: overrides)
            #expect(c.error == nil, "expected an error containing \(c.error ?? "")")
            #expect(config.log.file == c.expectedFile.map(expand))
            #expect(config.log.stdout == c.expectedStdout)
            #expect(config.admin?.description == c.expectedAdmin)
        } catch {
            guard let expected = c.error else {
                Issue.record("unexpected error: \(error)")
                return
            }
            let description = error.description.replacing(configPath, with: "proxy.conf")
            #expect(description.contains(expand(expected)), "\(description)")
        }
    }

    @Test func loadedFileEqualsParsedText() throws {
        let text = "listen :1\n" + Self.llm + "route / {\n upstream llm\n}\n"
        let path = try Self.temporaryFile(text)
        let loaded = try Config.load(overrides: CommandLineOverrides(configPath: path))
        #expect(loaded == (try Config.parse(text: text, file: path)))
    }

    @Test func missingFileReportsErrno() {
        let path = "/nonexistent-sluice-dir/proxy.conf"
        #expect {
            try Config.load(overrides: CommandLineOverrides(configPath: path))
        } throws: { error in
            (error as? ConfigError)?.description == "\(path): cannot open: No such file or directory"
        }
    }

    @Test func directoryReportsErrno() throws {
        let path = try Self.temporaryFile("")
        let directory = String(path.dropLast("/proxy.conf".count))
        #expect {
            try Config.load(overrides: CommandLineOverrides(configPath: directory))
        } throws: { error in
            (error as? ConfigError)?.description == "\(directory): cannot read: Is a directory"
        }
    }

    @Test func oversizedFileIsRejected() throws {
        let path = try Self.temporaryFile(String(repeating: "#", count: ConfigFile.maximumBytes + 1))
        #expect {
            try Config.load(overrides: CommandLineOverrides(configPath: path))
        } throws: { error in
            let error = error as? ConfigError
            return error?.line == 0 && error?.message.contains("larger than 1 MiB") == true
        }
    }

    @Test func fileAtTheSizeLimitIsRead() throws {
        let body = "listen :1\n" + Self.llm + "route / {\n upstream llm\n}\n"
        let padding = String(repeating: "#", count: ConfigFile.maximumBytes - body.utf8.count - 1) + "\n"
        let path = try Self.temporaryFile(padding + body)
        let config = try Config.load(overrides: CommandLineOverrides(configPath: path))
        #expect(config.upstreams.map(\.name) == ["llm"])
    }
}
