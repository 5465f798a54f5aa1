/// A fixed-capacity linear byte buffer: bytes are appended at `writerIndex` and consumed from `readerIndex`.
///
/// It owns one allocation for its whole life (taken from a `BufferPool` at accept or when a direction
/// becomes active), so streaming through it never allocates. Once drained it rewinds to the start
/// (nginx's non-buffered upstream path does the same), and `compact()` moves a partial tail to the
/// front when a message head must stay contiguous. Owned by one loop thread.
public final class ByteBuffer {
    /// The raw storage; raw pointers stay inside Buffers/ and System/.
    let storage: UnsafeMutableRawBufferPointer
    /// First unconsumed byte.
    public private(set) var readerIndex: Int = 0
    /// One past the last written byte.
    public private(set) var writerIndex: Int = 0

    /// Allocates `capacity` bytes once.
    public init(capacity: Int) {
        precondition(capacity > 0)
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
    }

    deinit { storage.deallocate() }

    public var capacity: Int { storage.count }
    /// Bytes written and not yet consumed.
    public var readableCount: Int { writerIndex - readerIndex }
    /// Free bytes after `writerIndex`.
    public var writableCount: Int { storage.count - writerIndex }
    public var isEmpty: Bool { readerIndex == writerIndex }

    /// Marks `count` readable bytes consumed; rewinds to the start when everything is consumed.
    public func consume(_ count: Int) {
        precondition(count >= 0 && count <= readableCount)
        readerIndex += count
        if readerIndex == writerIndex { readerIndex = 0; writerIndex = 0 }
    }

    /// Marks `count` bytes after `writerIndex` as written (after a read into `writableBytes`).
    public func commitWrite(_ count: Int) {
        precondition(count >= 0 && count <= writableCount)
        writerIndex += count
    }

    /// Drops every byte.
    public func clear() { readerIndex = 0; writerIndex = 0 }

    /// Drops the readable bytes from `offset` (relative to `readerIndex`) on, e.g. garbage after a message end.
    public func truncate(toReadable count: Int) {
        precondition(count >= 0 && count <= readableCount)
        writerIndex = readerIndex + count
        if readerIndex == writerIndex { readerIndex = 0; writerIndex = 0 }
    }

    /// Moves the readable bytes to the front so the free space is contiguous; returns false when there was nothing to move.
    @discardableResult
    public func compact() -> Bool {
        guard readerIndex > 0 else { return false }
        let count = readableCount
        if count > 0, let base = storage.baseAddress {
            (base).copyMemory(from: base + readerIndex, byteCount: count)
        }
        readerIndex = 0
        writerIndex = count
        return true
    }

    /// Calls `body` with the readable bytes from `start` to `end` (offsets relative to `readerIndex`).
    public func withReadableSpan<R, E: Error>(from start: Int = 0, to end: Int? = nil, _ body: (Span<UInt8>) throws(E) -> R) throws(E) -> R {
        let upper = readerIndex + (end ?? readableCount)
        precondition(start >= 0 && upper <= writerIndex && readerIndex + start <= upper)
        let slice = UnsafeRawBufferPointer(rebasing: storage[(readerIndex + start)..<upper])
        return try body(slice.bindMemory(to: UInt8.self).span)
    }

    /// The readable byte at `offset` from `readerIndex`.
    public func byte(at offset: Int) -> UInt8 {
        storage[readerIndex + offset]
    }

    /// Appends bytes, truncating nothing: returns false (and appends nothing) if they do not fit.
    @discardableResult
    public func append(_ bytes: Span<UInt8>) -> Bool {
        guard bytes.count <= writableCount else { return false }
        bytes.withUnsafeBufferPointer { source in
            if let base = source.baseAddress {
                (storage.baseAddress! + writerIndex).copyMemory(from: base, byteCount: source.count)
            }
        }
        writerIndex += bytes.count
        return true
    }

    /// Appends the bytes `start..<end` of another buffer's readable region.
    @discardableResult
    public func append(from other: ByteBuffer, _ range: Range<Int>) -> Bool {
        other.withReadableSpan(from: range.lowerBound, to: range.upperBound) { append($0) }
    }

    /// Appends a static ASCII literal.
    @discardableResult
    public func append(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard count <= writableCount else { return false }
        (storage.baseAddress! + writerIndex).copyMemory(from: literal.utf8Start, byteCount: count)
        writerIndex += count
        return true
    }

    /// Appends one byte.
    @discardableResult
    public func append(byte: UInt8) -> Bool {
        guard writableCount > 0 else { return false }
        storage[writerIndex] = byte
        writerIndex += 1
        return true
    }

    /// Appends the decimal digits of a non-negative integer.
    @discardableResult
    public func append(decimal value: Int) -> Bool {
        precondition(value >= 0)
        var digits = 1
        var rest = value / 10
        while rest > 0 { digits += 1; rest /= 10 }
        guard digits <= writableCount else { return false }
        var remaining = value
        for index in stride(from: writerIndex + digits - 1, through: writerIndex, by: -1) {
            storage[index] = UInt8(truncatingIfNeeded: 48 + remaining % 10)
            remaining /= 10
        }
        writerIndex += digits
        return true
    }

    /// Appends the UTF-8 bytes of a string (error bodies and logs only, never the forwarding path).
    @discardableResult
    public func append(string: String) -> Bool {
        var string = string
        return string.withUTF8 { append($0.span) }
    }

    /// Gives the readable region as a raw pointer to System/ for `write`/`writev`.
    func withReadableRawBytes<R, E: Error>(from start: Int, to end: Int, _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage[(readerIndex + start)..<(readerIndex + end)]))
    }

    /// Writes the first page, so the kernel maps it now rather than on the first read into the buffer.
    func touchFirstPage() {
        storage.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: min(storage.count, 4096))
    }

    /// Gives the free region as a raw pointer to System/ for `read`.
    func withWritableRawBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(rebasing: storage[writerIndex...]))
    }
}
