import Foundation
import JanusFlow
import JanusFlowTraining
import MLXEngine
import XCTest

/// A tiny JanusFlow whose generation grid (4x4 from 8x8 latents) equals the SigLIP grid (16 px / patch 4), so REPA applies.
func tinyConfig() -> JanusFlowConfig {
    JanusFlowConfig(
        language: LanguageConfig(hiddenSize: 32, intermediateSize: 64, numAttentionHeads: 4, numHiddenLayers: 3, vocabSize: 40),
        siglip: SigLIPConfig(imageSize: 16, patchSize: 4, width: 16, layers: 1, heads: 2),
        genEncoder: UViTEncoderConfig(channels: 16, layersInMiddle: 1, hiddenSize: 32),
        genDecoder: UViTDecoderConfig(inChannels: 16, channels: 16, layersInMiddle: 1, hiddenSize: 32))
}

let bos = 1, pad = 0, imageTag = 2, placeholder = 3, endImage = 4, eos = 5

/// Synthetic data: understanding = "image block, question -> answer" where the answer depends on the image;
/// generation = latents tied to the caption; text = a fixed grammar.
func tinyData(seed: UInt64, count: Int = 12) -> TrainingData {
    var rng = SplitMix64(seed: seed)
    var und: [UnderstandingExample] = [], gen: [GenerationExample] = [], txt: [TextExample] = []
    for i in 0..<count {
        let cls = i % 3
        let pixels = Tensor.full([3, 16, 16], value: Double(cls) - 1) + tensorNoise([3, 16, 16], &rng, 0.1)
        let ids = [bos, 10, 11, imageTag] + Array(repeating: placeholder, count: 16) + [endImage, 12, 13, 20 + cls, eos]
        let labels = ids.indices.map { $0 >= ids.count - 2 }
        let seq = ids.map { $0 == imageTag || $0 == placeholder }
        und.append(UnderstandingExample(ids: ids, labelMask: labels, imageSeqMask: seq, pixels: pixels))
        let latent = Tensor.full([4, 8, 8], value: Double(cls) * 0.8 - 0.8) + tensorNoise([4, 8, 8], &rng, 0.05)
        let prompt = [bos, 14, 30 + cls, 15, imageTag]
        gen.append(GenerationExample(promptIDs: prompt, latent: latent, repaTarget: tensorNoise([16, 16], &rng, 1) + Double(cls)))
        txt.append(TextExample(ids: [bos, 16, 17, 30 + cls, 18, 30 + cls, eos]))
    }
    return TrainingData(understanding: und, generation: gen, text: txt, padID: pad)
}

func tensorNoise(_ shape: [Int], _ rng: inout SplitMix64, _ scale: Double) -> Tensor {
    let n = shape.reduce(1, *)
    return Tensor((0..<n).map { _ in Float(Double(rng.next() >> 11) / Double(1 << 53) * 2 - 1) * Float(scale) }, shape: shape)
}

func stage(_ name: String, steps: Int, lr: Double = 3e-3, ratio: [Double] = [1, 1, 1], trainable: [String]? = nil,
           frozen: [String] = [], batch: Int = 6, accum: Int = 1) -> StageConfig {
    StageConfig(name: name, steps: steps, learningRate: lr, warmupSteps: 2, batchSize: batch, gradientAccumulation: accum,
                ratio: ratio, trainable: trainable, frozen: frozen)
}

func makeTrainer(stages: [StageConfig], output: URL, seed: UInt64 = 3, repaLayer: Int? = 2) throws -> Trainer {
    Initializer.seed(11)
    let modules = TrainingModules(model: JanusFlowModel(tinyConfig()), repaHidden: 24)
    try modules.evalParameters()
    let config = TrainingConfig(model: "", data: .init(), output: output.path, seed: seed, repaLayer: repaLayer, repaHidden: 24,
                                checkpointEvery: 0, logEvery: 1, stages: stages)
    return try Trainer(config: config, modules: modules, data: tinyData(seed: 5), outputDirectory: output)
}

