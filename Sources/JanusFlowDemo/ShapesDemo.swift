import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowTokenizer
import JanusFlowTraining
import MLXEngine
import ShapesWorld

/// How far a demo run is: `step` of `total` in `phase` ("VAE", "SigLIP", "LLM", "JanusFlow stages", "GenEval prompts",
/// "questions"), with a short detail such as the latest loss.
public struct DemoProgress: Sendable {
    /// The phase running now.
    public let phase: String
    /// Steps done in the phase.
    public let step: Int
    /// Steps the phase will take.
    public let total: Int
    /// A short note such as the latest loss; may be empty.
    public let detail: String
}

/// The embedded default: a tiny JanusFlow trained from scratch on ShapesWorld with the real three-stage recipe
/// and all three losses, then scored GenEval-style (generation) and VQA/POPE-style (understanding).
///
/// ```swift
/// var demo = ShapesDemo(settings: .quick, outputDirectory: URL(fileURLWithPath: "demo-out"))
/// demo.progressHandler = { p in print(p.phase, p.step, p.total); return true }   // false cancels
/// let scores = try demo.run()
/// print(scores.generation["overall"]!, scores.understanding["accuracy"]!)
/// ```
///
/// A run writes `model/` and `vae/` (a JanusFlow checkpoint and VAE in the published layout, loadable by
/// `JanusFlowPipeline`), `training/` (the trainer's metrics) and `report/` (grids, answers, loss curves, scores.json).
/// It is a deterministic function of `settings` (seed included).
public struct ShapesDemo {
    /// The settings the run uses, fixed when the demo is created.
    public let settings: Settings
    /// Where the run writes `model/`, `vae/`, `training/` and `report/`.
    public let outputDirectory: URL
    /// Where the run's log lines go (standard output by default).
    public var log: (String) -> Void = { print($0) }
    /// Called as each phase advances; returning false cancels the run, which then throws `CancellationError`.
    public var progressHandler: (DemoProgress) -> Bool = { _ in true }
    /// The three stages' per-step losses of the last run.
    public private(set) var history: [[String: Double]] = []
    /// The processes of a data-parallel run (`janusflow demo --processes N`): every phase's batches are drawn as one
    /// process would draw them and split between the processes in rank order, gradients averaged over them; only
    /// rank 0 writes the output folder and scores the model (the others return empty scores).
    public var processGroup: ProcessGroup = .single

    /// Prepares a run; nothing happens until `run()`.
    public init(settings: Settings = Settings(), outputDirectory: URL) {
        self.settings = settings
        self.outputDirectory = outputDirectory
    }

    /// Reports progress; throws `CancellationError` when the handler asks to stop.
    func reportProgress(_ phase: String, _ step: Int, of total: Int, _ detail: String = "") throws {
        guard progressHandler(DemoProgress(phase: phase, step: step, total: total, detail: detail)) else { throw CancellationError() }
    }

    /// The tiny VAE the demo pretrains: three blocks of 16, 32 and 32 channels, so a latent is a quarter of the
    /// image's side (8x8 for 32-pixel images).
    public static func vaeConfig(imageSize: Int) -> VAEConfig {
        VAEConfig(blockOutChannels: [16, 32, 32], layersPerBlock: 1, normNumGroups: 8, latentChannels: 4, scalingFactor: 1,
                  sampleSize: imageSize)
    }

    /// The VAE's pretraining loss: reconstruction of a sampled latent plus a small KL term. `x` may be one process's
    /// share (`share.rank` of `share.of` equal parts) of a batch: its noise is then that share of the whole batch's.
    public static func vaeLoss(_ vae: AutoencoderKL, _ x: Tensor, noiseKey: RandomKey, share: (rank: Int, of: Int) = (0, 1)) -> Tensor {
        let (mean, logvar) = vae.encode(x)
        let rows = mean.shape[0]
        let noise = share.of == 1 ? Random.normal(mean.shape, key: noiseKey)
            : Random.normal([rows * share.of] + mean.shape.dropFirst(), key: noiseKey).slice(axis: 0, share.rank * rows, (share.rank + 1) * rows)
        let z = mean + (logvar * 0.5).exp() * noise
        let kl = ((mean.square() + logvar.exp() - logvar - 1) * 0.5).mean()
        return NN.mseLoss(vae.decode(z), x) + kl * 1e-4
    }

