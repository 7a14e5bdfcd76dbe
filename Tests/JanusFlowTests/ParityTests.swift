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
        ]
        XCTAssertTrue(expected.isSubset(of: names), "stages not checked: \(expected.subtracting(names).sorted())")
    }
}
