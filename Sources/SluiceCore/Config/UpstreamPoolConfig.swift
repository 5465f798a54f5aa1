/// One `server URL [weight N] [max_streams N] [backup]` line of an `upstream` block. A host name stands for every
/// address it resolves to: each address is a server of the pool with these settings.
public struct UpstreamServerConfig: Sendable, Equatable, CustomStringConvertible {
    /// `http` or `https`.
    public var scheme: UpstreamScheme
    /// Host name, IPv4 literal or IPv6 literal (stored without brackets).
    public var host: String
    /// TCP port, 1...65535 (the scheme's default when the URL names none).
    public var port: UInt16
    /// Share of new streams relative to the other servers (1...1000): `least_streams` compares streams ÷ weight,
    /// `round_robin` and `random` give it `weight` turns, rendezvous hashing scales its score.
    public var weight: Int
    /// Streams in flight (all workers) at which the server is not chosen; 0 = no cap.
    public var maxStreams: Int
    /// Used only when no primary server is available (all ejected, draining or at `max_streams`).
    public var backup: Bool
    /// The `server` line; 0 for one from `--upstream`.
    public var line: Int

    public init(scheme: UpstreamScheme, host: String, port: UInt16, weight: Int = 1, maxStreams: Int = 0, backup: Bool = false,
                line: Int = 0) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.weight = weight
        self.maxStreams = maxStreams
        self.backup = backup
        self.line = line
    }

    /// The server as a URL, e.g. `http://127.0.0.1:8000`.
    public var description: String { "\(scheme.rawValue)://\(hostPort)" }

    /// `host:port`, the port always written (brackets around an IPv6 literal): how logs and error bodies name it.
    public var hostPort: String { "\(bracketedHost):\(port)" }

    /// `host[:port]` as a Host field names the server: the port only when it is not the scheme's default.
    public var authority: String { port == scheme.defaultPort ? bracketedHost : hostPort }

    private var bracketedHost: String { host.contains(":") ? "[\(host)]" : host }
}

/// `balance`: how a request without an affinity key (or on an upstream without one) picks its server.
public enum BalancePolicy: String, Sendable, Equatable, CaseIterable {
    /// Fewest streams in flight across all workers, divided by weight; ties broken at random (the default): an LLM
    /// stream lasts from 200 ms to minutes, so counting turns piles long streams onto one replica.
    case leastStreams = "least_streams"
    /// Each server in turn, `weight` turns each.
    case roundRobin = "round_robin"
    /// A random server, weighted.
    case random
}

/// `affinity KEY`: what keeps a conversation (or a session) on one server, for its prefix cache or its state.
public enum AffinityKey: Sendable, Equatable {
    /// `affinity header NAME`: a request header's value (the name stored lowercased).
    case header(String)
    /// `affinity json PATH`: a string or number at a dotted path of the JSON request body, e.g. `user` or
    /// `metadata.user_id`.
    case json([String])
    /// `affinity prompt SIZE`: the first `bytes` bytes of the `messages`, `prompt` or `input` value of the JSON
    /// request body, as sent, so the turns of one conversation (which repeat its beginning) share a key.
    case prompt(bytes: Int)

    /// Reads the request body: the connect waits for the key (at most ``AffinityKey/bodyReadLimit`` bytes).
    public var readsBody: Bool {
        if case .header = self { false } else { true }
    }

    /// The most body bytes a body key is looked for in; past it (or at the body's end) the request is balanced.
    public static let bodyReadLimit = 65_536
}

/// Passive health: failures seen by live traffic eject a server for a while.
public struct PassiveHealthConfig: Sendable, Equatable {
    /// `max_fails N`: failures within `failWindow` that eject a server; 0 turns passive ejection off.
    public var maxFails: Int
    /// `fail_window DURATION`, milliseconds.
    public var failWindow: Int
    /// `eject_time DURATION`, milliseconds: the first ejection's length, doubled for each ejection that follows
    /// without a success in between.
    public var ejectTime: Int
    /// `max_eject_time DURATION`, milliseconds: the doubling stops here.
    public var maxEjectTime: Int

    public static let defaultMaxFails = 3
    public static let defaultFailWindow = 10_000
    public static let defaultEjectTime = 10_000
    public static let defaultMaxEjectTime = 300_000