    /// The tiny model: a 4-layer, 128-wide language model, a 2-layer SigLIP with 2x2 patches per grid cell (4x4 for
    /// the standard world's 2x2 grid, 6x6 for the extended world's 3x3) and small UViT encoder and decoder.
    public static func modelConfig(vocabularySize: Int, imageSize: Int, gridSize: Int = 2) -> JanusFlowConfig {
        let patch = imageSize / (2 * gridSize)
        return JanusFlowConfig(
            language: LanguageConfig(hiddenSize: 128, intermediateSize: 352, numAttentionHeads: 4, numHiddenLayers: 4,
                                     vocabSize: vocabularySize),
            siglip: SigLIPConfig(modelName: "siglip_shapes_patch\(patch)_\(imageSize)", imageSize: imageSize, patchSize: patch, width: 64,
                                 layers: 2, heads: 4),
            genEncoder: UViTEncoderConfig(channels: 64, layersInMiddle: 2, hiddenSize: 128),
            genDecoder: UViTDecoderConfig(inChannels: 64, channels: 64, layersInMiddle: 2, hiddenSize: 128))
    }

    static func toRGB(_ s: ShapeImage) -> RGBImage { RGBImage(width: s.width, height: s.height, pixels: s.pixels) }
    static func toShape(_ r: RGBImage) -> ShapeImage { ShapeImage(width: r.width, height: r.height, pixels: r.pixels) }

    func pixels(_ scene: Scene) -> [Float] {
        ImagePreprocessor(size: settings.imageSize).pixelValues(Self.toRGB(scene.render(size: settings.imageSize)))
    }

    /// A small training loop for the pretraining phases (`loss` on this process's share of the step's batch).
    func fit(_ name: String, module: Module, steps: Int, lr: Double, loss: @escaping (Int) -> Tensor) throws -> [Double] {
        let opt = AdamW(schedule: WarmupCosineSchedule(peak: lr, warmupSteps: Swift.min(50, steps / 10), totalSteps: steps, final: lr * 0.1),
                        beta1: 0.9, beta2: 0.95, weightDecay: 0)
        var losses: [Double] = []
        for step in 0..<steps {
            var (values, grads) = try Autograd.valueAndGrad(model: module) { [loss(step)] }
            if processGroup.size > 1 {
                // Equal shares: the mean of their mean losses is the whole batch's, and so are its gradients.
                let scale = 1.0 / Double(processGroup.size)
                grads = processGroup.allSum(grads).mapValues { $0 * scale }
                values = [processGroup.allSum(values[0]) * scale]
            }
            try opt.apply(gradients: grads, gradientScale: gradientClipping(grads, maxNorm: 1).scale, to: module)
            losses.append(Double(try values[0].item(Float.self)))
            try reportProgress(name, step + 1, of: steps, String(format: "loss %.4f", losses.last!))
        }
        return losses
    }

    /// Trains and scores; returns what `report/scores.json` holds.
    public mutating func run() throws -> DemoScores { try run(evaluateOnly: false) }

    /// Re-scores the `model/` and `vae/` an earlier run left in `outputDirectory` with these settings (another cfg or
    /// number of sampling steps, say) into `rescored/`, training nothing.
    public mutating func evaluateOnly() throws -> DemoScores { try run(evaluateOnly: true) }

