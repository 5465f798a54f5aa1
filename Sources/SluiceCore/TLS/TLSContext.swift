import COpenSSL

/// Why a TLS context could not be built or a TLS connection failed, in words for logs and 502 bodies.
public struct TLSError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// The configuration key whose value failed (`certificate`, `key`, `ciphers`, `ciphersuites`, `tls_ca_file`,
    /// `tls_ca_dir`), so the error can point at its line; nil when no one key is to blame.
    public let key: String?

    init(_ description: String, key: String? = nil) {
        self.description = description
        self.key = key
    }

    /// `what`, followed by the first reason on OpenSSL's error queue (which is then cleared).
    static func openSSL(_ what: String, key: String? = nil) -> TLSError {
        let reason = TLSError.drainErrorQueue()
        return TLSError(reason.isEmpty ? what : "\(what): \(reason)", key: key)
    }

    /// The first error on this thread's OpenSSL queue as text (library and reason), then clears the queue.
    static func drainErrorQueue() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return "" }
        if let reason = ERR_reason_error_string(code) { return String(cString: reason) }
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &text, text.count)
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The lowest protocol version a context accepts.
public enum TLSVersion: String, Sendable, Equatable, CaseIterable {
    case tls12 = "1.2"
    case tls13 = "1.3"

    var openSSLValue: Int32 { self == .tls12 ? TLS1_2_VERSION : TLS1_3_VERSION }
}

/// What the `tls { }` block says for listeners that terminate TLS.
public struct TLSServerConfig: Sendable, Equatable {
    /// PEM: the server certificate followed by its intermediates.
    public var certificateFile: String
    /// PEM private key matching the certificate.
    public var keyFile: String
    public var minVersion: TLSVersion
    /// TLS 1.2 cipher list (OpenSSL syntax); nil keeps OpenSSL's default.
    public var ciphers: String?
    /// TLS 1.3 ciphersuites (OpenSSL syntax); nil keeps OpenSSL's default.
    public var ciphersuites: String?
    /// Milliseconds a client has to finish its handshake.
    public var handshakeTimeout: Int

    public static let defaultHandshakeTimeout = 10_000

    public init(certificateFile: String, keyFile: String, minVersion: TLSVersion = .tls12, ciphers: String? = nil,
                ciphersuites: String? = nil, handshakeTimeout: Int = TLSServerConfig.defaultHandshakeTimeout) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.minVersion = minVersion
        self.ciphers = ciphers
        self.ciphersuites = ciphersuites
        self.handshakeTimeout = handshakeTimeout
    }
}

/// How an `https://` upstream is verified.
public struct TLSClientConfig: Sendable, Equatable {
    /// PEM bundle of trusted CAs instead of the system store.
    public var caFile: String?
    /// OpenSSL hashed directory of trusted CAs instead of the system store.
    public var caDirectory: String?
    /// Whether the upstream's certificate chain and name are checked. Off only by an explicit setting.
    public var verify: Bool
    /// Name sent as SNI and checked against the certificate; nil means the upstream's host.
    public var serverName: String?

    public init(caFile: String? = nil, caDirectory: String? = nil, verify: Bool = true, serverName: String? = nil) {
        self.caFile = caFile
        self.caDirectory = caDirectory
        self.verify = verify
        self.serverName = serverName
    }
}

/// An OpenSSL `SSL_CTX`, configured once and then only read: each connection's `SSL` is made from it
/// (`SSL_new` is safe on a shared context), so one context serves every loop.
public final class TLSContext: @unchecked Sendable {
    // @unchecked: after init the SSL_CTX is never modified, only passed to SSL_new, which OpenSSL
    // documents as thread-safe; it is freed when the last connection and settings let go of it.
    let raw: OpaquePointer
    public let isServer: Bool

    private init(raw: OpaquePointer, isServer: Bool) {
        self.raw = raw
        self.isServer = isServer
    }

    deinit { SSL_CTX_free(raw) }

