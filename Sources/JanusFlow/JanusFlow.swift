import Foundation
import MLXEngine

/// JanusFlow (MultiModalityCausalLM): one LLM that reads images through the SigLIP encoder (understanding)
/// and predicts rectified-flow velocities through the ShallowUViT encoder/decoder (generation).
///
/// Module map (paper, Figure 2): `vision_und_enc_model` + `vision_und_enc_aligner` + `beg_of_und_embed` are the
/// understanding encoder path (SigLIP.swift); `language_model` is the shared LLM (LLM.swift);
/// `vision_gen_enc_model` + `vision_gen_enc_aligner` are the generation encoder g_enc, `vision_gen_dec_aligner_norm`
/// + `vision_gen_dec_aligner` + `vision_gen_dec_model` the generation decoder g_dec (UViT.swift). The SDXL-VAE
/// (VAE.swift) maps between latents and pixels.
public final class JanusFlowModel: Module {
    /// The configuration the module tree was built from.
    public let config: JanusFlowConfig
    /// `language_model`: the shared LLM and its output head.
    @Child("language_model") public var languageModel: LanguageModel
    /// `vision_und_enc_model`: the SigLIP ViT that turns pixels into patch features.
    @Child("vision_und_enc_model") public var understandingEncoder: VisionUnderstandingEncoder
    /// `vision_und_enc_aligner`: projects SigLIP features (`siglip.width`) to the LLM's hidden size.
    @Child("vision_und_enc_aligner") public var understandingAligner: Linear
    /// `beg_of_und_embed` (1, hidden): the learned embedding placed at each image's `<begin_of_image>` slot.
    @Parameter("beg_of_und_embed") public var beginOfUnderstandingEmbed: Tensor
    /// `vision_gen_enc_model`: the ShallowUViT encoder that embeds noisy latents and the time.
    @Child("vision_gen_enc_model") public var generationEncoder: ShallowUViTEncoder
    /// `vision_gen_enc_aligner`: projects the generation encoder's features to LLM tokens.
    @Child("vision_gen_enc_aligner") public var generationEncoderAligner: Linear
    /// `vision_gen_dec_aligner_norm`: RMSNorm on the LLM's output at the image positions.
    @Child("vision_gen_dec_aligner_norm") public var generationDecoderAlignerNorm: RMSNorm
    /// `vision_gen_dec_aligner`: projects the normalised LLM output to the generation decoder's input width.
    @Child("vision_gen_dec_aligner") public var generationDecoderAligner: Linear
    /// `vision_gen_dec_model`: the ShallowUViT decoder that turns LLM outputs and the encoder skip into a velocity.
    @Child("vision_gen_dec_model") public var generationDecoder: ShallowUViTDecoder

    /// Builds the module tree with freshly initialised (lazy, unevaluated) weights.
    public init(_ config: JanusFlowConfig) {
        self.config = config
        super.init()
        let hidden = config.languageConfig.hiddenSize
        languageModel = LanguageModel(config.languageConfig)
        understandingEncoder = VisionUnderstandingEncoder(config.siglip)
        // The official code hard-codes 1024/768/2048 here; they follow the sub-configs so every size shares this path.
        understandingAligner = Linear(config.siglip.width, hidden)
        beginOfUnderstandingEmbed = Tensor.zeros([1, hidden])
        generationEncoder = ShallowUViTEncoder(config.genEncoder)
        generationEncoderAligner = Linear(config.genEncoder.channels, hidden)
        generationDecoderAlignerNorm = RMSNorm(hidden, eps: config.languageConfig.rmsNormEps)
        generationDecoderAligner = Linear(hidden, config.genDecoder.inChannels)
        generationDecoder = ShallowUViTDecoder(config.genDecoder)
    }

    // MARK: Understanding

    /// SigLIP features then the aligner: NCHW pixels (N, 3, H, W) -> (N, tokens, hidden).
    public func encodeImages(_ pixels: Tensor) -> Tensor {
        understandingAligner(understandingEncoder(pixels))
    }

