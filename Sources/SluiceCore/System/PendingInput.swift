import Glibc

extension Syscall {
    /// Whether bytes are waiting to be read on the socket `fd` (or its peer closed), without taking them:
    /// `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte. A draining proxy asks it before closing a connection it
    /// thinks idle, since a request may have arrived since its last read.
    public static func hasPendingInput(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        while true {
            let count = Glibc.recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
            if count > 0 { return true }
            if count == 0 { return false }
            if Glibc.errno == EINTR { continue }
            return false
        }
    }
}
