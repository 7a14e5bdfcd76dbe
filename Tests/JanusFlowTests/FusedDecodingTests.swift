import Foundation
import JanusFlow
import MLXEngine
import XCTest

/// The fused decoding primitive (all decoder blocks of one position in one shim call) against the same language
/// model run op by op, in every weight dtype, with grouped-query attention, batch rows and cache growth.
final class FusedDecodingTests: XCTestCase {
    override func tearDown() { Kernels.enabled = true }

    func maxAbsDifference(_ a: Tensor, _ b: Tensor) throws -> Float {
        try (a.asType(.float32) - b.asType(.float32)).abs().max().item(Float.self)
    }

    func model(_ dtype: DType, kvHeads: Int = 2, intermediateSize: Int = 96, int8Group: Int = 32) throws -> LanguageModel {
        Initializer.seed(7)
        let config = LanguageConfig(hiddenSize: 64, intermediateSize: intermediateSize, numAttentionHeads: 4, numHiddenLayers: 3,
                                    numKeyValueHeads: kvHeads, vocabSize: 50, ropeTheta: 500)
        let lm = LanguageModel(config)
        lm.cast(to: dtype == .int8 ? .bfloat16 : dtype)
        if dtype == .int8 {
            for (_, module) in lm.namedModules() { if let linear = module as? Linear { try linear.quantize(groupSize: int8Group) } }
        }
        try lm.evalParameters()
        return lm
    }

    /// Prefills `prompt` positions, then decodes `steps` positions twice from copies of the same cache: through
    /// `FusedDecoding.step` and through the layers op by op; returns the largest difference of hidden states and
    /// of the caches' keys and values.
    func compare(_ lm: LanguageModel, batch: Int, prompt: Int, steps: Int, cacheStep: Int, cacheType: DType? = nil,
                 cacheTolerance: Float? = nil) throws -> Float {
        let h = lm.config.hiddenSize
        let fused = lm.model.layers.map { _ in KVCache(step: cacheStep, dtype: cacheType) }
        let embeds = Random.normal([batch, prompt, h], key: RandomKey(seed: 1))
        try lm.forward(inputsEmbeds: embeds, cache: fused).lastHiddenState.eval()
        let reference = fused.map { $0.copy() }
        var worst: Float = 0
        let blocks = lm.decoderBlocks, shape = lm.attentionShape
        XCTAssertEqual(shape, DecoderAttentionShape(heads: 4, kvHeads: lm.config.numKeyValueHeads, headDim: 16, ropeBase: 500, normEps: 1e-6))
        for s in 0..<steps {
            let x = Random.normal([batch, 1, h], key: RandomKey(seed: UInt64(10 + s)))
            XCTAssertTrue(FusedDecoding.supports(x, blocks: blocks, caches: fused))
            let a = FusedDecoding.step(x, blocks: blocks, finalNorm: lm.model.norm.weight, caches: fused, shape: shape)
            // collectHiddenStates keeps forward off the fused path: the reference runs every op separately.
            let b = lm.forward(inputsEmbeds: x, cache: reference, collectHiddenStates: true).lastHiddenState
            worst = max(worst, try maxAbsDifference(a, b))
        }
        for (f, r) in zip(fused, reference) {
            XCTAssertEqual(f.offset, prompt + steps)
            XCTAssertEqual(f.keys!.dtype, cacheType ?? .float32)
            let cacheDifference = max(try maxAbsDifference(f.keys!, r.keys!), try maxAbsDifference(f.values!, r.values!))
            if let cacheTolerance { XCTAssertLessThan(cacheDifference, cacheTolerance) } else { worst = max(worst, cacheDifference) }
        }
        return worst
    }

    func testFloat32MatchesTheLayersOpByOp() throws {
        let lm = try model(.float32)
        // Cache buffers of 4 positions grow three times during these steps.
        XCTAssertLessThan(try compare(lm, batch: 1, prompt: 3, steps: 9, cacheStep: 4), 2e-5)
        XCTAssertLessThan(try compare(lm, batch: 3, prompt: 5, steps: 4, cacheStep: 256), 2e-5)
    }

    func testBFloat16AndInt8WeightsMatchTheLayersOpByOp() throws {
        XCTAssertLessThan(try compare(try model(.bfloat16), batch: 2, prompt: 4, steps: 5, cacheStep: 4), 1e-4)
        XCTAssertLessThan(try compare(try model(.int8, kvHeads: 4), batch: 1, prompt: 4, steps: 5, cacheStep: 256), 1e-4)
    }