    /// Token embeddings with the image blocks spliced in: at every `<begin_of_image>` slot the learned
    /// `beg_of_und_embed`, at the placeholders the aligned image tokens (images in order, row-major patches).
    /// - ids: (B, T) token ids; imageSeqMask: (B, T) true at the begin tag and the placeholders;
    /// - pixels: (B, n, 3, H, W); a row with fewer images simply has fewer masked positions.
    public func prepareInputsEmbeds(ids: Tensor, pixels: Tensor?, imageSeqMask: Tensor?) -> Tensor {
        var embeds = languageModel.embed(ids.maximum(Tensor(0, dtype: ids.dtype)))
        guard let pixels, let imageSeqMask else { return embeds }
        let (b, n) = (pixels.dim(0), pixels.dim(1))
        let flat = pixels.reshaped([b * n] + Array(pixels.shape.dropFirst(2)))
        let aligned = encodeImages(flat)  // (b*n, tokens, H)
        let hidden = aligned.dim(2)
        let begin = beginOfUnderstandingEmbed.reshaped([1, 1, hidden]).broadcast(to: [b * n, 1, hidden]).asType(aligned.dtype)
        let blocks = concatenated([begin, aligned], axis: 1).reshaped([b, n * (aligned.dim(1) + 1), hidden])
        // Scatter the image rows into the masked positions of each sequence, in order: position p takes image
        // row (number of masked positions before p); unmasked positions keep their token embedding.
        let mask = imageSeqMask.asType(.int32)
        let rank = mask.cumsum(axis: 1, inclusive: false)  // (B, T)
        let perRow = n * (aligned.dim(1) + 1)
        let index = rank.minimum(Tensor(perRow - 1, dtype: .int32))
        let gathered = blocks.takeAlong(index.expandedDims(axis: -1).broadcast(to: [b, ids.dim(1), hidden]), axis: 1)
        embeds = which(mask.asType(.bool).expandedDims(axis: -1), gathered.asType(embeds.dtype), embeds)
        return embeds
    }

    // MARK: Generation

    /// One rectified-flow velocity for latents z (NCHW (B, 4, h, w)) at times t (B,) in the 0..1000 scale,
    /// conditioned on the prompt embeddings `prefix` (B, P, H) (the prompt without its last token).
    /// keyMask (B, P + 1 + N) hides prompt positions (the CFG unconditional rows); `cache`, if given, already
    /// holds the prefix's keys/values and `prefix` must then be nil. `sharedPrompt` (with neither prefix, mask
    /// nor cache) is the fast form of the CFG batch: one prompt row continued by B conditional and B unconditional rows.
    public func velocity(latents z: Tensor, t: Tensor, prefix: Tensor?, keyMask: Tensor?, cache: [KVCache]? = nil,
                         sharedPrompt: SharedPrompt? = nil) -> Tensor {
        velocityAndHidden(latents: z, t: t, prefix: prefix, keyMask: keyMask, cache: cache, sharedPrompt: sharedPrompt).velocity
    }

    /// The velocity and, with `hiddenLayer` k, the LLM's residual stream after its k-th block at the image
    /// positions (B, N, H), as REPA reads it.
    public func velocityAndHidden(latents z: Tensor, t: Tensor, prefix: Tensor?, keyMask: Tensor?, cache: [KVCache]? = nil,
                                  sharedPrompt: SharedPrompt? = nil, hiddenLayer: Int? = nil) -> (velocity: Tensor, hidden: Tensor?) {
        let zNHWC = NN.nchwToNHWC(z)
        let (features, tEmb) = generationEncoder(zNHWC, t: t)
        let (b, gh, gw, c) = (features.dim(0), features.dim(1), features.dim(2), features.dim(3))
        let n = gh * gw
        let tokens = generationEncoderAligner(features.reshaped([b, n, c]))
        var parts: [Tensor] = []
        if let prefix { parts.append(prefix.asType(tokens.dtype)) }
        parts += [tEmb.expandedDims(axis: 1).asType(tokens.dtype), tokens]
        let out = languageModel.forward(inputsEmbeds: concatenated(parts, axis: 1), keyMask: keyMask, cache: cache,
                                        collectHiddenStates: hiddenLayer != nil, sharedPrompt: sharedPrompt)
        let last = out.lastHiddenState.slice(axis: 1, -n)
        let decIn = generationDecoderAligner(generationDecoderAlignerNorm(last)).reshaped([b, gh, gw, -1])
        let v = NN.nhwcToNCHW(generationDecoder(decIn, skip: features, timeEmbedding: tEmb))
        let hidden = hiddenLayer.map { out.hiddenStates[$0].slice(axis: 1, -n) }
        return (v, hidden)
    }

