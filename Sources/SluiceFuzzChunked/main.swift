import SluiceFuzzSupport

/// libFuzzer's entry point for the chunked decoder; the properties are in `SluiceFuzzSupport`.
/// `fuzz/run.sh` builds it with libFuzzer; a plain `swift build` links a program that does nothing.
/// - Returns: 0, as libFuzzer requires; a violated property traps instead.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzChunked(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    ChunkedFuzzing.check(fuzzBytes(data, size))
    return 0
}
