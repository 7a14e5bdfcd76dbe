import Foundation

/// A problem reading a tokenizer file; the message names the file and the field.
public struct TokenizerError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A Hugging Face `tokenizer.json` byte-level BPE tokenizer (the DeepSeek-LLM / JanusFlow pipeline): added
/// tokens matched first, Split / Digits / ByteLevel pre-tokenizers, BPE by merge rank, BOS prepended, byte-level
/// decoding.
public final class Tokenizer: @unchecked Sendable {
    public struct AddedToken: Equatable, Sendable {
        public let id: Int
        public let content: String
        public let special: Bool
    }

    enum PreTokenizer {
        case split(SplitPattern)
        case digits(individual: Bool)
        case byteLevel
    }

    let vocab: [String: Int]
    let idToToken: [String]
    let addedTokens: [AddedToken]
    let addedByID: [Int: AddedToken]
    let addedByFirstScalar: [Unicode.Scalar: [(scalars: [Unicode.Scalar], token: AddedToken)]]
    let preTokenizers: [PreTokenizer]
    /// (left id, right id) -> (rank, merged id)
    let merges: [UInt64: (rank: Int32, id: Int32)]
    /// Byte -> vocabulary id of its single-symbol token.
    let byteIDs: [Int32]
    let byteDecoder: [Unicode.Scalar: UInt8]
    // Keyed by UTF-8 bytes: Swift String equality is canonical (U+2126 OHM SIGN == U+03A9), BPE is not.
    private var cache: [[UInt8]: [Int32]] = [:]
    private let cacheLock = NSLock()

    public let bosID: Int
    public let eosID: Int
    /// The id of `<｜▁pad▁｜>`, or EOS when the vocabulary has no pad token (VLChatProcessor's rule).
    public let padID: Int
    public var vocabularySize: Int { idToToken.count }
    public let source: String

    /// Reads `tokenizer.json` in `directory`.
    public convenience init(directory: URL) throws {
        try self.init(tokenizerJSON: directory.appendingPathComponent("tokenizer.json"))
    }

