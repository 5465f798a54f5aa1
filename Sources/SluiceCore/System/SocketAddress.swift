import Glibc

/// An IPv4 or IPv6 socket address, stored inline (no allocation).
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    private var storage: sockaddr_storage
    private var length: socklen_t

    init(storage: sockaddr_storage, length: socklen_t) {
        self.storage = storage
        self.length = length
    }

    /// Parses a numeric IPv4 or IPv6 literal (no brackets); nil when it is not one.
    public init?(numericHost host: String, port: UInt16) {
        storage = sockaddr_storage()
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr = v4
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: address, as: sockaddr_in.self) }
        } else if inet_pton(AF_INET6, host, &v6) == 1 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            address.sin6_addr = v6
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: address, as: sockaddr_in6.self) }
        } else {
            return nil
        }
    }

    /// Resolves a host name or literal with getaddrinfo (it blocks: start-up, or a thread of its own). Prefers the
    /// first address returned.
    public static func resolve(host: String, port: UInt16) throws(SystemError) -> SocketAddress {
        try resolveAll(host: host, port: port)[0]
    }

    /// Every address `host` has, in getaddrinfo's order (RFC 6724 preference), without repeats; a literal is its
    /// own only address. Blocks like `resolve`.
    /// - Throws: when the name does not resolve (the error names it and says why).
    public static func resolveAll(host: String, port: UInt16) throws(SystemError) -> [SocketAddress] {
        if let numeric = SocketAddress(numericHost: host, port: port) { return [numeric] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &result)
        let code = Glibc.errno  // read at once: only EAI_SYSTEM means anything by it
        guard status == 0 else { throw resolverError(host: host, status: status, errno: code) }
        guard result != nil else { throw SystemError(call: "getaddrinfo(\(host))", reason: "no address") }
        defer { freeaddrinfo(result) }
        var addresses: [SocketAddress] = []
        var entry = result
        while let current = entry {
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { target in
                target.copyMemory(from: UnsafeRawBufferPointer(start: current.pointee.ai_addr, count: Int(current.pointee.ai_addrlen)))
            }
            let address = SocketAddress(storage: storage, length: current.pointee.ai_addrlen)
            if !addresses.contains(address) { addresses.append(address) }
            entry = current.pointee.ai_next
        }
        guard !addresses.isEmpty else { throw SystemError(call: "getaddrinfo(\(host))", reason: "no address") }
        return addresses
    }

    /// getaddrinfo's failure in the resolver's words: its EAI_* code through `gai_strerror`; only EAI_SYSTEM
    /// leaves the cause in errno.
    static func resolverError(host: String, status: Int32, errno code: Int32) -> SystemError {
        if status == EAI_SYSTEM && code != 0 { return SystemError(call: "getaddrinfo(\(host))", errno: code) }
        return SystemError(call: "getaddrinfo(\(host))", reason: String(cString: gai_strerror(status)))
    }

    public var family: Int32 { Int32(storage.ss_family) }

    /// The same family, address and port (sockaddr_storage's padding is not compared).
    public static func == (lhs: SocketAddress, rhs: SocketAddress) -> Bool {
        guard lhs.length == rhs.length else { return false }
        return withUnsafeBytes(of: lhs.storage) { left in
            withUnsafeBytes(of: rhs.storage) { right in memcmp(left.baseAddress!, right.baseAddress!, Int(lhs.length)) == 0 }
        }
    }

    public var port: UInt16 {
        withUnsafeBytes(of: storage) { raw in
            family == AF_INET6 ? UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
                : UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
        }
    }

    /// Writes the numeric host (no port, no brackets) as ASCII into `body`'s buffer, e.g. for X-Forwarded-For.
    public var hostString: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        withUnsafeBytes(of: storage) { raw in
            if family == AF_INET6 {
                var address = raw.load(as: sockaddr_in6.self).sin6_addr
                _ = inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
            } else {
                var address = raw.load(as: sockaddr_in.self).sin_addr
                _ = inet_ntop(AF_INET, &address, &text, socklen_t(text.count))
            }
        }
        let length = text.firstIndex(of: 0) ?? text.count
        return String(decoding: text[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// "127.0.0.1:8080" or "[::1]:8080".
    public var description: String {
        family == AF_INET6 ? "[\(hostString)]:\(port)" : "\(hostString):\(port)"
    }

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }
}

extension SocketAddress {
    /// Whether only this host can connect to the address: 127.0.0.0/8, `::1`, or `::ffff:127.0.0.0/104`.
    /// A wildcard (`0.0.0.0`, `::`) is not: it listens on every interface.
    public var isLoopback: Bool {
        withUnsafeBytes(of: storage) { raw in
            if family == AF_INET {
                return withUnsafeBytes(of: raw.load(as: sockaddr_in.self).sin_addr) { $0[0] == 127 }
            }
            guard family == AF_INET6 else { return false }
            let bytes = withUnsafeBytes(of: raw.load(as: sockaddr_in6.self).sin6_addr) { Array($0) }
            if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return true }
            return bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff && bytes[12] == 127
        }
    }
}
