/// Values given on the command line that override or replace the config file.
public struct CommandLineOverrides: Sendable, Equatable {
    /// `--config FILE`.
    public var configPath: String?
    /// `--listen ADDR`, in order; when non-empty it replaces the file's listeners.
    public var listeners: [ListenAddress]
    /// `--upstream URL`, already checked to be a valid upstream URL by the parser.
    public var upstreamURL: String?
    /// `--workers N`, 1...256.
    public var workers: Int?
    /// `--log-file PATH`: replaces the log `file`. Its directory is checked at load.
    public var logFile: String?
    /// `--log-stdout`: write completion records to stdout whatever the file says.
    public var logStdout: Bool
    /// `--admin ADDR`: replaces the `admin` block's `listen` (and enables the admin listener).
    public var admin: ListenAddress?
    /// `--backend-port N` (`demo` only): the port, 0-65535, of the mock backend on 127.0.0.1; nil or 0 lets
    /// the kernel pick a free one. ``Config/load(overrides:)`` ignores it.
    public var backendPort: Int?
    /// `--pid N` (`reload` only): the process to send SIGHUP.
    public var pid: Int?
    /// `--timeout DURATION` (`reload` only), in milliseconds.
    public var timeout: Int?

    /// Creates overrides; everything defaults to "not given".
    public init(
        configPath: String? = nil, listeners: [ListenAddress] = [], upstreamURL: String? = nil, workers: Int? = nil,
        logFile: String? = nil, logStdout: Bool = false, admin: ListenAddress? = nil, backendPort: Int? = nil
    ) {
        self.configPath = configPath
        self.listeners = listeners
        self.upstreamURL = upstreamURL
        self.workers = workers
        self.logFile = logFile
        self.logStdout = logStdout
        self.admin = admin
        self.backendPort = backendPort
    }
}

/// What the user asked `sluice` to do, parsed from the arguments.
public enum CommandLineCommand: Sendable, Equatable {
    /// `sluice [flags]`: run the proxy with ``Config/load(overrides:)``.
    case run(CommandLineOverrides)
    /// `sluice check --config FILE`: validate the file, print `FILE: ok`, exit 0 (or 1).
    case check(configPath: String)
    /// `sluice demo [--listen ADDR]... [--workers N] [--log-file PATH] [--log-stdout] [--admin ADDR]
    /// [--backend-port N]`: embedded mock backend plus proxy.
    /// `configPath` and `upstreamURL` are always nil; empty `listeners` means 127.0.0.1:8080.
    case demo(CommandLineOverrides)
    /// `--help` or `-h` anywhere: print ``helpText``, exit 0.
    case help
    /// `--version` anywhere (and no help flag): print ``BuildInfo/versionLine``, exit 0.
    case version
    /// `sluice reload --admin ADDR | --pid N [--admin ADDR] [--timeout DURATION]`: have a running sluice re-read
    /// its configuration and print the outcome.
    case reload(ReloadOptions)

