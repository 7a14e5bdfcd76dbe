import Foundation
import JanusFlow
import MLXEngine

/// What the trainer reports after each step.
public struct TrainingProgress: Sendable {
    /// Global steps completed, this one included.
    public var step: Int  // steps completed (global)
    /// The step this `run` call ends at (its `until`, capped at the recipe's total), not always the whole recipe.
    public var totalSteps: Int
    /// Name of the stage the step belongs to.
    public var stage: String
    /// The step's mean losses by name: `loss` (the weighted total) and `understanding`, `rf`, `repa`, `text` for the tasks it drew.
    public var losses: [String: Double]
    /// Learning rate of the step's update.
    public var learningRate: Double
    /// Global gradient norm before clipping (summed over all processes).
    public var gradNorm: Double
    /// Mean speed since this `run` call began.
    public var stepsPerSecond: Double
    /// Estimated seconds left until `totalSteps` at `stepsPerSecond`.
    public var etaSeconds: Double
}

/// A training failure with a readable message: a bad config, manifest or checkpoint, or a diverged step.
public struct TrainingError: Error, CustomStringConvertible {
    /// What went wrong, and where possible what to change.
    public let message: String
    /// Creates an error with `message`.
    public init(_ message: String) { self.message = message }
    /// The message itself, so the error prints as plain text.
    public var description: String { message }
}

/// Runs the staged JanusFlow recipe on in-memory data: mixed-task batches, the three objectives, AdamW with
/// warm-up, clipping, EMA, periodic atomic checkpoints and exact resume.
///
/// Every random choice of step s (which examples, which prompts are dropped, noise and t) is a pure function of
/// (seed, s), so a run resumed from a checkpoint makes exactly the choices the uninterrupted run made.
public final class Trainer {
    /// The run's configuration.
    public let config: TrainingConfig
    /// The model and REPA projector, updated in place by each step and by `resume`.
    public let modules: TrainingModules
    /// The prepared examples; each step draws from them uniformly, with replacement.
    public let data: TrainingData
    /// Run folder that receives metrics.jsonl and checkpoints/ (and whose tokenizer.json checkpoints copy).
    public let outputDirectory: URL
    /// Global steps completed; `resume` sets it from the checkpoint.
    public private(set) var step = 0
    /// One row per step run by this object (losses plus `step`, `lr`, `grad_norm`); `resume` does not restore earlier rows.
    public private(set) var history: [[String: Double]] = []
    /// Called after each step with its report, before that step's metrics row and checkpoint are written.
    public var onProgress: ((TrainingProgress) -> Void)?
    /// Asked after each step (after its progress report and checkpoint); true ends `run` early, the state intact.
    public var shouldStop: (() -> Bool)?
    /// The processes of a data-parallel run. A step's batch is split into `processes x gradientAccumulation`
    /// micro-batches, drawn exactly as one process accumulating that many would draw them; rank r computes its own,
    /// the gradients are summed over the processes before clipping, and every process applies the same update.
    /// Only the writer (rank 0) writes metrics and checkpoints.
    public let processGroup: ProcessGroup

    var optimizer: AdamW?
    var stageIndex = -1
    /// Float32 moving average of the weights under internal names (`model.…`, `repa_projector.…`); nil until a stage starts.
    public private(set) var ema: EMA?
    let imageTokens: Int

    /// Creates a trainer at step 0 and checks the config against the data, the model and the process group.
    ///
    /// - Throws: `TrainingError` when a stage's batch does not split into processes x accumulation steps, a stage's mix
    ///   asks for a task without data, REPA is on with a generation token count unlike the understanding encoder's patch
    ///   count, or `repaLayer` is not one of the LLM's blocks.
    public init(config: TrainingConfig, modules: TrainingModules, data: TrainingData, outputDirectory: URL,
                processGroup: ProcessGroup = .single) throws {
        self.processGroup = processGroup
        self.config = config
        self.modules = modules
        self.data = data
        self.outputDirectory = outputDirectory
        let enc = modules.model.config.genEncoder
        let latent = data.generation.first?.latent.shape ?? [4, 0, 0]
        let gh = (latent[1] + 2 * enc.padding - enc.kernelSize) / enc.stride + 1
        let gw = (latent[2] + 2 * enc.padding - enc.kernelSize) / enc.stride + 1
        imageTokens = gh * gw
        try validate()
    }

