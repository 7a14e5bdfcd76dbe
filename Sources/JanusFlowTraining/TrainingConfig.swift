import Foundation
import JanusFlow

/// One training stage (paper Table 1): what trains, the optimiser settings and the data mix.
public struct StageConfig: Codable, Equatable, Sendable {
    /// The stage's label, shown in progress reports and error messages.
    public var name: String
    /// Optimizer steps in this stage; must be positive.
    public var steps: Int
    /// Peak AdamW learning rate, reached after `warmupSteps` and then held constant (JSON key `lr`).
    public var learningRate: Double
    /// Steps of linear learning-rate warm-up at the start of the stage (each stage starts a fresh optimizer).
    public var warmupSteps: Int
    /// Examples per optimizer step, summed over all processes and accumulated micro-batches.
    public var batchSize: Int
    /// Micro-batches each process accumulates per step; must divide `batchSize` (JSON key `grad_accum`).
    public var gradientAccumulation: Int
    /// AdamW decoupled weight decay (0 by default).
    public var weightDecay: Double
    /// AdamW `beta1` and `beta2`; exactly two values (0.9, 0.95 by default).
    public var betas: [Double]
    /// AdamW epsilon in the update's denominator.
    public var eps: Double
    /// Largest global gradient norm; a step's gradients with a larger norm are scaled down to it.
    public var clipNorm: Double
    /// Relative shares of the three tasks when drawing a step's examples; they need not sum to 1.
    ///
    /// understanding : generation : text
    public var ratio: [Double]
    /// Earlier parts of the stage with another mix: until `untilStep` (stage-local), use `ratio`.
    public var ratioSchedule: [RatioPhase]
    /// Prefixes of parameter names (published names, plus "repa_projector") that train; nil = all.
    public var trainable: [String]?
    /// Prefixes frozen even if `trainable` would include them.
    public var frozen: [String]

    /// A data mix that replaces the stage's `ratio` before a stage-local step.
    public struct RatioPhase: Codable, Equatable, Sendable {
        /// Stage-local step (exclusive) up to which this phase applies; phases are checked in array order.
        public var untilStep: Int
        /// Task shares (understanding, generation, text) while the phase applies; not validated on decoding.
        public var ratio: [Double]
        enum CodingKeys: String, CodingKey { case untilStep = "until_step", ratio }
        /// Creates a phase that uses `ratio` for stage-local steps below `untilStep`.
        public init(untilStep: Int, ratio: [Double]) {
            self.untilStep = untilStep
            self.ratio = ratio
        }
    }

    enum CodingKeys: String, CodingKey {
        case name, steps, learningRate = "lr", warmupSteps = "warmup_steps", batchSize = "batch_size"
        case gradientAccumulation = "grad_accum", weightDecay = "weight_decay", betas, eps, clipNorm = "clip_norm"
        case ratio, ratioSchedule = "ratio_schedule", trainable, frozen
    }

    /// Creates a stage with the decoder's defaults; unlike decoding it checks nothing.
    public init(name: String, steps: Int, learningRate: Double, warmupSteps: Int, batchSize: Int, gradientAccumulation: Int = 1,
                weightDecay: Double = 0, betas: [Double] = [0.9, 0.95], eps: Double = 1e-8, clipNorm: Double = 1.0,
                ratio: [Double], ratioSchedule: [RatioPhase] = [], trainable: [String]? = nil, frozen: [String] = []) {
        self.name = name
        self.steps = steps
        self.learningRate = learningRate
        self.warmupSteps = warmupSteps
        self.batchSize = batchSize
        self.gradientAccumulation = gradientAccumulation
        self.weightDecay = weightDecay
        self.betas = betas
        self.eps = eps
        self.clipNorm = clipNorm
        self.ratio = ratio
        self.ratioSchedule = ratioSchedule
        self.trainable = trainable
        self.frozen = frozen
    }

