import Foundation
import MLXEngine
import XCTest

final class Block: Module {
    @Child("self_attn") var attention: Linear
    let mlp: [Linear]
    @Parameter("scale_param") var scale: Tensor
    @Parameter var bias: Tensor?
    var norm: RMSNorm

    override init() {
        bias = nil
        mlp = [Linear(3, 4), Linear(4, 3, bias: false)]
        norm = RMSNorm(3)
        super.init()
        scale = Tensor.ones([3])
        attention = Linear(3, 3)
    }
}

final class ModuleTests: XCTestCase {
    func testParameterNamesFollowCheckpointKeys() {
        let names = Set(Block().parameters().keys)
        XCTAssertEqual(names, ["self_attn.weight", "self_attn.bias", "mlp.0.weight", "mlp.0.bias", "mlp.1.weight",
                               "scale_param", "norm.weight"])
        XCTAssertEqual(Block().parameterCount, 12 + 16 + 12 + 3 + 3)
    }

    func testAssignedSubModulesAndParametersAreSeenAfterFirstUse() throws {
        let block = Block()
        XCTAssertEqual(block.parameters()["self_attn.weight"]!.shape, [3, 3])
        block.attention = Linear(3, 5, bias: false)  // @Child: seen at once
        XCTAssertEqual(block.parameters()["self_attn.weight"]!.shape, [5, 3])
        XCTAssertNil(block.parameters()["self_attn.bias"])
        block.bias = Tensor.zeros([3])  // an optional parameter set later
        XCTAssertEqual(block.parameters()["bias"]!.shape, [3])
        block.norm = RMSNorm(7)  // a plain var: seen after structureChanged()
        Module.structureChanged()
        XCTAssertEqual(block.parameters()["norm.weight"]!.shape, [7])
        try block.update(parameters: ["norm.weight": Tensor.zeros([7])])
        XCTAssertEqual(try block.norm.weight.values(Float.self), Array(repeating: 0, count: 7))
    }

    func testStrictLoadingReportsEveryCulprit() {
        let block = Block()
        var weights = block.parameters()
        weights["mlp.0.weight"] = nil
        weights["extra.weight"] = Tensor.ones([1])
        weights["norm.weight"] = Tensor.ones([5])
        XCTAssertThrowsError(try block.load(weights: weights, source: "model.safetensors")) { error in
            XCTAssertEqual("\(error)", "model.safetensors: weights do not match the model: missing 1 tensor(s): mlp.0.weight; unexpected 1 tensor(s): extra.weight; wrong shape or dtype for 1 tensor(s): norm.weight: expected [3], found [5]")
        }
        // Nothing was changed by the failed load.
        XCTAssertEqual(try block.norm.weight.values(Float.self), [1, 1, 1])
        var good = block.parameters().mapValues { Tensor.zeros($0.shape) }
        good["scale_param"] = Tensor([7, 8, 9] as [Float])
        XCTAssertNoThrow(try block.load(weights: good))
        XCTAssertEqual(try block.scale.values(Float.self), [7, 8, 9])
        XCTAssertThrowsError(try block.update(parameters: ["nope": Tensor.ones([1])]))
    }

    func testFreezeByPrefix() {
        let block = Block()
        block.freeze(prefixes: ["mlp"])
        XCTAssertEqual(Set(block.trainableParameters().keys), ["self_attn.weight", "self_attn.bias", "scale_param", "norm.weight"])
        block.unfreeze(prefixes: ["mlp.1"])
        XCTAssertTrue(block.trainableParameters().keys.contains("mlp.1.weight"))
        XCTAssertFalse(block.trainableParameters().keys.contains("mlp.0.weight"))
        // "self_attn" must not match a name that merely starts with the same letters.
        block.freeze(prefixes: ["self"])
        XCTAssertTrue(block.trainableParameters().keys.contains("self_attn.weight"))
    }