final class ObjectiveTests: XCTestCase {
    func testNextTokenLossOnUniformLogitsIsLogV() throws {
        // Uniform logits over V = 7: -log(1/7) at every counted position, whatever the targets.
        let logits = Tensor.zeros([2, 5, 7])
        let ids = Tensor([1, 2, 3, 4, 5, 1, 2, 3, 4, 5] as [Int32], shape: [2, 5])
        let mask = Tensor([0, 0, 1, 1, 0, 0, 1, 0, 0, 0] as [Int32], shape: [2, 5])
        XCTAssertEqual(try Objectives.nextTokenLoss(logits: logits, ids: ids, labelMask: mask).item(Float.self), Float(Foundation.log(7.0)), accuracy: 1e-6)
        // A peaked logit on the right target of the only counted position: loss = -log(e^5/(e^5+6)).
        var peaked = [Float](repeating: 0, count: 2 * 5 * 7)
        peaked[(0 * 5 + 2) * 7 + 4] = 5  // row 0, position 2 predicts token 4 (ids[0][3])
        let m2 = Tensor([0, 0, 0, 1, 0, 0, 0, 0, 0, 0] as [Int32], shape: [2, 5])
        let expected = -Foundation.log(Foundation.exp(5.0) / (Foundation.exp(5.0) + 6))
        XCTAssertEqual(try Objectives.nextTokenLoss(logits: Tensor(peaked, shape: [2, 5, 7]), ids: ids, labelMask: m2).item(Float.self), Float(expected), accuracy: 1e-5)
    }

    func testRepaLossIsMinusMeanCosine() throws {
        let a = Tensor([1, 0, 0, 2] as [Float], shape: [1, 2, 2])
        XCTAssertEqual(try Objectives.repaLoss(projected: a, target: a * 3).item(Float.self), -1, accuracy: 1e-6)
        let b = Tensor([0, 5, 1, 0] as [Float], shape: [1, 2, 2])  // orthogonal token by token
        XCTAssertEqual(try Objectives.repaLoss(projected: a, target: b).item(Float.self), 0, accuracy: 1e-6)
        let c = Tensor([1, 1, 0, 2] as [Float], shape: [1, 2, 2])  // cos 45 deg and 1 -> mean (0.7071 + 1) / 2
        XCTAssertEqual(try Objectives.repaLoss(projected: c, target: a).item(Float.self), -(0.70710678 + 1) / 2, accuracy: 1e-6)
    }

    func testFlowSampleInterpolatesFromNoiseToData() throws {
        let x = Tensor.full([512, 4, 2, 2], value: 3)
        let s = Objectives.flowSample(latents: x, key: RandomKey(seed: 9))
        let z0 = x - s.target
        let t = s.t.reshaped([512, 1, 1, 1])
        XCTAssertLessThan(try (s.zt - (t * x + (1 - t) * z0)).abs().max().item(Float.self), 1e-5)
        // t = sigmoid(N(0, 1)): in (0, 1), median 0.5, E[t] = 0.5 by symmetry.
        let ts = try s.t.values(Float.self)
        XCTAssertTrue(ts.allSatisfy { $0 > 0 && $0 < 1 })
        XCTAssertEqual(ts.reduce(0, +) / Float(ts.count), 0.5, accuracy: 0.03)
        let noise = try z0.values(Float.self)
        XCTAssertEqual(noise.reduce(0, +) / Float(noise.count), 0, accuracy: 0.05)
        // A shifted logit-normal: the same draws u give t = sigmoid(u * std + mean), so more time near noise.
        let shifted = try Objectives.flowSample(latents: x, key: RandomKey(seed: 9), logitMean: -1, logitStd: 0.5).t.values(Float.self)
        for (a, b) in zip(ts, shifted) {
            let u = log(a / (1 - a))
            XCTAssertEqual(b, 1 / (1 + exp(-(u * 0.5 - 1))), accuracy: 1e-5)
        }
    }