    /// Decodes a stage from snake_case keys, filling the optional ones with the defaults.
    ///
    /// - Throws: `DecodingError.dataCorrupted` when `steps` or `batch_size` is not positive, `grad_accum` does not
    ///   divide `batch_size`, `ratio` is not three non-negative numbers with a positive sum, or `betas` is not two numbers.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        steps = try c.decode(Int.self, forKey: .steps)
        learningRate = try c.decode(Double.self, forKey: .learningRate)
        warmupSteps = try c.decodeIfPresent(Int.self, forKey: .warmupSteps) ?? 0
        batchSize = try c.decode(Int.self, forKey: .batchSize)
        gradientAccumulation = try c.decodeIfPresent(Int.self, forKey: .gradientAccumulation) ?? 1
        weightDecay = try c.decodeIfPresent(Double.self, forKey: .weightDecay) ?? 0
        betas = try c.decodeIfPresent([Double].self, forKey: .betas) ?? [0.9, 0.95]
        eps = try c.decodeIfPresent(Double.self, forKey: .eps) ?? 1e-8
        clipNorm = try c.decodeIfPresent(Double.self, forKey: .clipNorm) ?? 1.0
        ratio = try c.decode([Double].self, forKey: .ratio)
        ratioSchedule = try c.decodeIfPresent([RatioPhase].self, forKey: .ratioSchedule) ?? []
        trainable = try c.decodeIfPresent([String].self, forKey: .trainable)
        frozen = try c.decodeIfPresent([String].self, forKey: .frozen) ?? []
        func bad(_ key: CodingKeys, _ why: String) -> DecodingError {
            DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [key], debugDescription: why))
        }
        guard steps > 0 else { throw bad(.steps, "must be positive") }
        guard batchSize > 0 else { throw bad(.batchSize, "must be positive") }
        guard gradientAccumulation > 0, batchSize % gradientAccumulation == 0 else {
            throw bad(.gradientAccumulation, "must divide batch_size \(batchSize)")
        }
        guard ratio.count == 3, ratio.allSatisfy({ $0 >= 0 }), ratio.reduce(0, +) > 0 else {
            throw bad(.ratio, "must be three non-negative numbers (understanding, generation, text) with a positive sum")
        }
        guard betas.count == 2 else { throw bad(.betas, "must be two numbers") }
        for (i, phase) in ratioSchedule.enumerated() {
            guard phase.ratio.count == 3, phase.ratio.allSatisfy({ $0 >= 0 }), phase.ratio.reduce(0, +) > 0 else {
                throw bad(.ratioSchedule, "phase \(i + 1): ratio must be three non-negative numbers with a positive sum (got \(phase.ratio))")
            }
        }
    }

    /// The data mix at a stage-local step.
    public func ratio(atStep step: Int) -> [Double] {
        ratioSchedule.first(where: { step < $0.untilStep })?.ratio ?? ratio
    }
}

/// A whole training run, read from a JSON file.
public struct TrainingConfig: Codable, Equatable, Sendable {
    /// A folder with config.json (+ weights to start from, if `initFromWeights`).
    public var model: String
    /// Whether to load the weights in `model`; false builds a randomly initialised model from its config.json.
    public var initFromWeights: Bool
    /// Folder (or cached Hugging Face id) of the VAE; required when `data.generation` is set.
    public var vae: String?
    /// Path of a tokenizer.json; nil uses the one in the `model` folder.
    public var tokenizer: String?
    /// Manifest paths of the three tasks.
    public var data: DataPaths
    /// Run folder: metrics.jsonl, checkpoints, the latent cache and a copy of the tokenizer go here.
    public var output: String
    /// Seed of every random choice of a step (examples, dropped prompts, noise, t) and of the initial weights when not loading them.
    public var seed: UInt64
    /// Probability of replacing a caption by the unconditional prompt (BOS + masked pads).
    public var cfgDropProbability: Double
    /// LLM block whose output REPA aligns (the paper: 6); nil turns REPA off.
    public var repaLayer: Int?
    /// Weight of the REPA loss added to the rectified-flow loss.
    public var repaWeight: Double
    /// Hidden width of the REPA projector MLP.
    public var repaHidden: Int
    /// t = sigmoid(u), u ~ N(mean, std) for the rectified-flow loss: the paper's logit-normal (SD3's (0, 1) unless
    /// set; the paper gives no values). A negative mean trains more at high noise (t = 0 is pure noise).
    public var flowTimeLogitMean: Double
    /// Standard deviation of the logit-normal time distribution (see `flowTimeLogitMean`); must be positive.
    public var flowTimeLogitStd: Double
    /// Decay of the exponential moving average of the trainable weights, updated after every step.
    public var emaDecay: Double
    /// Write a checkpoint every this many global steps; 0 or less writes none.
    public var checkpointEvery: Int
    /// Append a row to metrics.jsonl every this many steps and at the last step of `run`; must be positive.
    public var logEvery: Int
    /// Longest sample in tokens (for generation: prompt plus image tokens); longer records are skipped when preparing data.
    public var maxSequenceLength: Int
    /// Pack understanding and text samples into rows of this many tokens (the paper: 4096); nil pads each sample.
    public var packTo: Int?
    /// The stages, run in order; decoding requires at least one.
    public var stages: [StageConfig]