    func testCastAndDropoutModes() throws {
        let block = Block()
        block.cast(to: .bfloat16)
        XCTAssertEqual(block.mlp[0].weight.dtype, .bfloat16)
        let drop = Dropout(p: 0.5)
        let x = Tensor.ones([1000])
        XCTAssertEqual(try drop(x).values(Float.self), try x.values(Float.self))
        drop.train()
        let y = try drop(x, key: RandomKey(seed: 3)).values(Float.self)
        XCTAssertTrue(y.allSatisfy { $0 == 0 || $0 == 2 })
        XCTAssertEqual(Float(y.filter { $0 == 0 }.count) / 1000, 0.5, accuracy: 0.07)
    }

    func testKVCacheMatchesFullAttention() throws {
        let mha = MultiHeadAttention(dimensions: 8, heads: 2)
        let x = tensor([1, 5, 8], seed: 11)
        let full = mha(x, causal: true)
        let cache = KVCache()
        let first = mha(x.slice(axis: 1, 0, 3), causal: true, cache: cache)
        var steps = [first]
        for i in 3..<5 { steps.append(mha(x.slice(axis: 1, i, i + 1), causal: true, cache: cache)) }
        XCTAssertEqual(cache.offset, 5)
        assertClose(concatenated(steps, axis: 1), values(full), atol: 1e-5)
    }

    func testKVCacheGrowsInPlaceAndCopiesStayIndependent() throws {
        let cache = KVCache(step: 4)
        let chunks = (0..<4).map { tensor([1, 2, [3, 1, 2, 1][$0], 5], seed: UInt64(20 + $0)) }
        for (i, c) in chunks.prefix(2).enumerated() {
            let (k, v) = cache.update(keys: c, values: c * 2)
            try Tensor.eval([k, v])
            XCTAssertEqual(k.shape, [1, 2, i == 0 ? 3 : 4, 5])
        }
        let snapshot = cache.copy()
        let before = try snapshot.keys!.values(Float.self)
        _ = cache.update(keys: chunks[2], values: chunks[2] * 2)  // grows past the 4-position buffer
        let (k, v) = cache.update(keys: chunks[3], values: chunks[3] * 2)
        XCTAssertEqual(cache.offset, 7)
        let all = concatenated(chunks, axis: 2)
        assertClose(k, values(all), atol: 0)
        assertClose(v, values(all * 2), atol: 0)
        XCTAssertEqual(try snapshot.keys!.values(Float.self), before)
        // The copy writes its own positions without touching the original, even over a shared buffer.
        snapshot.truncate(to: 3)
        _ = snapshot.update(keys: chunks[3], values: chunks[3])
        assertClose(snapshot.keys!, values(concatenated([chunks[0], chunks[3]], axis: 2)), atol: 0)
        assertClose(cache.keys!, values(all), atol: 0)
    }
}

final class GradientTests: XCTestCase {
    override func setUp() { Initializer.seed(5) }

