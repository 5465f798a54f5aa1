import Synchronization

/// The addresses an upstream's host name stands for, kept current by the resolver thread while the loops connect
/// to them in turn. A name with several addresses (a hosted API behind anycast or DNS round robin, a headless
/// Kubernetes Service) spreads new connections over all of them, and a connect that fails moves to the next.
/// Shared by every loop: one uncontended lock per new upstream connection, never per byte.
public final class UpstreamAddresses: Sendable {
    /// The name as configured (or a literal, which never changes).
    public let host: String
    public let port: UInt16
    /// Milliseconds between lookups; 0 resolves once, at start-up or reload.
    public let refreshInterval: Int
    private let state: Locked<State>
    /// Bumped whenever the addresses change, so a loop can tell with one atomic load that a pooled connection's
    /// address needs checking (see `ProxyLoop.takePooledUpstream`).
    private let changes = Atomic<Int>(0)

    private struct State {
        var addresses: [SocketAddress]
        /// By index of `addresses`: until when (loop-clock milliseconds) a failed connect keeps it out of turn.
        var downUntil: [Int64]
        /// Round-robin position over `addresses`.
        var cursor = 0
        /// Loop-clock milliseconds when the resolver looks again.
        var nextRefresh: Int64
        /// The last lookup failed: the previous addresses are still in use, and the failure was logged once.
        var failing = false
    }

    /// What `refresh` found.
    public enum Refresh: Equatable {
        /// Not due yet, or a literal.
        case notDue
        case unchanged
        /// The name now has these addresses.
        case changed([SocketAddress])
        /// The lookup failed; the previous addresses stay. `first` is true for the first failure of a streak.
        case failed(String, first: Bool)
        /// A failing name resolves again.
        case recovered([SocketAddress])
    }

    /// Resolves `host` now (it blocks).
    /// - Throws: when the name does not resolve: a start-up or reload error.
    public init(host: String, port: UInt16, refreshInterval: Int, now: Int64) throws(SystemError) {
        self.host = host
        self.port = port
        // A literal is its own address: looking it up again would never change it.
        let isLiteral = SocketAddress(numericHost: host, port: port) != nil
        self.refreshInterval = isLiteral ? 0 : refreshInterval
        let addresses = try SocketAddress.resolveAll(host: host, port: port)
        state = Locked(State(addresses: addresses, downUntil: Array(repeating: 0, count: addresses.count),
                             nextRefresh: now + Int64(self.refreshInterval)))
    }

    /// How long an address whose connect failed is passed over (nginx's fail_timeout, with max_fails 1).
    public static let downMilliseconds: Int64 = 10_000

    /// The current addresses, in lookup order.
    public var all: [SocketAddress] { state.withLock { $0.addresses } }

    public var count: Int { state.withLock { $0.addresses.count } }

    /// How many times the addresses changed; any thread.
    var generation: Int { changes.load(ordering: .acquiring) }

    /// Whether `address` is still one of the name's.
    func contains(_ address: SocketAddress) -> Bool { state.withLock { $0.addresses.contains(address) } }

    /// The address the next new connection goes to: the next in turn whose last connect did not fail in the past
    /// `downMilliseconds`, or, when every one failed, simply the next in turn (a backend that came back is found).
    func next(now: Int64) -> SocketAddress {
        state.withLock { state in
            let count = state.addresses.count
            var chosen = state.cursor % count
            for offset in 0..<count where state.downUntil[(state.cursor + offset) % count] <= now {
                chosen = (state.cursor + offset) % count
                break
            }
            state.cursor = (chosen + 1) % count
            return state.addresses[chosen]
        }
    }

    /// A connect to `address` failed or timed out at `now`: other addresses take its turns for a while.
    func connectFailed(to address: SocketAddress, now: Int64) {
        state.withLock { state in
            guard let index = state.addresses.firstIndex(of: address) else { return }  // replaced meanwhile
            state.downUntil[index] = now + Self.downMilliseconds
        }
    }

    /// Looks the name up again if it is due at `now` (blocking: the resolver thread only). A failed lookup keeps
    /// the addresses in use, so a DNS outage does not take a working upstream down with it.
    public func refresh(now: Int64, lookup: (String, UInt16) throws(SystemError) -> [SocketAddress] = SocketAddress.resolveAll)
        -> Refresh {
        guard refreshInterval > 0, state.withLock({ now >= $0.nextRefresh }) else { return .notDue }
        let result: Result<[SocketAddress], SystemError>
        do throws(SystemError) { result = .success(try lookup(host, port)) } catch { result = .failure(error) }
        var replaced = false
        let refreshed = state.withLock { state -> Refresh in
            state.nextRefresh = now + Int64(refreshInterval)
            switch result {
            case .failure(let error):
                defer { state.failing = true }
                return .failed(error.description, first: !state.failing)
            case .success(let addresses):
                let recovered = state.failing
                state.failing = false
                guard addresses != state.addresses else { return recovered ? .recovered(addresses) : .unchanged }
                // An address kept keeps its record of failure; a new one starts in good standing.
                state.downUntil = addresses.map { address in
                    state.addresses.firstIndex(of: address).map { state.downUntil[$0] } ?? 0
                }
                state.addresses = addresses
                state.cursor = 0
                replaced = true
                return recovered ? .recovered(addresses) : .changed(addresses)
            }
        }
        if replaced { changes.add(1, ordering: .releasing) }
        return refreshed
    }
}
