/// A configuration problem: where it is and exactly what is wrong.
///
/// `description` is what `sluice check` and startup print, in the compiler-style form editors
/// can jump to: `proxy.conf:12: unknown key 'conect' in upstream 'llm' (did you mean 'connect'?)`.
/// When the problem is not tied to one line (a missing `listen`, an unreadable file, a bad
/// flag) `line` is 0 and the form is `proxy.conf: no listener ...` / `command line: ...`.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Path of the config file as given, or ``ConfigError/commandLine`` for flag errors.
    public var file: String
    /// 1-based line number, or 0 when the error is not about a particular line.
    public var line: Int
    /// What is wrong, including the offending text and the expected form.
    public var message: String

    /// The `file` used for errors in command-line flags.
    public static let commandLine = "command line"

    /// Creates an error; `line` 0 means "not line-specific".
    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    /// `file:line: message`, or `file: message` when `line` is 0.
    public var description: String {
        line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)"
    }
}

/// What is wrong with a single value (a duration, size, address, URL), before the caller
/// knows which file and line it came from.
struct ConfigValueError: Error, Equatable {
    /// Human-readable problem, quoting the value and naming the expected form.
    var message: String

    init(_ message: String) {
        self.message = message
    }
}

extension ConfigError {
    /// Runs a value parser and gives its error a place: `file`, `line`, and a `prefix` such
    /// as `"--listen: "` naming the flag.
    static func locating<T>(
        file: String, line: Int, prefix: String = "", _ parse: () throws(ConfigValueError) -> T
    ) throws(ConfigError) -> T {
        do throws(ConfigValueError) {
            return try parse()
        } catch {
            throw ConfigError(file: file, line: line, message: prefix + error.message)
        }
    }
}
