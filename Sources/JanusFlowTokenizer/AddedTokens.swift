/// Finds added tokens in text the way the `tokenizers` library does: leftmost-longest matches of the literal
/// contents, scanned left to right without overlaps, then the `single_word`, `lstrip` and `rstrip` options.
struct AddedTokenMatcher {
    struct Entry {
        let scalars: [Unicode.Scalar]
        let token: Tokenizer.AddedToken
    }

    /// Candidates by first scalar, longest first.
    private let byFirst: [UInt32: [Entry]]
    private let firstASCII: (UInt64, UInt64)
    let isEmpty: Bool

    init(_ tokens: [Tokenizer.AddedToken]) {
        var byFirst: [UInt32: [Entry]] = [:]
        var lo: UInt64 = 0, hi: UInt64 = 0
        for t in tokens {
            let scalars = Array(t.content.unicodeScalars)
            guard let first = scalars.first else { continue }
            byFirst[first.value, default: []].append(Entry(scalars: scalars, token: t))
            if first.value < 64 { lo |= 1 << UInt64(first.value) } else if first.value < 128 { hi |= 1 << UInt64(first.value - 64) }
        }
        for k in byFirst.keys { byFirst[k]!.sort { $0.scalars.count > $1.scalars.count } }
        self.byFirst = byFirst
        firstASCII = (lo, hi)
        isEmpty = byFirst.isEmpty
    }

    /// Rust regex `\w` (Unicode): Alphabetic, marks, decimal digits, connector punctuation, joiners.
    static func isWordCharacter(_ s: Unicode.Scalar) -> Bool {
        if s.properties.isAlphabetic || s.value == 0x200C || s.value == 0x200D { return true }
        switch s.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    @inline(__always)
    private func mayStart(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if v < 64 { return firstASCII.0 & (1 << UInt64(v)) != 0 }
        if v < 128 { return firstASCII.1 & (1 << UInt64(v - 64)) != 0 }
        return byFirst[v] != nil
    }

    /// Splits `text[range]` into added tokens (with the range they cover, whitespace included for lstrip/rstrip)
    /// and the text between them.
    func split(_ text: [Unicode.Scalar], _ range: Range<Int>) -> [(range: Range<Int>, token: Tokenizer.AddedToken?)] {
        if isEmpty || range.isEmpty { return range.isEmpty ? [] : [(range, nil)] }
        var out: [(range: Range<Int>, token: Tokenizer.AddedToken?)] = []
        var textStart = range.lowerBound  // start of the pending ordinary text
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            guard mayStart(text[i]), let candidates = byFirst[text[i].value],
                  let hit = candidates.first(where: { c in
                      i + c.scalars.count <= end && text[i..<(i + c.scalars.count)].elementsEqual(c.scalars)
                  })
            else {
                i += 1
                continue
            }
            var start = i
            var stop = i + hit.scalars.count
            let token = hit.token
            if token.singleWord {
                let startOK = start == range.lowerBound || !AddedTokenMatcher.isWordCharacter(text[start - 1])
                let stopOK = stop == end || !AddedTokenMatcher.isWordCharacter(text[stop])
                if !(startOK && stopOK) {
                    i = stop  // the match is consumed but not used, as with a non-overlapping scan
                    continue
                }
            }
            if token.lstrip {
                while start > textStart && text[start - 1].properties.isWhitespace { start -= 1 }
            }
            if token.rstrip {
                while stop < end && text[stop].properties.isWhitespace { stop += 1 }
            }
            if textStart < start { out.append((textStart..<start, nil)) }
            out.append((start..<stop, token))
            textStart = stop
            i = stop
        }
        if textStart < end { out.append((textStart..<end, nil)) }
        return out
    }
}
