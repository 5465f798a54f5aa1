/// Where a client connection is in its life.
enum ConnectionPhase: Equatable {
    /// Between requests (keep-alive), or accepted with no byte of a request yet.
    case idle
    /// Some bytes of a request head arrived; waiting for the rest.
    case readingHead
    /// A request was accepted; it is being forwarded and its response relayed.
    case exchange
    /// A 101 switched the connection to another protocol (WebSocket): bytes go both ways, untouched, until a side
    /// closes; the connection never carries HTTP again.
    case tunnel
    /// The last response is out; our write side is shut and remaining input is discarded briefly so
    /// closing does not reset the connection before the client read the response.
    case lingering
    case closed
}

/// The timeouts of a client connection as pure functions of its phase, its recorded times and a few facts: which
/// deadline comes next, and which one has passed. The session records times and carries the verdict out; nothing
/// here reads a clock, so every timeout is unit-tested with plain numbers.
enum ExchangeDeadlines {
    typealias Phase = ConnectionPhase

    /// The loop-millisecond times the timeouts count from; 0 means "not started" (that clock never expires).
    struct Times: Equatable {
        var acceptedAt: Int64 = 0
        var idleSince: Int64 = 0
        var headStartedAt: Int64 = 0
        var exchangeStartedAt: Int64 = 0
        var connectStartedAt: Int64 = 0
        var requestSentAt: Int64 = 0
        var lastUpstreamRead: Int64 = 0
        var lastClientRead: Int64 = 0
        var lastClientWriteProgress: Int64 = 0
        var lingerStartedAt: Int64 = 0
        /// A tunnel's last read from either side (its idle clock).
        var lastTunnelTraffic: Int64 = 0
    }

    /// What the phase alone does not say.
    struct Facts: Equatable {
        var phase: Phase
        /// A TLS client whose handshake has not finished.
        var handshakePending = false
        /// Requests answered on this connection before the current one.
        var requestsServed = 0
        /// An upstream connection is attached and not yet established (TCP connect, or TLS handshake).
        var connecting = false
        /// Connected, and waiting for the response head.
        var awaitingResponseHead = false
        /// Relaying a response body with upstream reads not paused by backpressure.
        var relayingBody = false
        /// The request body is still arriving and client reads are not paused by backpressure.
        var readingRequestBody = false
        /// Bytes are queued for the client.
        var clientOutputPending = false
    }

    /// The limits in milliseconds; 0 turns one off.
    struct Limits: Equatable {
        var timeouts: Timeouts
        var handshake: Int
        var linger: Int64
    }

    /// Which timeout expired, in the order they are checked: the first that applies wins.
    enum Expiry: Equatable {
        /// Idle or not-yet-requested connection: closed quietly (`tlsHandshake` says why, for the debug log).
        case idle(tlsHandshake: Bool)
        /// The request head took longer than `client_header`: 408.
        case requestHead
        /// The client made no write progress for `client_write`.
        case clientWrite
        /// Connecting (TCP or TLS) took longer than `upstream_connect`.
        case connect
        /// No response head within `upstream_first_byte` of the request being sent.
        case firstByte
        /// The exchange passed `total`.
        case total
        /// No upstream byte for `upstream_idle` while relaying a body.
        case upstreamIdle
        /// No request body byte for `client_body_idle`.
        case clientBodyIdle
        /// The lingering close ran its course.
        case linger
        /// A tunnel carried no byte either way for `tunnel_idle`.
        case tunnelIdle
    }

    /// `start + limit`, or never when the limit is off or the clock has not started.
    static func deadline(_ start: Int64, _ limit: Int) -> Int64 {
        limit > 0 && start > 0 ? start + Int64(limit) : Int64.max
    }

    /// Each deadline that applies now, with what expires there, in checking order.
    private static func candidates(_ facts: Facts, _ times: Times, _ limits: Limits, _ visit: (Int64, Expiry) -> Bool) {
        let timeouts = limits.timeouts
        switch facts.phase {
        case .idle:
            if facts.handshakePending {
                let start = times.acceptedAt
                _ = visit(min(deadline(start, limits.handshake), deadline(start, timeouts.clientHeader)), .idle(tlsHandshake: true))
            } else if facts.requestsServed == 0 {
                _ = visit(deadline(times.acceptedAt, timeouts.clientHeader), .idle(tlsHandshake: false))
            } else {
                _ = visit(deadline(times.idleSince, timeouts.clientKeepAlive), .idle(tlsHandshake: false))
            }
        case .readingHead:
            _ = visit(deadline(facts.requestsServed == 0 ? times.acceptedAt : times.headStartedAt, timeouts.clientHeader), .requestHead)
        case .exchange:
            if facts.clientOutputPending, !visit(deadline(times.lastClientWriteProgress, timeouts.clientWrite), .clientWrite) { return }
            if facts.connecting, !visit(deadline(times.connectStartedAt, timeouts.upstreamConnect), .connect) { return }
            if facts.awaitingResponseHead, !visit(deadline(times.requestSentAt, timeouts.upstreamFirstByte), .firstByte) { return }
            if !visit(deadline(times.exchangeStartedAt, timeouts.total), .total) { return }
            if facts.relayingBody, !visit(deadline(times.lastUpstreamRead, timeouts.upstreamIdle), .upstreamIdle) { return }
            if facts.readingRequestBody {
                _ = visit(deadline(max(times.lastClientRead, times.exchangeStartedAt), timeouts.clientBodyIdle), .clientBodyIdle)
            }
        case .tunnel:
            // `total` and the upstream timers describe one request and response; a tunnel lives as long as it carries
            // traffic, and a client that stopped reading is cut as in a stream.
            if facts.clientOutputPending, !visit(deadline(times.lastClientWriteProgress, timeouts.clientWrite), .clientWrite) { return }
            _ = visit(deadline(times.lastTunnelTraffic, timeouts.tunnelIdle), .tunnelIdle)
        case .lingering:
            _ = visit(times.lingerStartedAt + limits.linger, .linger)
        case .closed:
            break
        }
    }

    /// The earliest moment one of the phase's timeouts can fire; `Int64.max` when none runs.
    static func next(_ facts: Facts, _ times: Times, _ limits: Limits) -> Int64 {
        var earliest = Int64.max
        candidates(facts, times, limits) { at, _ in
            earliest = min(earliest, at)
            return true
        }
        return earliest
    }

    /// The timeout that has passed at `now`, the first in checking order; nil when none has.
    static func expired(_ facts: Facts, _ times: Times, _ limits: Limits, now: Int64) -> Expiry? {
        var found: Expiry?
        candidates(facts, times, limits) { at, expiry in
            guard at <= now else { return true }
            found = expiry
            return false
        }
        return found
    }
}
