import Testing

@testable import SluiceCore

/// The chooser as tables: a snapshot of candidates in, the outcome out. Randomness is a seeded state, so every
/// statistical row is reproducible; its bounds are still loose enough for any fair generator.
@Suite struct ServerChooserTests {
    typealias Candidate = ServerChooser.Candidate
    typealias Outcome = ServerChooser.Outcome

    private static func choose(_ servers: [Candidate], balance: BalancePolicy = .leastStreams, key: UInt64? = nil, loadFactor: Double = 1.25,
                               turn: Int = 0, random: inout UInt64) -> Outcome {
        servers.withUnsafeBufferPointer {
            ServerChooser.choose($0, balance: balance, key: key, loadFactor: loadFactor, turn: turn, random: &random)
        }
    }

    private static func choose(_ servers: [Candidate], balance: BalancePolicy = .leastStreams, key: UInt64? = nil,
                               turn: Int = 0) -> Outcome {
        var random: UInt64 = 1
        return choose(servers, balance: balance, key: key, turn: turn, random: &random)
    }

    private static func index(_ outcome: Outcome) -> Int? {
        if case .chosen(let index, _, _) = outcome { index } else { nil }
    }

    /// Seeds as a pool makes them (from the server's label), for `count` servers.
    private static func seeds(_ count: Int) -> [UInt64] {
        (0..<count).map { SipHash24.hash(k0: 0x736C_7569_6365_7276, k1: 0x7365_7276_6572_6964, bytes: Array("10.0.0.\($0 + 1):8000".utf8)) }
    }

    private static func keys(_ count: Int, seed: UInt64 = 7) -> [UInt64] {
        var state = seed
        return (0..<count).map { _ in ServerChooser.next(&state) }
    }

    // MARK: Tiers

    struct TierRow: CustomTestStringConvertible {
        var name: String
        var servers: [Candidate]
        var expected: Outcome
        /// The chosen tier has one candidate, so every balance policy picks it; else only `least_streams` is
        /// predictable.
        var onlyCandidate = true
        var testDescription: String { name }
    }

    static let tierRows: [TierRow] = [
        TierRow(name: "primaries before backups, even busier ones",
                servers: [Candidate(streams: 5), Candidate(backup: true)], expected: .chosen(0, affinity: .none, panic: false)),
        TierRow(name: "an ejected primary leaves its streams to the others",
                servers: [Candidate(healthy: false), Candidate(streams: 3), Candidate(backup: true)],
                expected: .chosen(1, affinity: .none, panic: false)),
        TierRow(name: "backups when no primary is available",
                servers: [Candidate(healthy: false), Candidate(retired: true), Candidate(streams: 2, backup: true), Candidate(streams: 1, backup: true)],
                expected: .chosen(3, affinity: .none, panic: false), onlyCandidate: false),
        TierRow(name: "primaries at max_streams leave new streams to the backups",
                servers: [Candidate(streams: 2, maxStreams: 2), Candidate(streams: 7, backup: true)], expected: .chosen(1, affinity: .none, panic: false)),
        TierRow(name: "a primary under its cap is still a primary",
                servers: [Candidate(streams: 1, maxStreams: 2), Candidate(backup: true)], expected: .chosen(0, affinity: .none, panic: false)),
        TierRow(name: "panic: all out on a first try, every server not retired and under its cap is a candidate, backups too",
                servers: [Candidate(streams: 3, healthy: false), Candidate(retired: true), Candidate(streams: 1, backup: true, healthy: false)],
                expected: .chosen(2, affinity: .none, panic: true), onlyCandidate: false),
        TierRow(name: "panic skips servers at their cap",
                servers: [Candidate(streams: 1, maxStreams: 1, healthy: false), Candidate(streams: 5, healthy: false)],
                expected: .chosen(1, affinity: .none, panic: true)),
        TierRow(name: "no panic while a healthy server is only full: busy, the ejected server is not used",
                servers: [Candidate(streams: 2, maxStreams: 2), Candidate(streams: 9, healthy: false)],
                expected: .busy),
        TierRow(name: "no panic on a retry: an ejected server is not tried",
                servers: [Candidate(tried: true), Candidate(healthy: false), Candidate(backup: true, healthy: false)], expected: .exhausted),
        TierRow(name: "a retry goes to a server not tried, even a busier one",
                servers: [Candidate(tried: true), Candidate(streams: 9)], expected: .chosen(1, affinity: .none, panic: false)),
        TierRow(name: "a retry falls back to a backup",
                servers: [Candidate(tried: true), Candidate(streams: 4, backup: true)], expected: .chosen(1, affinity: .none, panic: false)),
        TierRow(name: "every server at max_streams on a first try is busy",
                servers: [Candidate(streams: 4, maxStreams: 4), Candidate(streams: 1, maxStreams: 1, backup: true)], expected: .busy),
        TierRow(name: "every server left at max_streams on a retry is busy",
                servers: [Candidate(tried: true), Candidate(streams: 3, maxStreams: 3)], expected: .busy),
        TierRow(name: "every server tried is exhausted",
                servers: [Candidate(tried: true), Candidate(backup: true, tried: true)], expected: .exhausted),
        TierRow(name: "every server retired is exhausted, not busy",
                servers: [Candidate(retired: true), Candidate(streams: 1, maxStreams: 1, retired: true)], expected: .exhausted),
        TierRow(name: "a retired server is not a panic candidate",
                servers: [Candidate(healthy: false, retired: true), Candidate(streams: 8, healthy: false)],
                expected: .chosen(1, affinity: .none, panic: true)),
    ]