    func validate() throws {
        for stage in config.stages where processGroup.size > 1 {
            let parts = stage.gradientAccumulation * processGroup.size
            guard stage.batchSize % parts == 0 else {
                throw TrainingError("stage '\(stage.name)': batch_size \(stage.batchSize) does not split into \(processGroup.size) processes x gradient_accumulation \(stage.gradientAccumulation)")
            }
        }
        for stage in config.stages {
            let names = ["understanding", "generation", "text"]
            let counts = [data.understanding.count, data.generation.count, data.text.count]
            for i in 0..<3 where (stage.ratio[i] > 0 || stage.ratioSchedule.contains { $0.ratio[i] > 0 }) && counts[i] == 0 {
                throw TrainingError("stage '\(stage.name)': the data ratio asks for \(names[i]) data but data.\(names[i]) has no usable records")
            }
        }
        if config.repaLayer != nil, !data.generation.isEmpty, imageTokens != modules.model.config.siglip.tokens {
            throw TrainingError("REPA aligns the \(imageTokens) generation tokens with the understanding encoder's \(modules.model.config.siglip.tokens) patch features; they must match (or set repa_layer to null)")
        }
        if let layer = config.repaLayer, layer > modules.model.config.languageConfig.numHiddenLayers || layer < 1 {
            throw TrainingError("repa_layer \(layer) is outside the LLM's 1...\(modules.model.config.languageConfig.numHiddenLayers) blocks")
        }
    }

    // MARK: Stages

    /// Freezes what the stage does not train and starts its optimizer.
    func enterStage(_ index: Int) {
        let stage = config.stages[index]
        modules.unfreeze()
        if let trainable = stage.trainable {
            let all = modules.parameters().keys
            let keep = trainable.map(Trainer.internalName)
            let frozenNames = all.filter { name in !keep.contains { name == $0 || name.hasPrefix($0 + ".") } }
            modules.freeze(prefixes: Array(frozenNames))
        }
        if !stage.frozen.isEmpty { modules.freeze(prefixes: stage.frozen.map(Trainer.internalName)) }
        optimizer = AdamW(schedule: WarmupConstantSchedule(peak: stage.learningRate, warmupSteps: stage.warmupSteps),
                          beta1: stage.betas[0], beta2: stage.betas[1], eps: stage.eps, weightDecay: stage.weightDecay)
        stageIndex = index
        if ema == nil { ema = EMA(decay: config.emaDecay, parameters: modules.parameters()) }
    }

    /// Published names live under "model." inside the training modules.
    static func internalName(_ published: String) -> String {
        published.hasPrefix("repa_projector") || published.hasPrefix("model.") ? published : "model." + published
    }

    // MARK: Steps

    /// A generator for step s's random choices, independent of everything before it.
    public func random(forStep s: Int, micro: Int) -> SplitMix64 {
        var g = SplitMix64(seed: config.seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(s) &* 1_000_003 &+ UInt64(micro))
        _ = g.next()
        return g
    }

    /// Runs until `until` global steps are done (the whole recipe by default).
    public func run(until: Int? = nil) throws {
        let end = Swift.min(until ?? config.totalSteps, config.totalSteps)
        let started = Date()
        let startStep = step
        while step < end {
            let (losses, lr, norm) = try trainStep()
            step += 1
            history.append(losses.merging(["step": Double(step), "lr": lr, "grad_norm": norm]) { a, _ in a })
            let elapsed = Date().timeIntervalSince(started)
            let rate = Double(step - startStep) / Swift.max(elapsed, 1e-9)
            onProgress?(TrainingProgress(step: step, totalSteps: end, stage: config.stages[stageIndex].name, losses: losses,
                                         learningRate: lr, gradNorm: norm, stepsPerSecond: rate,
                                         etaSeconds: Double(end - step) / Swift.max(rate, 1e-9)))
            if step % config.logEvery == 0 || step == end { try appendMetrics(history.last!) }
            if config.checkpointEvery > 0 && step % config.checkpointEvery == 0 { try saveCheckpoint() }
            if shouldStop?() == true { return }
        }
    }

