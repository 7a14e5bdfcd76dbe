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

/// A regular expression for the `Split` pre-tokenizer, matched the way the Hugging Face `tokenizers` library's
/// engine (Oniguruma, Ruby syntax) matches it: leftmost match, alternatives tried in order, greedy (or lazy)
/// quantifiers with backtracking, `\s` = Unicode White_Space, `\d` = Nd, `.` = anything but LF, `^`/`$` at line
/// boundaries (LF) and the ends of the subject.
///
/// Supported syntax: literals and escapes (`\n \r \t \f \v \e \a \0 \xHH \x{H..} \uHHHH` and escaped
/// metacharacters), `.`, `\s \S \d \D \w \W`, `\p{..}`/`\P{..}`/`\p{^..}` with general categories (`L`, `Lu`,
/// `N`, `Nd`, `P`, `S`, `Z`, `C`, ...), bracket classes with ranges, negation and the escapes above, groups `( )`,
/// `(?: )`, alternation `|`, quantifiers `? * + {n} {n,} {n,m}` and their lazy forms (`??`, `*?`, ...), anchors
/// `^ $ \A \z \Z \b \B`, and lookahead `(?= )` / `(?! )`. Anything else (backreferences, lookbehind, inline options,
/// possessive quantifiers, nested or intersected classes) is rejected with a message, never silently misread.
struct SplitPattern {
    struct SyntaxError: Error, CustomStringConvertible {
        let reason: String
        let offset: Int
        var description: String { "\(reason) at character \(offset + 1) of the pattern" }
    }

    enum Anchor {
        case lineStart, lineEnd, textStart, textEnd, textEndOrFinalNewline, wordBoundary, notWordBoundary
    }

    indirect enum Node {
        case empty
        case set(ScalarClass)
        case concat([Node])
        case alternation([Node])
        case repetition(Node, min: Int, max: Int, greedy: Bool)
        case anchor(Anchor)
        case lookahead(Node, negated: Bool)

        var canMatchEmpty: Bool {
            switch self {
            case .empty, .anchor, .lookahead: return true
            case .set: return false
            case .concat(let nodes): return nodes.allSatisfy(\.canMatchEmpty)
            case .alternation(let nodes): return nodes.contains(where: \.canMatchEmpty)
            case .repetition(let node, let min, _, _): return min == 0 || node.canMatchEmpty
            }
        }
    }

    enum Instruction {
        /// Match one scalar of the class.
        case set(Int)
        /// Try `first`; on failure come back and try `second`.
        case split(Int, Int)
        case jump(Int)
        /// Repeat one class `min...max` times (greedy or lazy), with backtracking over the count.
        case loop(set: Int, min: Int, max: Int, greedy: Bool)
        case anchor(Anchor)
        /// Run sub-program `program` at the current position without consuming anything.
        case lookahead(program: Int, negated: Bool)
        case match
    }

    let source: String
    private(set) var sets: [ScalarClass] = []
    /// Program 0 is the pattern; others are lookahead bodies.
    private(set) var programs: [[Instruction]] = []

    init(_ pattern: String) throws {
        source = pattern
        var parser = Parser(Array(pattern.unicodeScalars))
        let node = try parser.parseAlternation()
        if parser.pos < parser.s.count {
            throw SyntaxError(reason: "unmatched ')'", offset: parser.pos)
        }
        programs.append([])
        var main: [Instruction] = []
        try compile(node, into: &main)
        main.append(.match)
        programs[0] = main
    }

    /// A pattern matching `literal` exactly (the `String` form of a Split pattern).
    init(literal: String) {
        source = literal
        let nodes = literal.unicodeScalars.map { Node.set(.single($0)) }
        programs.append([])
        var main: [Instruction] = []
        try! compile(.concat(nodes), into: &main)
        main.append(.match)
        programs[0] = main
    }

    // MARK: Compilation

    private mutating func addSet(_ set: ScalarClass) -> Int {
        sets.append(set)
        return sets.count - 1
    }

