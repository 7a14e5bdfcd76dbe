import Foundation
import JanusFlowTokenizer
import XCTest

let fixtureDirectory = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
let fixtureTokenizerURL = fixtureDirectory.appendingPathComponent("tokenizer.json")

/// Reads a fixture JSON file with Foundation (independent of the tokenizer's own JSON reader). Foundation's parser
/// loses a raw U+FEFF at the start of a string value, so every raw U+FEFF (UTF-8 EF BB BF) is written as the escape
/// `\ufeff` first, on the bytes (`String.replacingOccurrences` compares grapheme clusters and would miss a U+FEFF
/// followed by a combining mark).
func loadFixtureJSON(_ name: String) -> [String: Any] {
    let raw = try! Data(contentsOf: fixtureDirectory.appendingPathComponent(name))
    return try! JSONSerialization.jsonObject(with: escapingByteOrderMarks(raw)) as! [String: Any]
}

func escapingByteOrderMarks(_ data: Data) -> Data {
    let bytes = [UInt8](data)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var i = 0
    while i < bytes.count {
        if i + 2 < bytes.count && bytes[i] == 0xEF && bytes[i + 1] == 0xBB && bytes[i + 2] == 0xBF {
            out.append(contentsOf: Array("\\ufeff".utf8))
            i += 3
        } else {
            out.append(bytes[i])
            i += 1
        }
    }
    return Data(out)
}

/// GPT-2's byte alphabet, written out here independently of the code under test: printable Latin-1 bytes stand
/// for themselves, the other 68 map to U+0100 onwards in byte order.
let testByteAlphabet: [Unicode.Scalar] = {
    var map = [Unicode.Scalar](repeating: " ", count: 256)
    var n: UInt32 = 256
    for b in 0...255 {
        if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
            map[b] = Unicode.Scalar(UInt32(b))!
        } else {
            map[b] = Unicode.Scalar(n)!
            n += 1
        }
    }
    return map
}()

/// `text` written in the byte alphabet.
func byteLevel(_ text: String) -> String {
    String(String.UnicodeScalarView(text.utf8.map { testByteAlphabet[Int($0)] }))
}

/// The fixture's tokenizer.json as a mutable JSON object, for variants.
func fixtureTokenizerObject() -> [String: Any] {
    try! JSONSerialization.jsonObject(with: Data(contentsOf: fixtureTokenizerURL)) as! [String: Any]
}

/// A tokenizer built from a modified copy of the fixture's tokenizer.json.
func variantTokenizer(name: String = "variant.json", _ modify: (inout [String: Any]) -> Void) throws -> Tokenizer {
    var object = fixtureTokenizerObject()
    modify(&object)
    return try Tokenizer(json: JSONSerialization.data(withJSONObject: object), name: name)
}

/// A fresh empty temporary directory.
func temporaryDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tokenizer-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// A short description of the first difference between two id lists.
func firstDifference(_ got: [Int], _ expected: [Int]) -> String {
    for i in 0..<min(got.count, expected.count) where got[i] != expected[i] {
        return "first difference at position \(i): got \(got[i]), expected \(expected[i])"
    }
    return "lengths differ: got \(got.count), expected \(expected.count)"
}

/// Asserts `body` throws a `TokenizerError` of `kind` whose description is exactly `message`.
func assertTokenizerError<T>(_ body: @autoclosure () throws -> T, _ kind: TokenizerError.Kind, _ message: String,
                             file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        guard let e = error as? TokenizerError else {
            return XCTFail("not a TokenizerError: \(error)", file: file, line: line)
        }
        XCTAssertEqual(e.kind, kind, file: file, line: line)
        XCTAssertEqual(e.description, message, file: file, line: line)
    }
}
