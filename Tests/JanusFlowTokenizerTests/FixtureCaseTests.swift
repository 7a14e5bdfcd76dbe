import Foundation
import JanusFlowTokenizer
import XCTest

/// The 200 encode/decode cases of cases.json (made by Python `tokenizers` and `LlamaTokenizerFast`).
final class FixtureCaseTests: XCTestCase {
    static let tokenizer = try! Tokenizer(directory: fixtureDirectory)
    nonisolated(unsafe) static let document = loadFixtureJSON("cases.json")
    static var cases: [[String: Any]] { document["cases"] as! [[String: Any]] }

    /// Runs `check` on every case and fails once, listing each failing case by index and category.
    func forEachCase(_ what: String, _ check: (_ c: [String: Any], _ text: String) -> String?) {
        XCTAssertEqual(Self.cases.count, 200)
        var failures: [String] = []
        for c in Self.cases {
            let text = c["text"] as! String
            if let problem = check(c, text) {
                failures.append("case \(c["index"]!) (\(c["category"]!)) \(what): \(problem); text \(text.debugDescription.prefix(80))")
            }
        }
        XCTAssertTrue(failures.isEmpty, "\(failures.count) of 200 cases fail:\n" + failures.joined(separator: "\n"))
    }

    func testIDsWithBOS() {
        forEachCase("ids") { c, text in
            let expected = c["ids"] as! [Int]
            let got = Self.tokenizer.encode(text)
            return got == expected ? nil : firstDifference(got, expected)
        }
    }

    func testIDsWithoutSpecialTokens() {
        forEachCase("ids_no_special") { c, text in
            let expected = c["ids_no_special"] as! [Int]
            let got = Self.tokenizer.encode(text, addBOS: false)
            return got == expected ? nil : firstDifference(got, expected)
        }
    }

    func testTokenStrings() {
        forEachCase("tokens_no_special") { c, _ in
            let got = (c["ids_no_special"] as! [Int]).map { Self.tokenizer.token(for: $0) ?? "<nil>" }
            let expected = c["tokens_no_special"] as! [String]
            // Compare scalars, not canonical equivalence.
            return got.map { Array($0.unicodeScalars) } == expected.map { Array($0.unicodeScalars) } ? nil : "\(got) != \(expected)"
        }
    }

    func testDecode() {
        forEachCase("decoded") { c, _ in
            let got = Self.tokenizer.decode(c["ids"] as! [Int])
            let expected = c["decoded"] as! String
            return got.unicodeScalars.elementsEqual(expected.unicodeScalars) ? nil : "\(got.debugDescription) != \(expected.debugDescription)"
        }
    }

    func testDecodeSkippingSpecialTokens() {
        forEachCase("decoded_skip_special") { c, _ in
            let got = Self.tokenizer.decode(c["ids"] as! [Int], skipSpecialTokens: true)
            let expected = c["decoded_skip_special"] as! String
            return got.unicodeScalars.elementsEqual(expected.unicodeScalars) ? nil : "\(got.debugDescription) != \(expected.debugDescription)"
        }
    }

    func testDecodeWithoutBOSGivesTheTextBack() {
        forEachCase("decoded_no_special / roundtrip") { c, text in
            let got = Self.tokenizer.decode(c["ids_no_special"] as! [Int])
            let expected = c["decoded_no_special"] as! String
            guard got.unicodeScalars.elementsEqual(expected.unicodeScalars) else { return "\(got.debugDescription) != \(expected.debugDescription)" }
            if c["roundtrip"] as! Bool, !got.unicodeScalars.elementsEqual(text.unicodeScalars) { return "does not give the text back" }
            return nil
        }
    }

    /// The pieces after added-token extraction and the pre-tokenizer (byte alphabet; special tokens verbatim).
    func testPreTokens() {
        let specials = Set((Self.document["special_token_ids"] as! [String: Int]).keys)
        forEachCase("pre_tokens") { c, text in
            let got = Self.tokenizer.preTokenize(text).map { specials.contains($0) ? $0 : byteLevel($0) }
            let expected = c["pre_tokens"] as! [String]
            return got.map { Array($0.unicodeScalars) } == expected.map { Array($0.unicodeScalars) } ? nil : "\(got) != \(expected)"
        }
    }

    func testSpecialTokenIDs() {
        let t = Self.tokenizer
        XCTAssertEqual(t.bosID, Self.document["bos_id"] as! Int)
        XCTAssertEqual(t.eosID, Self.document["eos_id"] as! Int)
        XCTAssertEqual(t.padID, Self.document["pad_id"] as! Int)
        XCTAssertEqual(t.vocabularySize, Self.document["vocab_size"] as! Int)
        for (token, id) in Self.document["special_token_ids"] as! [String: Int] {
            XCTAssertEqual(t.tokenID(for: token), id, token)
            XCTAssertEqual(t.token(for: id), token)
            XCTAssertTrue(t.isSpecial(id), token)
        }
        XCTAssertFalse(t.isSpecial(0))
        XCTAssertEqual(t.tokenID(for: "Ġ"), 220)
        XCTAssertNil(t.tokenID(for: "no such token"))
        XCTAssertNil(t.token(for: -1))
        XCTAssertNil(t.token(for: 1024))
        XCTAssertEqual(t.addedTokens.map(\.id), Array(1017...1023))
    }
}
