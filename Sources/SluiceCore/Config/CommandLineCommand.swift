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

    /// Creates overrides; everything defaults to "not given".
    public init(
        configPath: String? = nil, listeners: [ListenAddress] = [], upstreamURL: String? = nil, workers: Int? = nil,
        logFile: String? = nil, logStdout: Bool = false, admin: ListenAddress? = nil
    ) {
        self.configPath = configPath
        self.listeners = listeners
        self.upstreamURL = upstreamURL
        self.workers = workers
        self.logFile = logFile
        self.logStdout = logStdout
        self.admin = admin
    }
}

/// What the user asked `sluice` to do, parsed from the arguments.
public enum CommandLineCommand: Sendable, Equatable {
    /// `sluice [flags]`: run the proxy with ``Config/load(overrides:)``.
    case run(CommandLineOverrides)
    /// `sluice check --config FILE`: validate the file, print `FILE: ok`, exit 0 (or 1).
    case check(configPath: String)
    /// `sluice demo [--listen ADDR]... [--workers N] [--log-file PATH] [--log-stdout] [--admin ADDR]`:
    /// embedded mock backend plus proxy.
    /// `configPath` and `upstreamURL` are always nil; empty `listeners` means 127.0.0.1:8080.
    case demo(CommandLineOverrides)
    /// `--help` or `-h` anywhere: print ``helpText``, exit 0.
    case help
    /// `--version` anywhere (and no help flag): print the version, exit 0.
    case version

    /// Usage text for `--help`: every command and flag.
    public static let helpText = """
        sluice: a reverse proxy for streaming (SSE) LLM endpoints

        Usage:
          sluice [--config FILE] [--listen ADDR]... [--upstream URL] [--workers N]
                 [--log-file PATH] [--log-stdout] [--admin ADDR]
          sluice check --config FILE
          sluice demo [--listen ADDR]... [--workers N]
                      [--log-file PATH] [--log-stdout] [--admin ADDR]
          sluice --help | -h
          sluice --version

        Commands:
          (none)          run the proxy
          check           validate FILE; print "FILE: ok" and exit 0, or the error
                          and exit 1
          demo            run an embedded mock LLM backend behind the proxy
                          (listens on 127.0.0.1:8080 unless --listen is given)

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
                          e.g. 127.0.0.1:9901;
                          replaces the 'admin' block's 'listen'; must not be a public
                          listener (default: no admin listener)
          -h, --help      print this help and exit
          --version       print the version and exit

        """

    /// Flags, as typed.
    private enum Flag: String, CaseIterable {
        case config = "--config"
        case listen = "--listen"
        case upstream = "--upstream"
        case workers = "--workers"
        case logFile = "--log-file"
        case logStdout = "--log-stdout"
        case admin = "--admin"

        /// Whether the flag takes a value; `--log-stdout` is a switch.
        var takesValue: Bool { self != .logStdout }

        /// Value placeholder and example, for "missing value" messages.
        var example: String {
            switch self {
            case .config: "FILE, e.g. --config proxy.conf"
            case .listen: "ADDR, e.g. --listen 127.0.0.1:8080"
            case .upstream: "URL, e.g. --upstream http://127.0.0.1:8000"
            case .workers: "N, e.g. --workers 4"
            case .logFile: "PATH, e.g. --log-file /var/log/sluice/completions.jsonl"
            case .logStdout: "no value"
            case .admin: "ADDR, e.g. --admin 127.0.0.1:9901"
            }
        }
    }

    /// Subcommand words, in the order they appear in the help.
    private static let commandWords = ["check", "demo"]

