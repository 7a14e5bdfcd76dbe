/// A small regular-expression matcher for the pre-tokenizer patterns Hugging Face byte-level BPE files use:
/// literals, `\s` (Unicode White_Space, as Oniguruma defines it), `\d`, bracket classes with ranges and escapes,
/// `.`, the quantifiers `?`, `+`, `*`, and a final `$`. Matching works on Unicode scalars with backtracking;
/// the patterns are short, so this is fast enough and, unlike ICU, has Oniguruma's `\s`.
struct SplitPattern {
    enum Atom {
        case scalar(Unicode.Scalar)
        case whitespace(negated: Bool)
        case digit(negated: Bool)
        case any
        case set(CharacterSet, negated: Bool)
    }

    struct CharacterSet {
        var ranges: [ClosedRange<UInt32>] = []
        var whitespace = false
        var digits = false

        func contains(_ s: Unicode.Scalar) -> Bool {
            let v = s.value
            if whitespace && s.properties.isWhitespace { return true }
            if digits && s.properties.generalCategory == .decimalNumber { return true }
            // Ranges are sorted; binary search.
            var lo = 0, hi = ranges.count - 1
            while lo <= hi {
                let mid = (lo + hi) / 2
                if v < ranges[mid].lowerBound { hi = mid - 1 } else if v > ranges[mid].upperBound { lo = mid + 1 } else { return true }
            }
            return false
        }
    }

    struct Term {
        var atom: Atom
        var min: Int
        var max: Int  // Int.max for unbounded
    }

    var terms: [Term] = []
    var anchoredAtEnd = false

    struct ParseError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    init(_ pattern: String) throws {
        let s = Array(pattern.unicodeScalars)
        var i = 0
        func escape(_ c: Unicode.Scalar) -> Unicode.Scalar {
            switch c {
            case "n": return "\n"
            case "r": return "\r"
            case "t": return "\t"
            case "f": return "\u{0C}"
            case "v": return "\u{0B}"
            default: return c
            }
        }
        while i < s.count {
            let c = s[i]
            var atom: Atom
            switch c {
            case "$" where i == s.count - 1:
                anchoredAtEnd = true
                i += 1
                continue
            case "\\":
                guard i + 1 < s.count else { throw ParseError(message: "pattern ends with a backslash") }
                let e = s[i + 1]
                i += 2
                switch e {
                case "s": atom = .whitespace(negated: false)
                case "S": atom = .whitespace(negated: true)
                case "d": atom = .digit(negated: false)
                case "D": atom = .digit(negated: true)
                default: atom = .scalar(escape(e))
                }
            case "[":
                i += 1
                var set = CharacterSet()
                var negated = false
                if i < s.count && s[i] == "^" { negated = true; i += 1 }
                var first = true
                while i < s.count && (s[i] != "]" || first) {
                    first = false
                    var lo: Unicode.Scalar
                    if s[i] == "\\" {
                        guard i + 1 < s.count else { throw ParseError(message: "unterminated class") }
                        let e = s[i + 1]
                        i += 2
                        if e == "s" { set.whitespace = true; continue }
                        if e == "d" { set.digits = true; continue }
                        lo = escape(e)
                    } else {
                        lo = s[i]
                        i += 1
                    }
                    var hi = lo
                    if i + 1 < s.count && s[i] == "-" && s[i + 1] != "]" {
                        if s[i + 1] == "\\" && i + 2 < s.count {
                            hi = escape(s[i + 2])
                            i += 3
                        } else {
                            hi = s[i + 1]
                            i += 2
                        }
                    }
                    guard lo.value <= hi.value else { throw ParseError(message: "descending range in class") }
                    set.ranges.append(lo.value...hi.value)
                }
                guard i < s.count else { throw ParseError(message: "unterminated class") }
                i += 1
                set.ranges = Self.normalized(set.ranges)
                atom = .set(set, negated: negated)
            case ".":
                atom = .any
                i += 1
            case "(", ")", "|", "{", "^":
                throw ParseError(message: "unsupported regex syntax '\(c)'")
            default:
                atom = .scalar(c)
                i += 1
            }
            var term = Term(atom: atom, min: 1, max: 1)
            if i < s.count {
                switch s[i] {
                case "?": term.min = 0; term.max = 1; i += 1
                case "+": term.min = 1; term.max = .max; i += 1
                case "*": term.min = 0; term.max = .max; i += 1
                default: break
                }
            }
            terms.append(term)
        }
    }

    static func normalized(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
        let sorted = ranges.sorted { $0.lowerBound < $1.lowerBound }
        var out: [ClosedRange<UInt32>] = []
        for r in sorted {
            if let last = out.last, r.lowerBound <= last.upperBound &+ 1 {
                out[out.count - 1] = last.lowerBound...Swift.max(last.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }

    @inline(__always)
    static func matches(_ atom: Atom, _ s: Unicode.Scalar) -> Bool {
        switch atom {
        case .scalar(let c): return c == s
        case .whitespace(let negated): return s.properties.isWhitespace != negated
        case .digit(let negated): return (s.properties.generalCategory == .decimalNumber) != negated
        case .any: return s != "\n"
        case .set(let set, let negated): return set.contains(s) != negated
        }
    }

    /// The end of the longest-preferring (greedy, backtracking) match starting at `start`, if any.
    func match(_ text: [Unicode.Scalar], at start: Int) -> Int? {
        func go(_ t: Int, _ pos: Int) -> Int? {
            if t == terms.count { return !anchoredAtEnd || pos == text.count ? pos : nil }
            let term = terms[t]
            var count = 0
            var p = pos
            while count < term.max && p < text.count && SplitPattern.matches(term.atom, text[p]) {
                count += 1
                p += 1
            }
            while count >= term.min {
                if let end = go(t + 1, pos + count) { return end }
                count -= 1
            }
            return nil
        }
        return go(0, start)
    }

    /// Splits into the matches and the text between them, both kept ("Isolated"); empty pieces are dropped.
    func splitIsolated(_ text: [Unicode.Scalar]) -> [ArraySlice<Unicode.Scalar>] {
        var pieces: [ArraySlice<Unicode.Scalar>] = []
        var last = 0
        var i = 0
        while i < text.count {
            if let end = match(text, at: i), end > i {
                if last < i { pieces.append(text[last..<i]) }
                pieces.append(text[i..<end])
                last = end
                i = end
            } else {
                i += 1
            }
        }
        if last < text.count { pieces.append(text[last..<text.count]) }
        return pieces
    }
}
