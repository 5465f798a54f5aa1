import Testing
@testable import SluiceCore

/// The loop's idle-connection list (issue 12, item 5): oldest first, O(1) moves, growth past the initial capacity.
@Suite("IdleConnections")
struct IdleConnectionsTests {
    final class Conn {
        let fd: Int32
        init(_ fd: Int32) { self.fd = fd }
    }

    enum Op: Sendable {
        case append(Int32, at: Int64)
        case remove(Int32)
    }

    /// (operations, expected order oldest → newest)
    @Test("order after each script", arguments: [
        ([], []),
        ([.append(5, at: 1)], [5]),
        ([.append(5, at: 1), .append(3, at: 2), .append(9, at: 3)], [5, 3, 9]),
        ([.append(5, at: 1), .append(3, at: 2), .append(9, at: 3), .remove(5)], [3, 9]),      // the oldest
        ([.append(5, at: 1), .append(3, at: 2), .append(9, at: 3), .remove(3)], [5, 9]),      // the middle
        ([.append(5, at: 1), .append(3, at: 2), .append(9, at: 3), .remove(9)], [5, 3]),      // the newest
        ([.append(5, at: 1), .append(3, at: 2), .append(5, at: 3)], [3, 5]),                  // idle again: moves to the end
        ([.append(5, at: 1), .remove(5), .remove(5), .remove(7)], []),                         // removing twice, or unlisted
        ([.append(5, at: 1), .remove(5), .append(5, at: 2), .append(6, at: 3)], [5, 6]),
        ([.append(2000, at: 1), .append(1, at: 2), .append(70_000, at: 3)], [2000, 1, 70_000]), // past the capacity
    ] as [([Op], [Int32])])
    func script(_ ops: [Op], _ expected: [Int32]) {
        var list = IdleConnections<Conn>(initialCapacity: 8)
        var conns: [Int32: Conn] = [:]
        for op in ops {
            switch op {
            case .append(let fd, let at):
                let conn = conns[fd] ?? Conn(fd)
                conns[fd] = conn
                list.append(fd, conn, now: at)
            case .remove(let fd):
                list.remove(fd)
            }
        }
        #expect(list.order == expected)
        #expect(list.count == expected.count)
        #expect(list.oldest == (expected.first ?? -1))
        for fd in expected {
            #expect(list.contains(fd))
            #expect(list.element(fd)?.fd == fd)
        }
    }

    @Test("idle since is the last time it became idle")
    func since() {
        var list = IdleConnections<Conn>(initialCapacity: 4)
        let a = Conn(1), b = Conn(2)
        list.append(1, a, now: 10)
        list.append(2, b, now: 20)
        list.append(1, a, now: 30)
        #expect(list.idleSince(1) == 30)
        #expect(list.idleSince(2) == 20)
        #expect(list.idleSince(3) == nil)
        list.remove(2)
        #expect(list.idleSince(2) == nil)
        #expect(list.element(2) == nil)
        #expect(list.oldest == 1)
    }

    @Test("draining the list oldest first visits every entry once")
    func drain() {
        var list = IdleConnections<Conn>(initialCapacity: 16)
        let fds: [Int32] = [7, 3, 11, 0, 15, 4]
        for (i, fd) in fds.enumerated() { list.append(fd, Conn(fd), now: Int64(i)) }
        var seen: [Int32] = []
        while list.oldest >= 0 {
            seen.append(list.oldest)
            list.remove(list.oldest)
        }
        #expect(seen == fds)
        #expect(list.count == 0)
    }
}