    /// A context for terminating TLS: certificate chain and key from PEM files (a key that does not match
    /// the certificate is an error naming both files), minimum version, cipher choices, ALPN `http/1.1`.
    public static func server(_ config: TLSServerConfig) throws(TLSError) -> TLSContext {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError.openSSL("cannot create a TLS context") }
        let context = TLSContext(raw: ctx, isServer: true)
        try context.applyCommon(minVersion: config.minVersion)
        if let ciphers = config.ciphers, SSL_CTX_set_cipher_list(ctx, ciphers) != 1 {
            throw TLSError.openSSL("tls ciphers '\(ciphers)' selects no usable cipher", key: "ciphers")
        }
        if let suites = config.ciphersuites, SSL_CTX_set_ciphersuites(ctx, suites) != 1 {
            throw TLSError.openSSL("tls ciphersuites '\(suites)' selects no usable ciphersuite", key: "ciphersuites")
        }
        guard SSL_CTX_use_certificate_chain_file(ctx, config.certificateFile) == 1 else {
            throw TLSError.openSSL("cannot load the certificate chain from \(config.certificateFile)", key: "certificate")
        }
        let mismatch = TLSError("the private key in \(config.keyFile) does not match the certificate in \(config.certificateFile)", key: "key")
        guard SSL_CTX_use_PrivateKey_file(ctx, config.keyFile, SSL_FILETYPE_PEM) == 1 else {
            // OpenSSL 3 compares the key with the certificate while loading it.
            let reason = TLSError.drainErrorQueue()
            if reason == "key values mismatch" { throw mismatch }
            throw TLSError("cannot load the private key from \(config.keyFile)" + (reason.isEmpty ? "" : ": \(reason)"), key: "key")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            ERR_clear_error()
            throw mismatch
        }
        SSL_CTX_set_alpn_select_cb(ctx, selectHTTP11, nil)
        return context
    }

    /// A context for `https://` upstreams: verification against the system store (or `caFile`/`caDirectory`),
    /// TLS 1.2 minimum, ALPN offering `http/1.1`. The host name is set per connection (`TLSEngine`).
    public static func client(_ config: TLSClientConfig) throws(TLSError) -> TLSContext {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw TLSError.openSSL("cannot create a TLS context") }
        let context = TLSContext(raw: ctx, isServer: false)
        try context.applyCommon(minVersion: .tls12)
        // An upstream that closes without close_notify ends like a plain TCP stream: the HTTP framing (length,
        // last chunk) is what says whether the response was complete.
        SSL_CTX_set_options(ctx, sluice_SSL_OP_IGNORE_UNEXPECTED_EOF())
        if config.verify {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            if config.caFile != nil || config.caDirectory != nil {
                guard SSL_CTX_load_verify_locations(ctx, config.caFile, config.caDirectory) == 1 else {
                    // Only a file fails here: OpenSSL reads a directory lazily (see `ProxySettings.tlsContexts`).
                    throw TLSError.openSSL("cannot load trusted CAs from \(config.caFile ?? config.caDirectory ?? "")",
                                           key: config.caFile != nil ? "tls_ca_file" : "tls_ca_dir")
                }
            } else if SSL_CTX_set_default_verify_paths(ctx) != 1 {
                throw TLSError.openSSL("cannot load the system's trusted CAs")
            }
        } else {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
        }
        let alpn: [UInt8] = [8] + Array("http/1.1".utf8)
        guard SSL_CTX_set_alpn_protos(ctx, alpn, UInt32(alpn.count)) == 0 else { throw TLSError.openSSL("cannot set ALPN") }
        return context
    }

    private func applyCommon(minVersion: TLSVersion) throws(TLSError) {
        guard sluice_SSL_CTX_set_min_proto_version(raw, minVersion.openSSLValue) == 1 else {
            throw TLSError.openSSL("cannot set the minimum TLS version")
        }
        // Partial writes: a full network buffer returns what was taken instead of failing, so the proxy's
        // queues, not OpenSSL's, hold what waits. SSL_MODE_RELEASE_BUFFERS is deliberately off: it would save
        // an idle connection its record buffers but allocate them again for every event (measured: 4
        // allocations per event), and the hot path allocates nothing per chunk.
        _ = sluice_SSL_CTX_set_mode(raw, sluice_SSL_MODE_ENABLE_PARTIAL_WRITE() | sluice_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER())
        SSL_CTX_set_options(raw, sluice_SSL_OP_NO_RENEGOTIATION())
    }
}

/// ALPN on the server side: `http/1.1` when the client offers it; a client offering only other protocols
/// (e.g. `h2`) gets no ALPN answer rather than a fatal alert, and speaks HTTP/1.1 or fails on its own.
private let selectHTTP11: @convention(c) (
    OpaquePointer?, UnsafeMutablePointer<UnsafePointer<UInt8>?>?, UnsafeMutablePointer<UInt8>?,
    UnsafePointer<UInt8>?, UInt32, UnsafeMutableRawPointer?
) -> Int32 = { _, selected, selectedLength, offered, offeredLength, _ in
    guard let offered, let selected, let selectedLength else { return SSL_TLSEXT_ERR_NOACK }
    var index = 0
    while index < Int(offeredLength) {
        let length = Int(offered[index])
        let start = index + 1
        guard start + length <= Int(offeredLength) else { break }
        if length == 8 && (0..<8).allSatisfy({ offered[start + $0] == http11[$0] }) {
            selected.pointee = offered + start
            selectedLength.pointee = 8
            return SSL_TLSEXT_ERR_OK
        }
        index = start + length
    }
    return SSL_TLSEXT_ERR_NOACK
}

private let http11: [UInt8] = Array("http/1.1".utf8)
