import ArgumentParser
import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowTokenizer
import JanusFlowTraining
import MLXEngine

/// What `train` and `prepare` share: the config, the model to start from, and the prepared data.
struct TrainingSetup {
    let config: TrainingConfig
    let model: JanusFlowModel
    let data: TrainingData
    let output: URL

    init(configPath: String) throws {
        let config = try TrainingConfig.load(URL(fileURLWithPath: configPath))
        // A path, or a Hub name found in the Hugging Face cache ("model": "deepseek-ai/JanusFlow-1.3B").
        func folder(_ field: String, _ value: String) throws -> URL {
            guard !FileManager.default.fileExists(atPath: value), HuggingFaceCache.parse(value) != nil else { return URL(fileURLWithPath: value) }
            do { return try HuggingFaceCache.snapshot(value) } catch let error as HuggingFaceCache.NotFound { throw TrainingError("\(configPath): '\(field)': \(error.message)") }
        }
        let modelDir = try folder("model", config.model)
        let model: JanusFlowModel
        if config.initFromWeights {
            note("loading \(modelDir.path) ...")
            model = try JanusFlowModel.load(directory: modelDir, dtype: .float32)
        } else {
            Initializer.seed(config.seed)
            model = JanusFlowModel(try JanusFlowConfig.load(modelDir.appendingPathComponent("config.json")))
        }
        try model.evalParameters()
        let tokenizer = try config.tokenizer.map { try Tokenizer(tokenizerJSON: URL(fileURLWithPath: $0)) } ?? Tokenizer(directory: modelDir)
        let vae = try config.vae.map { try AutoencoderKL.load(directory: try folder("vae", $0)) }
        let output = URL(fileURLWithPath: config.output)
        var preparation = DataPreparation(model: model, vae: vae, tokenizer: tokenizer, maxSequenceLength: config.maxSequenceLength)
        var bars: [String: ProgressBar] = [:]
        preparation.progress = { kind, done, total in
            if bars[kind] == nil { bars[kind] = ProgressBar("preparing \(kind)", total: total) }
            if done % 50 == 0 || done == total { bars[kind]!.update(done) }
        }
        let (data, reports) = try preparation.build(config: config, cacheDirectory: output.appendingPathComponent("cache"))
        for r in reports { note(r.description) }
        self.config = config
        self.model = model
        self.data = data
        self.output = output
        // The run folder carries the tokenizer so checkpoints load in the pipeline as they are.
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        let tokenizerSource = config.tokenizer.map { URL(fileURLWithPath: $0) } ?? modelDir.appendingPathComponent("tokenizer.json")
        if let bytes = FileManager.default.contents(atPath: tokenizerSource.path) {
            try bytes.write(to: output.appendingPathComponent("tokenizer.json"), options: .atomic)
        }
    }
}

struct PrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Read the manifests of a training config, report bad records, and cache VAE latents and REPA features.")

    @Option(help: "Training config (JSON).")
    var config: String

    func run() throws {
        let setup = try TrainingSetup(configPath: config)
        print("understanding \(setup.data.understanding.count), generation \(setup.data.generation.count), text \(setup.data.text.count) examples ready")
    }
}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train or fine-tune JanusFlow with the staged recipe of a config file.")

    @Option(help: "Training config (JSON): model, vae, data manifests, stages.")
    var config: String

    @Flag(help: "Continue from the latest checkpoint in the output folder.")
    var resume = false

    @Option(help: "Stop after this many steps in total (the run can be resumed).")
    var until: Int?

    @OptionGroup var deviceOption: DeviceOption

    @Option(help: "Join a data-parallel run: the JSON host file of MLX's ring backend (one list of \"ip:port\" per rank, as mlx.launch writes it); this process's rank from $MLX_RANK. `janusflow launch -n N -- train ...` does both for a run on this machine.")
    var hosts: String?

    /// The process group: one process, or the ring the host file (or mlx.launch's environment) describes.
    func processGroup() throws -> ProcessGroup {
        let env = ProcessInfo.processInfo.environment
        if let hosts {
            guard FileManager.default.fileExists(atPath: hosts) else { throw ValidationError("--hosts \(hosts): no such file") }
            setenv("MLX_HOSTFILE", hosts, 1)
        }
        guard hosts != nil || env["MLX_HOSTFILE"] != nil else { return .single }
        guard let rank = env["MLX_RANK"], Int(rank) != nil else {
            throw ValidationError("--hosts: set MLX_RANK to this process's rank (0 on the first host), or start the run with `janusflow launch`")
        }
        guard ProcessGroup.isAvailable("ring") else { throw ValidationError("--hosts: this MLX build has no ring backend") }
        // A peer that dies closes its sockets: writing to them must be an error MLX reports, not a silent SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        do {
            let group = try ProcessGroup.join(backend: "ring")
            note("process \(group.rank) of \(group.size) (ring backend)")
            return group
        } catch let error as ProcessGroup.Failure {
            throw ValidationError("--hosts: could not join the run: \(error.message)")
        }
    }

    func run() throws {
        try deviceOption.select()
        let group = try processGroup()
        let setup = try TrainingSetup(configPath: config)
        let modules = TrainingModules(model: setup.model, repaHidden: setup.config.repaHidden)
        let trainer = try Trainer(config: setup.config, modules: modules, data: setup.data, outputDirectory: setup.output,
                                  processGroup: group)
        if resume {
            if try trainer.resume() { note("resumed at step \(trainer.step)") } else { note("no checkpoint to resume from; starting at step 0") }
        }
        let bar = ProgressBar("training", total: until ?? setup.config.totalSteps)
        trainer.onProgress = !group.isWriter ? nil : { p in
            let losses = p.losses.sorted { $0.key < $1.key }.map { String(format: "%@ %.4f", $0.key, $0.value) }.joined(separator: " ")
            bar.update(p.step, detail: String(format: "%@ lr %.2e %.2f steps/s %@", p.stage, p.learningRate, p.stepsPerSecond, losses))
        }
        try trainer.run(until: until)
        try trainer.saveCheckpoint()
        guard group.isWriter else { return }  // the other processes hold the same weights; rank 0 writes them
        let final = setup.output.appendingPathComponent("final"), ema = setup.output.appendingPathComponent("final-ema")
        try trainer.exportModel(to: final, parameters: modules.model.parameters())
        try trainer.exportModel(to: ema, parameters: trainer.emaModelParameters)
        for dir in [final, ema] {
            if let tokenizer = FileManager.default.contents(atPath: setup.output.appendingPathComponent("tokenizer.json").path) {
                try tokenizer.write(to: dir.appendingPathComponent("tokenizer.json"), options: .atomic)
            }
        }
        let plot = LossPlot().render(history: trainer.history, series: ["understanding", "rf", "repa", "text"])
        try RGBImage(width: plot.width, height: plot.height, pixels: plot.pixels).writePNG(to: setup.output.appendingPathComponent("loss_curves.png"))
        print("model: \(final.path) (EMA: \(ema.path)); metrics: \(setup.output.appendingPathComponent("metrics.jsonl").path)")
    }
}