    /// Parses the arguments (without argv[0]).
    ///
    /// `--help`/`-h` anywhere wins, then `--version`. A command word (`check`, `demo`) must come
    /// first. Each flag may be given once, except `--listen`, which may repeat. A flag's value
    /// may not start with `--` (catches `--listen --workers 2`); `--log-stdout` takes none.
    /// - Throws: ``ConfigError`` with file ``ConfigError/commandLine`` and line 0, naming the
    ///   offending argument.
    public static func parse(_ arguments: [String]) throws(ConfigError) -> CommandLineCommand {
        if arguments.contains("--help") || arguments.contains("-h") { return .help }
        if arguments.contains("--version") { return .version }

        var rest = arguments[...]
        var commandWord: String?
        if let first = rest.first, !first.hasPrefix("-") {
            guard commandWords.contains(first) else {
                throw failure("unknown command \(ConfigValues.quoted(first))\(ConfigValues.didYouMean(first, among: commandWords)); see --help")
            }
            commandWord = first
            rest = rest.dropFirst()
        }
        let allowed: [Flag] =
            switch commandWord {
            case "check": [.config]
            case "demo": [.listen, .workers, .logFile, .logStdout, .admin]
            default: Flag.allCases
            }

        var overrides = CommandLineOverrides()
        while let argument = rest.popFirst() {
            guard argument.hasPrefix("-"), argument != "-", argument != "--" else {
                let hint = commandWords.contains(argument) ? " (commands come first: sluice \(argument) ...)" : ""
                throw failure("unexpected argument \(ConfigValues.quoted(argument))\(hint)")
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
                let known = Flag.allCases.map(\.rawValue) + ["--help", "--version"]
                throw failure("unknown flag \(ConfigValues.quoted(name))\(ConfigValues.didYouMean(name, among: known))")
            }
            guard allowed.contains(flag) else {
                throw failure("'\(flag.rawValue)' is not accepted by 'sluice \(commandWord ?? "")'")
            }
            if !flag.takesValue {
                if inlineValue != nil {
                    throw failure("\(flag.rawValue) takes no value: write \(flag.rawValue) alone")
                }
                try apply(flag, "", to: &overrides)
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
                throw failure("missing value for \(flag.rawValue): expected \(flag.example)")
            }
            try apply(flag, value, to: &overrides)
        }

        switch commandWord {
        case "check":
            guard let path = overrides.configPath else {
                throw failure("'sluice check' needs --config FILE")
            }
            return .check(configPath: path)
        case "demo":
            return .demo(overrides)
        default:
            return .run(overrides)
        }
    }

    /// Validates one flag's value and stores it.
    private static func apply(_ flag: Flag, _ value: String, to overrides: inout CommandLineOverrides) throws(ConfigError) {
        func once<T>(_ current: T?) throws(ConfigError) {
            if current != nil { throw failure("\(flag.rawValue) given more than once") }
        }
        switch flag {
        case .config:
            try once(overrides.configPath)
            overrides.configPath = value
        case .listen:
            let address = try ConfigError.locating(file: ConfigError.commandLine, line: 0, prefix: "--listen: ") {
                () throws(ConfigValueError) in try ConfigValues.listenAddress(value)
            }
            overrides.listeners.append(address)
        case .upstream:
            try once(overrides.upstreamURL)
            _ = try ConfigError.locating(file: ConfigError.commandLine, line: 0, prefix: "--upstream: ") {
                () throws(ConfigValueError) in try ConfigValues.upstreamURL(value)
            }
            overrides.upstreamURL = value
        case .workers:
            try once(overrides.workers)
            // No prefix: the message already starts with "--workers must be ...".
            overrides.workers = try ConfigError.locating(file: ConfigError.commandLine, line: 0) {
                () throws(ConfigValueError) in try ConfigValues.integer(value, in: Config.workerRange, what: "--workers")
            }
        case .logFile:
            // The directory is checked by Config.load, with the file's own `file` checks.
            try once(overrides.logFile)
            overrides.logFile = value
        case .logStdout:
            if overrides.logStdout { throw failure("\(flag.rawValue) given more than once") }
            overrides.logStdout = true
        case .admin:
            try once(overrides.admin)
            overrides.admin = try ConfigError.locating(file: ConfigError.commandLine, line: 0, prefix: "--admin: ") {
                () throws(ConfigValueError) in try ConfigValues.listenAddress(value)
            }
        }
    }

    private static func failure(_ message: String) -> ConfigError {
        ConfigError(file: ConfigError.commandLine, line: 0, message: message)
    }
}