    mutating func run(evaluateOnly: Bool) throws -> DemoScores {
        let out = outputDirectory
        let s = settings
        try s.validate()  // settings made in Swift get the checks a settings file gets
        let fm = FileManager.default
        let group = processGroup, writes = processGroup.isWriter
        if group.size > 1 {
            if evaluateOnly { throw ShapesDemoError("re-scoring runs in one process (got \(group.size))") }
            for (name, batch) in [("batchSize", s.batchSize), ("the VAE's batch", 16)] where batch % group.size != 0 {
                throw ShapesDemoError("\(name) \(batch) does not split into \(group.size) processes")
            }
        }
        // This process's share of a batch drawn for all the processes: a contiguous slice in rank order.
        func share<T>(_ batch: [T]) -> [T] {
            let n = batch.count / group.size
            return Array(batch[(group.rank * n)..<((group.rank + 1) * n)])
        }
        try fm.createDirectory(at: out, withIntermediateDirectories: true)
        Initializer.seed(s.seed)
        let worldConfig = s.worldConfig
        var world = WorldGenerator(seed: s.seed &+ 1, config: worldConfig)

        let clock = PhaseClock()
        clock.mark("world and tokenizer")
        // 1. The world: training scenes with captions, questions and text; held-out prompts and questions.
        log("== ShapesWorld, \(s.world.rawValue) (seed \(s.seed)): \(worldConfig.shapes.count) shapes, \(worldConfig.colors.count) colours, "
            + "\(worldConfig.sizes.count) sizes, 1-\(worldConfig.maxObjects) objects in a \(worldConfig.gridSize)x\(worldConfig.gridSize) grid, \(s.imageSize) px"
            + (group.size > 1 ? "; \(group.size) processes, each a 1/\(group.size) share of every batch" : ""))
        let mixCycle = zip(GenEvalCategory.allCases, s.captionMix).flatMap { Array(repeating: $0, count: $1) }
        var genSamples = (0..<s.trainScenes).map { i in world.generationSample(category: mixCycle[i % mixCycle.count]) }
        if s.positionTwins {
            genSamples = genSamples.flatMap { sample in [sample] + (WorldGenerator.positionTwin(of: sample).map { [$0] } ?? []) }
        }
        // Placed captions from a stream of their own (the rest of the world is the same with or without them),
        // spread evenly among the others.
        var placedWorld = WorldGenerator(seed: s.seed &+ 31337, config: worldConfig)
        for i in 0..<s.placedCaptions {
            genSamples.insert(placedWorld.placedSample(), at: Swift.min(genSamples.count, (i * s.trainScenes) / Swift.max(1, s.placedCaptions) + i))
        }
        // Each training image comes with several different questions (every answer a target): independent
        // shared-prefix samples by default, or one multi-turn conversation; held-out questions stay single-turn.
        // A question-type cycle drawn from when the mix is set (otherwise the generator's uniform choice).
        let typeCycle = s.questionMix.isEmpty ? [] : world.questionTypes.flatMap { Array(repeating: $0, count: s.questionMix[$0.rawValue] ?? 1) }
        var typeRandom = WorldRandom(seed: s.seed &+ 4242)
        let conversations = (0..<s.trainQuestions).map { _ in
            let scene = world.scene()
            var turns: [QuestionSample] = []
            for _ in 0..<(s.questionsPerImage * 4) where turns.count < s.questionsPerImage {
                let q = typeCycle.isEmpty ? world.question(about: scene) : world.question(about: scene, type: typeRandom.pick(typeCycle))
                if !turns.contains(where: { $0.question == q.question }) { turns.append(q) }
            }
            // In the order drawn: every type also comes first, as held-out questions do (putting descriptions last
            // measured worse: 0.54 against 0.73-0.79).
            return turns
        }
        let texts = (0..<s.trainTexts).map { _ in world.text() }
        var heldOut = WorldGenerator(seed: s.seed &+ 999_983, config: worldConfig)
        let heldPrompts = GenEvalCategory.allCases.flatMap { c in (0..<s.evalPromptsPerCategory).map { _ in heldOut.generationSample(category: c) } }
        let heldQuestions = (0..<s.evalQuestions).map { _ in heldOut.question(about: heldOut.scene()) }

        if evaluateOnly {
            // Re-score the model and VAE an earlier run left in `out` (e.g. with other sampling settings).
            let (generation, understanding, _) = try evaluate(modelDirectory: out.appendingPathComponent("model"), vaeDirectory: out.appendingPathComponent("vae"),
                                                           prompts: heldPrompts, questions: heldQuestions, world: worldConfig,
                                                           report: out.appendingPathComponent("rescored"))
            let scores: [String: Any] = ["generation": generation, "understanding": understanding,
                                         "settings": ["cfg": s.cfg, "sample_steps": s.sampleSteps, "seed": s.seed]]
            try JSONSerialization.data(withJSONObject: scores, options: [.prettyPrinted, .sortedKeys])
                .write(to: out.appendingPathComponent("rescored/scores.json"), options: .atomic)
            logScores(generation, understanding)
            return DemoScores(json: scores)
        }

        // 2. Tokenizer: byte-level BPE learned on the corpus and the chat templates.
        // (A few thousand lines of each kind cover the grammar; more only slows BPE training.)
        let corpus = texts.prefix(3000) + conversations.prefix(3000).map { ChatTemplate.render([.user($0[0].question), .assistant($0[0].answer)]) }
            + genSamples.prefix(3000).map { ChatTemplate.generationPrompt($0.prompt) }
        let modelDir = out.appendingPathComponent("model"), vaeDir = out.appendingPathComponent("vae")
        try fm.createDirectory(at: modelDir, withIntermediateDirectories: true)
        let tokenizerJSON = try BPETrainer.train(texts: corpus, merges: s.merges)
        if writes { try tokenizerJSON.write(to: modelDir.appendingPathComponent("tokenizer.json"), options: .atomic) }
        let tokenizer = try Tokenizer(json: tokenizerJSON, name: "tokenizer.json")
        log("tokenizer: \(tokenizer.vocabularySize) tokens")

        // 3. The tiny VAE (AutoencoderKL structure), trained to reconstruct ShapesWorld images.
        let vaeConfig = Self.vaeConfig(imageSize: s.imageSize)
        let vae = AutoencoderKL(config: vaeConfig)
        // Pretraining images: an even mix of caption scenes and question scenes.
        let bankHalf = Swift.min(s.pretrainImages / 2, genSamples.count, conversations.count)
        let allScenes = genSamples.prefix(bankHalf).map(\.scene) + conversations.prefix(bankHalf).map { $0[0].scene }
        let imageBank = Tensor(allScenes.flatMap { pixels($0) }, shape: [allScenes.count, 3, s.imageSize, s.imageSize])
        try imageBank.eval()
        func batchIndices(_ step: Int, _ count: Int, salt: UInt64, size: Int? = nil) -> Tensor {
            var r = WorldRandom(seed: s.seed &* 31 &+ UInt64(step) &* 7919 &+ salt)
            return Tensor(share((0..<(size ?? s.batchSize)).map { _ in Int32(r.int(count)) }))
        }
        clock.mark("VAE")
        let vaeLosses = try fit("VAE", module: vae, steps: s.vaeSteps, lr: 2e-3) { step in
            let x = imageBank.take(batchIndices(step, allScenes.count, salt: 1, size: 16), axis: 0)
            return Self.vaeLoss(vae, x, noiseKey: RandomKey(seed: UInt64(step) &+ 77), share: (group.rank, group.size))
        }
        // Scale latents to unit variance, as SD-style VAEs record in scaling_factor.
        let probe = vae.encode(imageBank.slice(axis: 0, 0, Swift.min(256, allScenes.count))).mean
        let std = Double(try (probe - probe.mean()).square().mean().sqrt().item(Float.self))
        var scaledConfig = vaeConfig
        scaledConfig.scalingFactor = 1 / Swift.max(std, 1e-3)
        let trainedVAE = AutoencoderKL(config: scaledConfig)
        try trainedVAE.load(weights: vae.parameters())
        if writes {
            try fm.createDirectory(at: vaeDir, withIntermediateDirectories: true)
            try JSONEncoder().encode(scaledConfig).write(to: vaeDir.appendingPathComponent("config.json"), options: .atomic)
            try Safetensors.save(trainedVAE.parameters(), to: vaeDir.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        }

        // 4. The model, with a SigLIP-style encoder pretrained on per-patch attributes and an LLM pretrained on text.
        let config = Self.modelConfig(vocabularySize: tokenizer.vocabularySize, imageSize: s.imageSize, gridSize: worldConfig.gridSize)
        let model = JanusFlowModel(config)
        try model.evalParameters()

        final class PatchHeads: Module {
            let encoder: VisionUnderstandingEncoder
            let color: Linear
            let shape: Linear
            let object: Linear
            let position: Linear
            let counts: Linear
            init(_ encoder: VisionUnderstandingEncoder, width: Int, colors: Int, shapes: Int, patches: Int, countTargets: Int, maxCount: Int) {
                self.encoder = encoder
                color = Linear(width, colors + 1)
                shape = Linear(width, shapes + 1)
                object = Linear(width, colors * shapes + 1)
                position = Linear(width, patches)
                counts = Linear(width, countTargets * (maxCount + 1))
                super.init()
            }
        }
        let colorCount = worldConfig.colors.count, shapeCount = worldConfig.shapes.count, maxCount = worldConfig.maxObjects
        let countTargets = EncoderLabels.countTargets(worldConfig), patches = EncoderLabels.patches(worldConfig)
        // Per-patch colour, shape, pair and position heads, and scene counts from the mean patch feature (EncoderLabels).
        let heads = PatchHeads(model.understandingEncoder, width: config.siglip.width, colors: colorCount, shapes: shapeCount,
                               patches: patches, countTargets: countTargets, maxCount: maxCount)
        heads.encoder.visionTower.attnPool.freeze()
        if !s.siglipSceneHeads { heads.object.freeze(); heads.counts.freeze() }
        let labels = allScenes.map { EncoderLabels(scene: $0, world: worldConfig) }
        let colorLabels = Tensor(labels.flatMap(\.color), shape: [allScenes.count, patches])
        let shapeLabels = Tensor(labels.flatMap(\.shape), shape: [allScenes.count, patches])
        let objectLabels = Tensor(labels.flatMap(\.pair), shape: [allScenes.count, patches])
        let countLabels = Tensor(labels.flatMap(\.counts), shape: [allScenes.count, countTargets])
        let shareSize = s.batchSize / group.size
        let patchIndex = Tensor((0..<(shareSize * patches)).map { Int32($0 % patches) }, shape: [shareSize, patches])
        clock.mark("SigLIP")
        let siglipLosses = try fit("SigLIP", module: heads, steps: s.siglipSteps, lr: 2e-3) { step in
            let idx = batchIndices(step, allScenes.count, salt: 2)
            let features = heads.encoder(imageBank.take(idx, axis: 0))
            let patchLoss = NN.crossEntropy(logits: heads.color(features), targets: colorLabels.take(idx, axis: 0))
                + NN.crossEntropy(logits: heads.shape(features), targets: shapeLabels.take(idx, axis: 0))
                + NN.crossEntropy(logits: heads.position(features), targets: patchIndex)
            guard s.siglipSceneHeads else { return patchLoss }
            let countLogits = heads.counts(features.mean(axis: 1)).reshaped([idx.shape[0], countTargets, maxCount + 1])
            return patchLoss + NN.crossEntropy(logits: heads.object(features), targets: objectLabels.take(idx, axis: 0))
                + NN.crossEntropy(logits: countLogits, targets: countLabels.take(idx, axis: 0))
        }
        let textIDs = texts.map { tokenizer.encode($0) + [tokenizer.eosID] }
        let lm = model.languageModel
        clock.mark("LLM")
        let llmLosses = try fit("LLM", module: lm, steps: s.llmSteps, lr: 2e-3) { step in
            var r = WorldRandom(seed: UInt64(step) &+ 3)
            let batch = Collate.text(share((0..<s.batchSize).map { _ in TextExample(ids: textIDs[r.int(textIDs.count)]) }), padID: tokenizer.padID)
            return Objectives.textLoss(model, batch)
        }

        // 5. Training data for the three stages: latents and REPA targets computed once.
        clock.mark("stage data (latents, REPA targets)")
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: config.siglip.tokens)
        let genPixels = Tensor(genSamples.flatMap { pixels($0.scene) }, shape: [genSamples.count, 3, s.imageSize, s.imageSize])
        var latents: [Tensor] = [], targets: [Tensor] = []
        for start in stride(from: 0, to: genSamples.count, by: 128) {
            let x = genPixels.slice(axis: 0, start, Swift.min(start + 128, genSamples.count))
            let z = trainedVAE.encode(x).mean * scaledConfig.scalingFactor
            let f = model.understandingEncoder(x)
            try Tensor.eval([z, f])
            latents.append(z)
            targets.append(f)
        }
        let latentAll = concatenated(latents, axis: 0), targetAll = concatenated(targets, axis: 0)
        var data = TrainingData(padID: tokenizer.padID)
        // The world's grammar repeats its captions and question/answer pairs many times over: each distinct text is
        // tokenized once (a third of this phase's time before).
        var promptIDs: [String: [Int]] = [:]
        for (i, g) in genSamples.enumerated() {
            let ids = promptIDs[g.prompt] ?? processor.generationIDs(g.prompt)
            promptIDs[g.prompt] = ids
            data.generation.append(GenerationExample(promptIDs: ids, latent: latentAll[i], repaTarget: targetAll[i]))
        }
        var processed: [[ChatMessage]: (prompt: ChatProcessor.Prompt, labelMask: [Bool])] = [:]
        for turns in conversations {
            let image = Tensor(pixels(turns[0].scene), shape: [3, s.imageSize, s.imageSize])
            func example(_ turns: ArraySlice<QuestionSample>) -> UnderstandingExample {
                let messages = turns.enumerated().flatMap { i, q in [ChatMessage.user((i == 0 ? "<image_placeholder>\n" : "") + q.question), .assistant(q.answer)] }
                let (prompt, labelMask) = processed[messages] ?? processor.processForTraining(conversation: messages)
                processed[messages] = (prompt, labelMask)
                return UnderstandingExample(ids: prompt.ids, labelMask: labelMask, imageSeqMask: prompt.imageSeqMask, pixels: image)
            }
            data.understanding.append(s.independentQuestions ? try .sharingPrefix(turns.indices.map { example(turns[$0...$0]) })
                                                             : example(turns[...]))
        }
        data.text = textIDs.map { TextExample(ids: $0) }

        // 6. The paper's three stages (Table 1 proportions, scaled down).
        let newParts = ["vision_und_enc_aligner", "beg_of_und_embed", "vision_gen_enc_model", "vision_gen_enc_aligner",
                        "vision_gen_dec_aligner_norm", "vision_gen_dec_aligner", "vision_gen_dec_model", "repa_projector"]
        let stages = [
            StageConfig(name: "adaptation", steps: s.stageSteps[0], learningRate: s.learningRate, warmupSteps: s.stageSteps[0] / 5,
                        batchSize: s.batchSize, ratio: [50, 50, 0], trainable: newParts),
            StageConfig(name: "unified-pretraining", steps: s.stageSteps[1], learningRate: s.learningRate, warmupSteps: s.stageSteps[1] / 20,
                        batchSize: s.batchSize, ratio: [14, 80, 6], ratioSchedule: [.init(untilStep: s.stageSteps[1] / 8, ratio: [30, 50, 20])],
                        frozen: ["vision_und_enc_model"]),
            StageConfig(name: "sft", steps: s.stageSteps[2], learningRate: s.learningRate / 5, warmupSteps: s.stageSteps[2] / 10,
                        batchSize: s.batchSize, ratio: [21, 70, 9]),
        ]
        let trainingConfig = TrainingConfig(model: modelDir.path, data: .init(), output: out.appendingPathComponent("training").path,
                                            seed: s.seed, repaLayer: s.repa ? 2 : nil, repaHidden: 128,
                                            flowTimeLogitMean: s.flowTimeLogitMean, flowTimeLogitStd: s.flowTimeLogitStd, checkpointEvery: 0,
                                            logEvery: 20, stages: stages)
        let modules = TrainingModules(model: model, repaHidden: 128)
        let trainer = try Trainer(config: trainingConfig, modules: modules, data: data, outputDirectory: out.appendingPathComponent("training"),
                                  processGroup: group)
        var cancelled = false
        trainer.onProgress = { [self] p in
            let losses = p.losses.sorted { $0.key < $1.key }.map { String(format: "%@ %.3f", $0.key, $0.value) }.joined(separator: " ")
            do { try reportProgress("JanusFlow stages", p.step, of: p.totalSteps, "\(p.stage) lr \(String(format: "%.1e", p.learningRate)) \(losses)") }
            catch { cancelled = true }
        }
        trainer.shouldStop = { cancelled }
        clock.mark("JanusFlow stages")
        try trainer.run()
        if cancelled { throw CancellationError() }
        try trainer.exportModel(to: modelDir, parameters: trainer.emaModelParameters)
        history = trainer.history
        guard writes else { return DemoScores(json: [:]) }  // rank 0 scores the model and writes the report

        // 7. Evaluation through the public pipeline, on held-out prompts and images.
        clock.mark("evaluation")
        let report = out.appendingPathComponent("report")
        let (generation, understanding, _) = try evaluate(modelDirectory: modelDir, vaeDirectory: vaeDir, prompts: heldPrompts,
                                                       questions: heldQuestions, world: worldConfig, report: report)

        // 8. The rest of the report folder.
        clock.mark("report")
        let boundaries = [stages[0].steps, stages[0].steps + stages[1].steps]
        let plot = LossPlot().render(history: trainer.history, series: ["understanding", "rf", "repa", "text"], stageBoundaries: boundaries)
        try RGBImage(width: plot.width, height: plot.height, pixels: plot.pixels).writePNG(to: report.appendingPathComponent("loss_curves.png"))
        var pre: [[String: Double]] = []
        for (key, losses) in [("vae", vaeLosses), ("siglip", siglipLosses), ("llm", llmLosses)] {
            pre += losses.enumerated().map { ["step": Double($0.offset + 1), key: $0.element] }
        }
        let prePlot = LossPlot().render(history: pre, series: ["vae", "siglip", "llm"])
        try RGBImage(width: prePlot.width, height: prePlot.height, pixels: prePlot.pixels).writePNG(to: report.appendingPathComponent("pretraining_losses.png"))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(s).write(to: report.appendingPathComponent("config.json"), options: .atomic)
        try encoder.encode(trainingConfig).write(to: report.appendingPathComponent("training_config.json"), options: .atomic)
        func mean(_ xs: [Double]) -> Double { xs.isEmpty ? .nan : xs.reduce(0, +) / Double(xs.count) }
        func firstLast(_ key: String) -> [String: Double] {
            let v = trainer.history.compactMap { $0[key] }
            let k = Swift.max(1, v.count / 10)
            return ["first": mean(Array(v.prefix(k))), "last": mean(Array(v.suffix(k)))]
        }
        let scores: [String: Any] = [
            "generation": generation, "understanding": understanding,
            "losses": ["understanding": firstLast("understanding"), "rf": firstLast("rf"), "repa": firstLast("repa"), "text": firstLast("text"),
                       "vae": ["first": mean(Array(vaeLosses.prefix(10))), "last": mean(Array(vaeLosses.suffix(10)))],
                       "siglip": ["first": mean(Array(siglipLosses.prefix(10))), "last": mean(Array(siglipLosses.suffix(10)))],
                       "llm": ["first": mean(Array(llmLosses.prefix(10))), "last": mean(Array(llmLosses.suffix(10)))]]
                .filter { !$0.value.values.contains { $0.isNaN } },  // a loss the run did not compute (REPA off) is left out
            "chance": ["generation_overall": 0.0, "understanding_accuracy": chanceAccuracy(heldQuestions)],
            "settings": ["repa": s.repa, "cfg": s.cfg, "sample_steps": s.sampleSteps, "seed": s.seed],
            "time": clock.report(),
        ]
        let json = try JSONSerialization.data(withJSONObject: scores, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: report.appendingPathComponent("scores.json"), options: .atomic)
        logScores(generation, understanding)
        log("report: \(report.path); model: \(modelDir.path); vae: \(vaeDir.path)")
        return DemoScores(json: scores)
    }
}
