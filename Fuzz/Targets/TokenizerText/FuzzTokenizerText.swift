import Foundation
import FuzzSupport
import JanusFlowTokenizer

/// Arbitrary text through the test fixture's tokenizer (DeepSeek's pre-tokenizer, byte-level BPE, added tokens):
/// an input starting with an even byte is text, and decode(encode(text)) must give it back; one starting with an
/// odd byte is a list of 16-bit ids (out-of-range ones included) that decoding, whole and incrementally, must take.
@main
struct FuzzTokenizerText {
    static func main() {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../../Tests/JanusFlowTokenizerTests/Fixtures/tokenizer.json").standardized
        let path = ProcessInfo.processInfo.environment["JANUSFLOW_FUZZ_TOKENIZER"] ?? file.path
        let tokenizer: Tokenizer
        do { tokenizer = try Tokenizer(tokenizerJSON: URL(fileURLWithPath: path)) } catch { fatalError("\(error)") }
        FuzzTarget.run { data in
            guard let mode = data.first else { return }
            let rest = data.dropFirst()
            if mode % 2 == 0 {
                let text = String(decoding: rest, as: UTF8.self)
                let ids = tokenizer.encode(text, addBOS: false)
                let back = tokenizer.decode(ids)
                if back != text {
                    fatalError("decode(encode(text)) differs: \(Array(text.utf8)) -> \(ids) -> \(Array(back.utf8))")
                }
            } else {
                let bytes = Array(rest)
                let ids = stride(from: 0, to: bytes.count - 1, by: 2).map { Int(bytes[$0]) | Int(bytes[$0 + 1]) << 8 }
                let whole = tokenizer.decode(ids, skipSpecialTokens: true)
                var incremental = IncrementalDecoder(tokenizer: tokenizer)
                let pieces = ids.map { incremental.add($0) }.joined() + incremental.finish()
                if pieces != whole {
                    fatalError("incremental decoding differs from whole decoding for \(ids): \(Array(pieces.utf8)) vs \(Array(whole.utf8))")
                }
            }
        }
    }
}
