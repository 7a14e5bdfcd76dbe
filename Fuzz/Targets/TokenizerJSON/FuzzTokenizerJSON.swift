import Foundation
import FuzzSupport
import JanusFlowTokenizer

/// Any bytes as `tokenizer.json`; a tokenizer that loads then encodes and decodes a fixed text.
@main
struct FuzzTokenizerJSON {
    static func main() {
        FuzzTarget.run { data in
            let tokenizer: Tokenizer
            do {
                tokenizer = try Tokenizer(json: data, name: "tokenizer.json")
            } catch is TokenizerError {
                return
            } catch {
                fatalError("Tokenizer(json:) threw \(type(of: error)), not TokenizerError: \(error)")
            }
            let ids = tokenizer.encode("Hello, world! 123 <image_placeholder>\n\u{00e9}\u{4e2d}", addBOS: true)
            _ = tokenizer.decode(ids)
            _ = tokenizer.decode(ids, skipSpecialTokens: true)
        }
    }
}
