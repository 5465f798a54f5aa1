import Glibc

/// What admitting client connections needs from the kernel: whether a first byte has arrived (without taking it),
/// and how many descriptors the process may hold.
extension Syscall {
    /// Looks for one byte on a connected socket without consuming it (MSG_PEEK). `.processed(1)`: bytes are there;
    /// `.processed(0)`: the peer closed; `.wouldBlock`: nothing yet. Lets a TLS listener's session allocate its
    /// OpenSSL state only once the client has sent something.
    public static func peekByte(_ fd: Int32) throws(SystemError) -> IOResult<Int> {
        var byte: UInt8 = 0
        while true {
            let count = recv(fd, &byte, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
            if count >= 0 { return .processed(count) }
            switch Glibc.errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default: throw failure("recv")
            }
        }
    }

    /// The soft open-file limit now (RLIMIT_NOFILE); start-up raises it to the hard limit first
    /// (`raiseOpenFileLimit`). 1024, the usual default, if it cannot be read.
    public static func openFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return Int(clamping: limit.rlim_cur)
    }
}
