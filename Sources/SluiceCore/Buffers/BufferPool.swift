/// A per-loop free list of equally sized buffers, so a connection takes a buffer only while a direction
/// has bytes in flight and an idle stream holds none (idle streams then cost a few hundred bytes each).
/// Owned by one loop thread.
///
/// Buffers are mmap-backed (`Syscall.configureAllocator`), so a freed one gives its memory back to the
/// kernel, and a new one costs an mmap and a page fault per page it touches. Freeing after every burst
/// made a steady load of bursts (clients that connect every second, as the latency benchmark does) pay
/// that on each burst, and `trim` freeing fifty buffers in one loop turn stalled every stream on the loop
/// for that turn. So the pool frees only what stayed unused for a whole window of trims, a bounded number
/// per trim, and starts with a few buffers already faulted in.
public final class BufferPool {
    public let bufferCapacity: Int
    private var free: [ByteBuffer] = []
    private let maxFree: Int
    /// The fewest free buffers since the last `trim`.
    private var fewestFree = 0
    /// `fewestFree` at each of the last `window.count` trims, oldest overwritten first: their minimum is what
    /// stayed unused through the whole window.
    private var window: [Int]
    private var windowPosition = 0

    /// `maxFree` bounds what the pool keeps after a burst (buffers beyond it are freed at once); `trimWindow`
    /// is how many consecutive trims a buffer must stay unused before a trim frees it; `prewarmed` buffers are
    /// made and their first page touched now, so the first load after start-up does not fault them in.
    public init(bufferCapacity: Int, maxFree: Int = 1024, trimWindow: Int = 10, prewarmed: Int = 0) {
        precondition(trimWindow > 0)
        self.bufferCapacity = bufferCapacity
        self.maxFree = maxFree
        window = Array(repeating: 0, count: trimWindow)
        free.reserveCapacity(maxFree)
        for _ in 0..<min(prewarmed, maxFree) {
            let buffer = ByteBuffer(capacity: bufferCapacity)
            buffer.touchFirstPage()
            free.append(buffer)
        }
        fewestFree = free.count
    }

    /// Returns an empty buffer, reusing a free one when there is one.
    public func take() -> ByteBuffer {
        if let buffer = free.popLast() {
            fewestFree = min(fewestFree, free.count)
            return buffer
        }
        fewestFree = 0
        return ByteBuffer(capacity: bufferCapacity)
    }

    /// Gives back a buffer the caller no longer references.
    public func give(_ buffer: ByteBuffer) {
        buffer.clear()
        if free.count < maxFree { free.append(buffer) }
    }

    public var freeCount: Int { free.count }

    /// Called about once a second. Frees at most `limit` of the buffers that stayed unused through the last
    /// `trimWindow` calls, keeping `keep` for the next burst: after a burst the pool shrinks back within the
    /// window plus a few seconds, so the memory of idle streams is their own and not the burst's high-water
    /// mark, while a load that comes back within the window finds its buffers. Returns how many it freed.
    @discardableResult
    public func trim(keep: Int, limit: Int = 16) -> Int {
        window[windowPosition] = fewestFree
        windowPosition = (windowPosition + 1) % window.count
        // min() over the ring: a few dozen Ints once a second.
        let unusedThroughWindow = window.min() ?? 0
        let surplus = min(limit, max(0, unusedThroughWindow - keep))
        if surplus > 0 {
            // The oldest free buffers go: `take` reuses the most recently given (warm in the cache).
            free.removeFirst(surplus)
            for index in window.indices { window[index] -= min(window[index], surplus) }
        }
        fewestFree = free.count
        return surplus
    }
}
