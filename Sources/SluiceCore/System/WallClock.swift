import Glibc

extension Syscall {
    /// Microseconds since the Unix epoch on the wall clock (a vDSO call, no syscall): the logs' timestamps.
    public static func wallClockMicroseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
    }

    /// Writes `bytes` to standard error whole (one write(2) unless the kernel takes less, so lines from several
    /// threads do not interleave), retrying EINTR; other failures are dropped: there is nowhere left to report them.
    public static func writeStandardError(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(2, bytes.baseAddress! + offset, bytes.count - offset)
            if written > 0 {
                offset += written
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                return
            }
        }
    }
}
