/// Operational messages: one JSON object per line on stderr, written with a single write(2) so lines
/// from several loop threads never interleave. Used at start-up and on error paths, never per chunk.
public enum OpLog {
    public enum Level: Int, Sendable, Comparable {
        case debug, info, warn, error

        var name: String {
            switch self {
            case .debug: "debug"
            case .info: "info"
            case .warn: "warn"
            case .error: "error"
            }
        }

        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }

        /// The level spelled `name` (debug, info, warn, error), or nil.
        public init?(name: String) {
            guard let level = [Level.debug, .info, .warn, .error].first(where: { $0.name == name }) else { return nil }
            self = level
        }
    }

    /// A JSON value for a field.
    public enum Value: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
        case string(String)
        case int(Int)
        case bool(Bool)
        case strings([String])
        /// Pre-rendered JSON, e.g. an array of objects.
        case json(String)

        public init(stringLiteral value: String) { self = .string(value) }
        public init(integerLiteral value: Int) { self = .int(value) }
        public init(booleanLiteral value: Bool) { self = .bool(value) }
    }

    /// Messages below this level are dropped; set once at start-up before loops run.
    nonisolated(unsafe) public static var minimumLevel: Level = .info

    public static func debug(_ message: String, _ fields: KeyValuePairs<String, Value> = [:]) { write(.debug, message, fields) }
    public static func info(_ message: String, _ fields: KeyValuePairs<String, Value> = [:]) { write(.info, message, fields) }
    public static func warn(_ message: String, _ fields: KeyValuePairs<String, Value> = [:]) { write(.warn, message, fields) }
    public static func error(_ message: String, _ fields: KeyValuePairs<String, Value> = [:]) { write(.error, message, fields) }

    public static func write(_ level: Level, _ message: String, _ fields: KeyValuePairs<String, Value>) {
        guard level >= minimumLevel else { return }
        var line = "{\"ts\":\"\(timestamp())\",\"level\":\"\(level.name)\",\"msg\":"
        appendQuoted(message, to: &line)
        for (key, value) in fields {
            line += ","
            appendQuoted(key, to: &line)
            line += ":"
            render(value, to: &line)
        }
        line += "}\n"
        var bytes = line
        bytes.withUTF8 { utf8 in Syscall.writeStandardError(UnsafeRawBufferPointer(utf8)) }
    }

    /// Renders a value as JSON text.
    public static func render(_ value: Value, to line: inout String) {
        switch value {
        case .string(let text): appendQuoted(text, to: &line)
        case .int(let number): line += String(number)
        case .bool(let flag): line += flag ? "true" : "false"
        case .json(let raw): line += raw
        case .strings(let texts):
            line += "["
            for (index, text) in texts.enumerated() {
                if index > 0 { line += "," }
                appendQuoted(text, to: &line)
            }
            line += "]"
        }
    }

    /// Appends `text` as a JSON string literal (RFC 8259 §7 escaping).
    public static func appendQuoted(_ text: String, to line: inout String) {
        var quoted: [UInt8] = []
        JSONBytes.appendString(text, to: &quoted)
        line += String(decoding: quoted, as: UTF8.self)
    }

    /// RFC 3339 UTC with microseconds, like the completion record's `ts`, so the two logs interleave exactly.
    public static func timestamp() -> String {
        timestamp(microsecondsSinceEpoch: Syscall.wallClockMicroseconds())
    }

    /// `2026-12-07T12:09:55.123456Z` for a time in microseconds since the Unix epoch: the completion record's
    /// own formatting (no C library call), so the two logs' times read the same.
    static func timestamp(microsecondsSinceEpoch time: Int64) -> String {
        var out: [UInt8] = []
        CompletionRecord.appendTimestamp(microseconds: time, to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}
