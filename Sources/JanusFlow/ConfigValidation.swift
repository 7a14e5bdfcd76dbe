import Foundation

/// The largest size a config field may give (2^24): beyond any real model, and small enough that products of a
/// few sizes cannot overflow an Int.
let largestConfigSize = 1 << 24

extension KeyedDecodingContainer {
    /// The error a field with a value outside what the model can be built from gets; `decodeConfig` names the field.
    func invalid(_ key: Key, _ message: String) -> DecodingError {
        DecodingError.dataCorrupted(.init(codingPath: codingPath + [key], debugDescription: message))
    }

    /// An integer that sizes or counts something, refused by name outside `range` (1 to 2^24 by default).
    func decodeSize(_ key: Key, in range: ClosedRange<Int> = 1...largestConfigSize) throws -> Int {
        try checkedSize(try decode(Int.self, forKey: key), key, range)
    }

    /// `decodeSize` for an optional field: `fallback` when absent.
    func decodeSize(_ key: Key, default fallback: Int, in range: ClosedRange<Int> = 1...largestConfigSize) throws -> Int {
        guard let value = try decodeIfPresent(Int.self, forKey: key) else { return fallback }
        return try checkedSize(value, key, range)
    }

    /// A non-empty list of sizes (block widths), each from 1 to 2^24; `fallback` when absent.
    func decodeSizes(_ key: Key, default fallback: [Int]? = nil) throws -> [Int] {
        let values: [Int]
        if let fallback { values = try decodeIfPresent([Int].self, forKey: key) ?? fallback } else { values = try decode([Int].self, forKey: key) }
        guard !values.isEmpty, values.allSatisfy({ (1...largestConfigSize).contains($0) }) else {
            throw invalid(key, "must be a non-empty list of sizes from 1 to \(largestConfigSize) (got \(values))")
        }
        return values
    }

    /// A finite number above zero (epsilons, ratios), refused by name otherwise; `fallback` when absent.
    func decodePositive<T: BinaryFloatingPoint & Decodable>(_ key: Key, default fallback: T? = nil) throws -> T {
        let value: T
        if let fallback { value = try decodeIfPresent(T.self, forKey: key) ?? fallback } else { value = try decode(T.self, forKey: key) }
        guard value.isFinite, value > 0 else { throw invalid(key, "must be a finite number above 0 (got \(value))") }
        return value
    }

    private func checkedSize(_ value: Int, _ key: Key, _ range: ClosedRange<Int>) throws -> Int {
        guard range.contains(value) else { throw invalid(key, "must be from \(range.lowerBound) to \(range.upperBound) (got \(value))") }
        return value
    }
}
