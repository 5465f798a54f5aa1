import Synchronization

/// The addresses one `server` line's host name stands for, kept current by the resolver thread. Each address is a
/// server of the upstream's pool (``UpstreamPool``), which rebuilds its servers when they change: a name with several
/// addresses (a hosted API behind anycast or DNS round robin, a headless Kubernetes Service) is several servers.
/// Shared by every thread; the lock is taken at lookups and pool rebuilds, never per request.
public final class UpstreamAddresses: Sendable {
    /// The name as configured (or a literal, which never changes).
    public let host: String
    public let port: UInt16
    /// Milliseconds between lookups; 0 resolves once, at start-up or reload.
    public let refreshInterval: Int
    private let state: Locked<State>
    /// Whether the name has resolved: one atomic load per exchange on the data path, instead of the lock.
    private let resolved: Atomic<Bool>

    private struct State {
        /// Empty only while `unresolved` is set.
        var addresses: [SocketAddress]
        /// Loop-clock milliseconds when the resolver looks again.
        var nextRefresh: Int64
        /// The last lookup failed: the previous addresses are still in use (or there are none), and the failure
        /// was logged once.
        var failing = false
        /// The resolver's message while the name has never resolved (no address to connect to): its routes
        /// answer 502 `upstream_unresolved` and `/readyz` names it. Never set again once it resolved.
        var unresolved: String?
        /// While unresolved: the wait before the next lookup, doubling from `firstRetryMilliseconds` up to
        /// `retryCap`, so a name that appears soon is found soon and one that stays missing costs little.
        var retryDelay: Int64 = 0
    }

    /// What `refresh` found.
    public enum Refresh: Equatable {
        /// Not due yet, or a literal.
        case notDue
        case unchanged
        /// The name now has these addresses.
        case changed([SocketAddress])
        /// The lookup failed; the previous addresses (if any) stay. `first` is true for the first failure of a
        /// streak (a name unresolved at creation starts its streak there: creation reported it).
        case failed(String, first: Bool)
        /// A failing name resolves again.
        case recovered([SocketAddress])
        /// A name that had never resolved does now: its routes are served from here on.
        case resolved([SocketAddress])
    }

    /// Resolves `host` now (it blocks: start-up, reload or a test). A name that does not resolve leaves the
    /// upstream unresolved (``unresolvedReason``) and is looked up again in the background by `refresh`, unless
    /// `previous` (the same name before a reload) has addresses: those stay in use, as after any failed lookup.
    /// - Parameters:
    ///   - lookUp: false for an upstream no route uses: nothing would connect to it, so start-up does not wait on
    ///     its lookup (`sluice check` still reports it); it stays unresolved and is never looked up.
    public init(host: String, port: UInt16, refreshInterval: Int, now: Int64, lookUp: Bool = true, previous: UpstreamAddresses? = nil,
                lookup: (String, UInt16) throws(SystemError) -> [SocketAddress] = SocketAddress.resolveAll) {
        self.host = host
        self.port = port
        // A literal is its own address: looking it up again would never change it.
        let isLiteral = SocketAddress(numericHost: host, port: port) != nil
        self.refreshInterval = isLiteral ? 0 : refreshInterval
        guard lookUp else {
            creationFailure = nil
            resolved = Atomic(false)
            state = Locked(State(addresses: [], nextRefresh: .max, unresolved: "not looked up: no route uses this upstream"))
            return
        }
        let firstRetry = min(Self.firstRetryMilliseconds, Self.retryCap(refreshInterval: self.refreshInterval))
        var state: State
        do throws(SystemError) {
            let addresses = try lookup(host, port)
            creationFailure = nil
            state = State(addresses: addresses, nextRefresh: now + Int64(self.refreshInterval))
        } catch {
            creationFailure = error.description
            let kept = previous.map { $0.host == host && $0.port == port ? $0.all : [] } ?? []
            if kept.isEmpty {
                state = State(addresses: [], nextRefresh: now + firstRetry, failing: true,
                              unresolved: error.description, retryDelay: firstRetry)
            } else {
                state = State(addresses: kept, nextRefresh: now + Int64(self.refreshInterval), failing: true)
            }
        }
        resolved = Atomic(!state.addresses.isEmpty)
        self.state = Locked(state)
    }

