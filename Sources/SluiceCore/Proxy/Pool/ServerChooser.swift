/// Picks the server for a new stream from a snapshot of the pool (a pure function: the pool takes the snapshot,
/// tests write it as a table). Allocates nothing: it reads the candidates in place, twice at most.
///
/// Order of preference:
/// 1. the primaries that are available (not ejected, not failing probes, not retired), under their
///    `max_streams`, and not already tried by this request;
/// 2. failing those, the backups under the same rules;
/// 3. when no server is healthy at all, on a request's first try: panic mode, every server not retired and under
///    its cap, ejected or not (Envoy's panic threshold at 100 %): with a whole fleet ejected, a backend that came back is
///    found by traffic, and clients are not refused by a health verdict that may be stale.
/// Every server at `max_streams` is `.busy` (a 503 with Retry-After); nothing left for a retry is `.exhausted`.
enum ServerChooser {
    struct Candidate: Equatable {
        var streams: Int
        var weight: Int
        /// 0: no cap.
        var maxStreams: Int
        var backup: Bool
        /// Not ejected and not failing probes.
        var healthy: Bool
        var retired: Bool
        /// Already tried by this request.
        var tried: Bool
        var seed: UInt64

        init(streams: Int = 0, weight: Int = 1, maxStreams: Int = 0, backup: Bool = false, healthy: Bool = true, retired: Bool = false,
             tried: Bool = false, seed: UInt64 = 0) {
            self.streams = streams
            self.weight = weight
            self.maxStreams = maxStreams
            self.backup = backup
            self.healthy = healthy
            self.retired = retired
            self.tried = tried
            self.seed = seed
        }

        var underCap: Bool { maxStreams == 0 || streams < maxStreams }
    }

    /// How an affinity key was served.
    enum Affinity: String, Equatable {
        /// No key (or no affinity configured): the balance policy chose.
        case none
        /// The key's first server in rendezvous order.
        case hit
        /// The key's first server was over the load bound: a later one in the key's order.
        case spill
    }

    enum Outcome: Equatable {
        case chosen(Int, affinity: Affinity, panic: Bool)
        /// Every server that could take the stream is at its `max_streams`.
        case busy
        /// Nothing is left to try (every server tried, retired, or out on a retry).
        case exhausted
    }

    /// - Parameters:
    ///   - key: the affinity key's hash, nil when the request has none.
    ///   - turn: the pool's round-robin counter for this request.
    ///   - random: per-loop random state, advanced.
    static func choose(_ servers: UnsafeBufferPointer<Candidate>, balance: BalancePolicy, key: UInt64?, loadFactor: Double, turn: Int,
                       random: inout UInt64) -> Outcome {
        let firstTry = !servers.contains { $0.tried }
        var tier: Tier? = nil
        var anyAtCap = false
        if servers.contains(where: { Tier.primary.admits($0, panic: false) }) {
            tier = .primary
        } else if servers.contains(where: { Tier.backup.admits($0, panic: false) }) {
            tier = .backup
        } else {
            anyAtCap = servers.contains { !$0.retired && !$0.tried && !$0.underCap }
            // Panic only when no server is healthy: healthy servers that are merely full make the request wait
            // (`.busy`), they do not send it to one that was ejected.
            let anyHealthy = servers.contains { $0.healthy && !$0.retired }
            if firstTry && !anyHealthy && servers.contains(where: { Tier.all.admits($0, panic: true) }) { tier = .all }
        }
        guard let tier else { return anyAtCap ? .busy : .exhausted }
        let panic = tier == .all
        if let key, let pick = rendezvous(servers, tier: tier, panic: panic, key: key, loadFactor: loadFactor) {
            return .chosen(pick.index, affinity: pick.affinity, panic: panic)
        }
        let index = switch balance {
        case .leastStreams: leastStreams(servers, tier: tier, panic: panic, random: &random)
        case .roundRobin: weightedTurn(servers, tier: tier, panic: panic, position: turn)
        case .random: weightedTurn(servers, tier: tier, panic: panic, position: Int(truncatingIfNeeded: next(&random) >> 1))
        }
        return .chosen(index, affinity: .none, panic: panic)
    }

    private enum Tier: Equatable {
        case primary, backup, all

        func admits(_ server: Candidate, panic: Bool) -> Bool {
            guard !server.retired, !server.tried, server.underCap, panic || server.healthy else { return false }
            switch self {
            case .primary: return !server.backup
            case .backup: return server.backup
            case .all: return true
            }
        }
    }