    func testDroppedPromptsLookLikeTheUnconditionalInferenceRow() throws {
        let ex = GenerationExample(promptIDs: [bos, 14, 31, 15, imageTag], latent: Tensor.zeros([4, 8, 8]), repaTarget: nil)
        let short = GenerationExample(promptIDs: [bos, 14, imageTag], latent: Tensor.zeros([4, 8, 8]), repaTarget: nil)
        let batch = Collate.generation([ex, ex, short], dropped: [false, true, false], padID: pad, imageTokens: 2)
        XCTAssertEqual(try batch.promptIDs.values(Int32.self), [1, 14, 31, 15, 2, 1, 0, 0, 0, 0, 0, 0, 1, 14, 2])
        // Keys: L-1 = 4 prompt slots, then t_emb and 2 image tokens.
        XCTAssertEqual(try batch.keyMask.values(Int32.self), [1, 1, 1, 1, 1, 1, 1,
                                                               1, 0, 0, 0, 1, 1, 1,
                                                               0, 0, 1, 1, 1, 1, 1])
        // The same mask as the sampler's unconditional row for this prompt.
        let guidance = GuidanceBatch(promptIDs: ex.promptIDs, padID: pad)
        XCTAssertEqual(try guidance.keyMask(images: 1, imageTokens: 2).slice(axis: 0, 1, 2).values(Int32.self), [1, 0, 0, 0, 1, 1, 1])
    }

    func testCFGDropRateIsTenPercent() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)")
        let trainer = try makeTrainer(stages: [stage("s", steps: 1)], output: dir)
        var drops = 0, total = 0
        for s in 0..<4000 {
            var rng = trainer.random(forStep: s, micro: 0)
            for _ in 0..<5 {
                total += 1
                if Double(rng.next() >> 11) / Double(1 << 53) < trainer.config.cfgDropProbability { drops += 1 }
            }
        }
        XCTAssertEqual(Double(drops) / Double(total), 0.1, accuracy: 0.01)
    }

    /// Autograd of the whole mixed-task loss against central finite differences, one parameter per component.
    func testFullLossGradientsMatchFiniteDifferences() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fd-\(UUID().uuidString)")
        let trainer = try makeTrainer(stages: [stage("s", steps: 1)], output: dir)
        let modules = trainer.modules
        let data = trainer.data
        let u = Collate.understanding(Array(data.understanding.prefix(2)), padID: pad)
        let g = Collate.generation(Array(data.generation.prefix(3)), dropped: [false, true, false], padID: pad, imageTokens: 16)
        let t = Collate.text(Array(data.text.prefix(2)), padID: pad)
        let key = RandomKey(seed: 4)
        func loss() -> Tensor {
            let (rf, repa) = Objectives.generationLoss(modules, g, key: key, repaLayer: 2)
            return Objectives.understandingLoss(modules.model, u) + rf + repa! + Objectives.textLoss(modules.model, t)
        }
        let probes = ["model.language_model.model.layers.0.mlp.up_proj.weight", "model.language_model.lm_head.weight",
                      "model.vision_und_enc_model.vision_tower.blocks.0.attn.qkv.weight", "model.vision_und_enc_aligner.weight",
                      "model.beg_of_und_embed", "model.vision_gen_enc_model.mid_block.res_blocks.0.depthwise.weight",
                      "model.vision_gen_enc_model.time_embed.linear_1.weight", "model.vision_gen_enc_aligner.weight",
                      "model.vision_gen_dec_aligner.weight", "model.vision_gen_dec_model.out_convs.0.unpatch_conv.weight",
                      "model.vision_gen_dec_model.mid_block.res_blocks.0.channelwise_norm.weight", "repa_projector.layers.0.weight"]
        let slots = Dictionary(modules.parameterSlots(), uniquingKeysWith: { a, _ in a })
        var rng = SplitMix64(seed: 77)
        // Parameters initialised at exactly zero sit where RMSNorm/GRN are least smooth; move them off it.
        for name in ["model.beg_of_und_embed", "model.vision_gen_dec_model.mid_block.res_blocks.0.channelwise_norm.weight"] {
            slots[name]!.tensor = tensorNoise(slots[name]!.tensor!.shape, &rng, 0.5)
        }
        let (_, grads) = try Autograd.valueAndGrad(model: modules, parameters: probes) { [loss()] }
        for name in probes {
            let original = slots[name]!.tensor!
            let direction = tensorNoise(original.shape, &rng, 1)
            let analytic = try (grads[name]! * direction).sum().item(Float.self)
            let eps = 1e-2
            slots[name]!.tensor = original + direction * eps
            let plus = try loss().item(Float.self)
            slots[name]!.tensor = original - direction * eps
            let minus = try loss().item(Float.self)
            slots[name]!.tensor = original
            let numeric = (plus - minus) / Float(2 * eps)
            let scale = Swift.max(Swift.abs(numeric), Swift.abs(analytic), 1e-3)
            XCTAssertLessThan(Swift.abs(numeric - analytic) / scale, 3e-2, "\(name): autograd \(analytic) vs finite differences \(numeric)")
        }
    }
}