    /// Groups of 64 inputs take the VNNI kernel where the CPU has it (activations rounded to int8), in the fused step
    /// and op by op alike; with it off both widen the weights to float32.
    func testInt8WeightsInGroupsOf64MatchTheLayersOpByOpWithAndWithoutVNNI() throws {
        let original = Kernels.int8VNNI
        defer { Kernels.int8VNNI = original }
        let lm = try model(.int8, intermediateSize: 128, int8Group: 64)
        for (_, module) in lm.namedModules() {
            if let linear = module as? Linear, linear.scales != nil { XCTAssertEqual(linear.quantizationGroup, 64) }
        }
        for vnni in [true, false] {
            Kernels.int8VNNI = vnni
            XCTAssertLessThan(try compare(lm, batch: 2, prompt: 4, steps: 4, cacheStep: 4), 1e-4, "VNNI \(vnni)")
        }
    }

    /// A bfloat16 cache (what text generation uses with bfloat16 or int8 weights): the fused step stores and reads
    /// the positions as the layers do. Keys computed a few ulps apart in float32 may round to neighbouring bfloat16
    /// values, hence the cache tolerance of about one bfloat16 step.
    func testBFloat16CacheMatchesTheLayersOpByOp() throws {
        let lm = try model(.bfloat16)
        XCTAssertEqual(lm.decodingCacheDType, .bfloat16)
        XCTAssertLessThan(try compare(lm, batch: 2, prompt: 4, steps: 5, cacheStep: 4, cacheType: .bfloat16, cacheTolerance: 2e-2), 1e-3)
        XCTAssertLessThan(try compare(try model(.int8, kvHeads: 4), batch: 1, prompt: 6, steps: 4, cacheStep: 256, cacheType: .bfloat16,
                                      cacheTolerance: 2e-2), 1e-3)
        XCTAssertEqual(try model(.float32).decodingCacheDType, .float32)
    }

    /// Decoding with a bfloat16 cache stays close to decoding with a float32 one.
    func testBFloat16CacheIsCloseToFloat32Cache() throws {
        let lm = try model(.bfloat16)
        func decode(_ type: DType) throws -> Tensor {
            let cache = lm.makeCache(dtype: type)
            var h = lm.forward(inputsEmbeds: Random.normal([1, 5, 64], key: RandomKey(seed: 4)), cache: cache).lastHiddenState
            for s in 0..<6 { h = lm.forward(inputsEmbeds: Random.normal([1, 1, 64], key: RandomKey(seed: UInt64(20 + s))), cache: cache).lastHiddenState }
            XCTAssertEqual(cache[0].keys!.dtype, type)
            return h
        }
        let difference = try maxAbsDifference(try decode(.bfloat16), try decode(.float32))
        XCTAssertGreaterThan(difference, 0)  // the cache really holds rounded values
        XCTAssertLessThan(difference, 5e-2)
    }

    /// forward takes the fused path on its own for plain decoding (same tokens as with every kernel off).
    func testGreedyDecodingIsUnchanged() throws {
        let lm = try model(.float32)
        func greedy() throws -> [Int] {
            let cache = lm.makeCache()
            var out = lm.forward(inputsEmbeds: Random.normal([1, 6, 64], key: RandomKey(seed: 3)), cache: cache)
            var tokens: [Int] = []
            for _ in 0..<12 {
                let token = try lm.logits(out.lastHiddenState.slice(axis: 1, -1)).argMax(axis: -1).reshaped([-1]).item(Int32.self)
                tokens.append(Int(token))
                out = lm.forward(inputsEmbeds: lm.embed(Tensor([token], shape: [1, 1])), cache: cache)
            }
            return tokens
        }
        let fast = try greedy()
        Kernels.enabled = false
        XCTAssertEqual(try greedy(), fast)
    }

    func testUnsupportedInputsAreDeclined() throws {
        let lm = try model(.float32)
        let blocks = lm.decoderBlocks
        let empty = lm.makeCache()
        let x = Tensor.zeros([1, 1, 64])
        XCTAssertFalse(FusedDecoding.supports(x, blocks: blocks, caches: empty), "an empty cache")
        let cache = lm.makeCache()
        try lm.forward(inputsEmbeds: Tensor.zeros([1, 2, 64]), cache: cache).lastHiddenState.eval()
        XCTAssertTrue(FusedDecoding.supports(x, blocks: blocks, caches: cache))
        XCTAssertFalse(FusedDecoding.supports(Tensor.zeros([1, 2, 64]), blocks: blocks, caches: cache), "two positions")
        XCTAssertFalse(FusedDecoding.supports(x.asType(.bfloat16), blocks: blocks, caches: cache), "bfloat16 activations")
        XCTAssertFalse(FusedDecoding.supports(Tensor.zeros([2, 1, 64]), blocks: blocks, caches: cache), "batch differs from the cache")
        Kernels.enabled = false
        XCTAssertFalse(FusedDecoding.supports(x, blocks: blocks, caches: cache), "fast kernels off")
    }
}
