import Glibc

/// The calls `sluice reload` makes as a client: waiting on one socket, signalling a process, naming it.
extension Syscall {
    /// What `waitReady` waits for.
    public enum Readiness {
        case readable
        case writable

        var pollEvents: Int16 { Int16(self == .readable ? POLLIN : POLLOUT) }
    }

    /// Waits until `fd` is `ready` or `milliseconds` pass; EINTR is retried with the time left. Returns false on
    /// timeout. Blocks: the CLI only, never a loop.
    public static func waitReady(_ fd: Int32, for ready: Readiness, milliseconds: Int64) -> Bool {
        let events = ready.pollEvents
        let deadline = monotonicMilliseconds() + max(0, milliseconds)
        while true {
            var entry = pollfd(fd: fd, events: events, revents: 0)
            let left = Int32(clamping: max(0, deadline - monotonicMilliseconds()))
            let result = poll(&entry, 1, left)
            if result > 0 { return true }  // ready, or an error or hangup the next call reports
            if result == 0 { return false }
            guard Glibc.errno == EINTR else { return true }
        }
    }

    /// Sends SIGHUP (sluice's reload signal) to process `pid`.
    /// - Throws: `SystemError` from kill: `isNoSuchProcess` (ESRCH), `isPermissionDenied` (EPERM, not ours to signal).
    public static func sendHangup(to pid: Int32) throws(SystemError) {
        guard kill(pid, SIGHUP) == 0 else { throw SystemError(call: "kill", errno: Glibc.errno) }
    }

    /// This process's id.
    public static func processID() -> Int32 {
        getpid()
    }

    /// The command name of process `pid` (`/proc/PID/comm`, at most 15 bytes), or nil when it cannot be read.
    public static func processName(_ pid: Int32) -> String? {
        let fd = open("/proc/\(pid)/comm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 64)
        let count = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return String(decoding: bytes[..<count], as: UTF8.self).trimmingSuffix("\n")
    }
}

private extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}