    /// Usage text for `--help`: every command and flag.
    public static let helpText = """
        sluice: a reverse proxy for streaming (SSE) LLM endpoints

        Usage:
          sluice [--config FILE] [--listen ADDR]... [--upstream URL] [--workers N]
                 [--log-file PATH] [--log-stdout] [--admin ADDR]
          sluice check --config FILE
          sluice reload --admin ADDR | --pid N [--admin ADDR] [--timeout DURATION]
          sluice demo [--listen ADDR]... [--workers N] [--backend-port N]
                      [--log-file PATH] [--log-stdout] [--admin ADDR]
          sluice --help | -h
          sluice --version

        Commands:
          (none)          run the proxy
          check           validate FILE; print "FILE: ok" and exit 0, or the error
                          and exit 1
          reload          have a running sluice re-read its configuration: POST
                          /reload to its admin listener (--admin) and print
                          "reload applied (generation N)" or the error with
                          FILE:LINE; exit 0 or 1. --pid N sends SIGHUP instead and,
                          with --admin, waits for the outcome in /reload-status
          demo            run an embedded mock LLM backend behind the proxy
                          (listens on 127.0.0.1:8080 unless --listen is given);
                          the backend speaks OpenAI's /v1/chat/completions and
                          Anthropic's /v1/messages

        Flags (write --flag VALUE or --flag=VALUE):
          --config FILE   read the configuration from FILE (see proxy.conf.example)
          --listen ADDR   accept clients on ADDR: HOST:PORT, [IPv6]:PORT or :PORT;
                          repeatable; replaces the file's 'listen' lines
                          (default without --config: 127.0.0.1:8080)
          --upstream URL  backend http://HOST[:PORT] or https://HOST[:PORT]; replaces
                          the server of the upstream that route '/' uses, or adds
                          upstream 'default' with route '/'; required without --config
          --workers N     worker threads, 1-256 (default: number of online CPUs)
          --log-file PATH append completion records (JSON lines) to PATH; replaces the
                          'log' block's 'file'; the directory must exist
          --log-stdout    also write completion records to stdout (the default only
                          when no log file is set)
          --admin ADDR    serve GET /metrics (Prometheus), /healthz and /readyz on ADDR,
                          e.g. 127.0.0.1:9901, and the operator endpoints
                          POST /reload and GET /reload-status;
                          replaces the 'admin' block's 'listen'; must not be a public
                          listener (default: no admin listener)
          --backend-port N
                          demo only: the mock backend listens on 127.0.0.1:N,
                          0-65535 (default 0: any free port)
          --pid N         reload only: send SIGHUP to process N (checked to be sluice)
          --timeout DURATION
                          reload only: how long to wait for the outcome, e.g.
                          500ms, 30s, 2m (default 30s)
          -h, --help      print this help and exit
          --version       print the version and the commit it was built from, and exit

        """

    /// Flags, as typed.
    enum Flag: String, CaseIterable, Sendable {
        case config = "--config"
        case listen = "--listen"
        case upstream = "--upstream"
        case workers = "--workers"
        case logFile = "--log-file"
        case logStdout = "--log-stdout"
        case admin = "--admin"
        case backendPort = "--backend-port"
        case pid = "--pid"
        case timeout = "--timeout"

        /// Whether the flag takes a value; `--log-stdout` is a switch.
        var takesValue: Bool { self != .logStdout }

        /// Whether the flag may be given more than once.
        var repeats: Bool { self == .listen }

        /// The value's placeholder in the help, for "missing value" messages.
        var placeholder: String {
            switch self {
            case .config: "FILE"
            case .listen, .admin: "ADDR"
            case .upstream: "URL"
            case .workers, .backendPort, .pid: "N"
            case .timeout: "DURATION"
            case .logFile: "PATH"
            case .logStdout: ""
            }
        }

        /// The flag with a typical value, for hints: `--listen 127.0.0.1:8080`.
        var example: String {
            switch self {
            case .config: "--config proxy.conf"
            case .listen: "--listen 127.0.0.1:8080"
            case .upstream: "--upstream http://127.0.0.1:8000"
            case .workers: "--workers 4"
            case .logFile: "--log-file /var/log/sluice/completions.jsonl"
            case .logStdout: "--log-stdout"
            case .admin: "--admin 127.0.0.1:9901"
            case .backendPort: "--backend-port 8000"
            case .pid: "--pid 1234"
            case .timeout: "--timeout 30s"
            }
        }

        /// Names other tools use for the same thing (`--port`, `-c`, `--threads`), without dashes: an unknown
        /// flag spelled like one of them is pointed here even though no edit distance would.
        var synonyms: [String] {
            switch self {
            case .config: ["c", "f", "conf", "config-file", "configuration", "file"]
            case .listen: ["l", "p", "port", "bind", "address", "addr", "host", "listen-address"]
            case .upstream: ["u", "backend", "origin", "target", "server", "upstream-url", "proxy-pass"]
            case .workers: ["j", "w", "t", "threads", "thread", "worker-threads", "worker-processes", "procs"]
            case .logFile: ["log", "logfile", "access-log", "completion-log"]
            case .logStdout: ["stdout"]
            case .admin: ["metrics", "metrics-address", "admin-address", "admin-listen"]
            case .backendPort: ["origin-port", "upstream-port", "mock-port", "demo-port"]
            case .pid: ["process", "process-id"]
            case .timeout: ["wait", "deadline", "max-time"]
            }
        }
    }