final class TrainerTests: XCTestCase {
    var dir: URL!
    override func setUp() { dir = FileManager.default.temporaryDirectory.appendingPathComponent("trainer-\(UUID().uuidString)") }
    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    func testStagesFreezeTheRightParametersAndUseTheirLR() throws {
        let newParts = ["vision_und_enc_aligner", "beg_of_und_embed", "vision_gen_enc_model", "vision_gen_enc_aligner",
                        "vision_gen_dec_aligner_norm", "vision_gen_dec_aligner", "vision_gen_dec_model", "repa_projector"]
        let trainer = try makeTrainer(stages: [stage("adapt", steps: 2, lr: 1e-3, trainable: newParts),
                                               stage("pretrain", steps: 2, lr: 5e-4, frozen: ["vision_und_enc_model"]),
                                               stage("sft", steps: 1, lr: 2e-4)], output: dir)
        let before = trainer.modules.parameters().mapValues { try! $0.values(Float.self) }
        try trainer.run(until: 2)
        let trainable1 = Set(trainer.modules.trainableParameters().keys)
        XCTAssertFalse(trainable1.contains { $0.hasPrefix("model.language_model") || $0.hasPrefix("model.vision_und_enc_model") })
        XCTAssertTrue(trainable1.contains("repa_projector.layers.0.weight"))
        XCTAssertTrue(trainable1.contains("model.vision_gen_dec_model.input_norm.weight"))
        let after = trainer.modules.parameters()
        for (name, values) in before where !trainable1.contains(name) {
            XCTAssertEqual(try after[name]!.values(Float.self), values, "\(name) is frozen in stage 1 but changed")
        }
        XCTAssertNotEqual(try after["model.vision_gen_enc_aligner.weight"]!.values(Float.self), before["model.vision_gen_enc_aligner.weight"])
        // Warm-up of 2 steps: step 0 uses lr/2, step 1 the peak.
        XCTAssertEqual(trainer.history[0]["lr"]!, 5e-4, accuracy: 1e-12)
        XCTAssertEqual(trainer.history[1]["lr"]!, 1e-3, accuracy: 1e-12)
        try trainer.run(until: 4)
        let trainable2 = Set(trainer.modules.trainableParameters().keys)
        XCTAssertTrue(trainable2.contains("model.language_model.model.embed_tokens.weight"))
        XCTAssertFalse(trainable2.contains { $0.hasPrefix("model.vision_und_enc_model") })
        XCTAssertEqual(trainer.history[3]["lr"]!, 5e-4, accuracy: 1e-12)
        try trainer.run()
        XCTAssertTrue(trainer.modules.trainableParameters().keys.contains { $0.hasPrefix("model.vision_und_enc_model") })
        XCTAssertEqual(trainer.history[4]["lr"]!, 1e-4, accuracy: 1e-12)
    }

