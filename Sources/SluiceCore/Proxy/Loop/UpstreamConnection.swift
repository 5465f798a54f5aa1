/// One TCP connection to an upstream, owned by a loop: attached to the session it serves, or idle in
/// the loop's pool. Its fd stays registered with epoll while pooled, so a server closing an idle
/// connection is noticed and the connection dropped before anyone reuses it.
final class UpstreamConnection {
    // MARK: loop thread only
    var fd: FileDescriptor?
    let rawFD: Int32
    /// The server it connected to.
    let server: PoolServer
    var address: SocketAddress { server.address }
    let upstreamIndex: Int
    /// The settings whose upstream table `upstreamIndex` indexes: after a reload the connection is not pooled.
    let settings: ProxySettings
    /// Plain for `http`, TLS for `https`.
    let transport: Transport
    /// Connect finished (SO_ERROR checked).
    var connected = false
    /// Edge-triggered readiness: true until a read or write returns EAGAIN.
    var readable = true
    var writable = true
    /// The server closed its side (EPOLLRDHUP) or the socket failed.
    var hangup = false
    /// Served at least one exchange before the current one.
    var reused = false
    /// The session it serves; nil while pooled.
    var session: ClientSession?
    /// When it entered the pool (loop milliseconds).
    var idleSince: Int64 = 0

    init(fd: consuming FileDescriptor, server: PoolServer, upstreamIndex: Int, settings: ProxySettings, tls: TLSEngine?) {
        rawFD = fd.rawValue
        self.server = server
        transport = Transport(fd: fd.rawValue, tls: tls)
        self.fd = .some(fd)
        self.upstreamIndex = upstreamIndex
        self.settings = settings
    }

    var isOpen: Bool { fd != nil }

    /// The TLS session to an `https` upstream; nil for `http`.
    var tls: TLSEngine? { transport.tls }

    /// TCP connected and, for https, the handshake done: the connect timeout no longer applies.
    var isEstablished: Bool { connected && (tls?.isEstablished ?? true) }
}