    func testElementwiseAndAttentionGradients() {
        checkGradients([tensor([3, 4], seed: 1)], "gelu") { NN.gelu($0[0]).sum() }
        checkGradients([tensor([3, 4], seed: 2)], "silu") { (NN.silu($0[0]) * tensor([3, 4], seed: 9)).sum() }
        checkGradients([tensor([2, 5], seed: 3)], "softmax") { (NN.softmax($0[0]) * tensor([2, 5], seed: 8)).sum() }
        checkGradients([tensor([1, 2, 4, 8], seed: 4), tensor([1, 2, 6, 8], seed: 5), tensor([1, 2, 6, 8], seed: 6)], "attention") {
            (NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.3, causal: true) * tensor([1, 2, 4, 8], seed: 7)).sum()
        }
        checkGradients([tensor([2, 4, 6], seed: 12)], "cross entropy") {
            NN.crossEntropy(logits: $0[0], targets: Tensor([0, 5, 2, 1, 3, 4, 4, 0] as [Int32], shape: [2, 4]))
        }
    }

    func testLayerGradients() {
        let linear = Linear(5, 3)
        checkModuleGradients(linear, input: tensor([2, 5], seed: 1), "Linear") { linear($0) }
        let conv = Conv2d(3, 4, kernelSize: 3, stride: 2, padding: 1)
        checkModuleGradients(conv, input: tensor([1, 6, 6, 3], seed: 2), "Conv2d") { conv($0) }
        let depthwise = Conv2d(4, 4, kernelSize: 7, padding: 3, groups: 4)
        checkModuleGradients(depthwise, input: tensor([1, 8, 8, 4], seed: 3), "depthwise Conv2d") { depthwise($0) }
        let grouped = Conv2d(4, 6, kernelSize: 1, groups: 2)
        checkModuleGradients(grouped, input: tensor([1, 3, 3, 4], seed: 4), "grouped Conv2d") { grouped($0) }
        let ln = LayerNorm(6, eps: 1e-5)
        ln.weight = tensor([6], seed: 5)
        checkModuleGradients(ln, input: tensor([3, 6], seed: 6), "LayerNorm") { ln($0) }
        let rms = RMSNorm(6)
        checkModuleGradients(rms, input: tensor([3, 6], seed: 7), "RMSNorm") { rms($0) }
        let gn = GroupNorm(groups: 2, channels: 4)
        checkModuleGradients(gn, input: tensor([1, 3, 3, 4], seed: 8), "GroupNorm") { gn($0) }
        let emb = Embedding(10, 4)
        checkModuleGradients(emb, input: Tensor.zeros([1]), "Embedding") { _ in emb(Tensor([3, 7, 3] as [Int32])) }
        let mha = MultiHeadAttention(dimensions: 8, heads: 2)
        checkModuleGradients(mha, input: tensor([1, 4, 8], seed: 9), "MultiHeadAttention") { mha($0, causal: true) }
        checkModuleGradients(GELU(), input: tensor([4], seed: 10), "GELU") { GELU()($0) }
        checkModuleGradients(SiLU(), input: tensor([4], seed: 11), "SiLU") { SiLU()($0) }
    }
}

final class OptimizerTests: XCTestCase {
    func testAdamWMatchesHandComputedSteps() throws {
        // Hand-computed with torch.optim.AdamW's update rule (lr 0.1, betas 0.9/0.999, eps 1e-8, wd 0.01):
        // step 1 -> [0.899000002, -2.09799999], step 2 -> [0.8714672987, -2.1876800978].
        let opt = AdamW(learningRate: 0.1, weightDecay: 0.01)
        var p = ["w": Tensor([1.0, -2.0] as [Float])]
        p = opt.update(parameters: p, gradients: ["w": Tensor([0.5, 0.1] as [Float])])
        assertClose(p["w"]!, [0.899000002, -2.09799999], atol: 1e-6, rtol: 0)
        p = opt.update(parameters: p, gradients: ["w": Tensor([-0.25, 0.3] as [Float])])
        assertClose(p["w"]!, [0.8714672987, -2.1876800978], atol: 1e-6, rtol: 0)
        // State round trip: a fresh optimizer with the saved state continues identically.
        let copy = AdamW(learningRate: 0.1, weightDecay: 0.01)
        try copy.loadState(opt.stateTensors())
        copy.step = opt.step
        let next1 = opt.update(parameters: p, gradients: ["w": Tensor([0.1, 0.1] as [Float])])
        let next2 = copy.update(parameters: p, gradients: ["w": Tensor([0.1, 0.1] as [Float])])
        XCTAssertEqual(try next1["w"]!.values(Float.self), try next2["w"]!.values(Float.self))
    }

