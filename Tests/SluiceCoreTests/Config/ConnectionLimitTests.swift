import Testing
@testable import SluiceCore

/// The default `max_connections` (issue 12, item 5): derived from the open-file limit, an explicit value winning.
@Suite("ConnectionLimit")
struct ConnectionLimitTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let limit: Int, workers: Int, listeners: Int, pooled: Int, expected: Int
        var testDescription: String { "nofile \(limit), \(workers) workers, \(listeners) listeners, pooled \(pooled) → \(expected)" }
    }

    @Test("max(64, (nofile − (32 + workers × (listeners + 2 + pooled))) / 2)", arguments: [
        Case(limit: 1024, workers: 1, listeners: 1, pooled: 64, expected: (1024 - 99) / 2),           // 462
        Case(limit: 1024, workers: 2, listeners: 1, pooled: 64, expected: (1024 - 32 - 2 * 67) / 2),  // 429
        Case(limit: 20_000, workers: 2, listeners: 2, pooled: 128, expected: (20_000 - 32 - 2 * 132) / 2),
        Case(limit: 1_048_576, workers: 8, listeners: 1, pooled: 64, expected: (1_048_576 - 32 - 8 * 67) / 2),
        Case(limit: 4096, workers: 1, listeners: 1, pooled: 0, expected: (4096 - 35) / 2),
        Case(limit: 256, workers: 1, listeners: 1, pooled: 64, expected: 78),
        Case(limit: 64, workers: 1, listeners: 1, pooled: 64, expected: 64),   // reserve above the limit: the floor
        Case(limit: 0, workers: 1, listeners: 1, pooled: 0, expected: 64),
        Case(limit: Int.max, workers: 4, listeners: 1, pooled: 64, expected: Limits.maximumConnections),  // RLIM_INFINITY
    ])
    func formula(_ c: Case) {
        #expect(ConnectionLimit.defaultMaxConnections(openFileLimit: c.limit, workers: c.workers, listeners: c.listeners,
                                                      pooledPerWorker: c.pooled) == c.expected)
    }

    static let base = """
        listen 127.0.0.1:8080
        listen 127.0.0.1:8081
        workers 3
        upstream a {
            server http://127.0.0.1:8000
            max_idle 10
        }
        upstream b {
            server http://127.0.0.1:8001
        }
        route / {
            upstream a
        }

        """

    /// (limits block, expected `Limits.maxConnections`, expected effective value at 10,000 descriptors)
    @Test("the config: unset and `auto` derive, 0 is unlimited, N wins", arguments: [
        ("", nil, (10_000 - (32 + 3 * (2 + 2 + 10 + 256))) / 2),
        ("limits {\n    max_connections auto\n}\n", nil, 4_579),
        ("limits {\n    max_connections 0\n}\n", 0, 0),
        ("limits {\n    max_connections 20\n}\n", 20, 20),
        ("limits {\n    max_connections 50000\n}\n", 50_000, 50_000),
    ] as [(String, Int?, Int)])
    func config(_ block: String, _ configured: Int?, _ effective: Int) throws {
        let config = try Config.parse(text: Self.base + block, file: "m.conf")
        #expect(config.limits.maxConnections == configured)
        #expect(config.effectiveMaxConnections(openFileLimit: 10_000) == effective)
    }

    @Test("anything else is an error naming the line")
    func rejects() {
        for bad in ["-1", "many", "10000001", "1.5"] {
            #expect(throws: ConfigError.self) { try Config.parse(text: Self.base + "limits {\n    max_connections \(bad)\n}\n", file: "m.conf") }
        }
    }
}
