import COpenSSL

/// What one call into a TLS connection did.
public enum TLSStep: Equatable, Sendable {
    /// This many plaintext bytes were read or taken for writing.
    case bytes(Int)
    /// More ciphertext from the peer is needed first (also while the handshake waits for the peer).
    case wantRead
    /// The network buffer is full: send `pendingOutput` first.
    case wantWrite
    /// The peer closed the TLS session cleanly (close_notify).
    case closed
    /// The connection failed; the reason names it (a certificate verification error, a protocol alert...).
    case failed(String)
}

/// One TLS connection as a state machine over memory: ciphertext goes in and out through a fixed-size OpenSSL
/// BIO pair (no allocation per record, and a bound on what OpenSSL holds), plaintext through `read` and `write`.
/// It never touches a socket: the proxy moves the ciphertext (`Transport`), and tests wire two engines
/// together. Owned by one loop thread.
///
/// A server engine starts empty: the OpenSSL connection and its BIO pair (about 55 KB) are made by `start`, when
/// the client's first byte is there, so a bare TCP connect held open against a TLS listener costs this object
/// only (issue 12, item 5). A client engine starts at once.
///
/// Raw pointers appear here because OpenSSL's interface is pointers; they never leave the calls below.
public final class TLSEngine {
    /// nil until `start` (a server engine before its client's first byte).
    private var ssl: OpaquePointer?
    /// Our end of the BIO pair: ciphertext from the peer is written into it, ciphertext for the peer read out.
    private var network: OpaquePointer?
    /// What a server engine starts with; nil once started, and for a client engine.
    private var pendingContext: TLSContext?
    /// Set by the first failure; every later call repeats it.
    private var failure: String?
    /// A server that has not yet seen a byte from its client: the first one tells TLS from plain HTTP.
    private var awaitingFirstByte = false
    /// The client's first bytes were a plain-HTTP request line, not a TLS record (`http://` used on an https
    /// port). The engine failed without answering, so the caller may answer in plain text instead.
    public private(set) var peerSentPlainHTTP = false

    /// Each direction of the BIO pair holds this much ciphertext: one full TLS record and its overhead, so a
    /// record is always written whole and a peer's record always fits.
    public static let networkBufferSize = 17 * 1024

    /// A server-side connection (it waits for the ClientHello). Allocates nothing of OpenSSL's: see `start`.
    public init(server context: TLSContext) {
        pendingContext = context
        awaitingFirstByte = true
    }

