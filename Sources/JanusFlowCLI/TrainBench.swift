import ArgumentParser
import Dispatch
import Foundation
import JanusFlow
import JanusFlowTraining
import MLXEngine
import JanusFlowDemo
import ShapesWorld

/// Where a training step of the demo's tiny model spends its time: each objective forward only and forward +
/// backward, on synthetic batches shaped like the demo's, then one whole step with AdamW.
struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "train", abstract: "Training step of the demo's tiny model, by objective.")

    @Option(help: "Timed repetitions (the best is reported).")
    var repeats = 5

    @Option(help: "Batch size, split by the stage-2 data ratio (14:80:6 understanding:generation:text).")
    var batchSize = 32

    @Flag(help: "Use MLX's own ops instead of the shim's fast kernels.")
    var noFastKernels = false

    @Flag(help: "Only the whole-step rows (skip the per-objective ones).")
    var stepOnly = false

    @Flag(help: "Only the VAE pretraining step.")
    var vaeOnly = false

    @OptionGroup var profiling: ProfileOption
    @OptionGroup var deviceOption: DeviceOption

    @Option(help: "Processes of a data-parallel run on this machine (MLX ring backend over 127.0.0.1), each at --batch-size: the whole step with its gradient all-reduce, the all-reduce alone, bytes per step, and the scaling against one process measured in the same run.")
    var processes = 1

    func validate() throws {
        guard processes >= 1 else { throw ValidationError("--processes must be at least 1 (got \(processes))") }
    }

    func run() throws {
        Kernels.enabled = !noFastKernels
        try deviceOption.select()
        if processes > 1 && ProcessInfo.processInfo.environment["MLX_RANK"] == nil { return try compareProcessCounts() }
        let group = processes > 1 ? try ProcessGroup.join(backend: "ring") : .single
        if vaeOnly { return try vaeStep() }
        Initializer.seed(0)
        let vocab = 533
        let config = ShapesDemo.modelConfig(vocabularySize: vocab, imageSize: 32)
        let modules = TrainingModules(model: JanusFlowModel(config), repaHidden: 128)
        try modules.evalParameters()
        let model = modules.model
        let tokens = config.siglip.tokens
        var random = WorldRandom(seed: 1)  // the same batches every run
        func ids(_ n: Int) -> [Int] { [1] + (0..<(n - 1)).map { _ in 2 + random.int(vocab - 2) } }
        let counts = [Int((Double(batchSize) * 0.14).rounded()), Int((Double(batchSize) * 0.80).rounded())]
        let (undCount, genCount) = (Swift.max(1, counts[0]), Swift.max(1, counts[1]))
        let textCount = Swift.max(1, batchSize - undCount - genCount)

        // Understanding: a prompt with the image block, then the demo's number of question/answer branches (one
        // with a description-long answer).
        let side = config.siglip.imageSize
        let branches = ShapesDemo.Settings().questionsPerImage
        let und = try (0..<undCount).map { i -> UnderstandingExample in
            let pixels = Random.normal([3, side, side], key: RandomKey(seed: UInt64(i)))
            let prefix = ids(8) + Array(repeating: 3, count: tokens + 1) + ids(4)
            let imageMask = Array(repeating: false, count: 8) + Array(repeating: true, count: tokens + 1) + Array(repeating: false, count: 4)
            let samples = (0..<branches).map { b -> UnderstandingExample in
                let answer = b == 0 ? 30 : 3
                let tail = ids(10 + answer)
                return UnderstandingExample(ids: prefix + tail, labelMask: Array(repeating: false, count: prefix.count + 10) + Array(repeating: true, count: answer),
                                            imageSeqMask: imageMask + Array(repeating: false, count: tail.count), pixels: pixels)
            }
            return try .sharingPrefix(samples)
        }
        let latentSide = Int(Double(tokens).squareRoot()) * config.genEncoder.stride
        let gen = (0..<genCount).map { i in
            GenerationExample(promptIDs: ids(16), latent: Random.normal([4, latentSide, latentSide], key: RandomKey(seed: 100 + UInt64(i))),
                              repaTarget: Random.normal([tokens, config.siglip.width], key: RandomKey(seed: 200 + UInt64(i))))
        }
        let text = (0..<textCount).map { _ in TextExample(ids: ids(40)) }
        let uBatch = Collate.understanding(und, padID: 0)
        let gBatch = Collate.generation(gen, dropped: gen.indices.map { $0 % 10 == 0 }, padID: 0, imageTokens: tokens)
        let tBatch = Collate.text(text, padID: 0)
        let key = RandomKey(seed: 7)

        print("tiny JanusFlow (\(modules.parameterCount) parameters); batch \(batchSize): \(undCount) understanding, \(genCount) generation, \(textCount) text")
        func time(_ name: String, _ losses: @escaping () -> [Tensor]) throws {
            profiling.start()
            let forward = try bestTime(repeats: repeats) { concatenated(losses().map { $0.reshaped([1]) }, axis: 0) }
            let backward = try bestTime(repeats: repeats) {
                let (values, grads) = try! Autograd.valueAndGrad(model: modules) { losses() }
                return concatenated(values.map { $0.reshaped([1]) } + grads.values.map { $0.sum().reshaped([1]) }, axis: 0)
            }
            print(row(name, String(format: "%.1f ms", forward * 1e3), String(format: "forward + backward %.1f ms", backward * 1e3)))
            profiling.print()
        }
        if !stepOnly && group.size == 1 {
        try time("understanding (L_AR)") { [Objectives.understandingLoss(model, uBatch)] }
        try time("generation (L_RF + REPA)") {
            let (rf, repa) = Objectives.generationLoss(modules, gBatch, key: key, repaLayer: 2)
            return [rf + repa!]
        }
        try time("generation (L_RF only)") { [Objectives.generationLoss(modules, gBatch, key: key, repaLayer: nil).rf] }
        // The two halves of the generation path on the same batch.
        let latents = gBatch.latents.asType(.float32), times = Tensor(Array(repeating: Float(500), count: genCount))
        try time("  of which UViT encoder + decoder") {
            let (features, tEmb) = model.generationEncoder(NN.nchwToNHWC(latents), t: times)
            let (b, gh, gw, c) = (features.dim(0), features.dim(1), features.dim(2), features.dim(3))
            let tokens = model.generationEncoderAligner(features.reshaped([b, gh * gw, c]))
            let decIn = model.generationDecoderAligner(model.generationDecoderAlignerNorm(tokens)).reshaped([b, gh, gw, -1])
            return [model.generationDecoder(decIn, skip: features, timeEmbedding: tEmb).square().mean()]
        }
        let rowLength = gBatch.keyMask.dim(1)
        let genEmbeds = Random.normal([genCount, rowLength, config.languageConfig.hiddenSize], key: RandomKey(seed: 9))
        try time("  of which LLM over the generation rows") {
            [model.languageModel.forward(inputsEmbeds: genEmbeds, keyMask: gBatch.keyMask).lastHiddenState.square().mean()]
        }
        try time("text (L_AR)") { [Objectives.textLoss(model, tBatch)] }

        }
        let optimizer = AdamW(schedule: ConstantSchedule(1e-4), beta1: 0.9, beta2: 0.95, weightDecay: 0)
        func lossAndGradients() throws -> (values: [Tensor], grads: [String: Tensor]) {
            try Autograd.valueAndGrad(model: modules) {
                let (rf, repa) = Objectives.generationLoss(modules, gBatch, key: key, repaLayer: 2)
                return [Objectives.understandingLoss(model, uBatch) + rf + repa! + Objectives.textLoss(model, tBatch)]
            }
        }
        let step = try bestTime(repeats: repeats) {
            let (values, local) = try! lossAndGradients()
            let grads = group.allSum(local)  // as the trainer sums them over the processes (nothing for one)
            try! optimizer.apply(gradients: grads, gradientScale: gradientClipping(grads, maxNorm: 1).scale, to: modules)
            try! modules.evalParameters()  // the update itself, not only the loss
            return values[0]
        }
        print(row("whole step (all three + clip + AdamW)", String(format: "%.1f ms", step * 1e3), ""))
        if processes > 1 || ProcessInfo.processInfo.environment["JANUSFLOW_BENCH_CHILD"] != nil { return try reportProcessStep(group: group, step: step, modules: modules, gradients: try lossAndGradients().grads) }
        // Two parts of it: building the graph (forward and backward) before MLX computes anything, and the update
        // from evaluated gradients as the trainer makes it (clipping, AdamW, EMA).
        var building = Double.infinity
        for _ in 0...repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            let (values, grads) = try lossAndGradients()
            building = Swift.min(building, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            try Tensor.eval(values + Array(grads.values))
        }
        let fixedGrads = try lossAndGradients().grads
        try Tensor.eval(Array(fixedGrads.values))
        let ema = EMA(decay: 0.999, parameters: modules.trainableParameters())
        var updating = Double.infinity
        for _ in 0...repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            try optimizer.apply(gradients: fixedGrads, gradientScale: gradientClipping(fixedGrads, maxNorm: 1).scale, to: modules)
            ema.update(with: modules.trainableParameters())
            try Tensor.eval(Array(ema.shadow.values))
            updating = Swift.min(updating, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        print(row("  of which clip + AdamW + EMA (\(fixedGrads.count) tensors)", String(format: "%.1f ms", updating * 1e3), ""))
        print(row("  of which building the graph", String(format: "%.1f ms", building * 1e3), ""))
        try vaeStep()
    }

    /// One step of the demo's VAE pretraining (batch 16 at 32 px: reconstruction + KL, AdamW), the convolutions'
    /// forward and backward.
    func vaeStep() throws {
        let vae = AutoencoderKL(config: ShapesDemo.vaeConfig(imageSize: 32))
        try Tensor.eval(Array(vae.parameters().values))
        let x = Random.uniform([16, 3, 32, 32], key: RandomKey(seed: 11)) * 2 - 1
        let optimizer = AdamW(schedule: ConstantSchedule(1e-4), beta1: 0.9, beta2: 0.95, weightDecay: 0)
        profiling.start()
        let step = try bestTime(repeats: repeats) {
            let (values, grads) = try! Autograd.valueAndGrad(model: vae) { [ShapesDemo.vaeLoss(vae, x, noiseKey: RandomKey(seed: 5))] }
            try! optimizer.apply(gradients: grads, gradientScale: gradientClipping(grads, maxNorm: 1).scale, to: vae)
            try! Tensor.eval(Array(vae.parameters().values))
            return values[0]
        }
        print(row("VAE pretraining step (batch 16, 32 px)", String(format: "%.1f ms", step * 1e3), ""))
        profiling.print()
    }
}
