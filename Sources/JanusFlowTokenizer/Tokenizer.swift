import Foundation

/// A byte-level BPE tokenizer read from a Hugging Face `tokenizer.json`, as DeepSeek-LLM and JanusFlow use it.
///
/// Encoding reproduces the `tokenizers` library (and `transformers`' `LlamaTokenizerFast`) exactly:
/// 1. added tokens (special or not) are found first, by their literal text, and become their ids;
/// 2. the text between them goes through the pre-tokenizer read from the file (a `Sequence` of `Split` regexes,
///    `Digits` and `ByteLevel`), whose regular expressions are parsed from the file and matched with Oniguruma's
///    rules (see `SplitPattern`);
/// 3. each piece's UTF-8 bytes are merged by BPE rank;
/// 4. BOS is prepended when asked (the `BOS $A` template `LlamaTokenizerFast` installs; no EOS).
///
/// Decoding concatenates the tokens' bytes (special tokens verbatim, or left out) and reads them as UTF-8, with
/// U+FFFD for invalid sequences. The type is immutable and safe to share between threads.
public final class Tokenizer: @unchecked Sendable {
    /// A token listed in `added_tokens`, with the matching options of the `tokenizers` library.
    public struct AddedToken: Equatable, Sendable {
        /// The token's id.
        public let id: Int
        /// The literal text the token stands for, matched in the input as is.
        public let content: String
        /// Skipped by `decode(_:skipSpecialTokens: true)`.
        public let special: Bool
        /// Matched only when not touching word characters on either side.
        public let singleWord: Bool
        /// A match also takes the whitespace on its left / right.
        public let lstrip: Bool
        /// A match also takes the whitespace on its right.
        public let rstrip: Bool
        /// Matched in a second pass, after the non-normalized tokens (there is no normalizer, so only the order
        /// of the two passes differs).
        public let normalized: Bool

        /// Creates an added token; the matching options are off unless given.
        public init(id: Int, content: String, special: Bool, singleWord: Bool = false, lstrip: Bool = false,
                    rstrip: Bool = false, normalized: Bool = false) {
            self.id = id
            self.content = content
            self.special = special
            self.singleWord = singleWord
            self.lstrip = lstrip
            self.rstrip = rstrip
            self.normalized = normalized
        }

        /// Equal when every field is, comparing `content` by its UTF-8 bytes rather than by canonical equivalence.
        public static func == (a: AddedToken, b: AddedToken) -> Bool {
            a.id == b.id && Array(a.content.utf8) == Array(b.content.utf8) && a.special == b.special
                && a.singleWord == b.singleWord && a.lstrip == b.lstrip && a.rstrip == b.rstrip && a.normalized == b.normalized
        }
    }

    /// Everything a tokenizer is made of (kept so that `addingSpecialTokens` can build a copy).
    struct Parts {
        var model: BPEModel
        /// Model vocabulary, keyed by the token's UTF-8 bytes (exact, unlike `String` keys, which compare by
        /// canonical equivalence).
        var modelVocab: [[UInt8]: Int]
        var added: [AddedToken]
        var preTokenizer: PreTokenizer
    }

    let parts: Parts
    let addedByContent: [[UInt8]: AddedToken]
    let addedByID: [Int: AddedToken]
    let rawMatcher: AddedTokenMatcher
    let normalizedMatcher: AddedTokenMatcher
    /// Token strings by id (nil for unused ids).
    let idToToken: [String?]
    /// Decoded bytes of every id, concatenated; `byteOffsets[id]..<byteOffsets[id + 1]`.
    let tokenBytes: [UInt8]
    let byteOffsets: [Int32]
    let specialFlags: [Bool]
    /// The names BOS and EOS were looked up by (kept for `addingSpecialTokens`).
    private let bosNames: [String]
    private let eosNames: [String]

