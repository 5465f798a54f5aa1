import Glibc

/// Sole owner of a kernel file descriptor; closing happens exactly once, in `deinit`.
/// Owners drop it (assign nil) to close at a precise moment, e.g. to cancel an upstream.
public struct FileDescriptor: ~Copyable {
    public let rawValue: Int32

    public init(rawValue: Int32) {
        self.rawValue = rawValue
    }

    deinit {
        // close is never retried: on Linux the fd is released even when close reports EINTR.
        _ = Glibc.close(rawValue)
    }
}

extension FileDescriptor {
    /// Gives up ownership without closing, for handing a descriptor to another thread's owner.
    public consuming func releaseRawValue() -> Int32 {
        let raw = rawValue
        discard self
        return raw
    }
}

extension Syscall {
    /// Closes a descriptor nobody owns as a `FileDescriptor` yet (one accepted and then refused). Never retried: on
    /// Linux the descriptor is released even when close reports EINTR.
    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }
}
