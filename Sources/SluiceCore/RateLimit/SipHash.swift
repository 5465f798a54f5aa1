/// SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012): a keyed
/// 64-bit hash.
///
/// Used to turn rate-limit key material (API keys, client addresses) into ``RateLimitKey``s.
/// Keyed, so that without the 128-bit key an attacker can neither invert a logged hash back to
/// an API key by brute force over likely values nor choose inputs that collide (which would let
/// one client spend another's budget). Written here because RateLimit/ uses the standard library
/// only, and Swift's own `Hasher` is seeded per process and not specified to be SipHash-2-4.
///
/// Streaming: ``append(_:)`` any number of times, then ``finalize()``. A value type with no
/// allocation; not thread-safe (each caller has its own).
public struct SipHash24 {
    private var v0: UInt64
    private var v1: UInt64
    private var v2: UInt64
    private var v3: UInt64
    /// Bytes not yet compressed, little-endian in the low `pendingCount * 8` bits.
    private var pending: UInt64 = 0
    private var pendingCount = 0
    /// Total bytes appended; its low byte goes into the last block (§2 of the paper).
    private var length: UInt64 = 0

    /// A hasher keyed with `k0` (key bytes 0-7, little-endian) and `k1` (bytes 8-15).
    public init(k0: UInt64, k1: UInt64) {
        v0 = k0 ^ 0x736f_6d65_7073_6575  // "somepseu"
        v1 = k1 ^ 0x646f_7261_6e64_6f6d  // "dorandom"
        v2 = k0 ^ 0x6c79_6765_6e65_7261  // "lygenera"
        v3 = k1 ^ 0x7465_6462_7974_6573  // "tedbytes"
    }

    /// The hash of `bytes` under key (`k0`, `k1`).
    public static func hash(k0: UInt64, k1: UInt64, bytes: some Sequence<UInt8>) -> UInt64 {
        var hasher = SipHash24(k0: k0, k1: k1)
        hasher.append(bytes)
        return hasher.finalize()
    }

    /// Feeds one byte.
    @inline(__always)
    public mutating func append(byte: UInt8) {
        pending |= UInt64(byte) << (UInt64(pendingCount) &* 8)
        pendingCount += 1
        length &+= 1
        if pendingCount == 8 {
            compress(pending)
            pending = 0
            pendingCount = 0
        }
    }

    /// Feeds `bytes` in order.
    public mutating func append(_ bytes: some Sequence<UInt8>) {
        for byte in bytes { append(byte: byte) }
    }

    /// Feeds the 8 little-endian bytes of `value`, as a fixed-width field.
    public mutating func append(littleEndian value: UInt64) {
        for shift in stride(from: UInt64(0), to: 64, by: 8) {
            append(byte: UInt8(truncatingIfNeeded: value >> shift))
        }
    }

    /// The hash of everything appended. The hasher must not be used afterwards.
    public mutating func finalize() -> UInt64 {
        // Last block: the remaining bytes with the length (mod 256) in the top byte.
        compress(pending | (length << 56))
        v2 ^= 0xff
        for _ in 0..<4 { round() }
        return v0 ^ v1 ^ v2 ^ v3
    }

    /// Two SipRounds over one 8-byte message word (the "2" of SipHash-2-4).
    @inline(__always)
    private mutating func compress(_ word: UInt64) {
        v3 ^= word
        round()
        round()
        v0 ^= word
    }

    @inline(__always)
    private mutating func round() {
        v0 &+= v1
        v1 = rotate(v1, 13)
        v1 ^= v0
        v0 = rotate(v0, 32)
        v2 &+= v3
        v3 = rotate(v3, 16)
        v3 ^= v2
        v0 &+= v3
        v3 = rotate(v3, 21)
        v3 ^= v0
        v2 &+= v1
        v1 = rotate(v1, 17)
        v1 ^= v2
        v2 = rotate(v2, 32)
    }

    @inline(__always)
    private func rotate(_ value: UInt64, _ bits: UInt64) -> UInt64 {
        (value << bits) | (value >> (64 - bits))
    }
}