    /// One optimizer step (with gradient accumulation). Returns per-task losses, the LR used and the grad norm.
    func trainStep() throws -> ([String: Double], Double, Double) {
        let (stage, local) = config.locate(step: step)
        if stage != stageIndex { enterStage(stage) }
        let sc = config.stages[stage]
        let ratio = sc.ratio(atStep: local)
        let world = processGroup.size, microBatches = sc.gradientAccumulation * world
        let micro = sc.batchSize / microBatches
        var summed: [String: Tensor] = [:]
        var sums: [String: Double] = [:]
        var counts: [String: Double] = [:]
        let lr = optimizer!.currentLearningRate
        for local in 0..<sc.gradientAccumulation {
            // This process's share of the step's micro-batches (all of them in a run of one process).
            let m = processGroup.rank * sc.gradientAccumulation + local
            var rng = random(forStep: step, micro: m)
            var kinds = [0, 0, 0]
            let total = ratio.reduce(0, +)
            for _ in 0..<micro {
                let u = Double(rng.next() >> 11) / Double(1 << 53) * total
                kinds[u < ratio[0] ? 0 : (u < ratio[0] + ratio[1] ? 1 : 2)] += 1
            }
            let und = (0..<kinds[0]).map { _ in data.understanding[Int(rng.next() % UInt64(data.understanding.count))] }
            let gen = (0..<kinds[1]).map { _ in data.generation[Int(rng.next() % UInt64(data.generation.count))] }
            let txt = (0..<kinds[2]).map { _ in data.text[Int(rng.next() % UInt64(data.text.count))] }
            let dropped = gen.map { _ in Double(rng.next() >> 11) / Double(1 << 53) < config.cfgDropProbability }
            let key = RandomKey(seed: rng.next())
            let pack = config.packTo
            let uBatch = und.isEmpty ? nil : pack.map { Collate.packedUnderstanding(und, padID: data.padID, rowLength: $0) }
                ?? Collate.understanding(und, padID: data.padID)
            let gBatch = gen.isEmpty ? nil : Collate.generation(gen, dropped: dropped, padID: data.padID, imageTokens: imageTokens)
            let tBatch = txt.isEmpty ? nil : pack.map { Collate.packedText(txt, padID: data.padID, rowLength: $0) }
                ?? Collate.text(txt, padID: data.padID)
            let n = Double(micro)
            let repaLayer = config.repaLayer, repaWeight = config.repaWeight
            let (timeMean, timeStd) = (config.flowTimeLogitMean, config.flowTimeLogitStd)
            let modules = self.modules
            var names: [String] = []
            let (values, grads) = try Autograd.valueAndGrad(model: modules) {
                var total = Tensor(0.0)
                var parts: [Tensor] = []
                names = []
                if let uBatch {
                    let l = Objectives.understandingLoss(modules.model, uBatch)
                    total = total + l * (Double(und.count) / n)
                    parts.append(l); names.append("understanding")
                }
                if let gBatch {
                    let (rf, repa) = Objectives.generationLoss(modules, gBatch, key: key, repaLayer: repaLayer,
                                                                       timeLogitMean: timeMean, timeLogitStd: timeStd)
                    var g = rf
                    parts.append(rf); names.append("rf")
                    if let repa {
                        g = g + repa * repaWeight
                        parts.append(repa); names.append("repa")
                    }
                    total = total + g * (Double(gen.count) / n)
                }
                if let tBatch {
                    let l = Objectives.textLoss(modules.model, tBatch)
                    total = total + l * (Double(txt.count) / n)
                    parts.append(l); names.append("text")
                }
                return [total] + parts
            }
            if microBatches == 1 {
                summed = grads
            } else {
                let scale = 1.0 / Double(microBatches)
                for (k, g) in grads { summed[k] = summed[k].map { $0 + g * scale } ?? g * scale }
            }
            try Tensor.eval(Array(summed.values) + values)
            sums["loss", default: 0] += try values[0].item(Float.self).asDouble
            counts["loss", default: 0] += 1
            let perTaskCount = ["understanding": und.count, "rf": gen.count, "repa": gen.count, "text": txt.count]
            for (name, v) in zip(names, values.dropFirst()) {
                let w = Double(perTaskCount[name]!)
                sums[name, default: 0] += try v.item(Float.self).asDouble * w
                counts[name, default: 0] += w
            }
        }
        if world > 1 {
            // Gradients summed over the processes in buckets, so clipping sees the global norm; the losses too.
            summed = processGroup.allSum(summed)
            let keys = ["loss", "understanding", "rf", "repa", "text"]
            let local = Tensor(keys.flatMap { [Float(sums[$0] ?? 0), Float(counts[$0] ?? 0)] })
            let global = try processGroup.allSum(local).values(Float.self)
            for (i, key) in keys.enumerated() where global[2 * i + 1] > 0 {
                (sums[key], counts[key]) = (Double(global[2 * i]), Double(global[2 * i + 1]))
            }
        }
        let (clipScale, norm) = gradientClipping(summed, maxNorm: sc.clipNorm)
        var losses: [String: Double] = [:]
        for (k, s) in sums where counts[k]! > 0 { losses[k] = s / counts[k]! }
        let normValue = try norm.item(Float.self).asDouble
        // A diverged step stops the run before it touches the weights, the EMA or any file.
        // Name the first non-finite component loss before the total it feeds.
        let components = losses.filter { $0.key != "loss" }.sorted { $0.key < $1.key }.map { ("\($0.key) loss", $0.value) }
        let checks = components + [("total loss", losses["loss"] ?? 0), ("gradient norm", normValue)]
        if let (name, value) = checks.first(where: { !$0.1.isFinite }) {
            throw TrainingError("step \(step + 1) (stage '\(sc.name)'): the \(name) is \(value); training diverged. Lower the learning "
                                + "rate (now \(lr)) or lengthen the warm-up, and resume from the last checkpoint")
        }
        try optimizer!.apply(gradients: summed, gradientScale: clipScale, to: modules)
        ema!.update(with: modules.trainableParameters())
        try Tensor.eval(Array(ema!.shadow.values))
        return (losses, lr, normValue)
    }