    func testSGDMomentum() {
        // v1 = g1 = 1 -> p = 1 - 0.1 = 0.9; v2 = 0.9*1 + 1 = 1.9 -> p = 0.9 - 0.19 = 0.71
        let opt = SGD(learningRate: 0.1, momentum: 0.9)
        var p = ["w": Tensor([1.0] as [Float])]
        p = opt.update(parameters: p, gradients: ["w": Tensor([1.0] as [Float])])
        p = opt.update(parameters: p, gradients: ["w": Tensor([1.0] as [Float])])
        assertClose(p["w"]!, [0.71], atol: 1e-6)
    }

    func testSchedulesAndClipping() throws {
        let warm = WarmupConstantSchedule(peak: 1e-3, warmupSteps: 4)
        XCTAssertEqual(warm(0), 2.5e-4, accuracy: 1e-12)
        XCTAssertEqual(warm(3), 1e-3, accuracy: 1e-12)
        XCTAssertEqual(warm(100), 1e-3, accuracy: 1e-12)
        let cosine = WarmupCosineSchedule(peak: 1.0, warmupSteps: 2, totalSteps: 12, final: 0)
        XCTAssertEqual(cosine(1), 1.0, accuracy: 1e-12)
        XCTAssertEqual(cosine(7), 0.5, accuracy: 1e-12)  // halfway through the decay
        XCTAssertEqual(cosine(12), 0.0, accuracy: 1e-12)
        // Global norm of [3, 4] and [12] is 13; clipping to 1.3 scales by 0.1.
        let (clipped, norm) = clipGradNorm(["a": Tensor([3, 4] as [Float]), "b": Tensor([12] as [Float])], maxNorm: 1.3)
        XCTAssertEqual(try norm.item(Float.self), 13, accuracy: 1e-5)
        assertClose(clipped["a"]!, [0.3, 0.4], atol: 1e-6)
        let (unclipped, _) = clipGradNorm(["a": Tensor([0.3, 0.4] as [Float])], maxNorm: 1)
        assertClose(unclipped["a"]!, [0.3, 0.4], atol: 1e-6)
    }

    func testTinyMLPLearnsRegression() throws {
        Initializer.seed(1)
        final class MLP: Module {
            let layers = [Linear(2, 32), Linear(32, 1)]
            func callAsFunction(_ x: Tensor) -> Tensor { layers[1](NN.silu(layers[0](x))) }
        }
        let model = MLP()
        let x = tensor([256, 2], seed: 21, scale: 2)
        let y = (x.slice(axis: 1, 0, 1).sin() + x.slice(axis: 1, 1, 2) * 0.5)
        let opt = AdamW(learningRate: 1e-2, weightDecay: 0)
        var losses: [Float] = []
        for _ in 0..<300 {
            let (values, grads) = try Autograd.valueAndGrad(model: model) { [NN.mseLoss(model(x), y)] }
            losses.append(try values[0].item(Float.self))
            try opt.apply(gradients: clipGradNorm(grads, maxNorm: 1).grads, to: model)
        }
        XCTAssertLessThan(losses.last! / losses.first!, 0.05, "loss \(losses.first!) -> \(losses.last!)")
    }

    func testFrozenParametersStayBitIdentical() throws {
        let model = Block()
        model.freeze(prefixes: ["mlp.0"])
        let before = try model.mlp[0].weight.values(Float.self)
        let trainedBefore = try model.mlp[1].weight.values(Float.self)
        let x = tensor([4, 3], seed: 2)
        let opt = AdamW(learningRate: 0.1)
        let (_, grads) = try Autograd.valueAndGrad(model: model) { [(model.mlp[1](model.mlp[0](model.attention(x)))).square().sum()] }
        XCTAssertNil(grads["mlp.0.weight"])
        try opt.apply(gradients: grads, to: model)
        XCTAssertEqual(try model.mlp[0].weight.values(Float.self), before)
        XCTAssertNotEqual(try model.mlp[1].weight.values(Float.self), trainedBefore)
    }
}
