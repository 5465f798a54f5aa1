import Glibc
import Testing
@testable import SluiceCore

@Suite struct ProcessStatsTests {
    /// A `/proc/self/stat` line (proc(5)) whose command holds a space and a `)`: fields are counted from the
    /// last `)`. utime 250 + stime 75 ticks, starttime 12345 ticks, vsize 268435456, rss 2560 pages.
    static let stat = Array("4242 (sl uice) x) S 1 4242 4242 0 -1 4194560 1183 0 0 0 250 75 0 0 20 0 5 0 12345 268435456 2560 18446744073709551615 1 1 0 0 0 0 0 4096 17664 0 0 0 17 1 0 0 0 0 0\n".utf8)
    static let procStat = Array("cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 1 2\nctxt 99\nbtime 1735689600\nprocesses 10\n".utf8)

    @Test func parsesStatFields() {
        let stats = ProcessStats.parse(stat: Self.stat, procStat: Self.procStat, ticksPerSecond: 100, pageSize: 4096)
        #expect(stats.cpuSeconds == 3.25)
        #expect(stats.virtualBytes == 268_435_456)
        #expect(stats.residentBytes == 2560 * 4096)
        #expect(stats.startTimeSeconds == 1_735_689_600 + 123.45)
    }

    @Test(arguments: [
        ("", "btime 1\n"), // no stat at all
        ("4242 (sluice S 1 2", "btime 1\n"), // no closing parenthesis
        ("4242 (sluice) S 1", "btime 1\n"), // too few fields
        ("4242 (sluice) S 1 4242 4242 0 -1 4194560 1183 0 0 0 x 75 0 0 20 0 5 0 y z w", "btime 1\n"), // not numbers
    ])
    func malformedStatGivesNoValues(stat: String, procStat: String) {
        let stats = ProcessStats.parse(stat: Array(stat.utf8), procStat: Array(procStat.utf8), ticksPerSecond: 100, pageSize: 4096)
        #expect(stats == ProcessStats())
    }

    @Test func withoutBootTimeOrClockTicksThoseValuesAreMissing() {
        let noBoot = ProcessStats.parse(stat: Self.stat, procStat: Array("cpu 1\n".utf8), ticksPerSecond: 100, pageSize: 4096)
        #expect(noBoot.startTimeSeconds == nil && noBoot.cpuSeconds == 3.25)
        let noTicks = ProcessStats.parse(stat: Self.stat, procStat: Self.procStat, ticksPerSecond: 0, pageSize: 0)
        #expect(noTicks.cpuSeconds == nil && noTicks.startTimeSeconds == nil && noTicks.residentBytes == nil)
        #expect(noTicks.virtualBytes == 268_435_456)
    }

    /// This test process: every value present and plausible.
    @Test func currentValuesArePlausible() throws {
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(fd) }
        // Tests run in parallel and open descriptors of their own, so no exact count is expected.
        let after = ProcessStats.current()
        let cpu = try #require(after.cpuSeconds)
        let resident = try #require(after.residentBytes)
        let virtual = try #require(after.virtualBytes)
        let openFDs = try #require(after.openFileDescriptors)
        let maxFDs = try #require(after.maxFileDescriptors)
        let start = try #require(after.startTimeSeconds)
        #expect(cpu >= 0)
        #expect(resident > 1 << 20 && resident <= virtual)
        #expect(openFDs >= 4 && openFDs <= maxFDs) // stdin, stdout, stderr, /dev/null, the directory itself
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        // Started before now and (a test run) within the last day; ticks are 1/100 s, boot time whole seconds.
        #expect(start <= Double(now.tv_sec) + 1 && start > Double(now.tv_sec) - 86_400)
    }
}
