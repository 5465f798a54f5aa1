import Glibc

/// A failed system call: which call and the errno it left.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno)))" }
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