    /// Where the tokenizer came from (a path or the name given to `init(json:name:)`), used in messages.
    public let source: String
    /// `<｜begin▁of▁sentence｜>` for DeepSeek: prepended by `encode(_:addBOS: true)`.
    public let bosID: Int
    /// `<｜end▁of▁sentence｜>` for DeepSeek: ends an assistant turn and stops generation.
    public let eosID: Int
    /// The id of `<｜▁pad▁｜>`, or the EOS id when the vocabulary has no such token (VLChatProcessor's rule).
    public let padID: Int
    /// One more than the largest id (the number of ids when they are contiguous, as in every real tokenizer).
    public var vocabularySize: Int { idToToken.count }
    /// The added tokens in the file's order (plus any added with `addingSpecialTokens`).
    public var addedTokens: [AddedToken] { parts.added }

    /// The token names looked up when none is given: DeepSeek's, then Llama's and GPT-2's.
    public static let defaultBOSNames = ["<｜begin▁of▁sentence｜>", "<s>", "<|begin_of_text|>", "<|endoftext|>"]
    /// The EOS token names looked up when none is given, in the same order as `defaultBOSNames`.
    public static let defaultEOSNames = ["<｜end▁of▁sentence｜>", "</s>", "<|end_of_text|>", "<|endoftext|>"]
    /// DeepSeek's pad token; `padID` falls back to EOS when the vocabulary lacks it.
    public static let padTokenName = "<｜▁pad▁｜>"

    // MARK: Loading

    /// Reads `tokenizer.json` in `directory`. The BOS and EOS tokens are taken from `tokenizer_config.json` (or
    /// else `special_tokens_map.json`) there when it names them, otherwise found by the default names.
    public convenience init(directory: URL) throws {
        let file = directory.appendingPathComponent("tokenizer.json")
        var bos: String?, eos: String?
        for name in ["tokenizer_config.json", "special_tokens_map.json"] where bos == nil && eos == nil {
            let url = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            let root = try Tokenizer.readJSON(url)
            func tokenName(_ field: String) throws -> String? {
                switch root[field] {
                case nil, .null?: return nil
                case .string(let s)?: return s
                case let value?:
                    if let s = value["content"]?.string { return s }
                    throw TokenizerError(.invalidField, file: url.path, field: field, reason: "expected a string or an object with 'content', found \(value.typeName)")
                }
            }
            bos = try tokenName("bos_token")
            eos = try tokenName("eos_token")
        }
        try self.init(tokenizerJSON: file, bosToken: bos, eosToken: eos)
    }

    /// Reads a `tokenizer.json` file. `bosToken` / `eosToken` name the BOS and EOS tokens; by default BOS is the
    /// first special token of a `TemplateProcessing` post-processor, else the first of `defaultBOSNames` in the
    /// vocabulary, and EOS the first of `defaultEOSNames`.
    public convenience init(tokenizerJSON url: URL, bosToken: String? = nil, eosToken: String? = nil) throws {
        let root = try Tokenizer.readJSON(url)
        try self.init(root: root, name: url.path, bosToken: bosToken, eosToken: eosToken)
    }

    /// Parses `tokenizer.json` contents; `name` stands for the file in error messages.
    public convenience init(json data: Data, name: String, bosToken: String? = nil, eosToken: String? = nil) throws {
        let root: JSONValue
        do {
            root = try JSONParser.parse([UInt8](data))
        } catch let error as JSONSyntaxError {
            throw TokenizerError(.invalidJSON, file: name, reason: "invalid JSON at \(error)")
        }
        try self.init(root: root, name: name, bosToken: bosToken, eosToken: eosToken)
    }

    static func readJSON(_ url: URL) throws -> JSONValue {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue,
              let data = FileManager.default.contents(atPath: url.path)
        else {
            throw TokenizerError(.fileNotFound, file: url.path, reason: "file not found")
        }
        do {
            return try JSONParser.parse([UInt8](data))
        } catch let error as JSONSyntaxError {
            throw TokenizerError(.invalidJSON, file: url.path, reason: "invalid JSON at \(error)")
        }
    }