    /// Fewest streams per weight (compared as streams × other weight, no division); ties broken at random, each
    /// tied server equally likely, so loops that see the same counts do not all pick the same server.
    private static func leastStreams(_ servers: UnsafeBufferPointer<Candidate>, tier: Tier, panic: Bool, random: inout UInt64) -> Int {
        var best = -1
        var ties = 0
        for index in servers.indices where tier.admits(servers[index], panic: panic) {
            let server = servers[index]
            if best < 0 {
                best = index
                ties = 1
                continue
            }
            let mine = server.streams * servers[best].weight, theirs = servers[best].streams * server.weight
            if mine < theirs {
                best = index
                ties = 1
            } else if mine == theirs {
                ties += 1
                if next(&random) % UInt64(ties) == 0 { best = index }
            }
        }
        return best
    }

    /// The server at `position` modulo the admitted servers' total weight, each taking `weight` consecutive turns.
    private static func weightedTurn(_ servers: UnsafeBufferPointer<Candidate>, tier: Tier, panic: Bool, position: Int) -> Int {
        var total = 0
        for server in servers where tier.admits(server, panic: panic) { total += server.weight }
        var remaining = position % max(total, 1)
        var last = -1
        for index in servers.indices where tier.admits(servers[index], panic: panic) {
            last = index
            remaining -= servers[index].weight
            if remaining < 0 { return index }
        }
        return last
    }

    /// Weighted rendezvous hashing, bounded by load: each server's score for `key` is `-weight / ln(u)` with `u`
    /// uniform from hash(key, server) (so removing a server moves only the keys it had, and weights share keys in
    /// proportion); the highest-scoring server whose streams are under its bound wins. A server's bound is
    /// `ceil(loadFactor × (streams of the tier + 1) × weight ÷ tier weight)`, HAProxy's `hash-balance-factor`
    /// with weights: a hot key spills to its next server instead of piling onto one. nil when nothing is admitted.
    private static func rendezvous(_ servers: UnsafeBufferPointer<Candidate>, tier: Tier, panic: Bool, key: UInt64, loadFactor: Double)
        -> (index: Int, affinity: Affinity)? {
        var totalStreams = 0, totalWeight = 0
        var firstWeight = 0, weightsDiffer = false
        for server in servers where tier.admits(server, panic: panic) {
            totalStreams += server.streams
            totalWeight += server.weight
            if firstWeight == 0 { firstWeight = server.weight } else if server.weight != firstWeight { weightsDiffer = true }
        }
        guard totalWeight > 0 else { return nil }
        var top = -1, topScore = -Double.infinity
        var bounded = -1, boundedScore = -Double.infinity
        for index in servers.indices where tier.admits(servers[index], panic: panic) {
            let server = servers[index]
            // With equal weights the score's order is the hash's (-w / ln u grows with u): no logarithm per server.
            let score = weightsDiffer ? Self.score(key: key, seed: server.seed, weight: server.weight)
                : Double(Self.unitHash(key: key, seed: server.seed))
            if score > topScore {
                top = index
                topScore = score
            }
            let bound = (loadFactor * Double(totalStreams + 1) * Double(server.weight) / Double(totalWeight)).rounded(.up)
            if Double(server.streams) < bound, score > boundedScore {
                bounded = index
                boundedScore = score
            }
        }
        if bounded < 0 || bounded == top { return (top, .hit) }
        return (bounded, .spill)
    }

    /// A server's rendezvous score for `key`: higher wins.
    static func score(key: UInt64, seed: UInt64, weight: Int) -> Double {
        // 53 random bits in (0, 1): never 0, so the logarithm is finite and negative.
        let unit = (Double(unitHash(key: key, seed: seed)) + 0.5) / 9_007_199_254_740_992.0
        return -Double(weight) / Math.naturalLogarithm(unit)
    }

    /// 53 well-mixed bits of (key, server): the uniform draw the score is made from.
    static func unitHash(key: UInt64, seed: UInt64) -> UInt64 {
        var mixed = key ^ seed
        return next(&mixed) >> 11
    }

    /// wyrand: one step of a fast, well-mixed 64-bit generator (not for secrets).
    static func next(_ state: inout UInt64) -> UInt64 {
        state &+= 0xA076_1D64_78BD_642F
        let product = state.multipliedFullWidth(by: state ^ 0xE703_7ED1_A0B4_28DB)
        return product.high ^ product.low
    }
}
