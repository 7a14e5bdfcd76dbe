import Foundation
import JanusFlowTokenizer
import XCTest

/// Loading errors name the file and the field, with exact messages.
final class ErrorTests: XCTestCase {
    var dir: URL!
    var file: URL { dir.appendingPathComponent("tokenizer.json") }

    override func setUpWithError() throws { dir = try temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func write(_ text: String, to url: URL? = nil) throws { try text.write(to: url ?? file, atomically: true, encoding: .utf8) }

    /// Writes the fixture's tokenizer.json with a change and loads it.
    func loadModified(_ modify: (inout [String: Any]) -> Void) throws -> Tokenizer {
        var object = fixtureTokenizerObject()
        modify(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: file)
        return try Tokenizer(tokenizerJSON: file)
    }

    func testMissingFile() {
        let missing = URL(fileURLWithPath: "/nonexistent/models/tokenizer.json")
        assertTokenizerError(try Tokenizer(tokenizerJSON: missing), .fileNotFound, "/nonexistent/models/tokenizer.json: file not found")
        assertTokenizerError(try Tokenizer(directory: dir), .fileNotFound, "\(file.path): file not found")
        // A directory where the file should be.
        try! FileManager.default.createDirectory(at: file, withIntermediateDirectories: true)
        assertTokenizerError(try Tokenizer(tokenizerJSON: file), .fileNotFound, "\(file.path): file not found")
    }

    func testBrokenJSON() throws {
        try write("{ not json")
        assertTokenizerError(try Tokenizer(tokenizerJSON: file), .invalidJSON,
                             "\(file.path): invalid JSON at line 1, column 3: unexpected 'n' (expected a member name in quotes)")
        try write("{\n  \"model\": {\n")
        assertTokenizerError(try Tokenizer(tokenizerJSON: file), .invalidJSON,
                             "\(file.path): invalid JSON at line 3, column 1: unexpected end of file (expected a member name in quotes)")
        try write("{\"a\": [1, 2,]}")
        assertTokenizerError(try Tokenizer(tokenizerJSON: file), .invalidJSON,
                             "\(file.path): invalid JSON at line 1, column 13: unexpected ']' (expected a value)")
        try write("{\"a\": \"tab\there\"}")
        assertTokenizerError(try Tokenizer(tokenizerJSON: file), .invalidJSON,
                             "\(file.path): invalid JSON at line 1, column 11: control character 0x9 inside a string")
        try write("[]")
        assertTokenizerError(try Tokenizer(tokenizerJSON: file), .invalidJSON, "\(file.path): the top-level value is an array, not an object")
        assertTokenizerError(try Tokenizer(json: Data("{} x".utf8), name: "memory.json"), .invalidJSON,
                             "memory.json: invalid JSON at line 1, column 4: unexpected text after the top-level value")
    }

    func testUnsupportedModel() throws {
        try write(#"{"model": {"type": "WordPiece", "vocab": {}}}"#)
        assertTokenizerError(try Tokenizer(tokenizerJSON: file), .unsupported,
                             "\(file.path): field 'model.type': unsupported model type 'WordPiece' (only BPE)")
        try write(#"{"version": "1.0"}"#)
        assertTokenizerError(try Tokenizer(tokenizerJSON: file), .invalidField, "\(file.path): field 'model': missing or not an object")
        assertTokenizerError(try loadModified { o in
            var m = o["model"] as! [String: Any]
            m["continuing_subword_prefix"] = "##"
            o["model"] = m
        }, .unsupported, "\(file.path): field 'model.continuing_subword_prefix': '##' is not supported")
    }

    func testUnsupportedPreTokenizer() throws {
        assertTokenizerError(try loadModified { o in
            o["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [["type": "Metaspace", "replacement": "▁"], ["type": "ByteLevel"]]]
        }, .unsupported,
        "\(file.path): field 'pre_tokenizer.pretokenizers.0.type': unsupported pre-tokenizer 'Metaspace' (supported: Sequence, Split, Digits, ByteLevel)")
        assertTokenizerError(try loadModified { o in
            o["pre_tokenizer"] = ["type": "Split", "pattern": ["Regex": "\\s+"], "behavior": "Isolated", "invert": false]
        }, .unsupported, "\(file.path): field 'pre_tokenizer': no ByteLevel step; only byte-level BPE is supported")
        assertTokenizerError(try loadModified { o in o["pre_tokenizer"] = NSNull() }, .unsupported,
                             "\(file.path): field 'pre_tokenizer': missing; a ByteLevel pre-tokenizer is required (only byte-level BPE is supported)")
    }

    func testUnsupportedOrInvalidRegex() throws {
        func load(_ regex: String) throws -> Tokenizer {
            try loadModified { o in
                o["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
                    ["type": "Split", "pattern": ["Regex": "[\r\n]"], "behavior": "Isolated", "invert": false],
                    ["type": "Split", "pattern": ["Regex": regex], "behavior": "Isolated", "invert": false],
                    ["type": "ByteLevel", "add_prefix_space": false, "use_regex": false]]]
            }
        }
        let field = "\(file.path): field 'pre_tokenizer.pretokenizers.1.pattern.Regex'"
        assertTokenizerError(try load("(?<=a)b"), .unsupported, "\(field): lookbehind is not supported at character 2 of the pattern")
        assertTokenizerError(try load("[b-a]"), .unsupported, "\(field): empty range U+62-U+61 in character class at character 2 of the pattern")
        assertTokenizerError(try load("(a|b"), .unsupported, "\(field): missing ')' at character 5 of the pattern")
        assertTokenizerError(try load("a)"), .unsupported, "\(field): unmatched ')' at character 2 of the pattern")
        assertTokenizerError(try load("(a)\\1"), .unsupported, "\(field): backreferences and subexpression calls are not supported at character 4 of the pattern")
        assertTokenizerError(try load("\\p{Greek}"), .unsupported, "\(field): unsupported property 'Greek' at character 1 of the pattern")
        assertTokenizerError(try load("+a"), .unsupported, "\(field): quantifier '+' with nothing to repeat at character 1 of the pattern")
        assertTokenizerError(try load("(?i)a"), .unsupported, "\(field): inline options and other (? groups are not supported at character 2 of the pattern")
        assertTokenizerError(try load("[abc"), .unsupported, "\(field): unterminated character class at character 1 of the pattern")
    }

    func testInvalidVocabularyAndMerges() throws {
        assertTokenizerError(try loadModified { o in
            var m = o["model"] as! [String: Any]
            var merges = m["merges"] as! [[String]]
            merges.insert(["Ġ", "zzz"], at: 0)
            m["merges"] = merges
            o["model"] = m
        }, .invalidField, "\(file.path): field 'model.merges': entry 0: 'zzz' is not in the vocabulary")
        assertTokenizerError(try loadModified { o in
            var m = o["model"] as! [String: Any]
            m["merges"] = ["a b c"]
            o["model"] = m
        }, .invalidField, "\(file.path): field 'model.merges': entry 0 ('a b c') is not two tokens separated by one space")
        assertTokenizerError(try loadModified { o in
            var m = o["model"] as! [String: Any]
            var vocab = m["vocab"] as! [String: Any]
            vocab["Ġ"] = nil
            m["vocab"] = vocab
            o["model"] = m
        }, .invalidField,
        "\(file.path): field 'model.vocab': the byte-level symbol 'Ġ' (byte 0x20) is missing; only byte-level BPE with all 256 byte symbols is supported")
        assertTokenizerError(try loadModified { o in
            var m = o["model"] as! [String: Any]
            var vocab = m["vocab"] as! [String: Any]
            vocab["!"] = "one"
            m["vocab"] = vocab
            o["model"] = m
        }, .invalidField, "\(file.path): field 'model.vocab': id of '!' is a string")
        assertTokenizerError(try loadModified { o in
            o["added_tokens"] = [["id": 5, "special": true]]
        }, .invalidField, "\(file.path): field 'added_tokens.0.content': missing or not a string")
    }

    func testUnsupportedNormalizerAndDecoder() throws {
        assertTokenizerError(try loadModified { o in o["normalizer"] = ["type": "NFKC"] }, .unsupported,
                             "\(file.path): field 'normalizer': unsupported normalizer 'NFKC' (only none or an empty Sequence)")
        assertTokenizerError(try loadModified { o in o["decoder"] = ["type": "WordPiece", "prefix": "##"] }, .unsupported,
                             "\(file.path): field 'decoder.type': unsupported decoder 'WordPiece' (only ByteLevel)")
    }

    func testMissingBOS() throws {
        assertTokenizerError(try loadModified { o in
            o["added_tokens"] = []
            o["post_processor"] = NSNull()
        }, .missingToken,
        "\(file.path): no BOS token (looked for '<｜begin▁of▁sentence｜>', '<s>', '<|begin_of_text|>', '<|endoftext|>')")
    }

    func testBrokenConfigInDirectory() throws {
        try FileManager.default.copyItem(at: fixtureTokenizerURL, to: file)
        let config = dir.appendingPathComponent("tokenizer_config.json")
        try write("{\"bos_token\": ", to: config)
        assertTokenizerError(try Tokenizer(directory: dir), .invalidJSON,
                             "\(config.path): invalid JSON at line 1, column 15: unexpected end of file (expected a value)")
        try write("{\"bos_token\": 7}", to: config)
        assertTokenizerError(try Tokenizer(directory: dir), .invalidField,
                             "\(config.path): field 'bos_token': expected a string or an object with 'content', found a number")
        try write("{\"bos_token\": {\"content\": \"<missing>\"}}", to: config)
        assertTokenizerError(try Tokenizer(directory: dir), .missingToken, "\(file.path): no BOS token (looked for '<missing>')")
    }
}