    /// The first retry of a name that did not resolve comes this soon (a Service created a moment later).
    public static let firstRetryMilliseconds: Int64 = 1_000

    /// The longest wait between retries of an unresolved name: `resolve_interval`, or its default when that is
    /// off (off means "do not follow a name that moves", not "give up on one that is missing").
    static func retryCap(refreshInterval: Int) -> Int64 {
        Int64(refreshInterval > 0 ? refreshInterval : UpstreamConfig.defaultResolveInterval)
    }

    /// The lookup at creation failed, in the resolver's words (nil when it succeeded or was not made).
    public let creationFailure: String?

    /// The resolver's message while the name has never resolved; nil once it has (any thread).
    public var unresolvedReason: String? {
        if isResolved { return nil }
        return state.withLock { $0.unresolved }
    }

    /// Whether the name has addresses to connect to (any thread; an atomic load).
    public var isResolved: Bool { resolved.load(ordering: .acquiring) }

    /// The current addresses, in lookup order.
    public var all: [SocketAddress] { state.withLock { $0.addresses } }

    public var count: Int { state.withLock { $0.addresses.count } }

    /// When `refresh` next has work (monotonic milliseconds); nil when it never will (a literal, a name not
    /// followed, an unrouted upstream), so the resolver thread need not wake for it.
    public var nextRefreshAt: Int64? {
        state.withLock { ($0.unresolved != nil || refreshInterval > 0) && $0.nextRefresh != .max ? $0.nextRefresh : nil }
    }

    /// Looks the name up again if it is due at `now` (blocking: the resolver thread only). A failed lookup keeps
    /// the addresses in use, so a DNS outage does not take a working upstream down with it. An unresolved name
    /// is due at its backoff (even with `resolve_interval off`); a resolved one every `refreshInterval`.
    public func refresh(now: Int64, lookup: (String, UInt16) throws(SystemError) -> [SocketAddress] = SocketAddress.resolveAll)
        -> Refresh {
        guard state.withLock({ ($0.unresolved != nil || refreshInterval > 0) && now >= $0.nextRefresh }) else { return .notDue }
        let result: Result<[SocketAddress], SystemError>
        do throws(SystemError) { result = .success(try lookup(host, port)) } catch { result = .failure(error) }
        var replaced = false
        let refreshed = state.withLock { state -> Refresh in
            state.nextRefresh = now + Int64(refreshInterval)
            if state.unresolved != nil {
                switch result {
                case .failure(let error):
                    state.retryDelay = min(2 * state.retryDelay, Self.retryCap(refreshInterval: refreshInterval))
                    state.nextRefresh = now + state.retryDelay
                    state.unresolved = error.description
                    defer { state.failing = true }
                    return .failed(error.description, first: !state.failing)
                case .success(let addresses):
                    state.addresses = addresses
                    state.unresolved = nil
                    state.failing = false
                    replaced = true
                    return .resolved(addresses)
                }
            }
            switch result {
            case .failure(let error):
                defer { state.failing = true }
                return .failed(error.description, first: !state.failing)
            case .success(let addresses):
                let recovered = state.failing
                state.failing = false
                guard addresses != state.addresses else { return recovered ? .recovered(addresses) : .unchanged }
                state.addresses = addresses
                replaced = true
                return recovered ? .recovered(addresses) : .changed(addresses)
            }
        }
        // After the addresses are in place: whoever sees true finds them.
        if replaced { resolved.store(true, ordering: .releasing) }
        return refreshed
    }
}