    /// Subcommand words, in the order they appear in the help.
    private static let commandWords = ["check", "reload", "demo"]

    /// The flags `sluice WORD` accepts (nil: no command word, run the proxy).
    static func flags(acceptedBy commandWord: String?) -> [Flag] {
        switch commandWord {
        case "check": [.config]
        case "demo": [.listen, .workers, .logFile, .logStdout, .admin, .backendPort]
        case "reload": [.admin, .pid, .timeout]
        default: Flag.allCases.filter { ![.backendPort, .pid, .timeout].contains($0) }
        }
    }

    /// Parses the arguments (without argv[0]).
    ///
    /// `--help`/`-h` anywhere wins, then `--version`. A command word (`check`, `demo`) must come
    /// first. Each flag may be given once, except `--listen`, which may repeat. A flag's value
    /// may not start with `--` (catches `--listen --workers 2`); `--log-stdout` takes none.
    /// - Throws: ``CommandLineError`` naming the offending argument, with a hint: the closest flag, the
    ///   command line the user probably meant, or where to look.
    public static func parse(_ arguments: [String]) throws(CommandLineError) -> CommandLineCommand {
        if arguments.contains("--help") || arguments.contains("-h") { return .help }
        if arguments.contains("--version") { return .version }

        var rest = arguments[...]
        var commandWord: String?
        if let first = rest.first, !first.hasPrefix("-") {
            guard commandWords.contains(first) else {
                throw unexpected(at: 0, in: arguments, commandWord: nil, given: [])
            }
            commandWord = first
            rest = rest.dropFirst()
        }
        let allowed = flags(acceptedBy: commandWord)

        var overrides = CommandLineOverrides()
        var given: [Flag] = []
        while let argument = rest.popFirst() {
            // `rest` is a slice of `arguments`, so its indices are positions in `arguments`.
            let position = rest.startIndex - 1
            guard argument.hasPrefix("-"), argument != "-", argument != "--" else {
                throw unexpected(at: position, in: arguments, commandWord: commandWord, given: given)
            }
            let name: String
            var inlineValue: String?
            if argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                inlineValue = String(argument[argument.index(after: equals)...])
            } else {
                name = argument
            }
            guard let flag = Flag(rawValue: name) else {
                let closest = suggestedFlag(for: name, among: allowed.map(\.rawValue) + ["--help", "--version"])
                throw CommandLineError("unknown flag \(ConfigValues.quoted(name))",
                                       hint: closest.map { "did you mean \($0)? see sluice --help" } ?? "see sluice --help")
            }
            guard allowed.contains(flag) else {
                throw notAccepted(flag, at: position, in: arguments, commandWord: commandWord ?? "")
            }
            if given.contains(flag) && !flag.repeats {
                throw CommandLineError("\(flag.rawValue) given more than once", hint: "keep one \(flag.rawValue); see sluice --help")
            }
            given.append(flag)
            if !flag.takesValue {
                if inlineValue != nil {
                    throw CommandLineError("\(flag.rawValue) takes no value", hint: "write \(flag.rawValue) alone")
                }
                overrides.logStdout = true
                continue
            }
            let value: String
            if let inlineValue {
                value = inlineValue
            } else if let next = rest.first, !next.hasPrefix("--") {
                value = next
                rest = rest.dropFirst()
            } else {
                value = ""
            }
            if value.isEmpty {
                throw CommandLineError("missing value for \(flag.rawValue): expected \(flag.placeholder)", hint: "e.g. \(flag.example)")
            }
            do throws(ConfigError) { try apply(flag, value, to: &overrides) } catch {
                // Value errors mostly show the expected form already; the hint then only points to the help.
                throw CommandLineError(error.message, hint: error.message.contains("e.g.") ? "see sluice --help" : "e.g. \(flag.example)")
            }
        }