    /// Paths of the JSONL manifests per task; nil leaves that task without data.
    public struct DataPaths: Codable, Equatable, Sendable {
        /// Manifest of image + conversation records.
        public var understanding: String?
        /// Manifest of image + caption records.
        public var generation: String?
        /// Manifest of plain-text records.
        public var text: String?
        /// Creates the set of manifest paths; omitted tasks have no data.
        public init(understanding: String? = nil, generation: String? = nil, text: String? = nil) {
            self.understanding = understanding
            self.generation = generation
            self.text = text
        }
    }

    enum CodingKeys: String, CodingKey {
        case model, initFromWeights = "init_from_weights", vae, tokenizer, data, output, seed
        case cfgDropProbability = "cfg_drop_prob", repaLayer = "repa_layer", repaWeight = "repa_weight"
        case repaHidden = "repa_hidden", flowTimeLogitMean = "flow_time_logit_mean", flowTimeLogitStd = "flow_time_logit_std"
        case emaDecay = "ema_decay", checkpointEvery = "checkpoint_every"
        case logEvery = "log_every", maxSequenceLength = "max_sequence_length", packTo = "pack_to", stages
    }

    /// Creates a run configuration with the decoder's defaults; unlike decoding it checks nothing.
    public init(model: String, initFromWeights: Bool = true, vae: String? = nil, tokenizer: String? = nil, data: DataPaths,
                output: String, seed: UInt64 = 0, cfgDropProbability: Double = 0.1, repaLayer: Int? = 6, repaWeight: Double = 1,
                repaHidden: Int = 2048, flowTimeLogitMean: Double = 0, flowTimeLogitStd: Double = 1, emaDecay: Double = 0.99, checkpointEvery: Int = 1000, logEvery: Int = 10,
                maxSequenceLength: Int = 4096, packTo: Int? = nil, stages: [StageConfig]) {
        self.model = model
        self.initFromWeights = initFromWeights
        self.vae = vae
        self.tokenizer = tokenizer
        self.data = data
        self.output = output
        self.seed = seed
        self.cfgDropProbability = cfgDropProbability
        self.repaLayer = repaLayer
        self.repaWeight = repaWeight
        self.repaHidden = repaHidden
        self.flowTimeLogitMean = flowTimeLogitMean
        self.flowTimeLogitStd = flowTimeLogitStd
        self.emaDecay = emaDecay
        self.checkpointEvery = checkpointEvery
        self.logEvery = logEvery
        self.maxSequenceLength = maxSequenceLength
        self.packTo = packTo
        self.stages = stages
    }