    public init(maxFails: Int = Self.defaultMaxFails, failWindow: Int = Self.defaultFailWindow, ejectTime: Int = Self.defaultEjectTime,
                maxEjectTime: Int = Self.defaultMaxEjectTime) {
        self.maxFails = maxFails
        self.failWindow = failWindow
        self.ejectTime = ejectTime
        self.maxEjectTime = maxEjectTime
    }
}

/// `health_check METHOD PATH [every DURATION] [timeout DURATION] [expect STATUS[-STATUS]]`: an active probe of every
/// server, from a thread of its own (never on an event loop).
public struct HealthCheckConfig: Sendable, Equatable {
    /// `GET` or `HEAD`.
    public var method: String
    /// Origin-form path, e.g. `/health`.
    public var path: String
    /// Milliseconds between probes of one server.
    public var interval: Int
    /// Milliseconds a probe may take (connect, TLS, request and status line).
    public var timeout: Int
    /// Statuses that pass.
    public var expect: ClosedRange<Int>

    public static let defaultInterval = 5_000
    public static let defaultTimeout = 2_000
    public static let defaultExpect = 200...299

    public init(method: String = "GET", path: String, interval: Int = Self.defaultInterval, timeout: Int = Self.defaultTimeout,
                expect: ClosedRange<Int> = Self.defaultExpect) {
        self.method = method
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.expect = expect
    }
}

/// One `retry_on` condition.
public enum RetryCondition: Sendable, Hashable, CustomStringConvertible {
    /// `connect_error`: the connect (or TLS handshake) failed or timed out.
    case connectError
    /// `reset`: the connection closed or reset before the response head.
    case reset
    /// A response status (the final head), e.g. 503.
    case status(Int)

    public var description: String {
        switch self {
        case .connectError: "connect_error"
        case .reset: "reset"
        case .status(let status): String(status)
        }
    }
}

/// Retries on another server, only before the first response byte reached the client.
public struct RetryConfig: Sendable, Equatable {
    /// `retries N`: other servers tried after the first (0 = none).
    public var retries: Int
    /// `retry_on ...`.
    public var retryOn: Set<RetryCondition>
    /// `retry_body_limit SIZE`: a request body up to this size is kept while a retry is possible, so a request that
    /// is not idempotent (an LLM POST) can be retried; a larger one is retried only before any of it was sent.
    public var retryBodyLimit: Int
    /// `retry_ratio PERCENT`: retries allowed per upstream, as a share of its requests (plus a small reserve, see
    /// ``RetryConfig/budgetReserve``), so a failing fleet is not sent twice its load.
    public var retryRatio: Double

    public static let defaultRetries = 2
    public static let defaultRetryOn: Set<RetryCondition> = [.connectError, .reset, .status(502), .status(503), .status(504), .status(429)]
    public static let defaultRetryBodyLimit = 1 << 20
    public static let defaultRetryRatio = 0.2
    /// Retries the budget holds when no request has paid for them yet: a quiet upstream can still retry.
    public static let budgetReserve = 10

    public init(retries: Int = Self.defaultRetries, retryOn: Set<RetryCondition> = Self.defaultRetryOn,
                retryBodyLimit: Int = Self.defaultRetryBodyLimit, retryRatio: Double = Self.defaultRetryRatio) {
        self.retries = retries
        self.retryOn = retryOn
        self.retryBodyLimit = retryBodyLimit
        self.retryRatio = retryRatio
    }
}

/// How an upstream's servers share its requests, and how failures are handled: everything in an `upstream`
/// block but the servers and their connections.
public struct UpstreamPoolConfig: Sendable, Equatable {
    public var balance: BalancePolicy
    public var affinity: AffinityKey?
    /// `affinity_load_factor X`: a server above X × the mean streams per server is skipped for the next one in
    /// the key's order (1.0 < X ≤ 100).
    public var affinityLoadFactor: Double
    public var passiveHealth: PassiveHealthConfig
    public var healthCheck: HealthCheckConfig?
    public var retry: RetryConfig

    public static let defaultAffinityLoadFactor = 1.25

    public init(balance: BalancePolicy = .leastStreams, affinity: AffinityKey? = nil,
                affinityLoadFactor: Double = Self.defaultAffinityLoadFactor, passiveHealth: PassiveHealthConfig = PassiveHealthConfig(),
                healthCheck: HealthCheckConfig? = nil, retry: RetryConfig = RetryConfig()) {
        self.balance = balance
        self.affinity = affinity
        self.affinityLoadFactor = affinityLoadFactor
        self.passiveHealth = passiveHealth
        self.healthCheck = healthCheck
        self.retry = retry
    }
}
