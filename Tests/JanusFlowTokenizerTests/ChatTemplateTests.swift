import Foundation
import JanusFlowTokenizer
import XCTest

/// Prompt strings and ids against the official VLChatProcessor's output (chat_template.json, extracted from the
/// tiny JanusFlow fixture; 16 image tokens per image).
final class ChatTemplateTests: XCTestCase {
    nonisolated(unsafe) static let fixture = loadFixtureJSON("chat_template.json")
    let tokenizer = try! Tokenizer(directory: fixtureDirectory)

    func string(_ key: String) -> String { (Self.fixture["strings"] as! [String: String])[key]! }
    func question(_ key: String) -> String { (Self.fixture["questions"] as! [String: String])[key]! }
    func tensor(_ name: String) -> (shape: [Int], values: [Int]) {
        let t = (Self.fixture["tensors"] as! [String: Any])[name] as! [String: Any]
        return (t["shape"] as! [Int], t["values"] as! [Int])
    }
    var imageTokens: Int { Self.fixture["num_image_tokens"] as! Int }

    func testUnderstandingPromptString() {
        XCTAssertEqual(ChatTemplate.understandingPrompt(question: question("und")), string("und.sft_format"))
        XCTAssertEqual(ChatTemplate.render([.user("<image_placeholder>\n" + question("und")), .assistant("")]), string("und.sft_format"))
    }