    private mutating func compile(_ node: Node, into p: inout [Instruction]) throws {
        guard p.count < 100_000 else { throw SyntaxError(reason: "pattern too large after expanding repetitions", offset: 0) }
        switch node {
        case .empty:
            break
        case .set(let set):
            p.append(.set(addSet(set)))
        case .concat(let nodes):
            for n in nodes { try compile(n, into: &p) }
        case .alternation(let nodes):
            // split L1, next; L1: a; jump end; next: split L2, next2; ... last alternative plain.
            var jumps: [Int] = []
            for (i, n) in nodes.enumerated() {
                if i < nodes.count - 1 {
                    let split = p.count
                    p.append(.split(0, 0))
                    try compile(n, into: &p)
                    jumps.append(p.count)
                    p.append(.jump(0))
                    p[split] = .split(split + 1, p.count)
                } else {
                    try compile(n, into: &p)
                }
            }
            for j in jumps { p[j] = .jump(p.count) }
        case .repetition(let body, let min, let max, let greedy):
            if case .set(let set) = body {
                p.append(.loop(set: addSet(set), min: min, max: max, greedy: greedy))
                return
            }
            if max == .max && body.canMatchEmpty {
                throw SyntaxError(reason: "unbounded repetition of a group that can match the empty string is not supported", offset: 0)
            }
            for _ in 0..<min { try compile(body, into: &p) }
            if max == .max {
                // L: split body, end (greedy) ; body ; jump L
                let loopStart = p.count
                p.append(.split(0, 0))
                try compile(body, into: &p)
                p.append(.jump(loopStart))
                p[loopStart] = greedy ? .split(loopStart + 1, p.count) : .split(p.count, loopStart + 1)
            } else if max > min {
                var splits: [Int] = []
                for _ in 0..<(max - min) {
                    splits.append(p.count)
                    p.append(.split(0, 0))
                    try compile(body, into: &p)
                }
                let end = p.count
                for s in splits { p[s] = greedy ? .split(s + 1, end) : .split(end, s + 1) }
            }
        case .anchor(let a):
            p.append(.anchor(a))
        case .lookahead(let body, let negated):
            let index = programs.count
            programs.append([])
            var sub: [Instruction] = []
            try compile(body, into: &sub)
            sub.append(.match)
            programs[index] = sub
            p.append(.lookahead(program: index, negated: negated))
        }
    }

    // MARK: Matching

    private struct Backtrack {
        var pc: Int
        var pos: Int
        /// -1 for a plain state; otherwise a loop retry: `pc` is the loop instruction, `pos` its start.
        var count: Int
    }

    /// The end of the match of program `index` starting exactly at `start`, within the subject `lo..<hi`.
    private func run(_ index: Int, _ text: UnsafeBufferPointer<Unicode.Scalar>, lo: Int, hi: Int, start: Int,
                     stack: inout [Backtrack]) -> Int? {
        let program = programs[index]
        let base = stack.count
        defer { stack.removeSubrange(base...) }
        var pc = 0
        var pos = start
        while true {
            var ok = true
            switch program[pc] {
            case .match:
                return pos
            case .set(let s):
                if pos < hi && sets[s].contains(text[pos]) {
                    pos += 1
                    pc += 1
                } else {
                    ok = false
                }
            case .split(let a, let b):
                stack.append(Backtrack(pc: b, pos: pos, count: -1))
                pc = a
            case .jump(let t):
                pc = t
            case .loop(let s, let min, let max, let greedy):
                let set = sets[s]
                if greedy {
                    var n = 0
                    while n < max && pos + n < hi && set.contains(text[pos + n]) { n += 1 }
                    if n < min {
                        ok = false
                    } else {
                        if n > min { stack.append(Backtrack(pc: pc, pos: pos, count: n - 1)) }
                        pos += n
                        pc += 1
                    }
                } else {
                    var n = 0
                    while n < min && pos + n < hi && set.contains(text[pos + n]) { n += 1 }
                    if n < min {
                        ok = false
                    } else {
                        if n < max { stack.append(Backtrack(pc: pc, pos: pos, count: n + 1)) }
                        pos += n
                        pc += 1
                    }
                }
            case .anchor(let a):
                ok = SplitPattern.check(a, text, lo: lo, hi: hi, pos: pos)
                if ok { pc += 1 }
            case .lookahead(let sub, let negated):
                let found = run(sub, text, lo: lo, hi: hi, start: pos, stack: &stack) != nil
                ok = found != negated
                if ok { pc += 1 }
            }
            if ok { continue }
            // Backtrack.
            var resumed = false
            while stack.count > base {
                let top = stack.removeLast()
                if top.count < 0 {
                    pc = top.pc
                    pos = top.pos
                    resumed = true
                    break
                }
                guard case .loop(let s, let min, let max, let greedy) = program[top.pc] else { continue }
                if greedy {
                    // Give back one more repetition.
                    if top.count > min { stack.append(Backtrack(pc: top.pc, pos: top.pos, count: top.count - 1)) }
                    pos = top.pos + top.count
                    pc = top.pc + 1
                    resumed = true
                    break
                } else {
                    // Take one more repetition, if the next scalar allows it.
                    let end = top.pos + top.count
                    guard end <= hi, sets[s].contains(text[end - 1]) else { continue }
                    if top.count < max { stack.append(Backtrack(pc: top.pc, pos: top.pos, count: top.count + 1)) }
                    pos = end
                    pc = top.pc + 1
                    resumed = true
                    break
                }
            }
            if !resumed { return nil }
        }
    }

