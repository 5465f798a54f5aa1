import Glibc

/// A failed system call: which call and the errno it left.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32
    /// The failure in words when errno does not say it: getaddrinfo reports through its own EAI_* codes
    /// (`gai_strerror`) and leaves errno alone, so `strerror(errno)` would append a stale ": Success".
    public let reason: String?

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
        reason = nil
    }

    /// A failure that errno does not describe (`errno` is 0).
    public init(call: String, reason: String) {
        self.call = call
        errno = 0
        self.reason = reason
    }

    public var description: String { "\(call): \(reason ?? String(cString: strerror(errno)))" }

    /// bind(2) failed because another socket holds the address (EADDRINUSE).
    public var isAddressInUse: Bool { errno == EADDRINUSE }
    /// kill(2) found no such process (ESRCH).
    public var isNoSuchProcess: Bool { errno == ESRCH }
    /// The caller may not do this to that object (EPERM), e.g. signal another user's process.
    public var isPermissionDenied: Bool { errno == EPERM }
    /// The call is not supported on this descriptor (splice on a socket type that cannot).
    public var isUnsupported: Bool { errno == EINVAL || errno == EOPNOTSUPP }
}

/// The outcome of a non-blocking call: EAGAIN is a value, not an error.
public enum IOResult<Value> {
    case processed(Value)
    case wouldBlock
}

/// Reads errno for a call that failed; EBADF and EFAULT mean our own bookkeeping is wrong, so they trap.
@inline(__always)
func failure(_ call: String) -> SystemError {
    let code = Glibc.errno
    precondition(code != EBADF && code != EFAULT, "\(call) failed with \(code): fd bookkeeping bug")
    return SystemError(call: call, errno: code)
}
