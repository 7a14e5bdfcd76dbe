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
}