    @Test(arguments: tierRows)
    func tiers(_ row: TierRow) {
        #expect(Self.choose(row.servers, balance: .leastStreams) == row.expected)
        for balance in BalancePolicy.allCases where row.onlyCandidate {
            #expect(Self.choose(row.servers, balance: balance) == row.expected, "\(balance)")
        }
    }

    // MARK: least_streams

    struct LeastRow: CustomTestStringConvertible {
        var name: String
        var servers: [(streams: Int, weight: Int)]
        var expected: Int
        var testDescription: String { name }
    }

    static let leastRows: [LeastRow] = [
        LeastRow(name: "fewest streams", servers: [(3, 1), (1, 1), (2, 1)], expected: 1),
        LeastRow(name: "streams per weight: 4 of 2 beats 3 of 1", servers: [(4, 2), (3, 1)], expected: 0),
        LeastRow(name: "streams per weight: 2 of 1 beats 5 of 2", servers: [(5, 2), (2, 1)], expected: 1),
        LeastRow(name: "a heavy server takes more before it loses", servers: [(9, 10), (1, 1)], expected: 0),
        LeastRow(name: "an idle server wins whatever its weight", servers: [(1, 1000), (0, 1)], expected: 1),
    ]

    @Test(arguments: leastRows)
    func leastStreamsWeighs(_ row: LeastRow) {
        let servers = row.servers.map { Candidate(streams: $0.streams, weight: $0.weight) }
        #expect(Self.choose(servers) == .chosen(row.expected, affinity: .none, panic: false))
    }

    /// Ties (equal streams per weight) are broken at random with equal chances, so loops seeing the same counts
    /// spread; a server with more load is never picked.
    @Test(arguments: [[(2, 1), (3, 1), (2, 1), (2, 1)], [(2, 1), (4, 2), (9, 3), (6, 3)]] as [[(Int, Int)]])
    func leastStreamsSpreadsTies(_ servers: [(Int, Int)]) {
        let candidates = servers.map { Candidate(streams: $0.0, weight: $0.1) }
        let best = servers.map { Double($0.0) / Double($0.1) }.min()!
        let tied = servers.indices.filter { Double(servers[$0].0) / Double(servers[$0].1) == best }
        var random: UInt64 = 0x5EED
        var picks = [Int](repeating: 0, count: servers.count)
        let draws = 3_000
        for _ in 0..<draws { picks[Self.index(Self.choose(candidates, random: &random))!] += 1 }
        let fair = draws / tied.count
        for index in servers.indices {
            if tied.contains(index) {
                #expect(abs(picks[index] - fair) < fair / 5, "server \(index): \(picks)")
            } else {
                #expect(picks[index] == 0, "server \(index): \(picks)")
            }
        }
    }

    // MARK: round_robin and random

    struct TurnRow: CustomTestStringConvertible {
        var name: String
        var servers: [Candidate]
        var sequence: [Int]
        var testDescription: String { name }
    }

    static let turnRows: [TurnRow] = [
        TurnRow(name: "equal weights", servers: [Candidate(), Candidate(), Candidate()], sequence: [0, 1, 2, 0, 1, 2]),
        TurnRow(name: "weights 2, 1, 3: that many turns in a row", servers: [Candidate(weight: 2), Candidate(), Candidate(weight: 3)],
                sequence: [0, 0, 1, 2, 2, 2, 0, 0, 1, 2, 2, 2]),
        TurnRow(name: "an ejected server's turns go to the others", servers: [Candidate(weight: 2), Candidate(healthy: false), Candidate(weight: 3)],
                sequence: [0, 0, 2, 2, 2, 0, 0, 2, 2, 2]),
        TurnRow(name: "load does not matter", servers: [Candidate(streams: 50), Candidate()], sequence: [0, 1, 0, 1]),
        TurnRow(name: "backups take turns only among themselves", servers: [Candidate(healthy: false), Candidate(backup: true), Candidate(weight: 2, backup: true)],
                sequence: [1, 2, 2, 1, 2, 2]),
    ]

    @Test(arguments: turnRows)
    func roundRobinTakesWeightedTurns(_ row: TurnRow) {
        let sequence = row.sequence.indices.map { Self.index(Self.choose(row.servers, balance: .roundRobin, turn: $0)) }
        #expect(sequence == row.sequence)
    }

