/// Up to `capacity` bytes held inline (no heap): a JSON member name being matched, or a short value such as a model
/// name. Bytes past the capacity are dropped and `overflowed` is set, so a caller can tell a whole value from a cut
/// one and treat the cut one as unknown rather than report a prefix.
///
/// A plain value: copying it copies the bytes, and nothing here ever allocates except `makeString`.
struct InlineText: Sendable {
    /// The most bytes kept; longer text only sets `overflowed`. 128 bytes fits every model id seen in the wild
    /// (the longest OpenAI fine-tune ids are about 60 bytes) and every member name the taps look for.
    static let capacity = 128

    private var storage = InlineArray<128, UInt8>(repeating: 0)
    /// Bytes held, at most `capacity`.
    private(set) var count = 0
    /// Whether bytes were dropped since the last `removeAll`.
    private(set) var overflowed = false
    /// Bytes offered since the last `removeAll`, kept or dropped: the whole length of a string the taps
    /// do not keep, such as a content delta whose bytes feed a token estimate.
    private(set) var length = 0

    /// Forgets the text without touching the storage.
    mutating func removeAll() {
        count = 0
        overflowed = false
        length = 0
    }

    /// Appends one byte, or records that it did not fit.
    mutating func append(_ byte: UInt8) {
        length += 1
        if count < Self.capacity {
            storage[count] = byte
            count += 1
        } else {
            overflowed = true
        }
    }

    /// Appends a run of bytes, keeping what fits and recording the rest as dropped.
    mutating func append(contentsOf bytes: Span<UInt8>) {
        length += bytes.count
        let kept = min(bytes.count, Self.capacity - count)
        for offset in 0..<kept { storage[count + offset] = bytes[offset] }
        count += kept
        if kept < bytes.count { overflowed = true }
    }

    /// Whether the text is exactly `literal`'s UTF-8 bytes (and was not cut).
    func equals(_ literal: StaticString) -> Bool {
        guard !overflowed else { return false }
        return literal.withUTF8Buffer { expected in
            guard expected.count == count else { return false }
            for index in 0..<count where storage[index] != expected[index] {
                return false
            }
            return true
        }
    }

    /// Calls `body` with the bytes held.
    func withBytes<R>(_ body: (Span<UInt8>) -> R) -> R {
        body(storage.span.extracting(0..<count))
    }

    /// The text as a `String`, invalid UTF-8 repaired with U+FFFD. Allocates: call it when a result is read, never
    /// while bytes stream.
    func makeString() -> String {
        withBytes { bytes in
            bytes.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
        }
    }
}

/// The optional audit capture of a tap: the first `limit` bytes offered, in storage allocated once in `init` and
/// reused by `reset`. Appending never allocates while the owning tap is not shared (a copied tap copies the storage
/// on its first append, as any Swift array does).
struct CaptureBuffer: Sendable {
    /// Allocated once; its count is the capture limit (0: capture off).
    private var storage: [UInt8]
    /// Bytes captured so far.
    private(set) var count = 0
    /// Whether bytes were offered after the storage filled up.
    private(set) var truncated = false

    /// Allocates `limit` bytes now (none when `limit` <= 0, which turns capture off).
    init(limit: Int) {
        storage = limit > 0 ? [UInt8](repeating: 0, count: limit) : []
    }

    /// Forgets the captured bytes, keeping the storage.
    mutating func reset() {
        count = 0
        truncated = false
    }

    /// Copies as many of `bytes` as fit; the rest only sets `truncated`. Does nothing when capture is off.
    mutating func append(_ bytes: Span<UInt8>) {
        guard !storage.isEmpty, !bytes.isEmpty else { return }
        let start = count
        let copied = min(storage.count - start, bytes.count)
        if copied < bytes.count { truncated = true }
        guard copied > 0 else { return }
        var target = storage.mutableSpan
        for index in 0..<copied {
            target[start + index] = bytes[index]
        }
        count = start + copied
    }

    /// Appends one byte if it fits.
    mutating func append(_ byte: UInt8) {
        guard !storage.isEmpty else { return }
        if count < storage.count {
            storage[count] = byte
            count += 1
        } else {
            truncated = true
        }
    }

    /// Calls `body` with the captured bytes (empty when capture is off).
    func withBytes<R>(_ body: (Span<UInt8>) -> R) -> R {
        body(storage.span.extracting(0..<count))
    }
}