    public convenience init(tokenizerJSON url: URL) throws {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TokenizerError("\(url.path): file not found")
        }
        try self.init(json: data, name: url.path)
    }

    /// Parses tokenizer.json contents; `name` appears in error messages.
    public init(json data: Data, name: String) throws {
        source = name
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TokenizerError("\(name): not a JSON object")
        }
        func fail(_ field: String, _ why: String) -> TokenizerError { TokenizerError("\(name): field '\(field)': \(why)") }
        guard let model = root["model"] as? [String: Any] else { throw fail("model", "missing") }
        guard (model["type"] as? String) == "BPE" else { throw fail("model.type", "unsupported '\(model["type"] ?? "nil")' (only BPE)") }
        if (model["byte_fallback"] as? Bool) == true { throw fail("model.byte_fallback", "byte fallback is not supported") }
        guard let vocabObject = model["vocab"] as? [String: Any] else { throw fail("model.vocab", "missing") }
        var vocab: [String: Int] = [:]
        for (token, id) in vocabObject {
            guard let n = id as? Int else { throw fail("model.vocab", "id of '\(token)' is not an integer") }
            vocab[token] = n
        }
        // Added tokens (special or not) extend the vocabulary.
        var added: [AddedToken] = []
        for item in root["added_tokens"] as? [[String: Any]] ?? [] {
            guard let id = item["id"] as? Int, let content = item["content"] as? String else {
                throw fail("added_tokens", "entries need 'id' and 'content'")
            }
            added.append(AddedToken(id: id, content: content, special: item["special"] as? Bool ?? false))
            vocab[content] = id
        }
        let size = (vocab.values.max() ?? -1) + 1
        var idToToken = [String](repeating: "", count: size)
        for (t, i) in vocab { idToToken[i] = t }
        self.vocab = vocab
        self.idToToken = idToToken
        self.addedTokens = added
        self.addedByID = Dictionary(added.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var byFirst: [Unicode.Scalar: [(scalars: [Unicode.Scalar], token: AddedToken)]] = [:]
        for t in added {
            let scalars = Array(t.content.unicodeScalars)
            guard let first = scalars.first else { continue }
            byFirst[first, default: []].append((scalars, t))
        }
        for k in byFirst.keys { byFirst[k]!.sort { $0.scalars.count > $1.scalars.count } }  // longest first
        addedByFirstScalar = byFirst

        // Byte-level alphabet (GPT-2): printable bytes map to themselves, the rest to U+0100 onwards.
        var byteToScalar = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable { byteToScalar[b] = Unicode.Scalar(UInt32(b))! } else { byteToScalar[b] = Unicode.Scalar(next)!; next += 1 }
        }
        var decoder: [Unicode.Scalar: UInt8] = [:]
        var byteIDs = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            decoder[byteToScalar[b]] = UInt8(b)
            byteIDs[b] = Int32(vocab[String(Character(byteToScalar[b]))] ?? -1)
        }
        byteDecoder = decoder
        self.byteIDs = byteIDs

        // Merges: "a b" strings or [a, b] pairs.
        var merges: [UInt64: (rank: Int32, id: Int32)] = [:]
        for (rank, entry) in (model["merges"] as? [Any] ?? []).enumerated() {
            let pair: [String]
            if let s = entry as? String {
                let parts = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                guard parts.count == 2 else { throw fail("model.merges", "entry \(rank) is not 'a b'") }
                pair = parts
            } else if let p = entry as? [String], p.count == 2 {
                pair = p
            } else {
                throw fail("model.merges", "entry \(rank) is neither 'a b' nor [a, b]")
            }
            guard let a = vocab[pair[0]], let b = vocab[pair[1]], let m = vocab[pair[0] + pair[1]] else { continue }
            let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
            if merges[key] == nil { merges[key] = (Int32(rank), Int32(m)) }
        }
        self.merges = merges

        // Pre-tokenizer.
        var pre: [PreTokenizer] = []
        func parse(_ p: [String: Any], _ field: String) throws {
            switch p["type"] as? String {
            case "Sequence":
                for (i, item) in ((p["pretokenizers"] as? [[String: Any]]) ?? []).enumerated() { try parse(item, "\(field).pretokenizers.\(i)") }
            case "Split":
                guard let pattern = p["pattern"] as? [String: Any] else { throw fail(field, "Split without a pattern") }
                guard (p["behavior"] as? String ?? "Isolated") == "Isolated", (p["invert"] as? Bool ?? false) == false else {
                    throw fail(field, "only Isolated, non-inverted splits are supported")
                }
                if let regex = pattern["Regex"] as? String {
                    do { pre.append(.split(try SplitPattern(regex))) } catch { throw fail(field, "\(error)") }
                } else if let literal = pattern["String"] as? String {
                    let escaped = literal.unicodeScalars.map { "[]\\$?+*.()|{}^-".unicodeScalars.contains($0) ? "\\\($0)" : String($0) }.joined()
                    pre.append(.split(try SplitPattern(escaped)))
                } else {
                    throw fail(field, "Split pattern must be Regex or String")
                }
            case "Digits":
                pre.append(.digits(individual: p["individual_digits"] as? Bool ?? false))
            case "ByteLevel":
                if (p["use_regex"] as? Bool) == true { throw fail(field, "ByteLevel with use_regex is not supported") }
                pre.append(.byteLevel)
            case let other:
                throw fail(field, "unsupported pre-tokenizer '\(other ?? "nil")'")
            }
        }
        if let p = root["pre_tokenizer"] as? [String: Any] { try parse(p, "pre_tokenizer") }
        if let n = root["normalizer"] as? [String: Any], (n["type"] as? String) != "Sequence" || !((n["normalizers"] as? [Any])?.isEmpty ?? true) {
            throw fail("normalizer", "only an empty normalizer is supported")
        }
        preTokenizers = pre

        func id(_ token: String) -> Int? { vocab[token] }
        guard let bos = id("<｜begin▁of▁sentence｜>") ?? id("<s>") else { throw fail("added_tokens", "no BOS token <｜begin▁of▁sentence｜>") }
        guard let eos = id("<｜end▁of▁sentence｜>") ?? id("</s>") else { throw fail("added_tokens", "no EOS token <｜end▁of▁sentence｜>") }
        bosID = bos
        eosID = eos
        padID = id("<｜▁pad▁｜>") ?? eos
    }


    public func tokenID(for token: String) -> Int? { vocab[token] }
    public func token(for id: Int) -> String? { id >= 0 && id < idToToken.count ? idToToken[id] : nil }
    public func isSpecial(_ id: Int) -> Bool { addedByID[id]?.special ?? false }

    // MARK: Encoding

    /// Token ids of `text`, with BOS first when `addBOS`.
    public func encode(_ text: String, addBOS: Bool = true) -> [Int] {
        var ids: [Int] = addBOS ? [bosID] : []
        let scalars = Array(text.unicodeScalars)
        var start = 0, i = 0
        while i < scalars.count {
            if let candidates = addedByFirstScalar[scalars[i]],
               let hit = candidates.first(where: { c in i + c.scalars.count <= scalars.count && scalars[i..<(i + c.scalars.count)].elementsEqual(c.scalars) }) {
                if start < i { encodeOrdinary(scalars[start..<i], into: &ids) }
                ids.append(hit.token.id)
                i += hit.scalars.count
                start = i
            } else {
                i += 1
            }
        }
        if start < scalars.count { encodeOrdinary(scalars[start..<scalars.count], into: &ids) }
        return ids
    }

    /// The pieces after the regex and digit splits (before byte-level mapping), for tests.
    public func preTokenize(_ text: String) -> [String] {
        pieces(Array(text.unicodeScalars)[...]).map { String(String.UnicodeScalarView($0)) }
    }

    func pieces(_ text: ArraySlice<Unicode.Scalar>) -> [ArraySlice<Unicode.Scalar>] {
        var pieces = [text]
        for step in preTokenizers {
            switch step {
            case .split(let pattern):
                pieces = pieces.flatMap { pattern.splitIsolated(Array($0)) }
            case .digits(let individual):
                pieces = pieces.flatMap { Tokenizer.splitDigits(Array($0), individual: individual) }
            case .byteLevel:
                break
            }
        }
        return pieces
    }

    static func isNumeric(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    static func splitDigits(_ text: [Unicode.Scalar], individual: Bool) -> [ArraySlice<Unicode.Scalar>] {
        var out: [ArraySlice<Unicode.Scalar>] = []
        var start = 0, i = 0
        while i < text.count {
            if isNumeric(text[i]) {
                if start < i { out.append(text[start..<i]) }
                var end = i + 1
                if !individual { while end < text.count && isNumeric(text[end]) { end += 1 } }
                out.append(text[i..<end])
                i = end
                start = end
            } else {
                i += 1
            }
        }
        if start < text.count { out.append(text[start..<text.count]) }
        return out
    }

    func encodeOrdinary(_ text: ArraySlice<Unicode.Scalar>, into ids: inout [Int]) {
        for piece in pieces(text) {
            var key: [UInt8] = []
            for scalar in piece { key.append(contentsOf: UTF8.encode(scalar)!) }
            cacheLock.lock()
            let cached = cache[key]
            cacheLock.unlock()
            if let cached {
                ids.append(contentsOf: cached.map(Int.init))
                continue
            }
            let result = bpe(key)
            cacheLock.lock()
            if cache.count > 100_000 { cache.removeAll(keepingCapacity: true) }
            cache[key] = result
            cacheLock.unlock()
            ids.append(contentsOf: result.map(Int.init))
        }
    }

    /// BPE on the byte symbols of one piece: repeatedly merge the adjacent pair with the lowest rank.
    func bpe(_ bytes: [UInt8]) -> [Int32] {
        var symbols = bytes.map { byteIDs[Int($0)] }
        if symbols.count < 2 { return symbols }
        while symbols.count > 1 {
            var bestRank = Int32.max, bestIndex = -1, bestID: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                let key = UInt64(UInt32(bitPattern: symbols[i])) << 32 | UInt64(UInt32(bitPattern: symbols[i + 1]))
                if let m = merges[key], m.rank < bestRank {
                    bestRank = m.rank
                    bestIndex = i
                    bestID = m.id
                }
            }
            if bestIndex < 0 { break }
            // Merge every occurrence of this pair, left to right (same result as one at a time by rank).
            let a = symbols[bestIndex], b = symbols[bestIndex + 1]
            var merged: [Int32] = []
            merged.reserveCapacity(symbols.count)
            var i = 0
            while i < symbols.count {
                if i + 1 < symbols.count && symbols[i] == a && symbols[i + 1] == b {
                    merged.append(bestID)
                    i += 2
                } else {
                    merged.append(symbols[i])
                    i += 1
                }
            }
            symbols = merged
        }
        return symbols
    }

    // MARK: Decoding

    /// Text of `ids`; special tokens verbatim unless skipped; invalid UTF-8 becomes U+FFFD.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var text = ""
        var bytes: [UInt8] = []
        func flush() {
            if !bytes.isEmpty { text += String(decoding: bytes, as: UTF8.self) }
            bytes.removeAll()
        }
        for id in ids {
            if let added = addedByID[id] {
                if added.special && skipSpecialTokens { continue }
                flush()
                text += added.content
                continue
            }
            guard let token = token(for: id) else { continue }
            for s in token.unicodeScalars {
                if let b = byteDecoder[s] { bytes.append(b) } else { bytes.append(contentsOf: Array(String(s).utf8)) }
            }
        }
        flush()
        return text
    }
}

/// Turns a stream of token ids into text pieces that never split a UTF-8 character (for token streaming).
public struct IncrementalDecoder {
    let tokenizer: Tokenizer
    let skipSpecialTokens: Bool
    var ids: [Int] = []
    var emitted = 0

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = true) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// The new complete text after adding `id` ("" while a character is still incomplete).
    public mutating func add(_ id: Int) -> String {
        ids.append(id)
        let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        // An incomplete UTF-8 sequence at the end decodes to U+FFFD: wait for more bytes.
        if text.unicodeScalars.last == "\u{FFFD}" { return "" }
        let scalars = Array(text.unicodeScalars)
        guard scalars.count > emitted else { return "" }
        let piece = String(String.UnicodeScalarView(scalars[emitted...]))
        emitted = scalars.count
        return piece
    }
}