        switch commandWord {
        case "check":
            guard let path = overrides.configPath else {
                throw CommandLineError("'sluice check' needs --config FILE", hint: "e.g. `sluice check --config proxy.conf`")
            }
            return .check(configPath: path)
        case "demo":
            return .demo(overrides)
        case "reload":
            guard overrides.admin != nil || overrides.pid != nil else {
                throw CommandLineError("'sluice reload' needs --admin ADDR or --pid N",
                                       hint: "e.g. `sluice reload --admin 127.0.0.1:9901` (the address of the admin listener)")
            }
            return .reload(ReloadOptions(admin: overrides.admin, pid: overrides.pid.map(Int32.init),
                                         timeoutMilliseconds: overrides.timeout ?? ReloadOptions.defaultTimeoutMilliseconds))
        default:
            return .run(overrides)
        }
    }

    /// Validates one flag's value and stores it; the caller has checked that a non-repeating flag is new.
    private static func apply(_ flag: Flag, _ value: String, to overrides: inout CommandLineOverrides) throws(ConfigError) {
        switch flag {
        case .config:
            overrides.configPath = value
        case .listen:
            let address = try ConfigError.locating(file: ConfigError.commandLine, line: 0, prefix: "--listen: ") {
                () throws(ConfigValueError) in try ConfigValues.listenAddress(value)
            }
            overrides.listeners.append(address)
        case .upstream:
            _ = try ConfigError.locating(file: ConfigError.commandLine, line: 0, prefix: "--upstream: ") {
                () throws(ConfigValueError) in try ConfigValues.upstreamURL(value)
            }
            overrides.upstreamURL = value
        case .workers:
            // No prefix: the message already starts with "--workers must be ...".
            overrides.workers = try ConfigError.locating(file: ConfigError.commandLine, line: 0) {
                () throws(ConfigValueError) in try ConfigValues.integer(value, in: Config.workerRange, what: "--workers")
            }
        case .logFile:
            // The directory is checked by Config.load, with the file's own `file` checks.
            overrides.logFile = value
        case .logStdout:
            overrides.logStdout = true
        case .admin:
            overrides.admin = try ConfigError.locating(file: ConfigError.commandLine, line: 0, prefix: "--admin: ") {
                () throws(ConfigValueError) in try ConfigValues.listenAddress(value)
            }
        case .backendPort:
            overrides.backendPort = try ConfigError.locating(file: ConfigError.commandLine, line: 0) {
                () throws(ConfigValueError) in try ConfigValues.integer(value, in: 0...65535, what: "--backend-port")
            }
        case .pid:
            // Above 1: pid 1 is init (or a container's entrypoint, which SIGHUP would likely end).
            overrides.pid = try ConfigError.locating(file: ConfigError.commandLine, line: 0) {
                () throws(ConfigValueError) in try ConfigValues.integer(value, in: 2...Int(Int32.max), what: "--pid")
            }
        case .timeout:
            let milliseconds = try ConfigError.locating(file: ConfigError.commandLine, line: 0, prefix: "--timeout: ") {
                () throws(ConfigValueError) in try ConfigValues.duration(value)
            }
            guard milliseconds > 0 else {
                throw ConfigError(file: ConfigError.commandLine, line: 0, message: "--timeout must be more than 0, got 'off'")
            }
            overrides.timeout = milliseconds
        }
    }

    // MARK: - Hints

    /// The flag an unknown flag most likely meant, or nil: the candidate (with its dashes) whose name is
    /// closest by edit distance (at most 1 edit, or a third of the name for longer ones), else the only
    /// candidate the name is a prefix of (`--up`), else the candidate whose synonyms include it (`--port`,
    /// `-c`). Dashes are ignored, so `-listen` and `--listen` are one edit apart from nothing.
    static func suggestedFlag(for typed: String, among candidates: [String]) -> String? {
        let word = String(typed.drop(while: { $0 == "-" })).lowercased()
        guard !word.isEmpty, word.utf8.count <= 64 else { return nil }
        let names = candidates.map { String($0.drop(while: { $0 == "-" })) }
        var best: (index: Int, distance: Int)?
        for (index, name) in names.enumerated() {
            let distance = ConfigValues.editDistance(Array(word.utf8), Array(name.utf8))
            if distance <= max(1, name.utf8.count / 3), distance < (best?.distance ?? .max) {
                best = (index, distance)
            }
        }
        if let best { return candidates[best.index] }
        let prefixed = names.indices.filter { word.utf8.count >= 2 && names[$0].hasPrefix(word) }
        if prefixed.count == 1 { return candidates[prefixed[0]] }
        for flag in Flag.allCases where flag.synonyms.contains(word) {
            if let index = candidates.firstIndex(of: flag.rawValue) { return candidates[index] }
        }
        if ["v", "ver"].contains(word), candidates.contains("--version") { return "--version" }
        return nil
    }

    /// The flag a bare value probably belonged to, judged by its shape: a URL is an upstream, HOST:PORT a
    /// listen address, a path (or anything, for `check`) a config file. Nil when that flag is not accepted
    /// here or was already given, or when the value holds control characters (it is not echoed).
    static func flag(forValue value: String, commandWord: String?, given: [Flag]) -> Flag? {
        guard !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return nil }
        let lowered = value.lowercased()
        let flag: Flag?
        if lowered.hasPrefix("http://") || lowered.hasPrefix("https://") {
            flag = .upstream
        } else if value.contains(":"), (try? ConfigValues.listenAddress(value)) != nil {
            flag = .listen
        } else if commandWord == "check" || value.contains("/") || value.contains(".") {
            flag = .config
        } else {
            flag = nil
        }
        guard let flag, flags(acceptedBy: commandWord).contains(flag), flag.repeats || !given.contains(flag) else { return nil }
        return flag
    }

    /// The error for a bare word at `position`: a misspelled or misplaced command word, a value whose flag
    /// was left out (`sluice check proxy.conf`), or a stray word.
    private static func unexpected(at position: Int, in arguments: [String], commandWord: String?, given: [Flag]) -> CommandLineError {
        let argument = arguments[position]
        let quoted = ConfigValues.quoted(argument)
        var others = arguments
        others.remove(at: position)
        if commandWords.contains(argument) {
            return CommandLineError("unexpected argument \(quoted): a command comes first",
                                    hint: meant([argument] + others, or: "write sluice \(argument) first"))
        }
        if position == 0, !argument.contains(where: { "./:".contains($0) }),
           let command = ConfigValues.suggestion(for: argument, among: commandWords) {
            return CommandLineError("unknown command \(quoted)", hint: meant([command] + others, or: "did you mean '\(command)'?"))
        }
        if let flag = flag(forValue: argument, commandWord: commandWord, given: given) {
            var fixed = arguments
            fixed.replaceSubrange(position...position, with: [flag.rawValue, argument])
            return CommandLineError("unexpected argument \(quoted)", hint: meant(fixed, or: "did you mean \(flag.rawValue) \(argument)?"))
        }
        if position > 0, arguments[position - 1] == Flag.logStdout.rawValue {
            return CommandLineError("unexpected argument \(quoted): --log-stdout takes no value", hint: "write --log-stdout alone")
        }
        if position == 0, argument != "-", argument != "--" {
            return CommandLineError("unknown command \(quoted)",
                                    hint: "the commands are check, reload and demo; the proxy runs without one: see sluice --help")
        }
        return CommandLineError("unexpected argument \(quoted)", hint: "see sluice --help")
    }

    /// The error for a flag the command word does not take.
    private static func notAccepted(_ flag: Flag, at position: Int, in arguments: [String], commandWord: String) -> CommandLineError {
        if flag == .pid || flag == .timeout {
            return CommandLineError("'\(flag.rawValue)' is only accepted by 'sluice reload'",
                                    hint: "e.g. `sluice reload \(flag == .pid ? "--pid 1234" : "--admin 127.0.0.1:9901 --timeout 30s")`")
        }
        if flag == .backendPort, commandWord != "demo" {
            // The proxy's backends come from --upstream or the file; only the demo starts one of its own.
            return CommandLineError("'--backend-port' is only accepted by 'sluice demo'",
                                    hint: "it places the demo's own backend, e.g. `sluice demo --backend-port 8000`; the proxy's backend is set with --upstream or --config")
        }
        let message = "'\(flag.rawValue)' is not accepted by 'sluice \(commandWord)'"
        if commandWord == "demo", flag == .upstream || flag == .config {
            // The demo brings its own backend; someone giving it theirs wants the proxy itself.
            let own = commandLine(Array(arguments.dropFirst())).map { "run `\($0)`" } ?? "leave out demo"
            return CommandLineError(message, hint: "sluice demo runs its own backend; to proxy yours, \(own)")
        }
        let accepted = flags(acceptedBy: commandWord).map(\.rawValue)
        let list = accepted.count == 1 ? "only " + accepted[0] : accepted.dropLast().joined(separator: ", ") + " and " + accepted.last!
        return CommandLineError(message, hint: "'sluice \(commandWord)' takes \(list); see sluice --help")
    }

    /// "did you mean `sluice ARGS`?", or `fallback` when ``commandLine(_:)`` gives nil.
    private static func meant(_ arguments: [String], or fallback: String) -> String {
        commandLine(arguments).map { "did you mean `\($0)`?" } ?? fallback
    }

    /// `sluice ARGS` with each argument quoted for a POSIX shell, or nil when an argument is too long or holds
    /// control characters to be echoed.
    static func commandLine(_ arguments: [String]) -> String? {
        var line = "sluice"
        for argument in arguments {
            guard argument.utf8.count <= 256, !argument.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                return nil
            }
            line += " " + shellWord(argument)
        }
        return line
    }

    /// `word` as a shell would need it typed: unchanged when it holds only safe characters, else in single quotes.
    static func shellWord(_ word: String) -> String {
        let safe = word.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(Character(scalar)) || "-_./:=@%+,[]".unicodeScalars.contains(scalar))
        }
        if safe && !word.isEmpty { return word }
        return "'" + word.replacing("'", with: #"'\''"#) + "'"
    }
}

