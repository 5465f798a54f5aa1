/// The admin listener: `GET /metrics` (Prometheus text), `GET /healthz` (the process is alive) and
/// `GET /readyz` (it takes new connections: 503 once draining) on its own address and thread, never on a
/// public listener. Scrapes are rare and small, so it serves one connection at a time with blocking
/// sockets and short timeouts; the proxy loops never wait for it.
public enum AdminServer {
    /// How long a scraper may take to send its request head.
    static let requestTimeoutSeconds = 5

    /// Binds `address` (throws if it cannot) and starts the admin thread.
    public static func start(address: ListenAddress, metrics: MetricsRegistry, readiness: Readiness) throws(SystemError) -> String {
        let socketAddress = try SocketAddress.resolve(host: address.host == "*" ? "0.0.0.0" : address.host, port: address.port)
        let listener = try Syscall.listeningSocket(socketAddress, backlog: 64)
        let bound = try Syscall.localAddress(listener.rawValue)
        let raw = listener.releaseRawValue()
        // The listener is non-blocking (like every sluice socket); this thread wants to block in accept.
        Syscall.setBlocking(raw)
        try LoopThread.spawn(name: "sluice-admin") { serve(listenerFD: raw, metrics: metrics, readiness: readiness) }
        return bound.description
    }

    private static func serve(listenerFD: Int32, metrics: MetricsRegistry, readiness: Readiness) {
        var parser = RequestHeadParser()
        let buffer = ByteBuffer(capacity: 16 * 1024)
        while true {
            guard let fd = Syscall.acceptBlocking(listenerFD) else {
                // EMFILE and friends: back off instead of spinning.
                Syscall.sleep(milliseconds: 100)
                continue
            }
            Syscall.setIOTimeout(fd.rawValue, seconds: requestTimeoutSeconds)
            buffer.clear()
            parser.reset()
            handle(fd.rawValue, buffer: buffer, parser: &parser, metrics: metrics, readiness: readiness)
        }
    }

    private static func handle(_ fd: Int32, buffer: ByteBuffer, parser: inout RequestHeadParser, metrics: MetricsRegistry,
                               readiness: Readiness) {
        while true {
            guard buffer.writableCount > 0, case .processed(let count) = (try? buffer.read(from: fd)) ?? .processed(0), count > 0 else { return }
            let result = buffer.withReadableSpan { parser.parse($0) }
            switch result {
            case .needMore:
                continue
            case .failed(let error, _):
                return respond(fd, status: 400, reason: "Bad Request", contentType: "text/plain", body: error.message + "\n")
            case .complete:
                let head = parser.head
                let target = buffer.withReadableSpan { span in String(decoding: (head.target).map { span[$0] }, as: UTF8.self) }
                let path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? target
                guard head.method == .get || head.method == .head else {
                    return respond(fd, status: 405, reason: "Method Not Allowed", contentType: "text/plain", body: "use GET\n")
                }
                switch path {
                case "/metrics":
                    respond(fd, status: 200, reason: "OK", contentType: MetricsRegistry.contentType, body: metrics.render(), headOnly: head.method == .head)
                case "/healthz":
                    respond(fd, status: 200, reason: "OK", contentType: "text/plain", body: "ok\n", headOnly: head.method == .head)
                case "/readyz" where readiness.isReady:
                    respond(fd, status: 200, reason: "OK", contentType: "text/plain", body: "ready\n", headOnly: head.method == .head)
                case "/readyz":
                    respond(fd, status: 503, reason: "Service Unavailable", contentType: "text/plain", body: "draining\n",
                            headOnly: head.method == .head)
                default:
                    respond(fd, status: 404, reason: "Not Found", contentType: "text/plain", body: "not found; try /metrics, /healthz or /readyz\n")
                }
                return
            }
        }
    }

    private static func respond(_ fd: Int32, status: Int, reason: String, contentType: String, body: String, headOnly: Bool = false) {
        var text = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        if !headOnly { text += body }
        Syscall.sendAll(fd, Array(text.utf8))
    }
}
