import Testing
@testable import SluiceCore

@Suite struct ByteBufferTests {
    @Test func appendConsumeRewindsWhenDrained() {
        let buffer = ByteBuffer(capacity: 8)
        let bytes = Array("abcde".utf8)
        let appended = buffer.append(bytes.span)
        #expect(appended)
        #expect(buffer.readableCount == 5 && buffer.writableCount == 3)
        buffer.consume(2)
        #expect(buffer.readerIndex == 2)
        buffer.consume(3)
        #expect(buffer.readerIndex == 0 && buffer.writerIndex == 0, "a drained buffer rewinds, so the next read has the whole capacity")
    }

    @Test func appendRefusesWhatDoesNotFit() {
        let buffer = ByteBuffer(capacity: 4)
        let bytes = Array("abcde".utf8)
        let appended = buffer.append(bytes.span)
        #expect(!appended)
        #expect(buffer.readableCount == 0, "a refused append writes nothing")
        #expect(buffer.append("abcd"))
        #expect(!buffer.append(byte: 1))
    }

    @Test func compactMovesTheTailToTheFront() {
        let buffer = ByteBuffer(capacity: 8)
        buffer.append("abcdefgh")
        buffer.consume(5)
        #expect(buffer.writableCount == 0)
        #expect(buffer.compact())
        #expect(buffer.readableCount == 3 && buffer.writableCount == 5)
        let text = buffer.withReadableSpan { span in (0..<span.count).map { span[$0] } }
        #expect(text == Array("fgh".utf8))
        #expect(!buffer.compact(), "nothing to move when already at the front")
    }

    @Test(arguments: [(0, "0"), (7, "7"), (10, "10"), (504, "504"), (65536, "65536")])
    func appendDecimal(value: Int, expected: String) {
        let buffer = ByteBuffer(capacity: 16)
        #expect(buffer.append(decimal: value))
        #expect(buffer.withReadableSpan { span in String(decoding: (0..<span.count).map { span[$0] }, as: UTF8.self) } == expected)
    }

    @Test func truncateDropsTrailingBytes() {
        let buffer = ByteBuffer(capacity: 8)
        buffer.append("abcdef")
        buffer.consume(1)
        buffer.truncate(toReadable: 2)
        #expect(buffer.readableCount == 2 && buffer.byte(at: 1) == UInt8(ascii: "c"))
        buffer.truncate(toReadable: 0)
        #expect(buffer.readerIndex == 0 && buffer.writerIndex == 0)
    }

    @Test func poolReusesBuffersAndBoundsWhatItKeeps() {
        let pool = BufferPool(bufferCapacity: 32, maxFree: 2)
        let first = pool.take()
        first.append("dirty")
        pool.give(first)
        let again = pool.take()
        #expect(again === first, "a returned buffer is reused instead of allocating")
        #expect(again.readableCount == 0, "a reused buffer starts empty")
        let extra = [pool.take(), pool.take(), pool.take()]
        extra.forEach(pool.give)
        #expect(pool.freeCount == 2)
    }
}

@Suite struct BufferPoolTrimTests {
    @Test func trimFreesOnlyWhatStayedUnused() {
        let pool = BufferPool(bufferCapacity: 16, trimWindow: 1)
        let burst = (0..<10).map { _ in pool.take() }
        burst.forEach(pool.give)
        #expect(pool.freeCount == 10)
        // The burst needed all ten, so the first trim keeps them; nothing was taken after it, so the second frees down to `keep`.
        #expect(pool.trim(keep: 2) == 0)
        #expect(pool.trim(keep: 2) == 8)
        #expect(pool.freeCount == 2)
    }

    @Test func buffersInUseDuringTheSecondAreKept() {
        let pool = BufferPool(bufferCapacity: 16, trimWindow: 1)
        (0..<6).map { _ in pool.take() }.forEach(pool.give)
        pool.trim(keep: 0)
        let busy = (0..<4).map { _ in pool.take() }
        #expect(pool.trim(keep: 0) == 2, "four were in use at the low point, so only two were surplus")
        busy.forEach(pool.give)
    }

    /// A burst every few seconds (clients reconnecting) must find its buffers: nothing is freed until the
    /// buffers stayed unused for a whole window of trims.
    @Test func aBurstWithinTheWindowKeepsItsBuffers() {
        let pool = BufferPool(bufferCapacity: 16, trimWindow: 3)
        (0..<10).map { _ in pool.take() }.forEach(pool.give)
        var freed: [Int] = []
        for second in 0..<8 {
            if second == 3 { (0..<10).map { _ in pool.take() }.forEach(pool.give) }  // the next burst
            freed.append(pool.trim(keep: 2))
        }
        #expect(freed == [0, 0, 0, 0, 0, 0, 8, 0], "freed only once three trims in a row saw all ten unused")
        #expect(pool.freeCount == 2)
    }

    /// Freeing is bounded per trim, so one trim never stalls the loop with hundreds of munmaps.
    @Test func aTrimFreesAtMostItsLimit() {
        let pool = BufferPool(bufferCapacity: 16, trimWindow: 1)
        (0..<50).map { _ in pool.take() }.forEach(pool.give)
        pool.trim(keep: 0, limit: 16)
        #expect([pool.trim(keep: 0, limit: 16), pool.trim(keep: 0, limit: 16), pool.trim(keep: 0, limit: 16),
                 pool.trim(keep: 0, limit: 16)] == [16, 16, 16, 2])
        #expect(pool.freeCount == 0)
    }

    @Test func prewarmedBuffersAreFreeAndKept() {
        let pool = BufferPool(bufferCapacity: 8192, trimWindow: 1, prewarmed: 4)
        #expect(pool.freeCount == 4)
        #expect(pool.trim(keep: 4) == 0 && pool.trim(keep: 4) == 0)
        let first = pool.take()
        #expect(first.capacity == 8192 && first.isEmpty)
        pool.give(first)
    }
}
