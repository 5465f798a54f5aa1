import Glibc

/// libm functions the rest of SluiceCore needs: the one place outside the syscall wrappers that imports Glibc for
/// them, so Pool/ and the other rooms stay free of it.
enum Math {
    /// The natural logarithm (libm `log`).
    @inline(__always)
    static func naturalLogarithm(_ value: Double) -> Double {
        log(value)
    }
}
