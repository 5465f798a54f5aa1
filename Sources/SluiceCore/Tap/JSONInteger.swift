/// A JSON number's integer value as its digits arrive, for the token counts the taps read: exact while the number
/// is a whole number that fits an `Int64`, nil (`value`) once it has a fraction or an exponent or overflowed. Both
/// JSON scanners keep one.
struct JSONInteger {
    private var magnitude: Int64 = 0
    private var negative = false
    /// False once the number has a fraction or an exponent or its integer part overflowed.
    var exact = true

    init(negative: Bool = false) { self.negative = negative }

    /// Adds an integer digit; an overflow makes the number inexact instead of trapping.
    mutating func accumulate(_ digit: UInt8) {
        guard exact else { return }
        let (shifted, overflowMultiplying) = magnitude.multipliedReportingOverflow(by: 10)
        let (sum, overflowAdding) = shifted.addingReportingOverflow(Int64(digit &- TapByte.zero))
        if overflowMultiplying || overflowAdding {
            exact = false
        } else {
            magnitude = sum
        }
    }

    var value: Int64? { exact ? (negative ? -magnitude : magnitude) : nil }
}
