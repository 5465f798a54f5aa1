import Testing

@testable import SluiceCore

/// The operational log's RFC 3339 timestamps, computed without the C library: known instants, day and year
/// boundaries, leap days and centuries.
@Suite struct OpLogTimestampTests {
    @Test func knownInstantsRenderAsRFC3339UTC() {
        let rows: [(Int64, String)] = [
            (0, "1970-01-01T00:00:00.000000Z"),
            (1, "1970-01-01T00:00:00.000001Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
            (86_399_999_999, "1970-01-01T23:59:59.999999Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),  // a leap day in a century divisible by 400
            (4_107_542_400_000_000, "2100-03-01T00:00:00.000000Z"),  // 2100 is not a leap year
            (1_709_164_800_123_456, "2024-02-29T00:00:00.123456Z"),
            (1_796_644_195_654_321, "2026-12-07T11:49:55.654321Z"),
            (1_798_761_599_999_999, "2026-12-31T23:59:59.999999Z"),
            (1_798_761_600_000_000, "2027-01-01T00:00:00.000000Z"),
        ]
        for (time, expected) in rows {
            #expect(OpLog.timestamp(microsecondsSinceEpoch: time) == expected, "\(time)")
        }
    }
}
