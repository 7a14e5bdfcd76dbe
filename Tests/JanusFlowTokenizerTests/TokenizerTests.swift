import Foundation
import JanusFlowTokenizer
import XCTest

let fixtureDir = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

/// GPT-2's byte alphabet, written out independently of the tokenizer under test.
func byteLevel(_ text: String) -> String {
    var map: [UInt8: Unicode.Scalar] = [:]
    var n: UInt32 = 256
    for b in 0...255 {
        if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) { map[UInt8(b)] = Unicode.Scalar(UInt32(b)) }
        else { map[UInt8(b)] = Unicode.Scalar(n); n += 1 }
    }
    return String(String.UnicodeScalarView(text.utf8.map { map[$0]! }))
}

final class TokenizerTests: XCTestCase {
    static let tokenizer = try! Tokenizer(directory: fixtureDir)
    nonisolated(unsafe) static let cases: [[String: Any]] = {
        // Foundation's JSON parser drops a raw U+FEFF inside strings; escape it first so case 123 keeps its BOM.
        let raw = try! Data(contentsOf: fixtureDir.appendingPathComponent("cases.json"))
        let escaped = String(decoding: raw, as: UTF8.self).replacingOccurrences(of: "\u{FEFF}", with: "\\ufeff")
        let json = try! JSONSerialization.jsonObject(with: Data(escaped.utf8)) as! [String: Any]
        return json["cases"] as! [[String: Any]]
    }()

    func testAllFixtureCases() {
        let t = Self.tokenizer
        XCTAssertEqual(Self.cases.count, 200)
        var failures: [String] = []
        for c in Self.cases {
            let text = c["text"] as! String
            let label = "case \(c["index"]!) (\(c["category"]!))"
            if t.encode(text) != c["ids"] as! [Int] { failures.append("\(label): ids") }
            if t.encode(text, addBOS: false) != c["ids_no_special"] as! [Int] { failures.append("\(label): ids_no_special") }
            if t.decode(c["ids"] as! [Int]) != c["decoded"] as! String { failures.append("\(label): decoded") }
            if t.decode(c["ids"] as! [Int], skipSpecialTokens: true) != c["decoded_skip_special"] as! String { failures.append("\(label): decoded_skip_special") }
            if t.decode(c["ids_no_special"] as! [Int]) != c["decoded_no_special"] as! String { failures.append("\(label): decoded_no_special") }
        }
        XCTAssertEqual(failures, [], "\(failures.count) failures")
    }

    /// The regex/digit stage alone, on texts without special tokens.
    func testPreTokenizerPieces() {
        let specials = ["<｜", "<image_placeholder>", "<begin_of_image>", "<end_of_image>"]
        var checked = 0
        for c in Self.cases {
            let text = c["text"] as! String
            if specials.contains(where: text.contains) { continue }
            checked += 1
            XCTAssertEqual(Self.tokenizer.preTokenize(text).map(byteLevel), c["pre_tokens"] as! [String], "case \(c["index"]!)")
        }
        XCTAssertGreaterThan(checked, 150)
    }

    func testSpecialIDs() {
        let t = Self.tokenizer
        XCTAssertEqual([t.bosID, t.eosID, t.padID], [1017, 1018, 1019])
        XCTAssertEqual(t.tokenID(for: "<image_placeholder>"), 1020)
        XCTAssertEqual(t.vocabularySize, 1024)
    }

    func testIncrementalDecoderWaitsForWholeCharacters() {
        let t = Self.tokenizer
        let text = "ok 👩‍💻 done"
        let ids = t.encode(text, addBOS: false)
        var decoder = IncrementalDecoder(tokenizer: t)
        var pieces: [String] = []
        for id in ids { pieces.append(decoder.add(id)) }
        XCTAssertEqual(pieces.joined(), text)
        XCTAssertFalse(pieces.contains { $0.unicodeScalars.contains("\u{FFFD}") })
    }

    func testErrorsNameTheFile() throws {
        let missing = URL(fileURLWithPath: "/nonexistent/tokenizer.json")
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: missing)) { XCTAssertEqual("\($0)", "/nonexistent/tokenizer.json: file not found") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let broken = dir.appendingPathComponent("tokenizer.json")
        try "{ not json".write(to: broken, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: broken)) { XCTAssertEqual("\($0)", "\(broken.path): not a JSON object") }
        try #"{"model": {"type": "WordPiece", "vocab": {}}}"#.write(to: broken, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: broken)) { XCTAssertEqual("\($0)", "\(broken.path): field 'model.type': unsupported 'WordPiece' (only BPE)") }
    }
}
