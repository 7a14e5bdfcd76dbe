import Foundation

/// Trains a small byte-level BPE vocabulary and writes it as a Hugging Face `tokenizer.json` with the
/// DeepSeek-style pipeline (newline, letter, punctuation and trailing-space splits, single digits, byte level)
/// and JanusFlow's special tokens, so that `Tokenizer` (and the `tokenizers` library) can load it.
public enum BPETrainer {
    /// The special tokens every trained tokenizer gets, with ids after the learned vocabulary: DeepSeek's BOS,
    /// EOS and pad, then the image and generation tags.
    public static let specialTokens = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", ChatTemplate.imageTag,
                                       ChatTemplate.beginOfImage, ChatTemplate.endOfImage, ChatTemplate.beginOfGeneration]

    nonisolated(unsafe) static let preTokenizer: [String: Any] = [
        "type": "Sequence",
        "pretokenizers": [
            ["type": "Split", "pattern": ["Regex": "[\r\n]"], "behavior": "Isolated", "invert": false],
            ["type": "Split", "pattern": ["Regex": "\\s?[A-Za-z]+"], "behavior": "Isolated", "invert": false],
            ["type": "Split", "pattern": ["Regex": "\\s?[!-/:-~]+"], "behavior": "Isolated", "invert": false],
            ["type": "Split", "pattern": ["Regex": "\\s+$"], "behavior": "Isolated", "invert": false],
            ["type": "Digits", "individual_digits": true],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
        ] as [Any],
    ]

    /// The GPT-2 byte alphabet.
    static func byteAlphabet() -> [String] {
        var out = [String](repeating: "", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            out[b] = String(Character(Unicode.Scalar(printable ? UInt32(b) : next)!))
            if !printable { next += 1 }
        }
        return out
    }

    /// Learns up to `merges` merges from `texts` (most frequent adjacent pair first, ties broken by the pair's
    /// text so the result is deterministic) and returns the tokenizer.json contents.
    public static func train(texts: [String], merges maxMerges: Int) throws -> Data {
        let alphabet = byteAlphabet()
        // Pre-tokenize with the same pipeline the file declares, through a tokenizer with no merges.
        let bootstrap = try Tokenizer(json: tokenizerJSON(vocab: Dictionary(uniqueKeysWithValues: alphabet.enumerated().map { ($1, $0) }), merges: []),
                                      name: "bootstrap")
        var wordCounts: [[String]: Int] = [:]
        for text in texts {
            for piece in bootstrap.preTokenize(text, splitAddedTokens: false) {
                let symbols = Array(piece.utf8).map { alphabet[Int($0)] }
                wordCounts[symbols, default: 0] += 1
            }
        }
        var words = wordCounts.map { (symbols: $0.key, count: $0.value) }.sorted { $0.symbols.joined() < $1.symbols.joined() }
        var vocab = Dictionary(uniqueKeysWithValues: alphabet.enumerated().map { ($1, $0) })
        var merges: [[String]] = []
        while merges.count < maxMerges {
            var pairs: [String: (a: String, b: String, count: Int)] = [:]
            for w in words where w.symbols.count > 1 {
                for i in 0..<(w.symbols.count - 1) {
                    let key = w.symbols[i] + "\u{0}" + w.symbols[i + 1]
                    pairs[key, default: (w.symbols[i], w.symbols[i + 1], 0)].count += w.count
                }
            }
            guard let best = pairs.max(by: { $0.value.count != $1.value.count ? $0.value.count < $1.value.count : $0.key > $1.key }),
                  best.value.count >= 2
            else { break }
            let (a, b) = (best.value.a, best.value.b)
            merges.append([a, b])
            if vocab[a + b] == nil { vocab[a + b] = vocab.count }
            for i in words.indices where words[i].symbols.count > 1 {
                var s = words[i].symbols, out: [String] = [], j = 0
                while j < s.count {
                    if j + 1 < s.count && s[j] == a && s[j + 1] == b { out.append(a + b); j += 2 } else { out.append(s[j]); j += 1 }
                }
                s = out
                words[i].symbols = s
            }
        }
        return try tokenizerJSON(vocab: vocab, merges: merges)
    }

    static func tokenizerJSON(vocab: [String: Int], merges: [[String]]) throws -> Data {
        let base = vocab.count
        let added = specialTokens.enumerated().map { i, t -> [String: Any] in
            ["id": base + i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true]
        }
        let root: [String: Any] = [
            "version": "1.0",
            "truncation": NSNull(), "padding": NSNull(),
            "added_tokens": added,
            "normalizer": ["type": "Sequence", "normalizers": [Any]()],
            "pre_tokenizer": preTokenizer,
            "post_processor": NSNull(),
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges] as [String: Any],
        ]
        return try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
    }
}