    /// A client-side connection to `host`: SNI is sent when `host` is a name (RFC 6066 forbids IP literals), and
    /// when the context verifies, the certificate must match `host` (as a DNS name or an IP address).
    public init(client context: TLSContext, host: String) throws(TLSError) {
        let made = try Self.makeConnection(context)
        ssl = made.ssl
        network = made.network
        SSL_set_connect_state(made.ssl)
        let isAddress = IPAddress(host) != nil
        if !isAddress {
            guard sluice_SSL_set_tlsext_host_name(made.ssl, host) == 1 else { throw TLSError.openSSL("cannot set SNI '\(host)'") }
        }
        if SSL_CTX_get_verify_mode(context.raw) != SSL_VERIFY_NONE {
            let checked = isAddress ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(made.ssl), host) : SSL_set1_host(made.ssl, host)
            guard checked == 1 else { throw TLSError.openSSL("cannot set the name to verify '\(host)'") }
        }
    }

    private static func makeConnection(_ context: TLSContext) throws(TLSError) -> (ssl: OpaquePointer, network: OpaquePointer) {
        guard let ssl = SSL_new(context.raw) else { throw TLSError.openSSL("cannot create a TLS connection") }
        var inside: OpaquePointer?
        var outside: OpaquePointer?
        guard BIO_new_bio_pair(&inside, Self.networkBufferSize, &outside, Self.networkBufferSize) == 1,
              let inside, let outside else {
            SSL_free(ssl)
            throw TLSError.openSSL("cannot create a TLS buffer pair")
        }
        SSL_set_bio(ssl, inside, inside)  // the SSL owns (and frees) its end
        return (ssl, outside)
    }

    deinit {
        if let ssl { SSL_free(ssl) }
        if let network { BIO_free(network) }
    }

    /// The OpenSSL connection exists (a server engine has been started).
    public var isStarted: Bool { ssl != nil }

    /// Makes a server engine's OpenSSL connection, once its client has sent a byte; true when it exists.
    /// False when OpenSSL could not allocate it (out of memory): the engine has failed, and says so on every call.
    @discardableResult
    public func start() -> Bool {
        if ssl != nil { return true }
        guard failure == nil, let context = pendingContext else { return false }
        pendingContext = nil
        do throws(TLSError) {
            let made = try Self.makeConnection(context)
            ssl = made.ssl
            network = made.network
            SSL_set_accept_state(made.ssl)
            return true
        } catch {
            failure = error.description
            return false
        }
    }

    // MARK: Ciphertext

    /// Lends the free space for ciphertext from the peer (may be empty while earlier ciphertext waits to be
    /// read); commit what was put there with `received`.
    /// Starts a server engine: ciphertext offered is its client's first byte.
    public func withReceiveSpace<R>(_ body: (UnsafeMutableRawBufferPointer) -> R) -> R {
        var space: UnsafeMutablePointer<CChar>?
        guard start(), let network else { return body(UnsafeMutableRawBufferPointer(start: nil, count: 0)) }
        let count = BIO_nwrite0(network, &space)
        guard count > 0, let space else { return body(UnsafeMutableRawBufferPointer(start: nil, count: 0)) }
        return body(UnsafeMutableRawBufferPointer(start: space, count: Int(count)))
    }

    /// `count` bytes were written into the space `withReceiveSpace` lent.
    public func received(_ count: Int) {
        var space: UnsafeMutablePointer<CChar>?
        guard let network else { return }
        _ = BIO_nwrite(network, &space, Int32(count))
        guard awaitingFirstByte, count > 0, let space else { return }
        awaitingFirstByte = false
        // A TLS record starts with its content type (22 for a ClientHello; 0x80 for an SSLv2-style hello), a
        // request line with a method token: upper-case ASCII for every registered method.
        let first = UInt8(bitPattern: space[0])
        if first >= UInt8(ascii: "A") && first <= UInt8(ascii: "Z") {
            peerSentPlainHTTP = true
            failure = "the client sent plain HTTP to a TLS listener"
        }
    }

    /// Lends the ciphertext waiting to go to the peer (possibly only its first part: the pair is a ring);
    /// drop what was sent with `sent`.
    public func withPendingOutput<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        var output: UnsafeMutablePointer<CChar>?
        guard let network else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        let count = BIO_nread0(network, &output)
        guard count > 0, let output else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return body(UnsafeRawBufferPointer(start: output, count: Int(count)))
    }

    /// `count` bytes of the pending output were sent.
    public func sent(_ count: Int) {
        var output: UnsafeMutablePointer<CChar>?
        guard let network else { return }
        _ = BIO_nread(network, &output, Int32(count))
    }

    /// Ciphertext is waiting to go to the peer.
    public var hasPendingOutput: Bool {
        guard let network else { return false }
        return BIO_ctrl_pending(network) > 0
    }

    /// Received ciphertext or decrypted plaintext is waiting to be read: `read` may return bytes without
    /// anything new from the peer.
    public var hasBufferedInput: Bool {
        guard let ssl, let network else { return false }
        return SSL_has_pending(ssl) == 1 || BIO_ctrl_wpending(network) > 0
    }

    // MARK: Plaintext

    /// Whether the handshake is complete.
    public var isEstablished: Bool {
        guard let ssl else { return false }
        return SSL_is_init_finished(ssl) == 1
    }

    /// The protocol ALPN settled on, if any.
    public var negotiatedProtocol: String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        guard let ssl else { return nil }
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    /// Decrypts into `space` (driving the handshake first when it is not done). An engine not started waits
    /// for its peer (`.wantRead`).
    public func read(into space: UnsafeMutableRawBufferPointer) -> TLSStep {
        if let failure { return .failed(failure) }
        guard let ssl else { return .wantRead }
        guard let base = space.baseAddress, space.count > 0 else { return .bytes(0) }
        var count = 0
        let result = SSL_read_ex(ssl, base, space.count, &count)
        return result == 1 ? .bytes(count) : step(ssl, after: Int32(result))
    }

    /// Encrypts as much of `bytes` as the network buffer takes (at least one record's worth when it is empty),
    /// driving the handshake first when it is not done. Each call produces records at once: nothing is held
    /// back to fill a bigger one. An engine not started waits for its peer's ClientHello (`.wantRead`).
    public func write(_ bytes: UnsafeRawBufferPointer) -> TLSStep {
        if let failure { return .failed(failure) }
        guard let ssl else { return .wantRead }
        guard let base = bytes.baseAddress, bytes.count > 0 else { return .bytes(0) }
        var count = 0
        let result = SSL_write_ex(ssl, base, bytes.count, &count)
        return result == 1 ? .bytes(count) : step(ssl, after: Int32(result))
    }

    /// Queues a close_notify alert (the clean end of a response delimited by the connection's close).
    public func close() {
        guard failure == nil, isEstablished, let ssl else { return }
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    private func step(_ ssl: OpaquePointer, after result: Int32) -> TLSStep {
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ:
            return .wantRead
        case SSL_ERROR_WANT_WRITE:
            return .wantWrite
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        default:
            let reason = failureReason(ssl)
            failure = reason
            return .failed(reason)
        }
    }

    /// A certificate verification error in OpenSSL's words ("certificate has expired", "hostname mismatch",
    /// "unable to get local issuer certificate"), else the first error on the queue.
    private func failureReason(_ ssl: OpaquePointer) -> String {
        let verify = SSL_get_verify_result(ssl)
        let queued = TLSError.drainErrorQueue()
        if verify != X509_V_OK, let text = X509_verify_cert_error_string(verify) {
            return "certificate verify failed: \(String(cString: text))"
        }
        return queued.isEmpty ? "TLS protocol error" : queued
    }
}