    func testResumeEqualsUninterruptedRun() throws {
        let stages = [stage("a", steps: 3, ratio: [1, 2, 1]), stage("b", steps: 3, ratio: [1, 1, 0], accum: 2)]
        let full = try makeTrainer(stages: stages, output: dir.appendingPathComponent("full"))
        try full.run()
        let first = try makeTrainer(stages: stages, output: dir.appendingPathComponent("split"))
        try first.run(until: 4)
        try first.saveCheckpoint()
        let second = try makeTrainer(stages: stages, output: dir.appendingPathComponent("split"))
        XCTAssertTrue(try second.resume())
        XCTAssertEqual(second.step, 4)
        try second.run()
        let a = full.modules.parameters(), b = second.modules.parameters()
        XCTAssertEqual(Set(a.keys), Set(b.keys))
        for (name, t) in a { XCTAssertEqual(try t.values(Float.self), try b[name]!.values(Float.self), name) }
        for (name, t) in full.ema!.shadow { XCTAssertEqual(try t.values(Float.self), try second.ema!.shadow[name]!.values(Float.self), "ema \(name)") }
        // The checkpoint's model folder loads in the inference model without conversion.
        let loaded = try JanusFlowModel.load(directory: dir.appendingPathComponent("split/checkpoints/step-00000004"))
        XCTAssertEqual(loaded.parameters().count, first.modules.model.parameters().count)
        let latest = try String(contentsOf: dir.appendingPathComponent("split/checkpoints/latest"), encoding: .utf8)
        XCTAssertEqual(latest, "step-00000004")
    }

    func testDivergedStepStopsWithAClearErrorAndKeepsTheWeights() throws {
        Initializer.seed(11)
        let modules = TrainingModules(model: JanusFlowModel(tinyConfig()), repaHidden: 24)
        try modules.evalParameters()
        var data = tinyData(seed: 5)
        for i in data.generation.indices { data.generation[i].latent = data.generation[i].latent * Double.nan }
        let config = TrainingConfig(model: "", data: .init(), output: dir.path, seed: 3, repaLayer: nil, repaHidden: 24,
                                    checkpointEvery: 0, logEvery: 1, stages: [stage("gen", steps: 3, ratio: [0, 1, 0])])
        let trainer = try Trainer(config: config, modules: modules, data: data, outputDirectory: dir)
        let before = try modules.parameters().mapValues { try $0.values(Float.self) }
        XCTAssertThrowsError(try trainer.run()) { error in
            XCTAssertTrue("\(error)".hasPrefix("step 1 (stage 'gen'): the rf loss is nan; training diverged."), "\(error)")
        }
        XCTAssertEqual(trainer.step, 0)
        for (name, t) in modules.parameters() { XCTAssertEqual(try t.values(Float.self), before[name]!, name) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("metrics.jsonl").path))
    }

    func testShortRunLowersEveryLoss() throws {
        let trainer = try makeTrainer(stages: [stage("all", steps: 60, lr: 2e-3, ratio: [1, 1, 1], batch: 12)], output: dir)
        try trainer.run()
        func mean(_ key: String, _ rows: ArraySlice<[String: Double]>) -> Double {
            let v = rows.compactMap { $0[key] }
            return v.reduce(0, +) / Double(v.count)
        }
        for key in ["understanding", "rf", "repa", "text"] {
            let early = mean(key, trainer.history.prefix(5)), late = mean(key, trainer.history.suffix(5))
            if key == "repa" {
                XCTAssertLessThan(late, early - 0.1, "\(key): \(early) -> \(late)")
            } else {
                XCTAssertLessThan(late / early, 0.7, "\(key): \(early) -> \(late)")
            }
        }
        let lines = try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 60)
    }

    func testConfigErrorsNameTheField() throws {
        let json = #"{"model": "m", "data": {}, "output": "o", "stages": [{"name": "s", "steps": 5, "lr": 0.1, "batch_size": 6, "grad_accum": 4, "ratio": [1, 1, 0]}]}"#
        XCTAssertThrowsError(try decodeConfig(TrainingConfig.self, from: json.data(using: .utf8)!, name: "train.json")) {
            XCTAssertEqual("\($0)", "train.json: field 'stages.0.grad_accum': must divide batch_size 6")
        }
        let missing = #"{"model": "m", "data": {}, "output": "o", "stages": [{"name": "s", "lr": 0.1, "batch_size": 6, "ratio": [1, 1, 0]}]}"#
        XCTAssertThrowsError(try decodeConfig(TrainingConfig.self, from: missing.data(using: .utf8)!, name: "train.json")) {
            XCTAssertEqual("\($0)", "train.json: missing field 'stages.0.steps'")
        }
        let badTime = #"{"model": "m", "data": {}, "output": "o", "flow_time_logit_std": 0, "stages": [{"name": "s", "steps": 5, "lr": 0.1, "batch_size": 6, "ratio": [1, 1, 0]}]}"#
        XCTAssertThrowsError(try decodeConfig(TrainingConfig.self, from: badTime.data(using: .utf8)!, name: "train.json")) {
            XCTAssertEqual("\($0)", "train.json: field 'flow_time_logit_std': must be > 0")
        }
        // Found reading the code for the documentation pass: these trapped at the first step instead.
        let noLogging = #"{"model": "m", "data": {}, "output": "o", "log_every": 0, "stages": [{"name": "s", "steps": 5, "lr": 0.1, "batch_size": 6, "ratio": [1, 1, 0]}]}"#
        XCTAssertThrowsError(try decodeConfig(TrainingConfig.self, from: noLogging.data(using: .utf8)!, name: "train.json")) {
            XCTAssertEqual("\($0)", "train.json: field 'log_every': must be at least 1 (got 0)")
        }
        let shortPhase = #"{"model": "m", "data": {}, "output": "o", "stages": [{"name": "s", "steps": 5, "lr": 0.1, "batch_size": 6, "ratio": [1, 1, 0], "ratio_schedule": [{"until_step": 2, "ratio": [1, 1]}]}]}"#
        XCTAssertThrowsError(try decodeConfig(TrainingConfig.self, from: shortPhase.data(using: .utf8)!, name: "train.json")) {
            XCTAssertEqual("\($0)", "train.json: field 'stages.0.ratio_schedule': phase 1: ratio must be three non-negative numbers with a positive sum (got [1.0, 1.0])")
        }
        XCTAssertThrowsError(try makeTrainer(stages: [stage("s", steps: 1)], output: dir, repaLayer: 9)) {
            XCTAssertEqual("\($0)", "repa_layer 9 is outside the LLM's 1...3 blocks")
        }
    }
}

