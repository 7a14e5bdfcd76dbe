import Foundation
import JanusFlow
import MLXEngine
import XCTest

let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
let tinyFixture = fixtures.appendingPathComponent("tiny")

/// Every stage of the tiny fixture made by DeepSeek's PyTorch code, within the fixture README's tolerances.
final class ParityTests: XCTestCase {
    func testEveryStageMatchesTheOfficialCode() throws {
        let report = try Parity.run(fixtureDirectory: tinyFixture)
        for row in report.rows { print(row) }
        for row in report.rows where !row.passed { XCTFail("\(row)") }
        let names = Set(report.rows.map(\.name))
        let expected: Set<String> = [
            "und.siglip_embed", "und.siglip_block.0", "und.siglip_block.1", "und.siglip_features", "und.aligned",
            "und.inputs_embeds", "und.hidden_states.0", "und.hidden_states.1", "und.hidden_states.2", "und.logits",
            "und.greedy_tokens", "und.greedy_step_logits",
            "gen.t_proj", "gen.in_conv", "gen.z_emb", "gen.t_emb", "gen.hs.0", "gen.z_emb_aligned",
            "gen.llm_inputs_embeds", "gen.llm_hidden_last", "gen.dec_in", "gen.velocity_cond", "gen.velocity_uncond",
            "gen.velocity_cfg", "gen.sample_attention_mask", "gen.z_step.0", "gen.z_step.1", "gen.z_step.2", "gen.z_final",
            "vae.decoded", "vae.latent_mean", "vae.latent_logvar", "vae.latent_std",
        ]
        XCTAssertTrue(expected.isSubset(of: names), "stages not checked: \(expected.subtracting(names).sorted())")
    }
}

/// The release runs with bfloat16 weights: the same stages within the looser bf16 bounds.
final class BFloat16ParityTests: XCTestCase {
    func testEveryStageWithinBFloat16Bounds() throws {
        let report = try Parity.run(fixtureDirectory: tinyFixture, weights: .bfloat16)
        for row in report.rows where !row.passed { XCTFail("\(row)") }
        XCTAssertGreaterThanOrEqual(report.rows.count, 27)
        // bf16 must actually be in use: the errors are far above float32's.
        let logits = report.rows.first { $0.name == "und.logits" }!
        XCTAssertGreaterThan(logits.maxAbsError, 1e-4)
    }
}

/// int8 language-model weights (per-group scales, the rest bfloat16): every stage within the int8 bounds.
final class Int8ParityTests: XCTestCase {
    func testEveryStageWithinInt8Bounds() throws {
        let report = try Parity.run(fixtureDirectory: tinyFixture, weights: .int8)
        for row in report.rows where !row.passed { XCTFail("\(row)") }
        XCTAssertGreaterThanOrEqual(report.rows.count, 27)
        let model = try JanusFlowModel.load(directory: tinyFixture.appendingPathComponent("model"), dtype: .int8)
        let linears = model.languageModel.namedModules().compactMap { $0.1 as? Linear }
        XCTAssertFalse(linears.isEmpty)
        for linear in linears { XCTAssertEqual(linear.weight.dtype, .int8) }
        XCTAssertEqual(model.understandingAligner.weight.dtype, .bfloat16)
    }
}
