import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowTokenizer
import MLXEngine
import XCTest

/// Prompt strings and ids against the official VLChatProcessor's output recorded in the tiny fixture.
final class ChatTemplateTests: XCTestCase {
    let fx = try! Parity.Fixture(directory: tinyFixture)
    let tokenizer = try! Tokenizer(directory: tinyFixture.appendingPathComponent("model"))

    func strings() -> [String: Any] { fx.index["strings"] as! [String: Any] }

    func testUnderstandingPromptStringAndIDs() throws {
        let text = ChatTemplate.understandingPrompt(question: "What is shown in this picture?")
        XCTAssertEqual(text, strings()["und.sft_format"] as? String)
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: 16)
        let prompt = processor.process(text)
        XCTAssertEqual(prompt.ids, try fx.require("und.input_ids").values(Int.self))
        XCTAssertEqual(prompt.imageSeqMask, try fx.require("und.images_seq_mask").values(Int.self).map { $0 == 1 })
        XCTAssertEqual(prompt.imageCount, 1)
    }

    func testGenerationPromptStringsAndIDs() throws {
        XCTAssertEqual(ChatTemplate.generationPrompt("A red cat sitting on a blue box."), strings()["gen.prompt_text"] as? String)
        XCTAssertEqual(ChatTemplate.generationPrompt("A small green tree under the sun."), strings()["gen.sample_prompt_text"] as? String)
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: 16)
        let ids = processor.generationIDs("A red cat sitting on a blue box.")
        XCTAssertEqual(ids, try fx.require("gen.prompt_ids").values(Int.self))
        XCTAssertEqual(processor.generationIDs("A small green tree under the sun."), try fx.require("gen.sample_prompt_ids").values(Int.self))
        // CFG rows: B conditional, then B with every id after BOS replaced by the pad id.
        let rows = GuidanceBatch(promptIDs: ids, padID: tokenizer.padID).tokenRows(images: 2).flatMap { $0 }
        XCTAssertEqual(rows, try fx.require("gen.cfg_tokens").values(Int.self))
    }

    func testMultiTurnRendering() {
        let text = ChatTemplate.render([.user("<image_placeholder>\nWhat is it?"), .assistant("A cat."), .user("Colour?"), .assistant("")])
        XCTAssertEqual(text, ChatTemplate.systemPrompt + "\n\nUser: <image_placeholder>\nWhat is it?\n\nAssistant: A cat.<｜end▁of▁sentence｜>User: Colour?\n\nAssistant:")
        XCTAssertEqual(ChatTemplate.render([.user("  hi  "), .assistant("")], systemPrompt: ""), "User: hi\n\nAssistant:")
    }

    func testTrainingLabelsCoverTheAnswerAndEOS() throws {
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: 16)
        let (prompt, labels) = processor.processForTraining(conversation: [.user("<image_placeholder>\nWhat is it?"), .assistant("a red circle")])
        let answer = zip(prompt.ids, labels).filter { $0.1 }.map { $0.0 }
        XCTAssertEqual(answer.last, tokenizer.eosID)
        XCTAssertEqual(tokenizer.decode(answer), " a red circle<｜end▁of▁sentence｜>")
        // The same ids as tokenizing the whole rendered conversation at once.
        let whole = processor.process(ChatTemplate.render([.user("<image_placeholder>\nWhat is it?"), .assistant("a red circle")]))
        XCTAssertEqual(prompt.ids, whole.ids)
    }
}

/// The official VLMImageProcessor's output for the fixture's raw images (Pillow bicubic, pad, normalise).
final class PreprocessingParityTests: XCTestCase {
    func testPreprocessingMatchesTheFixtureExactly() throws {
        let fx = try Parity.Fixture(directory: tinyFixture)
        let p = ImagePreprocessor(size: 64)
        var pairs = fx.numbered("pre.image_u8").enumerated().map { ($0.element, fx["pre.pixel_values.\($0.offset)"]!) }
        pairs.append((try fx.require("und.image_u8"), try fx.require("und.prompt_pixel_values")))
        XCTAssertEqual(pairs.count, 3)
        for (raw, expected) in pairs {
            let image = RGBImage(width: raw.dim(1), height: raw.dim(0), pixels: try raw.values(Int.self).map { UInt8($0) })
            let values = p.pixelValues(image)
            let reference = try expected.values(Float.self)
            XCTAssertEqual(values.count, reference.count)
            XCTAssertLessThanOrEqual(zip(values, reference).map { Swift.abs($0 - $1) }.max()!, 1e-6)
        }
    }
}
