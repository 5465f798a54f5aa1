import Foundation
import Glibc
import SluiceCore

/// A mock OpenAI- and Anthropic-compatible backend for `sluice demo` and for tests.
///
/// It answers `POST /v1/chat/completions` (streamed as SSE or as one JSON
/// object), `GET /v1/models`, `GET /v1/models/sluice-demo` and `GET /healthz`
/// with OpenAI's wire format, and `POST /v1/messages` with Anthropic's (its
/// named SSE events, or one `message` object), so the official SDKs of both
/// work against it. The reply is `replyText(forUserMessage:)`, streamed one
/// word per event.
///
/// It is deliberately simple rather than fast: blocking sockets, one accept
/// thread and one thread per connection. It is not on the proxy's hot path.
///
/// Lifetime: once started it serves until `stop()`, even if this object is
/// released, so a caller may start it and forget the reference.
public final class DemoBackend: Sendable {
    /// The port the listener is bound to (the kernel's pick when 0 was asked).
    public let port: UInt16
    /// Time between consecutive SSE events of a streamed reply.
    public let tokenInterval: Duration

    // MARK: Shared with the accept and connection threads
    private let listenFD: Int32
    private let state: Locked<LifecycleState>
    private let registry = DemoConnectionRegistry()

    /// Where the backend is in its life.
    private enum LifecycleState {
        /// Bound and listening; nobody accepts yet (the kernel queues connections).
        case bound
        /// The accept thread owns the listener and closes it when it exits.
        case running
        /// `stop()` was called; the listener is shut down or closed.
        case stopped
    }

    /// Binds and listens (`SO_REUSEADDR`) on `host:port`; port 0 picks an
    /// ephemeral port, readable from `port`.
    ///
    /// - Parameters:
    ///   - host: a numeric IPv4 or IPv6 address, or a name such as `localhost`
    ///     (the first address it resolves to is used).
    ///   - tokenInterval: the pause between SSE events; `.zero` sends them
    ///     back to back.
    /// - Throws: `DemoBackendError` naming the failed call and its errno text,
    ///   e.g. `bind(127.0.0.1:8080): Address already in use (errno 98)`.
    public init(host: String = "127.0.0.1", port: UInt16 = 0, tokenInterval: Duration = .milliseconds(40)) throws {
        let listener = try DemoSocket.listen(host: host, port: port)
        self.listenFD = listener.fd
        self.port = listener.port
        self.tokenInterval = max(tokenInterval, .zero)
        self.state = Locked(.bound)
    }

    /// Starts the accept thread and returns at once. Calling it again, or
    /// after `stop()`, does nothing.
    public func start() {
        let shouldStart = state.withLock { state -> Bool in
            guard case .bound = state else { return false }
            state = .running
            return true
        }
        guard shouldStart else { return }
        let listenFD = self.listenFD
        let tokenInterval = self.tokenInterval
        let registry = self.registry
        let thread = Thread {
            DemoBackend.acceptLoop(listenFD: listenFD, tokenInterval: tokenInterval, registry: registry)
        }
        thread.name = "sluice-demo-accept"
        thread.start()
    }

    /// Stops accepting and ends every open connection (a stream in progress
    /// stops at its next event). Returns without waiting for the threads to
    /// exit; the port is free for a new bind once the accept thread has closed
    /// the listener, normally within milliseconds.
    public func stop() {
        let previous = state.withLock { state -> LifecycleState in
            let previous = state
            state = .stopped
            return previous
        }
        switch previous {
        case .bound:
            _ = Glibc.close(listenFD)
        case .running:
            // Wakes the blocked accept(2) with EINVAL; the accept thread then
            // closes the fd, so it is never closed under a running accept.
            _ = Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
        case .stopped:
            return
        }
        registry.shutdownAll()
    }

    deinit {
        // A started backend keeps serving without its handle (see the type's
        // doc); one that never started would otherwise leak its listening fd.
        state.withLock { state in
            if case .bound = state {
                state = .stopped
                _ = Glibc.close(listenFD)
            }
        }
    }

    /// The exact assistant text answered for a last user message: the
    /// message, cut to its first 200 Unicode scalars, quoted inside a fixed
    /// sentence. Joining the `delta.content` of every streamed chunk, or
    /// reading the non-streamed `message.content`, gives this text (unless
    /// `max_tokens` cut it short). Array content is its text parts joined by "\n".
    public static func replyText(forUserMessage message: String) -> String {
        DemoChatReply.replyText(forUserMessage: message)
    }

    /// Accepts until the listener is shut down, one thread per connection.
    /// Owning thread: the accept thread, which also closes the listener.
    private static func acceptLoop(listenFD: Int32, tokenInterval: Duration, registry: DemoConnectionRegistry) {
        acceptLoop: while true {
            switch DemoSocket.accept(listenFD) {
            case .connection(let fd):
                guard registry.add(fd) else {
                    _ = Glibc.close(fd)
                    break acceptLoop
                }
                let connection = DemoConnection(fd: fd, tokenInterval: tokenInterval, registry: registry)
                let thread = Thread { connection.run() }
                thread.name = "sluice-demo-conn"
                thread.start()
            case .retry(let error):
                // Out of fds or memory: back off instead of spinning on a
                // listener that stays readable.
                if error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM {
                    usleep(10_000)
                }
            case .listenerClosed:
                break acceptLoop
            }
        }
        _ = Glibc.close(listenFD)
    }
}

/// The open connection fds, so `stop()` can end them.
///
/// Owning thread: any; every access holds the lock. A connection thread
/// removes its fd here before closing it, and `shutdownAll` shuts fds down
/// under the same lock, so it can never hit an fd number already reused.
final class DemoConnectionRegistry: Sendable {
    private let fds = Locked<(stopped: Bool, open: Set<Int32>)>((false, []))

    /// Records a new connection. Returns false once `shutdownAll` has run,
    /// in which case the caller closes the fd itself.
    func add(_ fd: Int32) -> Bool {
        fds.withLock { state in
            guard !state.stopped else { return false }
            state.open.insert(fd)
            return true
        }
    }

    /// Forgets a connection that is about to be closed by its thread.
    func remove(_ fd: Int32) {
        _ = fds.withLock { $0.open.remove(fd) }
    }

    /// Refuses new connections and shuts down the open ones, waking threads
    /// blocked in recv, send or poll; each then closes its own fd.
    func shutdownAll() {
        fds.withLock { state in
            state.stopped = true
            for fd in state.open { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }
}
