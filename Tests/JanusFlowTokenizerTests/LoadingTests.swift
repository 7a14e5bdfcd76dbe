import Foundation
import JanusFlowTokenizer
import XCTest

final class LoadingTests: XCTestCase {
    func testDirectoryTakesBOSAndEOSFromTheConfig() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: fixtureTokenizerURL, to: dir.appendingPathComponent("tokenizer.json"))
        // Without configs: the post-processor template's BOS and DeepSeek's EOS.
        let plain = try Tokenizer(directory: dir)
        XCTAssertEqual([plain.bosID, plain.eosID, plain.padID], [1017, 1018, 1019])
        // special_tokens_map.json naming other tokens (strings).
        try #"{"bos_token": "<begin_of_image>", "eos_token": "<end_of_image>"}"#
            .write(to: dir.appendingPathComponent("special_tokens_map.json"), atomically: true, encoding: .utf8)
        let mapped = try Tokenizer(directory: dir)
        XCTAssertEqual([mapped.bosID, mapped.eosID], [1021, 1022])
        XCTAssertEqual(mapped.encode("a").first, 1021)
        // tokenizer_config.json wins over special_tokens_map.json (objects with "content").
        try #"{"bos_token": {"content": "<｜end▁of▁sentence｜>", "special": true}, "eos_token": null}"#
            .write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        let configured = try Tokenizer(directory: dir)
        XCTAssertEqual([configured.bosID, configured.eosID], [1018, 1018])
    }

    func testExplicitTokenNamesAndInMemoryJSON() throws {
        let data = try Data(contentsOf: fixtureTokenizerURL)
        let t = try Tokenizer(json: data, name: "in-memory", bosToken: "<｜begin▁of▁generation｜>", eosToken: "<｜▁pad▁｜>")
        XCTAssertEqual([t.bosID, t.eosID, t.padID], [1023, 1019, 1019])
        XCTAssertEqual(t.source, "in-memory")
        XCTAssertEqual(t.encode("", addBOS: true), [1023])
        XCTAssertEqual(t.encode("", addBOS: false), [])
    }

    /// Long inputs against Python `tokenizers` (extra_cases.json): a 70 KB piece with no break, long runs of
    /// whitespace (regex backtracking), a long CJK run, prose.
    func testLongInputsMatchTheReference() throws {
        let tokenizer = try Tokenizer(tokenizerJSON: fixtureTokenizerURL)
        let cases = loadFixtureJSON("extra_cases.json")["long_cases"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 5)
        for c in cases {
            let text = String(repeating: c["pattern"] as! String, count: c["repeat"] as! Int) + (c["suffix"] as! String)
            let ids = tokenizer.encode(text, addBOS: false)
            let label = "\((c["pattern"] as! String).debugDescription) x \(c["repeat"]!)"
            XCTAssertEqual(ids.count, c["count"] as! Int, label)
            XCTAssertEqual(Array(ids.prefix(40)), c["first"] as! [Int], label)
            XCTAssertEqual(Array(ids.suffix(40)), c["last"] as! [Int], label)
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for b in ids.map(String.init).joined(separator: ",").utf8 { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
            XCTAssertEqual(String(hash), c["fnv1a64"] as! String, label)
            XCTAssertEqual(tokenizer.decode(ids), text, label)
        }
    }

    func testConcurrentEncodingGivesTheSameIDs() throws {
        let tokenizer = try Tokenizer(tokenizerJSON: fixtureTokenizerURL)
        let cases = (loadFixtureJSON("cases.json")["cases"] as! [[String: Any]])
        let texts = cases.map { $0["text"] as! String }
        let expected = cases.map { $0["ids"] as! [Int] }
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var ids: [Int: [Int]] = [:]
        }
        let results = Results()
        DispatchQueue.concurrentPerform(iterations: texts.count * 4) { i in
            let ids = tokenizer.encode(texts[i % texts.count])
            results.lock.lock()
            results.ids[i] = ids
            results.lock.unlock()
        }
        for i in 0..<(texts.count * 4) { XCTAssertEqual(results.ids[i], expected[i % texts.count], "text \(i % texts.count)") }
    }

    func testByteLevelAlphabet() {
        XCTAssertEqual(ByteLevel.byteToScalar.map(\.value), testByteAlphabet.map(\.value))
        XCTAssertEqual(ByteLevel.encode("a b\n"), "aĠbĊ")
        XCTAssertEqual(ByteLevel.bytes(ofToken: "ĠĊ"), [0x20, 0x0A])
        // A token with a scalar outside the alphabet stands for its own UTF-8 bytes.
        XCTAssertEqual(ByteLevel.bytes(ofToken: "Ġ｜"), Array("Ġ｜".utf8))
    }

    /// The BPE trainer's output loads, round-trips, and learns the corpus's most frequent word.
    func testTrainedTokenizer() throws {
        let texts = Array(repeating: "the red circle and the blue square", count: 50) + ["<image_placeholder> hello 42"]
        let data = try BPETrainer.train(texts: texts, merges: 40)
        let tokenizer = try Tokenizer(json: data, name: "trained.json")
        XCTAssertLessThanOrEqual(tokenizer.vocabularySize, 256 + 40 + BPETrainer.specialTokens.count)
        for text in texts + ["unseen words, 123 and ünïcödé 😀"] {
            XCTAssertEqual(tokenizer.decode(tokenizer.encode(text, addBOS: false)), text)
        }
        XCTAssertEqual(tokenizer.encode(" circle", addBOS: false).count, 1)
        XCTAssertEqual(tokenizer.encode("<image_placeholder>", addBOS: false), [tokenizer.tokenID(for: "<image_placeholder>")!])
    }
}