final class PaddingTests: XCTestCase {
    /// Left-padded prompts leave padding queries with every key hidden; that must not turn into NaN.
    func testLeftPaddedGenerationBatchesStayFinite() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pad-\(UUID().uuidString)")
        let trainer = try makeTrainer(stages: [stage("s", steps: 1)], output: dir)
        let long = GenerationExample(promptIDs: [bos, 14, 31, 15, 16, 17, imageTag], latent: Tensor.zeros([4, 8, 8]), repaTarget: Tensor.zeros([16, 16]) + 1)
        let short = GenerationExample(promptIDs: [bos, 14, imageTag], latent: Tensor.zeros([4, 8, 8]), repaTarget: Tensor.zeros([16, 16]) + 1)
        let batch = Collate.generation([long, short], dropped: [false, false], padID: pad, imageTokens: 16)
        let (rf, repa) = Objectives.generationLoss(trainer.modules, batch, key: RandomKey(seed: 1), repaLayer: 2)
        let (_, grads) = try Autograd.valueAndGrad(model: trainer.modules) { [rf + repa!] }
        XCTAssertTrue(try rf.item(Float.self).isFinite)
        for (name, g) in grads { XCTAssertFalse(try g.isNaN().any().item(Bool.self), name) }
    }
}

final class RecipeConfigTests: XCTestCase {
    /// The shipped paper config decodes to Table 1.
    func testPaperConfigMatchesTable1() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("configs/janusflow-paper.json")
        let config = try TrainingConfig.load(url)
        XCTAssertEqual(config.stages, TrainingConfig.paperStages())
        XCTAssertEqual(config.stages.map(\.steps), [10_000, 390_000, 26_000])
        XCTAssertEqual(config.stages[1].ratio(atStep: 9_999), [30, 50, 20])
        XCTAssertEqual(config.stages[1].ratio(atStep: 10_000), [14, 80, 6])
        XCTAssertEqual(config.emaDecay, 0.99)
        XCTAssertEqual(config.cfgDropProbability, 0.1)
        XCTAssertEqual(config.repaLayer, 6)
    }
}