    private convenience init(root: JSONValue, name: String, bosToken: String?, eosToken: String?) throws {
        let parts = try Tokenizer.parse(root, name: name)
        // BOS: explicit, else the post-processor template's first special token, else a known name.
        var bosNames = bosToken.map { [$0] } ?? Tokenizer.defaultBOSNames
        if bosToken == nil, root["post_processor"]?["type"]?.string == "TemplateProcessing",
           let first = root["post_processor"]?["single"]?.array?.first, let id = first["SpecialToken"]?["id"]?.string {
            bosNames.insert(id, at: 0)
        }
        let eosNames = eosToken.map { [$0] } ?? Tokenizer.defaultEOSNames
        try self.init(parts: parts, name: name, bosNames: bosNames, eosNames: eosNames)
    }

    init(parts: Parts, name: String, bosNames: [String], eosNames: [String]) throws {
        self.parts = parts
        source = name
        var byContent: [[UInt8]: AddedToken] = [:]
        var byID: [Int: AddedToken] = [:]
        for t in parts.added {
            byContent[Array(t.content.utf8)] = t
            byID[t.id] = t
        }
        addedByContent = byContent
        addedByID = byID
        rawMatcher = AddedTokenMatcher(parts.added.filter { !$0.normalized })
        normalizedMatcher = AddedTokenMatcher(parts.added.filter { $0.normalized })

        let maxID = Swift.max(parts.modelVocab.values.max() ?? -1, parts.added.map(\.id).max() ?? -1)
        var tokens = [String?](repeating: nil, count: maxID + 1)
        for (bytes, id) in parts.modelVocab { tokens[id] = String(decoding: bytes, as: UTF8.self) }
        for t in parts.added { tokens[t.id] = t.content }
        idToToken = tokens
        var bytes: [UInt8] = []
        var offsets: [Int32] = [0]
        var special = [Bool](repeating: false, count: tokens.count)
        offsets.reserveCapacity(tokens.count + 1)
        for (id, token) in tokens.enumerated() {
            if let token { bytes.append(contentsOf: ByteLevel.bytes(ofToken: token)) }
            offsets.append(Int32(bytes.count))
            special[id] = byID[id]?.special ?? false
        }
        tokenBytes = bytes
        byteOffsets = offsets
        specialFlags = special

        func lookup(_ token: String) -> Int? {
            let key = Array(token.utf8)
            return byContent[key]?.id ?? parts.modelVocab[key]
        }
        guard let bos = bosNames.lazy.compactMap(lookup).first else {
            throw TokenizerError(.missingToken, file: name, reason: "no BOS token (looked for \(bosNames.map { "'\($0)'" }.joined(separator: ", ")))")
        }
        guard let eos = eosNames.lazy.compactMap(lookup).first else {
            throw TokenizerError(.missingToken, file: name, reason: "no EOS token (looked for \(eosNames.map { "'\($0)'" }.joined(separator: ", ")))")
        }
        bosID = bos
        eosID = eos
        padID = lookup(Tokenizer.padTokenName) ?? eos
        self.bosNames = bosNames
        self.eosNames = eosNames
    }

    /// A copy with `tokens` added as special tokens where missing, with the ids the `tokenizers` library gives
    /// (the next id after the largest added id, or the model's vocabulary size), as `VLChatProcessor` does for
    /// image tags that the vocabulary lacks. Tokens already present keep their ids.
    public func addingSpecialTokens(_ tokens: [String]) -> Tokenizer {
        var parts = self.parts
        for content in tokens where !content.isEmpty {
            let key = Array(content.utf8)
            if addedByContent[key] != nil || parts.added.contains(where: { Array($0.content.utf8) == key }) { continue }
            let id = parts.modelVocab[key] ?? Tokenizer.nextAddedID(parts.added.map(\.id), modelVocabularyCount: parts.modelVocab.count)
            parts.added.append(AddedToken(id: id, content: content, special: true))
        }
        return try! Tokenizer(parts: parts, name: source, bosNames: bosNames, eosNames: eosNames)
    }

    /// The id `tokenizers` gives a new added token.
    static func nextAddedID(_ addedIDs: [Int], modelVocabularyCount: Int) -> Int {
        guard let max = addedIDs.max() else { return modelVocabularyCount }
        return max >= modelVocabularyCount || modelVocabularyCount == 0 ? max + 1 : modelVocabularyCount
    }

