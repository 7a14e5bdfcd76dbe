import Foundation
import JanusFlowTokenizer
import XCTest

/// Features beyond the DeepSeek pipeline that cases.json cannot reach, against Python `tokenizers` 0.20.3
/// (extra_cases.json; see Fixtures/PROVENANCE.md): other pre-tokenizers and regular expressions, split
/// behaviours, added-token options, ignore_merges, added ids, invalid UTF-8.
final class ReferenceVariantTests: XCTestCase {
    nonisolated(unsafe) static let document = loadFixtureJSON("extra_cases.json")

    func variantTokenizer(_ variant: [String: Any]) throws -> Tokenizer {
        try JanusFlowTokenizerTests.variantTokenizer(name: variant["name"] as! String) { object in
            object["pre_tokenizer"] = variant["pre_tokenizer"]
            object["added_tokens"] = variant["added_tokens"]
            var model = object["model"] as! [String: Any]
            for (k, v) in variant["model_overrides"] as! [String: Any] { model[k] = v }
            object["model"] = model
        }
    }

    func testEveryVariantMatchesTheReference() throws {
        let variants = Self.document["variants"] as! [[String: Any]]
        XCTAssertEqual(variants.count, 30)
        var failures: [String] = []
        var checked = 0
        for variant in variants {
            let name = variant["name"] as! String
            let tokenizer: Tokenizer
            do {
                tokenizer = try variantTokenizer(variant)
            } catch {
                failures.append("\(name): does not load: \(error)")
                continue
            }
            for c in variant["cases"] as! [[String: Any]] {
                checked += 1
                let text = c["text"] as! String
                let label = "\(name) \(text.debugDescription)"
                let ids = tokenizer.encode(text, addBOS: false)
                if ids != c["ids"] as! [Int] { failures.append("\(label): ids \(firstDifference(ids, c["ids"] as! [Int]))") }
                let pieces = tokenizer.preTokenize(text, splitAddedTokens: false).map(byteLevel)
                if pieces != c["pieces"] as! [String] { failures.append("\(label): pieces \(pieces) != \(c["pieces"]!)") }
                let expectedIDs = c["ids"] as! [Int]
                if tokenizer.decode(expectedIDs) != c["decoded"] as! String { failures.append("\(label): decoded") }
                if tokenizer.decode(expectedIDs, skipSpecialTokens: true) != c["decoded_skip_special"] as! String {
                    failures.append("\(label): decoded_skip_special")
                }
            }
        }
        XCTAssertGreaterThan(checked, 500)
        XCTAssertTrue(failures.isEmpty, "\(failures.count) failures:\n" + failures.joined(separator: "\n"))
    }

    func testAddedSpecialTokensGetTheLibrarysIDs() throws {
        let tokenizer = try Tokenizer(tokenizerJSON: fixtureTokenizerURL)
        let extended = tokenizer.addingSpecialTokens(["<new_a>", "<image_placeholder>", "<new_b>"])
        for (token, id) in Self.document["added_special_token_ids"] as! [String: Int] {
            XCTAssertEqual(extended.tokenID(for: token), id, token)
            XCTAssertTrue(extended.isSpecial(id))
        }
        XCTAssertEqual(extended.vocabularySize, 1026)
        XCTAssertEqual(extended.encode("a<new_b>", addBOS: false).last, 1025)
        XCTAssertEqual(extended.decode([1024, 1025], skipSpecialTokens: false), "<new_a><new_b>")
        // The original is unchanged.
        XCTAssertNil(tokenizer.tokenID(for: "<new_a>"))
        XCTAssertEqual(tokenizer.vocabularySize, 1024)
    }

    func testDecodingInvalidUTF8() throws {
        let tokenizer = try Tokenizer(tokenizerJSON: fixtureTokenizerURL)
        let cases = Self.document["decode_cases"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 24)
        for c in cases {
            let ids = c["ids"] as! [Int]
            XCTAssertEqual(tokenizer.decode(ids), c["decoded"] as! String, "\(c["bytes"]!)")
            XCTAssertEqual(tokenizer.decode(ids, skipSpecialTokens: true), c["decoded_skip_special"] as! String, "\(c["bytes"]!)")
            // Streaming gives the same text, whatever the split.
            var decoder = IncrementalDecoder(tokenizer: tokenizer, skipSpecialTokens: false)
            let streamed = ids.map { decoder.add($0) }.joined() + decoder.finish()
            XCTAssertEqual(streamed, c["decoded"] as! String, "streamed \(c["bytes"]!)")
        }
    }

    /// Merges written as "a b" strings (the older tokenizer.json format) give the same ids as [a, b] pairs.
    func testMergesAsStrings() throws {
        let tokenizer = try JanusFlowTokenizerTests.variantTokenizer { object in
            var model = object["model"] as! [String: Any]
            let pairs = model["merges"] as! [[String]]
            XCTAssertFalse(pairs.isEmpty)
            model["merges"] = pairs.map { $0.joined(separator: " ") }
            object["model"] = model
        }
        let cases = loadFixtureJSON("cases.json")["cases"] as! [[String: Any]]
        for c in cases {
            XCTAssertEqual(tokenizer.encode(c["text"] as! String), c["ids"] as! [Int], "case \(c["index"]!)")
        }
    }

    /// Added tokens are found by exact scalars: U+2126 OHM SIGN is not U+03A9 GREEK CAPITAL LETTER OMEGA, although
    /// Swift strings compare them equal.
    func testAddedTokensMatchExactScalars() throws {
        let tokenizer = try JanusFlowTokenizerTests.variantTokenizer { object in
            var added = object["added_tokens"] as! [[String: Any]]
            added.append(["id": 1024, "content": "\u{2126}", "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": true])
            object["added_tokens"] = added
        }
        XCTAssertEqual(tokenizer.tokenID(for: "\u{2126}"), 1024)
        XCTAssertNil(tokenizer.tokenID(for: "\u{03A9}"))
        XCTAssertEqual(tokenizer.encode("\u{2126}", addBOS: false), [1024])
        XCTAssertFalse(tokenizer.encode("\u{03A9}", addBOS: false).contains(1024))
        XCTAssertEqual(tokenizer.decode(tokenizer.encode("\u{03A9}", addBOS: false)).unicodeScalars.map(\.value), [0x03A9])
    }
}
