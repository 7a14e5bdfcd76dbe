import Foundation
import JanusFlowTokenizer
import XCTest

final class IncrementalDecoderTests: XCTestCase {
    let tokenizer = try! Tokenizer(tokenizerJSON: fixtureTokenizerURL)

    /// The id of the single-byte token for `byte`, found through the independent byte alphabet.
    func byteID(_ byte: UInt8) -> Int { tokenizer.tokenID(for: String(Character(testByteAlphabet[Int(byte)])))! }

    func testEmojiSplitIntoFourByteTokensAppearsOnlyWhenComplete() {
        // 😀 is F0 9F 98 80; feeding its four byte tokens one at a time.
        var decoder = IncrementalDecoder(tokenizer: tokenizer)
        var outputs: [String] = []
        for b: UInt8 in [0x48, 0x69, 0x20, 0xF0, 0x9F, 0x98, 0x80, 0x21] {
            outputs.append(decoder.add(byteID(b)))
            if b == 0x9F { XCTAssertTrue(decoder.hasPendingBytes) }
        }
        XCTAssertEqual(outputs, ["H", "i", " ", "", "", "", "😀", "!"])
        XCTAssertFalse(decoder.hasPendingBytes)
        XCTAssertEqual(decoder.finish(), "")
    }

    /// The fixture's emoji cases, whose ids split emoji across tokens, stream to exactly the decoded text.
    func testFixtureEmojiCasesStreamWithoutBrokenCharacters() {
        let cases = (loadFixtureJSON("cases.json")["cases"] as! [[String: Any]]).filter { $0["category"] as! String == "emoji" }
        XCTAssertFalse(cases.isEmpty)
        var heldBack = 0
        for c in cases {
            var decoder = IncrementalDecoder(tokenizer: tokenizer)
            var pieces: [String] = []
            for id in c["ids"] as! [Int] {
                let piece = decoder.add(id)
                if piece.isEmpty && decoder.hasPendingBytes { heldBack += 1 }
                pieces.append(piece)
            }
            pieces.append(decoder.finish())
            XCTAssertEqual(pieces.joined(), c["decoded_skip_special"] as! String, "case \(c["index"]!)")
            XCTAssertFalse(pieces.contains { $0.unicodeScalars.contains("\u{FFFD}") }, "case \(c["index"]!)")
        }
        // The cases do split characters across tokens, so the decoder had to wait.
        XCTAssertGreaterThan(heldBack, 0)
    }

    func testSpecialTokensAreSkippedByDefault() {
        let ids = tokenizer.encode("Hi<｜end▁of▁sentence｜>")
        var skipping = IncrementalDecoder(tokenizer: tokenizer)
        XCTAssertEqual(ids.map { skipping.add($0) }.joined(), "Hi")
        var keeping = IncrementalDecoder(tokenizer: tokenizer, skipSpecialTokens: false)
        XCTAssertEqual(keeping.add(ids), "<｜begin▁of▁sentence｜>Hi<｜end▁of▁sentence｜>")
    }

    func testFinishFlushesAnUnfinishedCharacter() {
        var decoder = IncrementalDecoder(tokenizer: tokenizer)
        XCTAssertEqual(decoder.add(byteID(0x61)), "a")
        XCTAssertEqual(decoder.add(byteID(0xE2)), "")
        XCTAssertEqual(decoder.add(byteID(0x82)), "")
        XCTAssertEqual(decoder.finish(), "\u{FFFD}")
        XCTAssertFalse(decoder.hasPendingBytes)
        XCTAssertEqual(decoder.add(byteID(0x62)), "b")
    }

    func testInvalidBytesAreNotHeldBack() {
        var decoder = IncrementalDecoder(tokenizer: tokenizer)
        // A lone continuation byte and a lead byte followed by a byte that cannot continue it.
        XCTAssertEqual(decoder.add(byteID(0x80)), "\u{FFFD}")
        XCTAssertEqual(decoder.add(byteID(0xE0)), "")
        XCTAssertEqual(decoder.add(byteID(0x41)), "\u{FFFD}A")
        // ED A0 can never be completed (it would be a surrogate): emitted at once.
        XCTAssertEqual(decoder.add(byteID(0xED)), "")
        XCTAssertEqual(decoder.add(byteID(0xA0)), "\u{FFFD}\u{FFFD}")
    }

    func testLongStreamMatchesDecode() {
        let text = String(repeating: "Grüße, 世界! 👩‍💻 ½ ", count: 200)
        let ids = tokenizer.encode(text, addBOS: false)
        var decoder = IncrementalDecoder(tokenizer: tokenizer)
        XCTAssertEqual(ids.map { decoder.add($0) }.joined() + decoder.finish(), text)
    }
}
