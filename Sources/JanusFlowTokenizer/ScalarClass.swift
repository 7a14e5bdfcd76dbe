/// A set of Unicode scalars: explicit ranges plus Unicode properties (`\s`, `\d`, `\w`, `\p{..}`), possibly negated.
struct ScalarClass {
    enum Property {
        /// Unicode White_Space (Oniguruma's `\s`; includes VT, FF, NEL, NBSP, U+2000-U+200A, U+3000, ...).
        case whitespace
        /// General category Nd (Oniguruma's `\d`).
        case digit
        /// Letter, Mark, Nd or Pc (Oniguruma's `\w`).
        case word
        /// One of several general categories (`\p{L}`, `\p{Nd}`, ...).
        case categories(Set<Unicode.GeneralCategory>)

        func contains(_ s: Unicode.Scalar) -> Bool {
            switch self {
            case .whitespace: return s.properties.isWhitespace
            case .digit: return s.properties.generalCategory == .decimalNumber
            case .word: return ScalarClass.isWord(s)
            case .categories(let set): return set.contains(s.properties.generalCategory)
            }
        }
    }

    /// Sorted, non-overlapping, non-adjacent ranges.
    private(set) var ranges: [ClosedRange<UInt32>] = []
    private(set) var properties: [(property: Property, negated: Bool)] = []
    private(set) var negated = false
    /// Membership of the 128 ASCII scalars, precomputed.
    private var ascii: (UInt64, UInt64) = (0, 0)

    init(ranges: [ClosedRange<UInt32>] = [], properties: [(property: Property, negated: Bool)] = [], negated: Bool = false) {
        self.ranges = ScalarClass.merged(ranges)
        self.properties = properties
        self.negated = negated
        var lo: UInt64 = 0, hi: UInt64 = 0
        for v in 0..<128 where slowContains(Unicode.Scalar(UInt8(v))) {
            if v < 64 { lo |= 1 << UInt64(v) } else { hi |= 1 << UInt64(v - 64) }
        }
        ascii = (lo, hi)
    }

    static func single(_ s: Unicode.Scalar) -> ScalarClass { ScalarClass(ranges: [s.value...s.value]) }

    static func isWord(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation:
            return true
        default:
            return false
        }
    }

    static func merged(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
        var out: [ClosedRange<UInt32>] = []
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = out.last, r.lowerBound <= last.upperBound &+ 1 {
                out[out.count - 1] = last.lowerBound...Swift.max(last.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }

    private func slowContains(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        var lo = 0, hi = ranges.count - 1
        var found = false
        while lo <= hi {
            let mid = (lo + hi) >> 1
            if v < ranges[mid].lowerBound { hi = mid - 1 } else if v > ranges[mid].upperBound { lo = mid + 1 } else { found = true; break }
        }
        if !found {
            for p in properties where p.property.contains(s) != p.negated {
                found = true
                break
            }
        }
        return found != negated
    }

    @inline(__always)
    func contains(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if v < 64 { return ascii.0 & (1 << UInt64(v)) != 0 }
        if v < 128 { return ascii.1 & (1 << UInt64(v - 64)) != 0 }
        return slowContains(s)
    }
}