    // MARK: Parsing tokenizer.json

    static func parse(_ root: JSONValue, name: String) throws -> Parts {
        func invalid(_ field: String, _ reason: String) -> TokenizerError { TokenizerError(.invalidField, file: name, field: field, reason: reason) }
        func unsupported(_ field: String, _ reason: String) -> TokenizerError { TokenizerError(.unsupported, file: name, field: field, reason: reason) }
        guard root.members != nil else { throw TokenizerError(.invalidJSON, file: name, reason: "the top-level value is \(root.typeName), not an object") }

        // Model.
        guard let model = root["model"], model.members != nil else { throw invalid("model", "missing or not an object") }
        let type = model["type"]?.string ?? (model["merges"] != nil ? "BPE" : "nil")
        guard type == "BPE" else { throw unsupported("model.type", "unsupported model type '\(type)' (only BPE)") }
        if let d = model["dropout"], !d.isNull, d.double != 0 { throw unsupported("model.dropout", "BPE dropout is not supported") }
        for field in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = model[field], !v.isNull, v.string != "" { throw unsupported("model.\(field)", "'\(v.string ?? v.typeName)' is not supported") }
        }
        guard let vocabMembers = model["vocab"]?.members else { throw invalid("model.vocab", "missing or not an object") }
        var vocab: [[UInt8]: Int] = [:]
        vocab.reserveCapacity(vocabMembers.count)
        for (token, value) in vocabMembers {
            guard let id = value.int, id >= 0, id < Int(Int32.max) else { throw invalid("model.vocab", "id of '\(token)' is \(value.typeName == "a number" ? "not a valid id" : value.typeName)") }
            vocab[Array(token.utf8)] = id
        }
        // Byte symbols.
        var byteIDs = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            let symbol = String(Character(ByteLevel.byteToScalar[b]))
            guard let id = vocab[Array(symbol.utf8)] else {
                throw invalid("model.vocab", "the byte-level symbol '\(symbol)' (byte 0x\(String(b, radix: 16, uppercase: true))) is missing; only byte-level BPE with all 256 byte symbols is supported")
            }
            byteIDs[b] = Int32(id)
        }
        // Merges: "a b" strings or [a, b] pairs; ranks are positions, a repeated pair keeps the last.
        guard let mergeList = model["merges"]?.array else { throw invalid("model.merges", "missing or not an array") }
        var merges: [UInt64: UInt64] = [:]
        merges.reserveCapacity(mergeList.count)
        for (rank, entry) in mergeList.enumerated() {
            let a: String, b: String
            if let s = entry.string {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw invalid("model.merges", "entry \(rank) ('\(s)') is not two tokens separated by one space") }
                a = String(parts[0])
                b = String(parts[1])
            } else if let pair = entry.array, pair.count == 2, let x = pair[0].string, let y = pair[1].string {
                a = x
                b = y
            } else {
                throw invalid("model.merges", "entry \(rank) is neither \"a b\" nor [\"a\", \"b\"]")
            }
            let ab = Array(a.utf8) + Array(b.utf8)
            guard let ia = vocab[Array(a.utf8)] else { throw invalid("model.merges", "entry \(rank): '\(a)' is not in the vocabulary") }
            guard let ib = vocab[Array(b.utf8)] else { throw invalid("model.merges", "entry \(rank): '\(b)' is not in the vocabulary") }
            guard let merged = vocab[ab] else { throw invalid("model.merges", "entry \(rank): '\(a)\(b)' is not in the vocabulary") }
            merges[BPEModel.key(Int32(ia), Int32(ib))] = UInt64(rank) << 32 | UInt64(merged)
        }
        var wholeWords: [[UInt8]: Int32]?
        if model["ignore_merges"]?.bool == true {
            var words: [[UInt8]: Int32] = [:]
            for (token, id) in vocab {
                let bytes = ByteLevel.bytes(ofToken: String(decoding: token, as: UTF8.self))
                // Only tokens written in the byte alphabet can be whole pieces.
                if String(decoding: token, as: UTF8.self).unicodeScalars.allSatisfy({ ByteLevel.byte(for: $0) != nil }) {
                    words[bytes] = Int32(id)
                }
            }
            wholeWords = words
        }

        // Added tokens, with the ids `tokenizers` assigns when it loads them.
        var added: [AddedToken] = []
        if let list = root["added_tokens"], !list.isNull {
            guard let items = list.array else { throw invalid("added_tokens", "not an array") }
            for (i, item) in items.enumerated() {
                guard let content = item["content"]?.string else { throw invalid("added_tokens.\(i).content", "missing or not a string") }
                guard item["id"]?.int != nil else { throw invalid("added_tokens.\(i).id", "missing or not an integer") }
                if content.isEmpty { continue }
                let key = Array(content.utf8)
                if added.contains(where: { Array($0.content.utf8) == key }) { continue }
                let id = vocab[key] ?? nextAddedID(added.map(\.id), modelVocabularyCount: vocab.count)
                func flag(_ field: String, _ fallback: Bool) throws -> Bool {
                    guard let v = item[field], !v.isNull else { return fallback }
                    guard let b = v.bool else { throw invalid("added_tokens.\(i).\(field)", "not a boolean") }
                    return b
                }
                let special = try flag("special", false)
                added.append(AddedToken(id: id, content: content, special: special, singleWord: try flag("single_word", false),
                                        lstrip: try flag("lstrip", false), rstrip: try flag("rstrip", false),
                                        normalized: try flag("normalized", !special)))
            }
        }

        // Normalizer: none, or an empty sequence.
        if let n = root["normalizer"], !n.isNull {
            let type = n["type"]?.string ?? "nil"
            guard type == "Sequence", n["normalizers"]?.array?.isEmpty ?? true else {
                throw unsupported("normalizer", "unsupported normalizer '\(type)' (only none or an empty Sequence)")
            }
        }

        // Pre-tokenizer.
        var steps: [PreTokenizerStep] = []
        func parseStep(_ p: JSONValue, _ field: String) throws {
            guard p.members != nil else { throw invalid(field, "not an object") }
            let type = p["type"]?.string ?? "nil"
            switch type {
            case "Sequence":
                guard let items = p["pretokenizers"]?.array else { throw invalid("\(field).pretokenizers", "missing or not an array") }
                for (i, item) in items.enumerated() { try parseStep(item, "\(field).pretokenizers.\(i)") }
            case "Split":
                let behaviorName = p["behavior"]?.string ?? "Isolated"
                guard let behavior = SplitBehavior(rawValue: behaviorName) else { throw unsupported("\(field).behavior", "unknown split behaviour '\(behaviorName)'") }
                let invert = p["invert"]?.bool ?? false
                let pattern: SplitPattern
                if let regex = p["pattern"]?["Regex"]?.string {
                    do {
                        pattern = try SplitPattern(regex)
                    } catch let error as SplitPattern.SyntaxError {
                        throw unsupported("\(field).pattern.Regex", "\(error)")
                    }
                } else if let literal = p["pattern"]?["String"]?.string {
                    pattern = SplitPattern(literal: literal)
                } else {
                    throw invalid("\(field).pattern", "missing, or neither {\"Regex\": ...} nor {\"String\": ...}")
                }
                steps.append(.split(pattern, behavior: behavior, invert: invert))
            case "Digits":
                steps.append(.digits(individual: p["individual_digits"]?.bool ?? false))
            case "ByteLevel":
                let regex = (p["use_regex"]?.bool ?? true) ? try! SplitPattern(PreTokenizer.gpt2Pattern) : nil
                steps.append(.byteLevel(addPrefixSpace: p["add_prefix_space"]?.bool ?? true, regex: regex))
            default:
                throw unsupported("\(field).type", "unsupported pre-tokenizer '\(type)' (supported: Sequence, Split, Digits, ByteLevel)")
            }
        }
        guard let pre = root["pre_tokenizer"], !pre.isNull else {
            throw unsupported("pre_tokenizer", "missing; a ByteLevel pre-tokenizer is required (only byte-level BPE is supported)")
        }
        try parseStep(pre, "pre_tokenizer")
        guard let byteLevelIndex = steps.firstIndex(where: { if case .byteLevel = $0 { return true } else { return false } }) else {
            throw unsupported("pre_tokenizer", "no ByteLevel step; only byte-level BPE is supported")
        }
        guard byteLevelIndex == steps.count - 1 else { throw unsupported("pre_tokenizer", "steps after ByteLevel are not supported") }

        // Decoder: byte level.
        guard let decoder = root["decoder"], !decoder.isNull else { throw unsupported("decoder", "missing; a ByteLevel decoder is required") }
        let decoderType = decoder["type"]?.string ?? "nil"
        guard decoderType == "ByteLevel" else { throw unsupported("decoder.type", "unsupported decoder '\(decoderType)' (only ByteLevel)") }

        return Parts(model: BPEModel(merges: merges, byteIDs: byteIDs, wholeWords: wholeWords), modelVocab: vocab,
                     added: added, preTokenizer: PreTokenizer(steps: steps))
    }

    // MARK: Vocabulary

    /// The id of a token string (added tokens first, then the BPE vocabulary, whose strings are in the byte
    /// alphabet, e.g. `"Ġthe"`). Strings are compared scalar by scalar.
    public func tokenID(for token: String) -> Int? {
        let key = Array(token.utf8)
        return addedByContent[key]?.id ?? parts.modelVocab[key]
    }

    /// The token string of an id (byte-alphabet form for BPE tokens), or nil for an unused id.
    public func token(for id: Int) -> String? { id >= 0 && id < idToToken.count ? idToToken[id] : nil }

    /// Whether `id` is a special added token (left out by `decode(_:skipSpecialTokens: true)`).
    public func isSpecial(_ id: Int) -> Bool { id >= 0 && id < specialFlags.count && specialFlags[id] }

    // MARK: Encoding

    /// The token ids of `text`, with BOS first when `addBOS` (what `tokenizer.encode(text)` gives in Python).
    public func encode(_ text: String, addBOS: Bool = true) -> [Int] {
        var ids: [Int] = addBOS ? [bosID] : []
        ids.reserveCapacity(text.utf8.count / 3 + 2)
        var buffer = Array(text.unicodeScalars)
        var utf8: [UInt8] = []
        for segment in segments(buffer) {
            if let token = segment.token {
                ids.append(token.id)
                continue
            }
            for piece in parts.preTokenizer.split(&buffer, segment.range) {
                utf8.removeAll(keepingCapacity: true)
                for i in piece { appendUTF8(buffer[i], to: &utf8) }
                parts.model.encode(utf8, into: &ids)
            }
        }
        return ids
    }

    /// The pieces BPE sees (after added-token extraction and the pre-tokenizer, before the byte alphabet), as
    /// text; added tokens are pieces of their own. With `splitAddedTokens: false` the added tokens are not looked
    /// for, so their text is pre-tokenized like any other.
    public func preTokenize(_ text: String, splitAddedTokens: Bool = true) -> [String] {
        var buffer = Array(text.unicodeScalars)
        var out: [String] = []
        let segments = splitAddedTokens ? self.segments(buffer) : (buffer.isEmpty ? [] : [(0..<buffer.count, nil)])
        for segment in segments {
            if segment.token != nil {
                out.append(String(String.UnicodeScalarView(buffer[segment.range])))
                continue
            }
            for piece in parts.preTokenizer.split(&buffer, segment.range) {
                out.append(String(String.UnicodeScalarView(buffer[piece])))
            }
        }
        return out
    }

    /// Added tokens (non-normalized first, then normalized ones in what is left) and the text between them.
    private func segments(_ buffer: [Unicode.Scalar]) -> [(range: Range<Int>, token: AddedToken?)] {
        let first = rawMatcher.split(buffer, 0..<buffer.count)
        if normalizedMatcher.isEmpty { return first }
        var out: [(range: Range<Int>, token: AddedToken?)] = []
        for s in first {
            if s.token != nil { out.append(s) } else { out.append(contentsOf: normalizedMatcher.split(buffer, s.range)) }
        }
        return out
    }

    @inline(__always)
    private func appendUTF8(_ s: Unicode.Scalar, to out: inout [UInt8]) {
        let v = s.value
        if v < 0x80 {
            out.append(UInt8(v))
        } else if v < 0x800 {
            out.append(UInt8(0xC0 | (v >> 6)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        } else if v < 0x10000 {
            out.append(UInt8(0xE0 | (v >> 12)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        } else {
            out.append(UInt8(0xF0 | (v >> 18)))
            out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        }
    }

    // MARK: Decoding

    /// Appends the bytes of one id (nothing for unknown ids, or special ones when skipping).
    func appendBytes(of id: Int, skipSpecialTokens: Bool, to bytes: inout [UInt8]) {
        guard id >= 0 && id < idToToken.count else { return }
        if skipSpecialTokens && specialFlags[id] { return }
        let lo = Int(byteOffsets[id]), hi = Int(byteOffsets[id + 1])
        if lo < hi { bytes.append(contentsOf: tokenBytes[lo..<hi]) }
    }

    /// The text of `ids`: special tokens verbatim (or left out when `skipSpecialTokens`), ids outside the
    /// vocabulary ignored, invalid UTF-8 replaced by U+FFFD. No spaces are added or cleaned up.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids { appendBytes(of: id, skipSpecialTokens: skipSpecialTokens, to: &bytes) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Turns a stream of token ids into text without ever splitting a character: a token that ends inside a
/// multi-byte UTF-8 sequence (an emoji's first bytes, say) yields nothing until the bytes that complete it arrive.
/// Concatenating everything `add` and `finish` return gives exactly `decode` of all the ids.
public struct IncrementalDecoder: Sendable {
    /// The tokenizer whose ids are decoded.
    public let tokenizer: Tokenizer
    /// Whether special tokens are left out of the text.
    public let skipSpecialTokens: Bool
    private var pending: [UInt8] = []

    /// A decoder with nothing pending; special tokens are left out unless `skipSpecialTokens` is false.
    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = true) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// The new complete text after adding `id` ("" while a character is still incomplete).
    public mutating func add(_ id: Int) -> String {
        tokenizer.appendBytes(of: id, skipSpecialTokens: skipSpecialTokens, to: &pending)
        let cut = IncrementalDecoder.completePrefixLength(pending)
        guard cut > 0 else { return "" }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Adds several ids at once.
    public mutating func add(_ ids: [Int]) -> String { ids.map { add($0) }.joined() }

    /// Whatever is still held back (an unfinished sequence), as U+FFFD; call it when the stream ends.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// True while bytes are held back waiting for the rest of a character.
    public var hasPendingBytes: Bool { !pending.isEmpty }

    /// The length of `bytes` without a trailing sequence that is a valid but unfinished UTF-8 character.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        // The last lead byte within the last 3 bytes.
        var j = n - 1
        while j >= 0 && j >= n - 3 && bytes[j] & 0xC0 == 0x80 { j -= 1 }
        guard j >= 0 && j >= n - 3 else { return n }
        let lead = bytes[j]
        let need: Int
        var secondRange: ClosedRange<UInt8> = 0x80...0xBF
        switch lead {
        case 0xC2...0xDF: need = 2
        case 0xE0: need = 3; secondRange = 0xA0...0xBF
        case 0xED: need = 3; secondRange = 0x80...0x9F
        case 0xE1...0xEC, 0xEE...0xEF: need = 3
        case 0xF0: need = 4; secondRange = 0x90...0xBF
        case 0xF1...0xF3: need = 4
        case 0xF4: need = 4; secondRange = 0x80...0x8F
        default: return n  // ASCII or a byte that can never start a character
        }
        let have = n - j
        guard have < need else { return n }  // complete (or over-long: invalid either way)
        if have >= 2 && !secondRange.contains(bytes[j + 1]) { return n }  // already invalid: emit as U+FFFD
        return j
    }
}