final class PackingTests: XCTestCase {
    /// Packing changes the layout, not the loss: attention stays inside each sample and positions restart.
    func testPackedLossesEqualPaddedLosses() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pack-\(UUID().uuidString)")
        let trainer = try makeTrainer(stages: [stage("s", steps: 1)], output: dir)
        let model = trainer.modules.model
        var und = Array(trainer.data.understanding.prefix(4))
        und[1].ids.removeLast(3)  // different lengths
        und[1].labelMask.removeLast(3)
        und[1].imageSeqMask.removeLast(3)
        let padded = Collate.understanding(und, padID: pad)
        let packed = Collate.packedUnderstanding(und, padID: pad, rowLength: 60)
        XCTAssertEqual(packed.ids.dim(0), 2)  // two samples of ~25 tokens per 60-token row
        XCTAssertEqual(try Objectives.understandingLoss(model, packed).item(Float.self),
                       try Objectives.understandingLoss(model, padded).item(Float.self), accuracy: 1e-5)
        let text = [TextExample(ids: [bos, 16, 17, 18, eos]), TextExample(ids: [bos, 30, eos]), TextExample(ids: [bos, 31, 32, 33, 34, 35, eos])]
        let pt = Collate.packedText(text, padID: pad, rowLength: 9)
        XCTAssertEqual(pt.ids.dim(0), 2)
        XCTAssertEqual(try Objectives.textLoss(model, pt).item(Float.self), try Objectives.textLoss(model, Collate.text(text, padID: pad)).item(Float.self), accuracy: 1e-5)
        // A short run with packing on trains.
        var config = trainer.config
        config.packTo = 64
        let packedTrainer = try Trainer(config: config, modules: trainer.modules, data: trainer.data, outputDirectory: dir)
        try packedTrainer.run()
        XCTAssertTrue(packedTrainer.history[0]["understanding"]!.isFinite)
    }

    /// Questions about one image sharing their prefix: the same loss as the questions on rows of their own, in the
    /// padded and the packed layout, while the prefix is computed once.
    func testSharedPrefixExampleEqualsSeparateSamples() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("branch-\(UUID().uuidString)")
        let trainer = try makeTrainer(stages: [stage("s", steps: 1)], output: dir)
        let model = trainer.modules.model
        let base = trainer.data.understanding[1]
        let prefix = Array(base.ids.prefix(21))  // BOS, two tokens, the image block, the end-of-image token
        let singles = [(12, [13], [21, 22]), (12, [14, 15, 16], [20]), (17, [], [23, 21, 20])].map { first, rest, answer in
            let ids = prefix + [first] + rest + answer + [eos]
            return UnderstandingExample(ids: ids, labelMask: ids.indices.map { $0 >= ids.count - answer.count - 1 },
                                        imageSeqMask: ids.map { $0 == imageTag || $0 == placeholder }, pixels: base.pixels)
        }
        let shared = try UnderstandingExample.sharingPrefix(singles)
        XCTAssertEqual(shared.ids.count, singles.map(\.ids.count).reduce(0, +) - 2 * 21)
        XCTAssertEqual(shared.branches?.filter { $0 == 0 }.count, 21)
        let separate = try Objectives.understandingLoss(model, Collate.understanding(singles, padID: pad)).item(Float.self)
        XCTAssertEqual(try Objectives.understandingLoss(model, Collate.understanding([shared], padID: pad)).item(Float.self), separate, accuracy: 1e-5)
        // Packed beside an ordinary sample, and padded beside it: both equal the samples one per row.
        let other = trainer.data.understanding[2]
        let all = try Objectives.understandingLoss(model, Collate.understanding(singles + [other], padID: pad)).item(Float.self)
        let packed = Collate.packedUnderstanding([other, shared], padID: pad, rowLength: 100)
        XCTAssertEqual(packed.ids.dim(0), 1)
        XCTAssertEqual(try Objectives.understandingLoss(model, packed).item(Float.self), all, accuracy: 1e-5)
        XCTAssertEqual(try Objectives.understandingLoss(model, Collate.understanding([shared, other], padID: pad)).item(Float.self), all, accuracy: 1e-5)
        // A shared prefix reaching into an answer is refused.
        XCTAssertThrowsError(try UnderstandingExample.sharingPrefix([singles[0], singles[0]])) { error in
            XCTAssertEqual("\(error)", "sharingPrefix: sample 0 differs from the others inside its image block or its answer, or adds nothing after the common prefix")
        }
    }
}
