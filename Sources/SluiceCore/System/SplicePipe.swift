import CSluiceLinux
import Glibc

/// A non-blocking pipe that carries a response body from the upstream socket to the client socket with splice(2):
/// the kernel moves the socket's pages into the pipe and from the pipe into the other socket, so the bytes are never
/// copied into and out of a user-space buffer (two copies per byte saved, what makes a bulk body cost the proxy
/// little more than its system calls). `queued` is what sits in the pipe: the session's queue for that body, bounded
/// by the pipe's capacity as a buffer is by its size. Loop thread only.
public final class SplicePipe {
    let readFD: Int32
    let writeFD: Int32
    /// Bytes spliced in and not yet spliced out.
    public private(set) var queued = 0
    /// The most a splice into the pipe asks for: the default pipe (16 pages) on Linux.
    public static let capacity = 65_536

    private init(readFD: Int32, writeFD: Int32) {
        self.readFD = readFD
        self.writeFD = writeFD
    }

    deinit {
        Glibc.close(readFD)
        Glibc.close(writeFD)
    }

    /// A new pipe, or nil when none can be made (EMFILE under load): the caller then copies as usual.
    static func make() -> SplicePipe? {
        var fds: [Int32] = [0, 0]
        guard pipe2(&fds, Int32(O_NONBLOCK) | Int32(O_CLOEXEC)) == 0 else { return nil }
        return SplicePipe(readFD: fds[0], writeFD: fds[1])
    }

    public var room: Int { SplicePipe.capacity - queued }

    /// Moves up to `count` bytes from the socket `source` into the pipe. `.processed(0)` is the socket's end of
    /// stream; `.wouldBlock` means the socket is empty (or the pipe full).
    public func fill(from source: Int32, count: Int) throws(SystemError) -> IOResult<Int> {
        let result = try Self.splice(from: source, to: writeFD, count: count)
        if case .processed(let moved) = result { queued += moved }
        return result
    }

    /// Moves up to `queued` bytes from the pipe into the socket `destination`; `.wouldBlock` when it is full.
    public func drain(to destination: Int32) throws(SystemError) -> IOResult<Int> {
        guard queued > 0 else { return .processed(0) }
        let result = try Self.splice(from: readFD, to: destination, count: queued)
        if case .processed(let moved) = result { queued -= moved }
        return result
    }

    private static func splice(from source: Int32, to destination: Int32, count: Int) throws(SystemError) -> IOResult<Int> {
        while true {
            let moved = CSluiceLinux.splice(source, nil, destination, nil, count,
                                            UInt32(SLUICE_SPLICE_F_MOVE | SLUICE_SPLICE_F_NONBLOCK))
            if moved >= 0 { return .processed(moved) }
            switch Glibc.errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default: throw failure("splice")
            }
        }
    }
}

/// A loop's empty pipes, so a bulk response does not pay pipe2 and two closes; a pipe that still holds bytes
/// (an exchange cut short) is closed instead of pooled. Loop thread only.
public final class SplicePipePool {
    private var free: [SplicePipe] = []
    /// Two descriptors each: a few dozen concurrent bulk bodies are served from the pool, more make their own.
    private let maxFree: Int

    public init(maxFree: Int = 32) { self.maxFree = maxFree }

    func take() -> SplicePipe? { free.popLast() ?? SplicePipe.make() }

    func give(_ pipe: SplicePipe) {
        if pipe.queued == 0 && free.count < maxFree { free.append(pipe) }
    }

    public var freeCount: Int { free.count }
}
