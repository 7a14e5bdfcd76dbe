import Foundation
import JanusFlow
import MLXEngine
import XCTest

/// Generation prompts' keys/values kept between generations (`PromptCacheStore`).
final class PromptCacheTests: XCTestCase {
    let pipeline = PipelineTests.pipeline

    func guidance(_ prompt: String) -> GuidanceBatch {
        GuidanceBatch(promptIDs: pipeline.processor.generationIDs(prompt), padID: pipeline.tokenizer.padID)
    }

    func latents(_ prompt: String, seed: UInt64, count: Int = 1, cfg: Double = 2, store: PromptCacheStore?) throws -> [Float] {
        let sampler = RectifiedFlowSampler(steps: 2, cfgWeight: cfg, promptStore: store)
        let z0 = try pipeline.initialNoise(count: count, seed: seed)
        return try sampler.sample(model: pipeline.model, guidance: guidance(prompt), initialNoise: z0).values()
    }

    func testAKeptPromptGivesTheSameLatentsAsAFreshOne() throws {
        let store = PromptCacheStore()
        XCTAssertEqual([store.count, store.hits, store.misses, store.bytes], [0, 0, 0, 0])
        let first = try latents("a red circle", seed: 1, store: store)
        XCTAssertEqual([store.count, store.hits, store.misses], [1, 0, 1])
        XCTAssertGreaterThan(store.bytes, 0)
        XCTAssertEqual(first, try latents("a red circle", seed: 1, store: nil))
        // Another seed, image count and CFG weight: the same prompt, found; the latents those of a fresh prefill.
        let again = try latents("a red circle", seed: 2, count: 2, cfg: 3.5, store: store)
        XCTAssertEqual([store.count, store.hits, store.misses], [1, 1, 1])
        XCTAssertEqual(again, try latents("a red circle", seed: 2, count: 2, cfg: 3.5, store: nil))
        _ = try latents("a blue square", seed: 1, store: store)
        XCTAssertEqual([store.count, store.hits, store.misses], [2, 1, 2])
        store.removeAll()
        XCTAssertEqual([store.count, store.bytes], [0, 0])
        _ = try latents("a red circle", seed: 1, store: store)
        XCTAssertEqual([store.hits, store.misses], [1, 3])
    }

    func testTheLeastRecentlyUsedPromptGoesFirstPastTheByteLimit() throws {
        // Prompts of one length (BOS, template, one letter, tag), so room for two is room for any two.
        let lengths = ["x", "y", "c"].map { guidance($0).promptIDs.count }
        XCTAssertEqual(Set(lengths).count, 1, "prompt lengths \(lengths)")
        let probe = PromptCacheStore()
        _ = try latents("x", seed: 1, store: probe)
        let letterBytes = probe.bytes
        let store = PromptCacheStore(maxBytes: 2 * letterBytes)
        for prompt in ["x", "y", "x", "c"] { _ = try latents(prompt, seed: 1, store: store) }
        // "y" was the least recently used when "c" came.
        XCTAssertEqual([store.count, store.hits, store.misses], [2, 1, 3])
        XCTAssertEqual(store.bytes, 2 * letterBytes)
        _ = try latents("x", seed: 1, store: store)
        XCTAssertEqual(store.hits, 2)
        _ = try latents("y", seed: 1, store: store)
        XCTAssertEqual([store.hits, store.misses, store.count], [2, 4, 2])
        // A store of no bytes keeps nothing.
        let none = PromptCacheStore(maxBytes: 0)
        for _ in 0..<2 { _ = try latents("x", seed: 1, store: none) }
        XCTAssertEqual([none.count, none.hits, none.misses], [0, 0, 2])
    }

    func testThePipelineReusesAPromptAcrossGenerations() throws {
        let pipeline = try JanusFlowPipeline(modelDirectory: tinyFixture.appendingPathComponent("model"),
                                             vaeDirectory: tinyFixture.appendingPathComponent("vae"), dtype: .float32)
        let a = try pipeline.generate(prompt: "a green triangle", count: 1, steps: 2, seed: 7)
        let b = try pipeline.generate(prompt: "a green triangle", count: 2, steps: 2, cfg: 4, seed: 7)
        XCTAssertEqual([pipeline.promptCaches.hits, pipeline.promptCaches.misses], [1, 1])
        // The first image of the second call: the same noise and prompt, another CFG weight, so another image; the
        // same call without the kept prompt gives the same one.
        pipeline.promptCaches.removeAll()
        let fresh = try pipeline.generate(prompt: "a green triangle", count: 2, steps: 2, cfg: 4, seed: 7)
        XCTAssertEqual(b.map(\.pixels), fresh.map(\.pixels))
        XCTAssertEqual(a.count, 1)
    }
}