    // MARK: Metrics

    var metricsURL: URL { outputDirectory.appendingPathComponent("metrics.jsonl") }

    func appendMetrics(_ row: [String: Double]) throws {
        guard processGroup.isWriter else { return }
        try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
        var line = try JSONSerialization.data(withJSONObject: row.merging(["stage_index": Double(stageIndex)]) { a, _ in a }, options: [.sortedKeys])
        line.append(UInt8(ascii: "\n"))
        if let handle = FileHandle(forWritingAtPath: metricsURL.path) {
            handle.seekToEndOfFile()
            handle.write(line)
            try handle.close()
        } else {
            try line.write(to: metricsURL)
        }
    }

    // MARK: Checkpoints

    var checkpointsDirectory: URL { outputDirectory.appendingPathComponent("checkpoints") }

    /// Writes model (published layout), REPA projector, EMA, optimizer and position into
    /// checkpoints/step-NNNNNNNN, atomically (a temporary folder renamed into place), then points `latest` at it.
    @discardableResult
    public func saveCheckpoint() throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: checkpointsDirectory, withIntermediateDirectories: true)
        let name = String(format: "step-%08d", step)
        let final = checkpointsDirectory.appendingPathComponent(name)
        guard processGroup.isWriter else { return final }  // every process holds the same state; one writes it
        let tmp = checkpointsDirectory.appendingPathComponent(".tmp-\(name)-\(ProcessInfo.processInfo.processIdentifier)")
        // Folders that killed writers left half-written; never read, only in the way.
        for entry in (try? fm.contentsOfDirectory(atPath: checkpointsDirectory.path)) ?? [] where entry.hasPrefix(".tmp-") || entry.hasPrefix(".old-") {
            try? fm.removeItem(at: checkpointsDirectory.appendingPathComponent(entry))
        }
        do {
            try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
            try exportModel(to: tmp, parameters: modules.model.parameters())
            // With the run's tokenizer the checkpoint is a complete model folder for the inference pipeline.
            let tokenizer = outputDirectory.appendingPathComponent("tokenizer.json")
            if fm.fileExists(atPath: tokenizer.path) { try fm.copyItem(at: tokenizer, to: tmp.appendingPathComponent("tokenizer.json")) }
            try Safetensors.save(modules.repaProjector.parameters(), to: tmp.appendingPathComponent("repa_projector.safetensors"))
            if let ema { try Safetensors.save(ema.shadow, to: tmp.appendingPathComponent("ema.safetensors")) }
            if let optimizer {
                try Safetensors.save(optimizer.stateTensors(), metadata: ["step": "\(optimizer.step)"],
                                     to: tmp.appendingPathComponent("optimizer.safetensors"))
            }
            let state: [String: Any] = ["step": step, "stage": stageIndex, "seed": config.seed, "format": 1]
            try JSONSerialization.data(withJSONObject: state, options: [.sortedKeys]).write(to: tmp.appendingPathComponent("state.json"))
            // On the device before the rename makes them the checkpoint: a power cut must not leave a renamed
            // folder of empty files.
            try flushToDevice(tmp)
        } catch {
            // A full disk, say: the half-written folder goes, and `latest` still names the previous checkpoint.
            try? fm.removeItem(at: tmp)
            let previous = (try? String(contentsOf: checkpointsDirectory.appendingPathComponent("latest"), encoding: .utf8)) ?? "none"
            throw TrainingError("\(final.path): could not write the checkpoint (\(error.localizedDescription)); the previous one is unchanged (latest: \(previous))")
        }
        // A folder of the same step (from a run killed before it moved `latest`) is moved aside, not deleted
        // first, so that some complete copy of it exists at every moment.
        let old = checkpointsDirectory.appendingPathComponent(".old-\(name)-\(ProcessInfo.processInfo.processIdentifier)")
        if fm.fileExists(atPath: final.path) { try fm.moveItem(at: final, to: old) }
        try fm.moveItem(at: tmp, to: final)
        try? fm.removeItem(at: old)
        try? flushToDevice(checkpointsDirectory, filesToo: false)
        let latestTmp = checkpointsDirectory.appendingPathComponent(".latest.tmp")
        try name.data(using: .utf8)!.write(to: latestTmp)
        guard rename(latestTmp.path, checkpointsDirectory.appendingPathComponent("latest").path) == 0 else {
            throw TrainingError("\(checkpointsDirectory.path)/latest: could not update (errno \(errno))")
        }
        try? flushToDevice(checkpointsDirectory, filesToo: false)
        return final
    }

    /// config.json + model.safetensors in the published layout (loadable by `JanusFlowModel.load`).
    public func exportModel(to directory: URL, parameters: [String: Tensor]) throws {
        guard processGroup.isWriter else { return }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(modules.model.config).write(to: directory.appendingPathComponent("config.json"), options: .atomic)
        try Safetensors.save(parameters, metadata: ["format": "pt"], to: directory.appendingPathComponent("model.safetensors"))
    }

    /// The EMA weights under published names (model parameters only), for export.
    public var emaModelParameters: [String: Tensor] {
        var out = modules.model.parameters()
        for (k, v) in ema?.shadow ?? [:] where k.hasPrefix("model.") {
            let name = String(k.dropFirst("model.".count))
            if let current = out[name] { out[name] = v.asType(current.dtype) }
        }
        return out
    }

    /// Continues from `checkpoints/latest` (or the given checkpoint folder). Returns false when there is none.
    @discardableResult
    public func resume(from checkpoint: URL? = nil) throws -> Bool {
        let fm = FileManager.default
        var dir = checkpoint
        if dir == nil {
            let latest = checkpointsDirectory.appendingPathComponent("latest")
            guard let name = try? String(contentsOf: latest, encoding: .utf8) else {
                // Killed before its first checkpoint: the run starts over, and so do its metrics.
                try rewindMetrics(to: 0)
                return false
            }
            dir = checkpointsDirectory.appendingPathComponent(name.trimmingCharacters(in: .whitespacesAndNewlines))
            // Killed between moving a same-step folder aside and its replacement in: the newest whole one is as good
            // (training from it again gives the same numbers).
            if !fm.fileExists(atPath: dir!.appendingPathComponent("state.json").path), let newest = newestCompleteCheckpoint() {
                dir = newest
            }
        }
        let d = dir!
        guard let stateData = fm.contents(atPath: d.appendingPathComponent("state.json").path),
              let state = (try? JSONSerialization.jsonObject(with: stateData)) as? [String: Any],
              let savedStep = state["step"] as? Int
        else { throw TrainingError("\(d.path): not a checkpoint (state.json missing or invalid)") }
        let weights = try Safetensors.load(d.appendingPathComponent("model.safetensors")).tensors
        try modules.model.load(weights: weights, source: d.path)
        try modules.repaProjector.load(weights: Safetensors.load(d.appendingPathComponent("repa_projector.safetensors")).tensors,
                                       source: d.appendingPathComponent("repa_projector.safetensors").path)
        step = savedStep
        let (stage, _) = config.locate(step: step)
        enterStage(stage)
        // At a stage boundary the uninterrupted run starts a fresh optimizer too, so the old state is not loaded.
        let optURL = d.appendingPathComponent("optimizer.safetensors")
        if fm.fileExists(atPath: optURL.path), (state["stage"] as? Int) == stage {
            let (state, meta) = try Safetensors.load(optURL)
            try optimizer!.loadState(state)
            optimizer!.step = Int(meta["step"] ?? "0") ?? 0
        }
        let emaURL = d.appendingPathComponent("ema.safetensors")
        if fm.fileExists(atPath: emaURL.path) { ema!.load(try Safetensors.load(emaURL).tensors) }
        try modules.evalParameters()
        try rewindMetrics(to: savedStep)
        return true
    }

    /// Drops the metrics rows of steps after `savedStep` (logged by a run killed after its last checkpoint, and
    /// about to be logged again) and takes the rest back into `history`, so that the file and the loss plots
    /// read as those of an uninterrupted run.
    func rewindMetrics(to savedStep: Int) throws {
        guard let text = try? String(contentsOf: metricsURL, encoding: .utf8) else { return }
        var kept: [Substring] = []
        history = []
        for line in text.split(separator: "\n") {
            guard let row = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Double],
                  let rowStep = row["step"], Int(rowStep) <= savedStep else { continue }
            kept.append(line)
            history.append(row.filter { $0.key != "stage_index" })
        }
        guard processGroup.isWriter else { return }
        let rewritten = kept.isEmpty ? "" : kept.joined(separator: "\n") + "\n"
        try Data(rewritten.utf8).write(to: metricsURL, options: .atomic)
    }
}

extension Trainer {
    /// fsync of every file in `folder` (unless `filesToo` is false) and of the folder itself, so that its entries
    /// (renames included) survive a power cut.
    func flushToDevice(_ folder: URL, filesToo: Bool = true) throws {
        func sync(_ path: String) throws {
            let descriptor = open(path, O_RDONLY)
            guard descriptor >= 0 else { throw TrainingError("\(path): cannot open to flush (errno \(errno))") }
            defer { close(descriptor) }
            guard fsync(descriptor) == 0 else { throw TrainingError("\(path): could not flush to the device (errno \(errno))") }
        }
        if filesToo {
            for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) { try sync(folder.appendingPathComponent(name).path) }
        }
        try sync(folder.path)
    }

    /// The highest-step `step-*` folder that has its state.json (written last, so the folder is whole).
    func newestCompleteCheckpoint() -> URL? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: checkpointsDirectory.path)) ?? []
        return names.filter { $0.hasPrefix("step-") }.sorted(by: >).map { checkpointsDirectory.appendingPathComponent($0) }
            .first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("state.json").path) }
    }
}

extension Float {
    var asDouble: Double { Double(self) }
}