/// A command-line mistake: what is wrong, and what to type instead. `sluice` prints it as two lines on
/// stderr (``description``) and exits 2, instead of the whole help.
public struct CommandLineError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong, quoting the offending argument: `unknown flag '--lsiten'`.
    public var message: String
    /// What to do about it: the closest flag (`did you mean --listen? see sluice --help`), the command line
    /// probably meant (``did you mean `sluice check --config proxy.conf`?``), an example, or at least
    /// `see sluice --help`. Never empty, never holds control characters.
    public var hint: String

    /// Creates an error with its hint.
    public init(_ message: String, hint: String) {
        self.message = message
        self.hint = hint
    }

    /// `sluice: MESSAGE` and `hint: HINT`, on two lines.
    public var description: String { "sluice: \(message)\nhint: \(hint)" }
}

/// What `sluice reload` reaches and how long it waits.
public struct ReloadOptions: Sendable, Equatable {
    public static let defaultTimeoutMilliseconds = 30_000

    /// `--admin ADDR`: where to `POST /reload` (alone) or poll `GET /reload-status` (with `pid`).
    public var admin: ListenAddress?
    /// `--pid N`: the process to send SIGHUP.
    public var pid: Int32?
    /// `--timeout DURATION`: connecting, waiting for the answer or polling, all told.
    public var timeoutMilliseconds: Int

    public init(admin: ListenAddress?, pid: Int32?, timeoutMilliseconds: Int = defaultTimeoutMilliseconds) {
        self.admin = admin
        self.pid = pid
        self.timeoutMilliseconds = timeoutMilliseconds
    }
}
