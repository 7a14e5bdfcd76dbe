import ArgumentParser
import Foundation
import JanusFlowTokenizer

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Encode text to token ids (a JSON array), or decode a JSON array of ids back to text.")

    @Option(help: "Model folder holding tokenizer.json.")
    var model: String?

    @Option(help: "A tokenizer.json file (instead of --model).")
    var tokenizer: String?

    @Flag(help: "Decode: the argument is a JSON array of ids.")
    var decode = false

    @Flag(help: "Encode without the BOS token.")
    var noBOS = false

    @Flag(help: "When decoding, leave out special tokens.")
    var skipSpecial = false

    @Argument(help: "Text to encode (or a JSON array of ids with --decode).")
    var input: String

    func run() throws {
        let tok = try loadTokenizer(model: model, tokenizer: tokenizer)
        if decode {
            guard let ids = (try? JSONSerialization.jsonObject(with: Data(input.utf8))) as? [Int] else {
                throw ValidationError("--decode expects a JSON array of integers, e.g. [1017, 72, 105]")
            }
            print(tok.decode(ids, skipSpecialTokens: skipSpecial))
        } else {
            let ids = tok.encode(input, addBOS: !noBOS)
            print("[" + ids.map(String.init).joined(separator: ", ") + "]")
        }
    }
}

func loadTokenizer(model: String?, tokenizer: String?) throws -> Tokenizer {
    if let tokenizer { return try Tokenizer(tokenizerJSON: URL(fileURLWithPath: tokenizer)) }
    guard let model else { throw ValidationError("give --model DIR (with tokenizer.json) or --tokenizer FILE") }
    return try Tokenizer(directory: URL(fileURLWithPath: model))
}

struct TokenizerBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenizer", abstract: "Encode speed on a large generated text.")

    @Option(help: "tokenizer.json to use.")
    var tokenizer: String

    @Option(help: "Text size in kilobytes.")
    var kilobytes = 100

    func run() throws {
        let tok = try Tokenizer(tokenizerJSON: URL(fileURLWithPath: tokenizer))
        let words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "2024", "image", "of", "a", "red", "circle,",
                     "and", "blue", "square.", "Hello", "world!", "naïve", "café", "日本語", "テキスト", "😀", "\n", "    ", "x=1;"]
        var text = ""
        var state: UInt64 = 42
        while text.utf8.count < kilobytes * 1024 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            text += words[Int(state >> 33) % words.count] + " "
        }
        let start = Date()
        let ids = tok.encode(text)
        let seconds = Date().timeIntervalSince(start)
        print(String(format: "encoded %d KB into %d tokens in %.3f s (%.1f MB/s)", text.utf8.count / 1024, ids.count, seconds,
                     Double(text.utf8.count) / seconds / 1e6))
    }
}