    private static func check(_ a: Anchor, _ text: UnsafeBufferPointer<Unicode.Scalar>, lo: Int, hi: Int, pos: Int) -> Bool {
        switch a {
        case .lineStart: return pos == lo || text[pos - 1] == "\n"
        case .lineEnd: return pos == hi || text[pos] == "\n"
        case .textStart: return pos == lo
        case .textEnd: return pos == hi
        case .textEndOrFinalNewline: return pos == hi || (pos == hi - 1 && text[pos] == "\n")
        case .wordBoundary, .notWordBoundary:
            let before = pos > lo && ScalarClass.isWord(text[pos - 1])
            let after = pos < hi && ScalarClass.isWord(text[pos])
            return (before != after) == (a == .wordBoundary)
        }
    }

    /// The leftmost non-empty matches in `lo..<hi` (an empty match is skipped, as splitting drops empty pieces).
    func matches(in text: UnsafeBufferPointer<Unicode.Scalar>, lo: Int, hi: Int) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var stack: [Backtrack] = []
        // When the pattern starts with an unbounded loop over one class, a failed attempt at i fails at every
        // start inside the same run of that class too (those attempts reach a subset of the same end positions),
        // so the search can jump past the run.
        var leadingLoop: ScalarClass?
        if case .loop(let s, _, let max, _) = programs[0][0], max == .max { leadingLoop = sets[s] }
        var i = lo
        while i < hi {
            if let end = run(0, text, lo: lo, hi: hi, start: i, stack: &stack), end > i {
                out.append(i..<end)
                i = end
            } else if let loop = leadingLoop {
                var j = i
                while j < hi && loop.contains(text[j]) { j += 1 }
                i = j + 1
            } else {
                i += 1
            }
        }
        return out
    }

    /// Convenience for whole strings: the matched substrings.
    func matches(in string: String) -> [String] {
        let scalars = Array(string.unicodeScalars)
        return scalars.withUnsafeBufferPointer { buffer in
            matches(in: buffer, lo: 0, hi: buffer.count).map { String(String.UnicodeScalarView(scalars[$0])) }
        }
    }

    // MARK: Parsing

    private struct Parser {
        let s: [Unicode.Scalar]
        var pos = 0

        init(_ s: [Unicode.Scalar]) { self.s = s }

        func fail(_ reason: String, at offset: Int? = nil) -> SyntaxError { SyntaxError(reason: reason, offset: offset ?? pos) }

        var atEnd: Bool { pos >= s.count }
        func peek(_ k: Int = 0) -> Unicode.Scalar? { pos + k < s.count ? s[pos + k] : nil }

        mutating func parseAlternation() throws -> Node {
            var branches = [try parseConcat()]
            while peek() == "|" {
                pos += 1
                branches.append(try parseConcat())
            }
            return branches.count == 1 ? branches[0] : .alternation(branches)
        }

        mutating func parseConcat() throws -> Node {
            var items: [Node] = []
            while let c = peek(), c != "|", c != ")" {
                var atom = try parseAtom()
                if let (min, max) = try parseQuantifier() {
                    if case .anchor = atom { throw fail("quantifier after an anchor") }
                    if case .lookahead = atom { throw fail("quantifier after a lookahead") }
                    var greedy = true
                    if peek() == "?" {
                        greedy = false
                        pos += 1
                    } else if peek() == "+" {
                        throw fail("possessive quantifiers are not supported")
                    }
                    if let next = peek(), next == "?" || next == "*" || next == "+" || (next == "{" && (try? lookaheadBraces()) == true) {
                        throw fail("nested quantifier")
                    }
                    atom = .repetition(atom, min: min, max: max, greedy: greedy)
                }
                items.append(atom)
            }
            switch items.count {
            case 0: return .empty
            case 1: return items[0]
            default: return .concat(items)
            }
        }

        /// `?`, `*`, `+` or a counted `{..}` at pos (consumed), or nil.
        mutating func parseQuantifier() throws -> (Int, Int)? {
            switch peek() {
            case "?": pos += 1; return (0, 1)
            case "*": pos += 1; return (0, .max)
            case "+": pos += 1; return (1, .max)
            case "{": return try parseBraces()
            default: return nil
            }
        }

        /// Whether `{` at pos starts a valid counted quantifier.
        func lookaheadBraces() throws -> Bool {
            var copy = self
            return try copy.parseBraces() != nil
        }

        /// `{n}`, `{n,}`, `{n,m}` (and Ruby's `{,m}`); nil (position unchanged) when `{` is a literal.
        mutating func parseBraces() throws -> (Int, Int)? {
            let save = pos
            pos += 1
            func number() -> Int? {
                var v: Int?
                while let c = peek(), let d = Int(String(c)), c.isASCII {
                    v = (v ?? 0) * 10 + d
                    if v! > 100_000 { return v }
                    pos += 1
                }
                return v
            }
            let a = number()
            var b: Int?
            if peek() == "," {
                pos += 1
                b = number() ?? .max
            } else {
                b = a
            }
            guard peek() == "}", a != nil || b != nil else {
                pos = save
                return nil
            }
            pos += 1
            let lo = a ?? 0, hi = b ?? .max
            guard lo <= hi else { throw fail("repetition {\(lo),\(hi)} has its bounds reversed", at: save) }
            guard lo <= 1000 && (hi == .max || hi <= 1000) else { throw fail("repetition bound above 1000", at: save) }
            return (lo, hi)
        }

        mutating func parseAtom() throws -> Node {
            let c = s[pos]
            switch c {
            case "(":
                pos += 1
                var lookahead: Bool?
                if peek() == "?" {
                    switch peek(1) {
                    case ":": pos += 2
                    case "=": pos += 2; lookahead = false
                    case "!": pos += 2; lookahead = true
                    case "<":
                        if peek(2) == "=" || peek(2) == "!" { throw fail("lookbehind is not supported") }
                        throw fail("named groups are not supported")
                    default: throw fail("inline options and other (? groups are not supported")
                    }
                }
                let body = try parseAlternation()
                guard peek() == ")" else { throw fail("missing ')'") }
                pos += 1
                if let negated = lookahead { return .lookahead(body, negated: negated) }
                return body
            case ")":
                throw fail("unmatched ')'")
            case "[":
                return .set(try parseClass())
            case ".":
                pos += 1
                return .set(ScalarClass(ranges: [0x0A...0x0A], negated: true))
            case "^":
                pos += 1
                return .anchor(.lineStart)
            case "$":
                pos += 1
                return .anchor(.lineEnd)
            case "\\":
                return try parseEscapeAtom()
            case "*", "+", "?":
                throw fail("quantifier '\(c)' with nothing to repeat")
            case "{":
                if (try? lookaheadBraces()) == true { throw fail("quantifier '{' with nothing to repeat") }
                pos += 1
                return .set(.single(c))
            default:
                pos += 1
                return .set(.single(c))
            }
        }

        mutating func parseEscapeAtom() throws -> Node {
            guard let e = peek(1) else { throw fail("pattern ends with a backslash") }
            switch e {
            case "A": pos += 2; return .anchor(.textStart)
            case "z": pos += 2; return .anchor(.textEnd)
            case "Z": pos += 2; return .anchor(.textEndOrFinalNewline)
            case "b": pos += 2; return .anchor(.wordBoundary)
            case "B": pos += 2; return .anchor(.notWordBoundary)
            case "G": throw fail("\\G is not supported")
            case "1"..."9", "k", "g": throw fail("backreferences and subexpression calls are not supported")
            default:
                switch try parseEscape(inClass: false) {
                case .scalar(let v): return .set(.single(v))
                case .property(let p, let negated): return .set(ScalarClass(properties: [(p, negated)]))
                }
            }
        }

        enum Escape {
            case scalar(Unicode.Scalar)
            case property(ScalarClass.Property, negated: Bool)
        }

        /// An escape at `pos` (pointing at the backslash) that stands for one scalar or a property.
        mutating func parseEscape(inClass: Bool) throws -> Escape {
            let start = pos
            pos += 1
            guard let e = peek() else { throw fail("pattern ends with a backslash", at: start) }
            pos += 1
            switch e {
            case "s": return .property(.whitespace, negated: false)
            case "S": return .property(.whitespace, negated: true)
            case "d": return .property(.digit, negated: false)
            case "D": return .property(.digit, negated: true)
            case "w": return .property(.word, negated: false)
            case "W": return .property(.word, negated: true)
            case "p", "P":
                guard peek() == "{" else { throw fail("\\\(e) needs a {name}", at: start) }
                pos += 1
                var negated = e == "P"
                if peek() == "^" { negated.toggle(); pos += 1 }
                var name = ""
                while let c = peek(), c != "}" { name.unicodeScalars.append(c); pos += 1 }
                guard peek() == "}" else { throw fail("unterminated \\\(e){", at: start) }
                pos += 1
                guard let set = SplitPattern.categories(named: name) else { throw fail("unsupported property '\(name)'", at: start) }
                return .property(.categories(set), negated: negated)
            case "n": return .scalar("\n")
            case "r": return .scalar("\r")
            case "t": return .scalar("\t")
            case "f": return .scalar("\u{0C}")
            case "v": return .scalar("\u{0B}")
            case "a": return .scalar("\u{07}")
            case "e": return .scalar("\u{1B}")
            case "0": return .scalar("\u{0}")
            case "x":
                if peek() == "{" {
                    pos += 1
                    var hex = ""
                    while let c = peek(), c != "}" { hex.unicodeScalars.append(c); pos += 1 }
                    guard peek() == "}", let v = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(v) else { throw fail("invalid \\x{...} escape", at: start) }
                    pos += 1
                    return .scalar(scalar)
                }
                return .scalar(try hexScalar(digits: 2, at: start))
            case "u":
                return .scalar(try hexScalar(digits: 4, at: start))
            default:
                if e.properties.isAlphabetic || e.properties.numericType != nil {
                    throw fail("unsupported escape '\\\(e)'", at: start)
                }
                return .scalar(e)  // an escaped metacharacter or other punctuation
            }
        }

        mutating func hexScalar(digits: Int, at start: Int) throws -> Unicode.Scalar {
            guard pos + digits <= s.count else { throw fail("truncated hexadecimal escape", at: start) }
            let hex = String(String.UnicodeScalarView(s[pos..<(pos + digits)]))
            guard let v = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(v) else { throw fail("invalid hexadecimal escape", at: start) }
            pos += digits
            return scalar
        }

        mutating func parseClass() throws -> ScalarClass {
            let start = pos
            pos += 1
            var negated = false
            if peek() == "^" { negated = true; pos += 1 }
            var ranges: [ClosedRange<UInt32>] = []
            var properties: [(property: ScalarClass.Property, negated: Bool)] = []
            var first = true
            while true {
                guard let c = peek() else { throw fail("unterminated character class", at: start) }
                if c == "]" && !first { pos += 1; break }
                first = false
                if c == "[" { throw fail("nested character classes are not supported") }
                if c == "&" && peek(1) == "&" { throw fail("character class intersection is not supported") }
                // One member: a scalar (possibly the start of a range) or a property.
                let itemStart = pos
                var lo: Unicode.Scalar
                if c == "\\" {
                    switch try parseEscape(inClass: true) {
                    case .property(let p, let n):
                        properties.append((p, n))
                        continue
                    case .scalar(let v):
                        lo = v
                    }
                } else {
                    lo = c
                    pos += 1
                }
                // A range?
                if peek() == "-", let next = peek(1), next != "]" {
                    pos += 1
                    var hi: Unicode.Scalar
                    if next == "\\" {
                        guard case .scalar(let v) = try parseEscape(inClass: true) else {
                            throw fail("a range cannot end in a property escape", at: itemStart)
                        }
                        hi = v
                    } else if next == "[" {
                        throw fail("nested character classes are not supported")
                    } else {
                        hi = next
                        pos += 1
                    }
                    guard lo.value <= hi.value else {
                        throw fail("empty range U+\(String(lo.value, radix: 16, uppercase: true))-U+\(String(hi.value, radix: 16, uppercase: true)) in character class", at: itemStart)
                    }
                    ranges.append(lo.value...hi.value)
                } else {
                    ranges.append(lo.value...lo.value)
                }
            }
            return ScalarClass(ranges: ranges, properties: properties, negated: negated)
        }
    }

    /// General categories for a `\p{..}` name (short or long form, case and `_`/space insensitive).
    static func categories(named name: String) -> Set<Unicode.GeneralCategory>? {
        typealias G = Unicode.GeneralCategory
        let key = name.lowercased().filter { $0 != "_" && $0 != " " && $0 != "-" }
        let letters: Set<G> = [.uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter]
        let marks: Set<G> = [.nonspacingMark, .spacingMark, .enclosingMark]
        let numbers: Set<G> = [.decimalNumber, .letterNumber, .otherNumber]
        let punctuation: Set<G> = [.connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
                                   .initialPunctuation, .finalPunctuation, .otherPunctuation]
        let symbols: Set<G> = [.mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol]
        let separators: Set<G> = [.spaceSeparator, .lineSeparator, .paragraphSeparator]
        let other: Set<G> = [.control, .format, .surrogate, .privateUse, .unassigned]
        let table: [String: Set<G>] = [
            "l": letters, "letter": letters, "lu": [.uppercaseLetter], "uppercaseletter": [.uppercaseLetter],
            "ll": [.lowercaseLetter], "lowercaseletter": [.lowercaseLetter], "lt": [.titlecaseLetter], "titlecaseletter": [.titlecaseLetter],
            "lm": [.modifierLetter], "modifierletter": [.modifierLetter], "lo": [.otherLetter], "otherletter": [.otherLetter],
            "l&": [.uppercaseLetter, .lowercaseLetter, .titlecaseLetter], "lc": [.uppercaseLetter, .lowercaseLetter, .titlecaseLetter],
            "casedletter": [.uppercaseLetter, .lowercaseLetter, .titlecaseLetter],
            "m": marks, "mark": marks, "mn": [.nonspacingMark], "nonspacingmark": [.nonspacingMark], "mc": [.spacingMark],
            "spacingmark": [.spacingMark], "me": [.enclosingMark], "enclosingmark": [.enclosingMark],
            "n": numbers, "number": numbers, "nd": [.decimalNumber], "decimalnumber": [.decimalNumber], "nl": [.letterNumber],
            "letternumber": [.letterNumber], "no": [.otherNumber], "othernumber": [.otherNumber],
            "p": punctuation, "punctuation": punctuation, "pc": [.connectorPunctuation], "connectorpunctuation": [.connectorPunctuation],
            "pd": [.dashPunctuation], "dashpunctuation": [.dashPunctuation], "ps": [.openPunctuation], "openpunctuation": [.openPunctuation],
            "pe": [.closePunctuation], "closepunctuation": [.closePunctuation], "pi": [.initialPunctuation],
            "initialpunctuation": [.initialPunctuation], "pf": [.finalPunctuation], "finalpunctuation": [.finalPunctuation],
            "po": [.otherPunctuation], "otherpunctuation": [.otherPunctuation],
            "s": symbols, "symbol": symbols, "sm": [.mathSymbol], "mathsymbol": [.mathSymbol], "sc": [.currencySymbol],
            "currencysymbol": [.currencySymbol], "sk": [.modifierSymbol], "modifiersymbol": [.modifierSymbol],
            "so": [.otherSymbol], "othersymbol": [.otherSymbol],
            "z": separators, "separator": separators, "zs": [.spaceSeparator], "spaceseparator": [.spaceSeparator],
            "zl": [.lineSeparator], "lineseparator": [.lineSeparator], "zp": [.paragraphSeparator], "paragraphseparator": [.paragraphSeparator],
            "c": other, "other": other, "cc": [.control], "control": [.control], "cf": [.format], "format": [.format],
            "cs": [.surrogate], "surrogate": [.surrogate], "co": [.privateUse], "privateuse": [.privateUse],
            "cn": [.unassigned], "unassigned": [.unassigned],
        ]
        return table[key]
    }
}