    // MARK: Loading

    /// Int8 weights (per-group scales) for every linear layer of the language model, output head included: the
    /// bytes decoding reads per token. Everything else keeps its dtype. Returns the number of layers quantized.
    @discardableResult
    public func quantizeLanguageModel(groupSize: Int = 64) throws -> Int {
        var count = 0
        for (_, module) in languageModel.namedModules() {
            if let linear = module as? Linear, try linear.quantize(groupSize: groupSize) { count += 1 }
        }
        return count
    }

    /// Loads `config.json` and the weights (`model.safetensors`, sharded `model-*.safetensors` with or without
    /// `model.safetensors.index.json`) from a Hugging Face-style folder, strictly by the published names. `dtype`
    /// .int8 gives int8 language-model linears (`quantizeLanguageModel`) and bfloat16 elsewhere.
    public static func load(directory: URL, dtype: DType = .float32, progress: ((Int, Int) -> Void)? = nil) throws -> JanusFlowModel {
        let configURL = directory.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: configURL.path) else {
            throw ModelLoadingError("\(directory.path): no config.json in the model folder")
        }
        let config = try JanusFlowConfig.load(configURL)
        let model = JanusFlowModel(config)
        let weights = try loadWeights(directory: directory, progress: progress)
        // int8: the language model's linear layers in int8, the rest in bfloat16.
        try model.load(weights: weights, dtype: dtype == .int8 ? .bfloat16 : dtype, source: directory.path)
        if dtype == .int8 { try model.quantizeLanguageModel() }
        return model
    }

    /// Every tensor of the model's safetensors files in `directory`.
    public static func loadWeights(directory: URL, progress: ((Int, Int) -> Void)? = nil) throws -> [String: Tensor] {
        let files = try weightFiles(in: directory)
        var weights: [String: Tensor] = [:]
        for (i, file) in files.enumerated() {
            let (tensors, _) = try Safetensors.load(file)
            for (name, t) in tensors {
                if weights[name] != nil { throw ModelLoadingError("\(file.path): tensor '\(name)' appears in more than one file") }
                weights[name] = t
            }
            progress?(i + 1, files.count)
        }
        return weights
    }

    static func weightFiles(in directory: URL) throws -> [URL] {
        let fm = FileManager.default
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        if fm.fileExists(atPath: index.path) {
            guard let data = fm.contents(atPath: index.path),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = json["weight_map"] as? [String: String]
            else { throw ModelLoadingError("\(index.path): not a valid index (no 'weight_map')") }
            let files = Set(map.values).sorted().map { directory.appendingPathComponent($0) }
            for f in files where !fm.fileExists(atPath: f.path) {
                throw ModelLoadingError("\(f.path): listed in model.safetensors.index.json but missing")
            }
            return files
        }
        let single = directory.appendingPathComponent("model.safetensors")
        if fm.fileExists(atPath: single.path) { return [single] }
        let shards = ((try? fm.contentsOfDirectory(atPath: directory.path)) ?? [])
            .filter { $0.hasPrefix("model") && $0.hasSuffix(".safetensors") }.sorted()
        guard !shards.isEmpty else {
            throw ModelLoadingError("\(directory.path): no model.safetensors (or model-*.safetensors shards) in the model folder")
        }
        return shards.map { directory.appendingPathComponent($0) }
    }
}
