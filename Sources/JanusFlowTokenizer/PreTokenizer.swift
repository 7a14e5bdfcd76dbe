/// How a `Split` step treats the matches of its pattern (the `tokenizers` library's `SplitDelimiterBehavior`).
enum SplitBehavior: String {
    /// Matches and the text between them are separate pieces.
    case isolated = "Isolated"
    /// Matches are dropped.
    case removed = "Removed"
    /// Each match is joined to the piece before it.
    case mergedWithPrevious = "MergedWithPrevious"
    /// Each match is joined to the piece after it.
    case mergedWithNext = "MergedWithNext"
    /// Consecutive matches are joined into one piece.
    case contiguous = "Contiguous"
}

/// One step of the pre-tokenizer.
enum PreTokenizerStep {
    case split(SplitPattern, behavior: SplitBehavior, invert: Bool)
    /// Numeric scalars (Unicode Nd, Nl, No, like Rust's `char::is_numeric`) are split off, one per piece when
    /// `individual`, otherwise in runs.
    case digits(individual: Bool)
    /// The byte-level step; when `regex` is set (`use_regex`), GPT-2's split pattern is applied first.
    case byteLevel(addPrefixSpace: Bool, regex: SplitPattern?)
}

/// The pre-tokenizer: a sequence of steps, each re-splitting every piece the previous one produced.
///
/// Pieces are ranges into a buffer of Unicode scalars (the text itself, so nothing is copied); the only step that
/// invents text, ByteLevel's `add_prefix_space`, appends the new piece to the buffer.
struct PreTokenizer {
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    var steps: [PreTokenizerStep]

    static func isNumeric(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return s.value >= 0x30 && s.value <= 0x39 }
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// The pieces of `buffer[range]`, in order, never empty.
    func split(_ buffer: inout [Unicode.Scalar], _ range: Range<Int>) -> [Range<Int>] {
        guard !range.isEmpty else { return [] }
        var pieces = [range]
        for step in steps {
            var next: [Range<Int>] = []
            next.reserveCapacity(pieces.count * 2)
            switch step {
            case .split(let pattern, let behavior, let invert):
                buffer.withUnsafeBufferPointer { text in
                    for piece in pieces {
                        PreTokenizer.apply(pattern, behavior, invert, text, piece, into: &next)
                    }
                }
            case .digits(let individual):
                buffer.withUnsafeBufferPointer { text in
                    for piece in pieces {
                        PreTokenizer.splitDigits(text, piece, individual: individual, into: &next)
                    }
                }
            case .byteLevel(let addPrefixSpace, let regex):
                var current = pieces
                if addPrefixSpace {
                    current = pieces.map { piece in
                        if buffer[piece.lowerBound] == " " { return piece }
                        let start = buffer.count
                        buffer.append(" ")
                        buffer.append(contentsOf: buffer[piece])
                        return start..<buffer.count
                    }
                }
                if let regex {
                    buffer.withUnsafeBufferPointer { text in
                        for piece in current { PreTokenizer.apply(regex, .isolated, false, text, piece, into: &next) }
                    }
                } else {
                    next = current
                }
            }
            pieces = next
        }
        return pieces
    }

    /// Splits one piece by a pattern with the given behaviour (empty pieces dropped), as `tokenizers` does.
    static func apply(_ pattern: SplitPattern, _ behavior: SplitBehavior, _ invert: Bool,
                      _ text: UnsafeBufferPointer<Unicode.Scalar>, _ piece: Range<Int>, into out: inout [Range<Int>]) {
        let found = pattern.matches(in: text, lo: piece.lowerBound, hi: piece.upperBound)
        if found.isEmpty && !invert {
            // No match: the piece stays whole under every behaviour.
            out.append(piece)
            return
        }
        // (range, isMatch) covering the piece.
        var parts: [(range: Range<Int>, isMatch: Bool)] = []
        parts.reserveCapacity(found.count * 2 + 1)
        var previous = piece.lowerBound
        for m in found {
            if previous < m.lowerBound { parts.append((previous..<m.lowerBound, invert)) }
            parts.append((m, !invert))
            previous = m.upperBound
        }
        if previous < piece.upperBound { parts.append((previous..<piece.upperBound, invert)) }
        switch behavior {
        case .isolated:
            for p in parts { out.append(p.range) }
        case .removed:
            for p in parts where !p.isMatch { out.append(p.range) }
        case .mergedWithPrevious:
            var merged: [Range<Int>] = []
            var previousMatch = false
            for p in parts {
                if p.isMatch && !previousMatch, let last = merged.last {
                    merged[merged.count - 1] = last.lowerBound..<p.range.upperBound
                } else {
                    merged.append(p.range)
                }
                previousMatch = p.isMatch
            }
            out.append(contentsOf: merged)
        case .mergedWithNext:
            var merged: [Range<Int>] = []
            var previousMatch = false
            for p in parts.reversed() {
                if p.isMatch && !previousMatch, let last = merged.last {
                    merged[merged.count - 1] = p.range.lowerBound..<last.upperBound
                } else {
                    merged.append(p.range)
                }
                previousMatch = p.isMatch
            }
            out.append(contentsOf: merged.reversed())
        case .contiguous:
            var merged: [Range<Int>] = []
            var previousMatch = false
            for p in parts {
                if p.isMatch == previousMatch, let last = merged.last {
                    merged[merged.count - 1] = last.lowerBound..<p.range.upperBound
                } else {
                    merged.append(p.range)
                }
                previousMatch = p.isMatch
            }
            out.append(contentsOf: merged)
        }
    }

    static func splitDigits(_ text: UnsafeBufferPointer<Unicode.Scalar>, _ piece: Range<Int>, individual: Bool,
                            into out: inout [Range<Int>]) {
        var start = piece.lowerBound
        var i = piece.lowerBound
        while i < piece.upperBound {
            if isNumeric(text[i]) {
                if start < i { out.append(start..<i) }
                var end = i + 1
                if !individual { while end < piece.upperBound && isNumeric(text[end]) { end += 1 } }
                out.append(i..<end)
                i = end
                start = end
            } else {
                i += 1
            }
        }
        if start < piece.upperBound { out.append(start..<piece.upperBound) }
    }
}
