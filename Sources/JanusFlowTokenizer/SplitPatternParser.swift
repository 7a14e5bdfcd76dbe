// The parser of SplitPattern: Oniguruma-flavoured pattern text to a syntax tree, and the names of `\p{..}` classes.

extension SplitPattern {
    /// Reads a pattern into a `Node` tree; every unsupported construct is a `SyntaxError` naming its offset.
    struct Parser {
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