    func testUnderstandingIDsAndMasks() throws {
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: imageTokens)
        let prompt = processor.process(ChatTemplate.understandingPrompt(question: question("und")))
        XCTAssertEqual(prompt.ids, tensor("und.input_ids").values)
        XCTAssertEqual(prompt.imageSeqMask.map { $0 ? 1 : 0 }, tensor("und.images_seq_mask").values)
        XCTAssertEqual(prompt.imageCount, 1)
        let emb = tensor("und.images_emb_mask")
        XCTAssertEqual(emb.shape, [1, 1, imageTokens + 1])
        XCTAssertEqual(prompt.imageEmbMask.flatMap { $0 }.map { $0 ? 1 : 0 }, emb.values)
        // The batch of one: no padding.
        let batch = processor.batch([prompt])
        XCTAssertEqual(batch.ids, [tensor("und.input_ids").values])
        XCTAssertEqual(batch.attentionMask.flatMap { $0 }, tensor("und.attention_mask").values)
        XCTAssertEqual(batch.imageEmbMask.flatMap { $0.flatMap { $0 } }.map { $0 ? 1 : 0 }, emb.values)
        // The same through a conversation.
        XCTAssertEqual(processor.process(conversation: [.user("<image_placeholder>\n" + question("und")), .assistant("")]), prompt)
    }

    func testGenerationPromptStringsAndIDs() throws {
        XCTAssertEqual(ChatTemplate.generationPrompt(question("gen")), string("gen.prompt_text"))
        XCTAssertEqual(ChatTemplate.generationPrompt(question("gen_sample")), string("gen.sample_prompt_text"))
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: imageTokens)
        XCTAssertEqual(processor.generationIDs(question("gen")), tensor("gen.prompt_ids").values)
        XCTAssertEqual(processor.generationIDs(question("gen_sample")), tensor("gen.sample_prompt_ids").values)
    }

    func testGuidanceRows() throws {
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: imageTokens)
        let ids = tensor("gen.prompt_ids").values
        let cfg = tensor("gen.cfg_tokens")
        XCTAssertEqual(cfg.shape, [4, ids.count])
        XCTAssertEqual(processor.guidanceRows(ids, images: 2).flatMap { $0 }, cfg.values)
        XCTAssertEqual(processor.unconditionalIDs(ids), Array(cfg.values[(2 * ids.count)..<(3 * ids.count)]))
        XCTAssertEqual(processor.unconditionalIDs([]), [])
    }

    func testReleaseImageBlockHas576Placeholders() throws {
        let processor = try ChatProcessor(tokenizer: tokenizer)
        XCTAssertEqual(processor.imageTokens, 576)
        let prompt = processor.process(ChatTemplate.understandingPrompt(question: question("und")))
        let tiny = tensor("und.input_ids").values
        XCTAssertEqual(prompt.ids.count, tiny.count - imageTokens + 576)
        let begin = prompt.ids.firstIndex(of: 1021)!
        XCTAssertEqual(Array(prompt.ids[..<begin]), Array(tiny[..<begin]))
        XCTAssertEqual(Array(prompt.ids[(begin + 1)...(begin + 576)]), Array(repeating: 1020, count: 576))
        XCTAssertEqual(prompt.ids[begin + 577], 1022)
        XCTAssertEqual(Array(prompt.ids[(begin + 578)...]), Array(tiny[(begin + imageTokens + 2)...]))
        XCTAssertEqual(prompt.imageSeqMask.filter { $0 }.count, 577)
        XCTAssertEqual(prompt.imageEmbMask, [Array(repeating: true, count: 577)])
    }

    func testTwoImagesExpandInOrder() throws {
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: 2)
        let prompt = processor.process("<image_placeholder><image_placeholder>")
        XCTAssertEqual(prompt.ids, [1017, 1021, 1020, 1020, 1022, 1021, 1020, 1020, 1022])
        XCTAssertEqual(prompt.imageSeqMask, [false, true, true, true, false, true, true, true, false])
        XCTAssertEqual(prompt.imageCount, 2)
        XCTAssertEqual(prompt.imageEmbMask, [[true, true, true], [true, true, true]])
    }

    func testMultiTurnAndEmptyMessages() {
        let text = ChatTemplate.render([.user("<image_placeholder>\nWhat is it?"), .assistant("A cat."), .user("Colour?"), .assistant("")])
        XCTAssertEqual(text, ChatTemplate.systemPrompt
            + "\n\nUser: <image_placeholder>\nWhat is it?\n\nAssistant: A cat.<｜end▁of▁sentence｜>User: Colour?\n\nAssistant:")
        XCTAssertEqual(ChatTemplate.understandingPrompt(question: "Colour?", history: [.user("Hi"), .assistant("Hello.")]),
                       ChatTemplate.systemPrompt + "\n\nUser: Hi\n\nAssistant: Hello.<｜end▁of▁sentence｜>User: <image_placeholder>\nColour?\n\nAssistant:")
        // Empty system prompt: no leading blank line; an empty message is just "Role:" with no separator.
        XCTAssertEqual(ChatTemplate.render([.user(""), .assistant("")], systemPrompt: ""), "User:Assistant:")
        XCTAssertEqual(ChatTemplate.render([], systemPrompt: "S"), "S")
        // A finished last turn ends in a separator, which the final strip removes only when it is whitespace.
        XCTAssertEqual(ChatTemplate.render([.user("a")], systemPrompt: ""), "User: a")
        XCTAssertEqual(ChatTemplate.render([.user("a"), .assistant("b")], systemPrompt: ""), "User: a\n\nAssistant: b<｜end▁of▁sentence｜>")
        XCTAssertEqual(ChatTemplate.generationPrompt("x", tag: ChatTemplate.beginOfGeneration), "User: x\n\nAssistant:<｜begin▁of▁generation｜>")
    }

    func testContentsAreStrippedLikePython() {
        // Python's str.strip() also removes U+001C-U+001F, NEL, NBSP and the other Unicode spaces.
        XCTAssertEqual(ChatTemplate.render([.user("\u{1C} \t hi \u{85}\u{A0}\u{3000}\u{1F}"), .assistant("")], systemPrompt: ""),
                       "User: hi\n\nAssistant:")
        XCTAssertEqual(ChatTemplate.render([.user(" \n "), .assistant("ok ")], systemPrompt: ""), "User:Assistant: ok<｜end▁of▁sentence｜>")
        // Zero-width space is not whitespace for Python.
        XCTAssertEqual(ChatTemplate.render([.user("\u{200B}")], systemPrompt: ""), "User: \u{200B}")
    }

    func testBatchIsLeftPadded() throws {
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: 2)
        let short = processor.process("Hi")
        let long = processor.process("<image_placeholder>\nHi")
        XCTAssertEqual(short.ids, [1017, 39, 72])  // Python tokenizers: encode("Hi")
        let batch = processor.batch([short, long])
        let pad = long.ids.count - short.ids.count
        XCTAssertEqual(batch.ids[0], Array(repeating: 1019, count: pad) + short.ids)
        XCTAssertEqual(batch.ids[1], long.ids)
        XCTAssertEqual(batch.attentionMask[0], Array(repeating: 0, count: pad) + [1, 1, 1])
        XCTAssertEqual(batch.attentionMask[1], Array(repeating: 1, count: long.ids.count))
        XCTAssertEqual(batch.imageSeqMask[0], Array(repeating: false, count: long.ids.count))
        XCTAssertEqual(batch.imageSeqMask[1], long.imageSeqMask)
        XCTAssertEqual(batch.imageEmbMask, [[[false, false, false]], [[true, true, true]]])
    }

    /// A vocabulary without the image tags gets them added as special tokens, with the ids Python `tokenizers`
    /// gives when VLChatProcessor adds them one by one (extra_cases.json).
    func testMissingTagsAreAddedLikeVLChatProcessor() throws {
        let reference = loadFixtureJSON("extra_cases.json")["missing_tags"] as! [String: Any]
        let bare = try variantTokenizer { $0["added_tokens"] = reference["added_tokens"] }
        XCTAssertNil(bare.tokenID(for: ChatTemplate.imageTag))
        let processor = try ChatProcessor(tokenizer: bare, imageTokens: 1)
        for (tag, id) in reference["tag_ids"] as! [String: Int] {
            XCTAssertEqual(processor.tokenizer.tokenID(for: tag), id, tag)
            XCTAssertTrue(processor.tokenizer.isSpecial(id))
        }
        XCTAssertEqual(processor.tokenizer.encode(reference["text"] as! String), reference["ids"] as! [Int])
        XCTAssertEqual([processor.imageTagID, processor.beginOfGenerationID, processor.beginOfImageID, processor.endOfImageID],
                       [1020, 1021, 1022, 1023])
        XCTAssertEqual(processor.padID, 1019)
    }

    func testPadFallsBackToEOS() throws {
        let noPad = try variantTokenizer { object in
            object["added_tokens"] = (object["added_tokens"] as! [[String: Any]]).filter { $0["content"] as! String != "<｜▁pad▁｜>" }
        }
        XCTAssertEqual(noPad.padID, noPad.eosID)
        XCTAssertEqual(noPad.padID, 1018)
    }

    func testTrainingLabelsCoverTheAnswerAndEOS() throws {
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: 4)
        let conversation: [ChatMessage] = [.user("<image_placeholder>\nWhat is it?"), .assistant("a red circle")]
        let (prompt, labels) = processor.processForTraining(conversation: conversation)
        let answer = zip(prompt.ids, labels).filter { $0.1 }.map { $0.0 }
        XCTAssertEqual(answer.last, 1018)
        XCTAssertEqual(tokenizer.decode(answer), " a red circle<｜end▁of▁sentence｜>")
        XCTAssertEqual(prompt.ids, processor.process(conversation: conversation).ids)
    }

    func testTrainingLabelsCoverEveryAssistantTurnOfAConversation() throws {
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: 4)
        let conversation: [ChatMessage] = [.user("<image_placeholder>\nWhat is it?"), .assistant("a red circle"),
                                           .user("And its colour?"), .assistant(" red "), .user("How many?"), .assistant("one")]
        let (prompt, labels) = processor.processForTraining(conversation: conversation)
        XCTAssertEqual(prompt.ids, processor.process(conversation: conversation).ids)
        XCTAssertEqual(prompt.imageSeqMask, processor.process(conversation: conversation).imageSeqMask)
        XCTAssertEqual(prompt.imageCount, 1)
        // The labelled runs, in order: each reply with its end of sentence and nothing of the user turns.
        var runs: [[Int]] = []
        for (i, (id, label)) in zip(prompt.ids, labels).enumerated() where label {
            if i == 0 || !labels[i - 1] { runs.append([]) }
            runs[runs.count - 1].append(id)
        }
        XCTAssertEqual(runs.map { tokenizer.decode($0) },
                       [" a red circle<｜end▁of▁sentence｜>", " red<｜end▁of▁sentence｜>", " one<｜end▁of▁sentence｜>"])
        // A conversation that does not alternate keeps only its last message as the target.
        let odd: [ChatMessage] = [.user("hi"), .user("<image_placeholder>\nWhat is it?"), .assistant("a circle")]
        let (oddPrompt, oddLabels) = processor.processForTraining(conversation: odd)
        XCTAssertEqual(tokenizer.decode(zip(oddPrompt.ids, oddLabels).filter { $0.1 }.map { $0.0 }), " a circle<｜end▁of▁sentence｜>")
    }

    func testNegativeImageTokenCountIsRejected() {
        assertTokenizerError(try ChatProcessor(tokenizer: tokenizer, imageTokens: -1), .invalidField,
                             "\(fixtureDirectory.appendingPathComponent("tokenizer.json").path): field 'num_image_tokens': must not be negative (-1)")
    }
}
