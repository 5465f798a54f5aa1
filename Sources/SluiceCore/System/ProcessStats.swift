import Glibc

/// The standard `process_*` metrics of the Prometheus client libraries, read from procfs at scrape time
/// (client_golang's `process_collector_linux.go` and client_python's `process_collector.py` read the same
/// files, so dashboards built for them work unchanged).
///
/// Admin thread only; allocates (a scrape is not on the data path). A file that cannot be read leaves its
/// values nil, and the renderer leaves their families out rather than report a made-up 0.
public struct ProcessStats: Sendable, Equatable {
    /// User plus system CPU time, seconds (`/proc/self/stat` utime + stime, in clock ticks).
    public var cpuSeconds: Double?
    /// Resident set size, bytes (`rss` pages × page size).
    public var residentBytes: Int?
    /// Virtual memory size, bytes (`vsize`).
    public var virtualBytes: Int?
    /// Open file descriptors (entries of `/proc/self/fd`; the directory's own descriptor included, as the
    /// client libraries count it).
    public var openFileDescriptors: Int?
    /// The soft `RLIMIT_NOFILE`.
    public var maxFileDescriptors: Int?
    /// Start time since the Unix epoch, seconds: boot time (`btime` of `/proc/stat`) plus `starttime` ticks.
    public var startTimeSeconds: Double?

    public init(cpuSeconds: Double? = nil, residentBytes: Int? = nil, virtualBytes: Int? = nil,
                openFileDescriptors: Int? = nil, maxFileDescriptors: Int? = nil, startTimeSeconds: Double? = nil) {
        self.cpuSeconds = cpuSeconds
        self.residentBytes = residentBytes
        self.virtualBytes = virtualBytes
        self.openFileDescriptors = openFileDescriptors
        self.maxFileDescriptors = maxFileDescriptors
        self.startTimeSeconds = startTimeSeconds
    }

    /// The current values for this process.
    public static func current() -> ProcessStats {
        let ticksPerSecond = Int(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        var stats = parse(stat: readProcFile("/proc/self/stat") ?? [], procStat: readProcFile("/proc/stat") ?? [],
                          ticksPerSecond: ticksPerSecond, pageSize: pageSize)
        stats.openFileDescriptors = countDirectoryEntries("/proc/self/fd")
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            // RLIM_INFINITY is UInt64.max; clamping gives Int.max, which the text format carries fine.
            stats.maxFileDescriptors = Int(clamping: limit.rlim_cur)
        }
        return stats
    }

    /// The values found in the text of `/proc/self/stat` and `/proc/stat` (proc(5)); nil where a field is
    /// missing or malformed, or where `ticksPerSecond` or `pageSize` is not positive.
    ///
    /// The command name (field 2) is in parentheses and may itself hold spaces and `)`, so fields are counted
    /// from the last `)`, as procps does.
    static func parse(stat: [UInt8], procStat: [UInt8], ticksPerSecond: Int, pageSize: Int) -> ProcessStats {
        var stats = ProcessStats()
        guard let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return stats }
        // Fields 3, 4, ... after the command: index 0 is field 3 (state).
        let fields = stat[(close + 1)...].split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
        func field(_ number: Int) -> Int? {
            let index = number - 3
            guard index >= 0 && index < fields.count else { return nil }
            return decimal(fields[index])
        }
        if ticksPerSecond > 0, let user = field(14), let system = field(15) {
            stats.cpuSeconds = Double(user + system) / Double(ticksPerSecond)
        }
        stats.virtualBytes = field(23)
        if pageSize > 0, let pages = field(24) { stats.residentBytes = pages * pageSize }
        if ticksPerSecond > 0, let started = field(22), let boot = bootTime(procStat) {
            stats.startTimeSeconds = Double(boot) + Double(started) / Double(ticksPerSecond)
        }
        return stats
    }

    /// `btime` of `/proc/stat`: the boot time, seconds since the epoch.
    private static func bootTime(_ text: [UInt8]) -> Int? {
        for line in text.split(separator: UInt8(ascii: "\n")) {
            let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
            if parts.count == 2 && parts[0].elementsEqual("btime".utf8) { return decimal(parts[1]) }
        }
        return nil
    }

    /// A non-negative decimal integer of at most 18 digits (no overflow), else nil.
    private static func decimal(_ bytes: ArraySlice<UInt8>) -> Int? {
        guard !bytes.isEmpty && bytes.count <= 18 else { return nil }
        var value = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    /// The whole content of a procfs file (their size is 0 to `stat`, so read until end of file), at most 1 MiB.
    static func readProcFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let file = FileDescriptor(rawValue: fd)
        var content: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while content.count < 1 << 20 {
            let count = chunk.withUnsafeMutableBytes { space in
                (try? Syscall.read(file.rawValue, into: space)) ?? .processed(-1)
            }
            guard case .processed(let read) = count else { return nil } // a blocking file never says EAGAIN
            if read < 0 { return nil }
            if read == 0 { break }
            content.append(contentsOf: chunk[0..<read])
        }
        return content
    }

    /// Entries of a directory other than `.` and `..`; nil when it cannot be opened.
    static func countDirectoryEntries(_ path: String) -> Int? {
        guard let directory = opendir(path) else { return nil }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in
                name[0] == UInt8(ascii: ".") && (name[1] == 0 || (name[1] == UInt8(ascii: ".") && name[2] == 0))
            }
            if !isDot { count += 1 }
        }
        return count
    }
}