    @Test func randomSharesFollowWeights() {
        let weights = [1, 2, 3, 4]
        let servers = weights.map { Candidate(streams: $0 * 7, weight: $0) }
        var random: UInt64 = 0xC0FFEE
        var picks = [Int](repeating: 0, count: weights.count)
        let draws = 40_000
        for _ in 0..<draws { picks[Self.index(Self.choose(servers, balance: .random, random: &random))!] += 1 }
        for (index, weight) in weights.enumerated() {
            let share = Double(picks[index]) / Double(draws)
            #expect(abs(share - Double(weight) / 10) < 0.02, "server \(index): \(share)")
        }
    }

    // MARK: Affinity (bounded-load rendezvous)

    @Test func aKeyAlwaysGoesToTheSameServerWhateverTheBalanceAndTurn() {
        let servers = Self.seeds(8).map { Candidate(seed: $0) }
        var random: UInt64 = 99
        var used = Set<Int>()
        for key in Self.keys(200) {
            let first = Self.choose(servers, key: key, random: &random)
            guard case .chosen(let index, .hit, false) = first else {
                Issue.record("key \(key): \(first)")
                continue
            }
            used.insert(index)
            for (turn, balance) in BalancePolicy.allCases.enumerated() {
                #expect(Self.choose(servers, balance: balance, key: key, turn: turn, random: &random) == first)
            }
        }
        #expect(used.count == 8, "200 keys reach every server")
    }

    @Test func removingAServerMovesOnlyItsKeys() {
        let seeds = Self.seeds(8)
        let before = Self.keys(200).map { key in
            seeds[Self.index(Self.choose(seeds.map { Candidate(seed: $0) }, key: key))!]
        }
        let removed = seeds[3]
        let remaining = seeds.filter { $0 != removed }
        var moved = 0
        for (key, server) in zip(Self.keys(200), before) {
            let after = remaining[Self.index(Self.choose(remaining.map { Candidate(seed: $0) }, key: key))!]
            if server == removed {
                moved += 1
            } else {
                #expect(after == server, "a key on a server that stayed moved")
            }
        }
        #expect(moved == before.count { $0 == removed })
        // 1/8 + 2 % of 200 keys: 29.
        #expect(moved > 0 && moved <= 29, "\(moved) of 200 keys moved")
    }

    /// The key's first server takes it while under `ceil(1.25 × (all streams + 1) × weight ÷ all weight)`; at the
    /// bound, the key spills to its next server in rendezvous order (the one it would get without the first).
    @Test(arguments: [(hot: 4, others: 3, spills: false), (hot: 5, others: 3, spills: true), (hot: 0, others: 0, spills: false),
                      (hot: 1, others: 0, spills: true), (hot: 40, others: 10, spills: true), (hot: 13, others: 10, spills: false)])
    func aHotKeySpillsToItsNextServer(_ row: (hot: Int, others: Int, spills: Bool)) {
        let seeds = Self.seeds(4)
        for key in Self.keys(20) {
            let top = Self.index(Self.choose(seeds.map { Candidate(seed: $0) }, key: key))!
            let next = Self.index(Self.choose(seeds.enumerated().map { Candidate(retired: $0.offset == top, seed: $0.element) }, key: key))!
            let loaded = seeds.enumerated().map { Candidate(streams: $0.offset == top ? row.hot : row.others, seed: $0.element) }
            let expected: Outcome = row.spills ? .chosen(next, affinity: .spill, panic: false) : .chosen(top, affinity: .hit, panic: false)
            #expect(Self.choose(loaded, key: key) == expected, "key \(key)")
        }
    }

    @Test func weightsShareKeysInProportion() {
        let weights = [1, 2, 3, 4]
        let servers = zip(Self.seeds(4), weights).map { Candidate(weight: $1, seed: $0) }
        var picks = [Int](repeating: 0, count: weights.count)
        let keys = Self.keys(20_000, seed: 11)
        for key in keys { picks[Self.index(Self.choose(servers, key: key))!] += 1 }
        for (index, weight) in weights.enumerated() {
            let share = Double(picks[index]) / Double(keys.count)
            #expect(abs(share - Double(weight) / 10) < 0.02, "server \(index): \(share)")
        }
    }

    @Test func affinityKeepsToTheTiers() {
        let seeds = Self.seeds(4)
        for key in Self.keys(50) {
            // Primaries 0 and 1 are out: the key is hashed over the backups only.
            let servers = seeds.enumerated().map { Candidate(backup: $0.offset >= 2, healthy: $0.offset >= 2, seed: $0.element) }
            let chosen = Self.choose(servers, key: key)
            guard case .chosen(let index, .hit, false) = chosen else {
                Issue.record("\(chosen)")
                continue
            }
            #expect(index >= 2)
            // A tried server is skipped like a removed one: a retry goes to the key's next server.
            var retry = servers
            retry[index].tried = true
            #expect(Self.choose(retry, key: key) == .chosen(5 - index, affinity: .hit, panic: false))
        }
    }
}