    /// Decodes a run from snake_case keys; a missing `repa_layer` means layer 6, an explicit null turns REPA off.
    ///
    /// - Throws: `DecodingError.dataCorrupted` when `stages` is empty, `cfg_drop_prob` is outside [0, 1] or
    ///   `flow_time_logit_std` is not positive, and the stages' own decoding errors.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decode(String.self, forKey: .model)
        initFromWeights = try c.decodeIfPresent(Bool.self, forKey: .initFromWeights) ?? true
        vae = try c.decodeIfPresent(String.self, forKey: .vae)
        tokenizer = try c.decodeIfPresent(String.self, forKey: .tokenizer)
        data = try c.decode(DataPaths.self, forKey: .data)
        output = try c.decode(String.self, forKey: .output)
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? 0
        cfgDropProbability = try c.decodeIfPresent(Double.self, forKey: .cfgDropProbability) ?? 0.1
        // An explicit null turns REPA off; a missing key means the paper's layer 6.
        repaLayer = c.contains(.repaLayer) ? try c.decodeIfPresent(Int.self, forKey: .repaLayer) : 6
        repaWeight = try c.decodeIfPresent(Double.self, forKey: .repaWeight) ?? 1
        repaHidden = try c.decodeIfPresent(Int.self, forKey: .repaHidden) ?? 2048
        flowTimeLogitMean = try c.decodeIfPresent(Double.self, forKey: .flowTimeLogitMean) ?? 0
        flowTimeLogitStd = try c.decodeIfPresent(Double.self, forKey: .flowTimeLogitStd) ?? 1
        emaDecay = try c.decodeIfPresent(Double.self, forKey: .emaDecay) ?? 0.99
        checkpointEvery = try c.decodeIfPresent(Int.self, forKey: .checkpointEvery) ?? 1000
        logEvery = try c.decodeIfPresent(Int.self, forKey: .logEvery) ?? 10
        maxSequenceLength = try c.decodeIfPresent(Int.self, forKey: .maxSequenceLength) ?? 4096
        packTo = try c.decodeIfPresent(Int.self, forKey: .packTo)
        stages = try c.decode([StageConfig].self, forKey: .stages)
        guard !stages.isEmpty else {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.stages], debugDescription: "needs at least one stage"))
        }
        guard (0...1).contains(cfgDropProbability) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.cfgDropProbability], debugDescription: "must be in [0, 1]"))
        }
        guard logEvery >= 1 else {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.logEvery], debugDescription: "must be at least 1 (got \(logEvery))"))
        }
        guard checkpointEvery >= 0 else {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.checkpointEvery], debugDescription: "must be 0 (never) or more (got \(checkpointEvery))"))
        }
        guard flowTimeLogitStd > 0 else {
            throw DecodingError.dataCorrupted(.init(codingPath: [CodingKeys.flowTimeLogitStd], debugDescription: "must be > 0"))
        }
    }

    /// Reads and decodes a JSON config file.
    ///
    /// - Throws: `ModelLoadingError` naming the file and the bad field when it is missing or does not decode.
    public static func load(_ url: URL) throws -> TrainingConfig { try decodeConfig(TrainingConfig.self, from: url) }

    /// Steps of the whole recipe: the sum of the stages' steps.
    public var totalSteps: Int { stages.reduce(0) { $0 + $1.steps } }

    /// The stage and stage-local step of a global step.
    public func locate(step: Int) -> (stage: Int, local: Int) {
        var s = step
        for (i, stage) in stages.enumerated() {
            if s < stage.steps { return (i, s) }
            s -= stage.steps
        }
        return (stages.count - 1, stages[stages.count - 1].steps)
    }

    /// The paper's Table 1 (v2): adaptation, unified pre-training (first 10k steps at 30:50:20), SFT.
    public static func paperStages() -> [StageConfig] {
        let newParts = ["vision_und_enc_aligner", "beg_of_und_embed", "vision_gen_enc_model", "vision_gen_enc_aligner",
                        "vision_gen_dec_aligner_norm", "vision_gen_dec_aligner", "vision_gen_dec_model", "repa_projector"]
        return [
            StageConfig(name: "adaptation", steps: 10_000, learningRate: 1e-4, warmupSteps: 2_000, batchSize: 512,
                        ratio: [50, 50, 0], trainable: newParts),
            StageConfig(name: "unified-pretraining", steps: 390_000, learningRate: 1e-4, warmupSteps: 2_000, batchSize: 512,
                        ratio: [14, 80, 6], ratioSchedule: [.init(untilStep: 10_000, ratio: [30, 50, 20])],
                        frozen: ["vision_und_enc_model"]),
            StageConfig(name: "sft", steps: 26_000, learningRate: 2e-5, warmupSteps: 1_000, batchSize: 256, ratio: [21, 70, 9]),
        ]
    }
}
