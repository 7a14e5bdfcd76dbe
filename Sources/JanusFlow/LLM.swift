import MLXEngine

// DeepSeek-LLM in the Llama layout: pre-norm decoder blocks with RMSNorm, rotary positions (rotate-half),
// causal self-attention and a SwiGLU MLP; a final RMSNorm and an untied output head.

/// Causal self-attention with rotary positions (rotate-half) and grouped key/value heads; the `q_proj`, `k_proj`,
/// `v_proj` and `o_proj` projections have no biases.
public final class LlamaAttention: Module {
    @Child("q_proj") var qProj: Linear
    @Child("k_proj") var kProj: Linear
    @Child("v_proj") var vProj: Linear
    @Child("o_proj") var oProj: Linear
    let heads: Int
    let kvHeads: Int
    let headDim: Int

    init(_ config: LanguageConfig) {
        heads = config.numAttentionHeads
        kvHeads = config.numKeyValueHeads
        headDim = config.headDim
        super.init()
        let h = config.hiddenSize
        qProj = Linear(h, heads * headDim, bias: false)
        kProj = Linear(h, kvHeads * headDim, bias: false)
        vProj = Linear(h, kvHeads * headDim, bias: false)
        oProj = Linear(heads * headDim, h, bias: false)
    }

    /// x (B, L, H); `rotary` holds the rows' positions (built once per forward pass for every layer). `mask` is
    /// additive, broadcastable to (B, 1, L, S). With `shared` (classifier-free guidance), the rows also attend to
    /// one shared prompt row's keys/values.
    func callAsFunction(_ x: Tensor, mask: Tensor?, cache: KVCache?, rotary: RotaryTables, shared: SharedPromptLayer? = nil) -> Tensor {
        // Heads come out of the projections already rotated, in the attention layout; attention writes its output
        // with the heads side by side again, so no transpose runs between the projections.
        let q = NN.splitHeads(qProj(x), heads: heads, rotary: rotary)
        let scale = 1 / Float(headDim).squareRoot()
        if let shared {
            return oProj(shared.attention(queries: q, keyRows: kProj(x), valueRows: vProj(x), heads: kvHeads, rotary: rotary, scale: scale))
        }
        var k = NN.splitHeads(kProj(x), heads: kvHeads, rotary: rotary)
        var v = NN.splitHeads(vProj(x), heads: kvHeads)
        if let cache { (k, v) = cache.update(keys: k, values: v) }
        let o = mask == nil
            ? NN.attentionMergingHeads(queries: q, keys: k, values: v, scale: scale, causal: x.dim(1) > 1)
            : NN.attentionMergingHeads(queries: q, keys: k, values: v, scale: scale, mask: mask)
        return oProj(o)
    }
}

/// The SwiGLU MLP, `down_proj(silu(gate_proj(x)) * up_proj(x))`, without biases.
public final class LlamaMLP: Module {
    @Child("gate_proj") var gateProj: Linear
    @Child("up_proj") var upProj: Linear
    @Child("down_proj") var downProj: Linear

    init(_ config: LanguageConfig) {
        super.init()
        gateProj = Linear(config.hiddenSize, config.intermediateSize, bias: false)
        upProj = Linear(config.hiddenSize, config.intermediateSize, bias: false)
        downProj = Linear(config.intermediateSize, config.hiddenSize, bias: false)
    }

    func callAsFunction(_ x: Tensor) -> Tensor { downProj(NN.siluGate(gateProj(x), upProj(x))) }
}

/// One pre-norm decoder block: RMSNorm, attention and residual, then RMSNorm, MLP and residual.
public final class LlamaDecoderLayer: Module {
    @Child("self_attn") var selfAttention: LlamaAttention
    let mlp: LlamaMLP
    @Child("input_layernorm") var inputLayerNorm: RMSNorm
    @Child("post_attention_layernorm") var postAttentionLayerNorm: RMSNorm

    init(_ config: LanguageConfig) {
        mlp = LlamaMLP(config)
        super.init()
        selfAttention = LlamaAttention(config)
        inputLayerNorm = RMSNorm(config.hiddenSize, eps: config.rmsNormEps)
        postAttentionLayerNorm = RMSNorm(config.hiddenSize, eps: config.rmsNormEps)
    }

    func callAsFunction(_ x: Tensor, mask: Tensor?, cache: KVCache?, rotary: RotaryTables, shared: SharedPromptLayer? = nil) -> Tensor {
        let h = NN.add(x, selfAttention(inputLayerNorm(x), mask: mask, cache: cache, rotary: rotary, shared: shared))
        return NN.add(h, mlp(postAttentionLayerNorm(h)))
    }
}

/// `language_model.model`: embeddings, decoder layers, final norm.
public final class LlamaModel: Module {
    /// `embed_tokens` (vocab, hidden): the token embedding table (read through `LanguageModel.embed`).
    @Child("embed_tokens") public var embedTokens: Embedding
    /// The decoder blocks, `layers.N` in the checkpoint.
    public let layers: [LlamaDecoderLayer]
    /// The final RMSNorm after the last block.
    public let norm: RMSNorm

    init(_ config: LanguageConfig) {
        layers = (0..<config.numHiddenLayers).map { _ in LlamaDecoderLayer(config) }
        norm = RMSNorm(config.hiddenSize, eps: config.rmsNormEps)
        super.init()
        embedTokens = Embedding(config.vocabSize, config.hiddenSize)
    }
}

/// Keys and values of one prompt row shared by the 2B rows of a classifier-free-guidance batch: the first
/// `conditionalRows` rows see the whole prompt, the others only its first `unconditionalKeys` positions.
/// DeepSeek's unconditional rows are the prompt with every token after BOS replaced by padding and masked out;
/// their BOS keys equal the conditional row's (position 0 attends only to itself), and masked keys weigh exactly
/// zero, so hiding the conditional row's later keys from them gives the official result without computing the
/// padded prompt.
///
/// With `promptLengths`, the caches hold one prompt per conditional row instead (right-padded to the longest):
/// conditional row i sees the first `promptLengths[i]` keys of prompt i, unconditional row i its first
/// `unconditionalKeys`, and both continue from position `promptLengths[i]`, as if each prompt ran on its own.
public struct SharedPrompt {
    /// One cache per layer, each holding a single row (or, with `promptLengths`, one row per prompt).
    public let caches: [KVCache]
    /// Batch rows that see the whole prompt: the first rows of the batch; the rest are unconditional.
    public let conditionalRows: Int
    /// Prompt positions the unconditional rows may see (1: BOS only, as in DeepSeek's demo).
    public let unconditionalKeys: Int
    /// Several prompts: the real length of each cache row; nil for the single shared row.
    public let promptLengths: [Int]?

    /// One prompt shared by every row: each of `caches` holds a single row.
    public init(caches: [KVCache], conditionalRows: Int, unconditionalKeys: Int) {
        self.caches = caches
        self.conditionalRows = conditionalRows
        self.unconditionalKeys = unconditionalKeys
        promptLengths = nil
    }

    /// One prompt per conditional row: `caches` hold `promptLengths.count` rows padded on the right.
    public init(caches: [KVCache], promptLengths: [Int], unconditionalKeys: Int) {
        precondition(promptLengths.allSatisfy { $0 >= unconditionalKeys && $0 <= (caches.first?.offset ?? 0) },
                     "each prompt length lies between the unconditional keys and the cache length")
        self.caches = caches
        conditionalRows = promptLengths.count
        self.unconditionalKeys = unconditionalKeys
        self.promptLengths = promptLengths
    }

    /// Prompt positions; the rows' new positions continue from here (the official position ids). With several
    /// prompts, the padded length.
    public var length: Int { caches.first?.offset ?? 0 }

    /// Where `rows` rows of `l` new tokens stand: their positions ((1, l) when every row continues the one prompt,
    /// else (rows, l)) and the prompt keys each may see, additive (rows, 1, 1, P + l) (the rows' own keys all
    /// visible; attention adds causality). Built once per forward pass for every layer.
    func rowLayout(rows: Int, newTokens l: Int, dtype: DType) -> (positions: Tensor, mask: Tensor) {
        let p = length
        let positions: Tensor
        let visibleKeys: [Int]
        if let promptLengths {
            let n = promptLengths.count
            precondition(rows == 2 * n, "one conditional and one unconditional row per prompt (\(rows) rows for \(n) prompts)")
            positions = Tensor((promptLengths + promptLengths).map(Int32.init), shape: [rows, 1]) + Tensor.arange(l).reshaped([1, l])
            visibleKeys = promptLengths + Array(repeating: unconditionalKeys, count: n)
        } else {
            positions = Tensor.arange(Double(p), Double(p + l)).reshaped([1, l])
            visibleKeys = Array(repeating: p, count: conditionalRows) + Array(repeating: unconditionalKeys, count: rows - conditionalRows)
        }
        let visible = Tensor(visibleKeys.map(Int32.init), shape: [rows, 1])
        let keep = concatenated([Tensor.arange(p).reshaped([1, p]) .< visible, Tensor.ones([rows, l], dtype: .bool)], axis: 1)
        return (positions, NN.boolMaskToAdditive(keep, dtype: dtype).reshaped([rows, 1, 1, p + l]))
    }
}

/// One layer's share of a `SharedPrompt`.
struct SharedPromptLayer {
    let keys: Tensor  // (1, Hkv, P, D), or (n, Hkv, P, D) with one prompt per conditional row
    let values: Tensor
    /// The keys each row may see (see `SharedPrompt.rowLayout`).
    let mask: Tensor

    /// Attention of the rows' queries q (B, H, L, D) over the prompt's keys followed by the rows' own keys, from the
    /// key/value projections' rows (B, L, Hkv * D); the output is (B, L, H * D). Batch row i reads prompt row
    /// i % prompts (one prompt: every row; one per conditional row: conditional and unconditional row i both read
    /// prompt i), the mask hides the prompt keys it may not see, and causality the rows' later keys.
    func attention(queries q: Tensor, keyRows: Tensor, valueRows: Tensor, heads: Int, rotary: RotaryTables, scale: Float) -> Tensor {
        func prompt(_ t: Tensor) -> Tensor { t.dtype == keyRows.dtype ? t : t.asType(keyRows.dtype) }
        let k = NN.splitHeads(keyRows, heads: heads, rotary: rotary, prefix: prompt(keys))
        let v = NN.splitHeads(valueRows, heads: heads, prefix: prompt(values))
        return NN.attentionMergingHeads(queries: q, keys: k, values: v, scale: scale, causal: true, mask: mask)
    }
}

/// What one forward pass of the language model returns.
public struct LanguageModelOutput {
    /// The last layer's output after the final RMSNorm (B, L, H).
    public var lastHiddenState: Tensor
    /// With `collectHiddenStates`: the input embeddings, then each layer's output (the last one after the norm),
    /// as transformers' `output_hidden_states` lists them.
    public var hiddenStates: [Tensor]
}

/// `language_model`: the Llama model and its output head.
public final class LanguageModel: Module {
    /// The language model's configuration.
    public let config: LanguageConfig
    /// `language_model.model`: embeddings, decoder blocks and final norm.
    public let model: LlamaModel
    /// `lm_head`: the untied projection from hidden states to vocabulary logits.
    @Child("lm_head") public var lmHead: Linear

    /// Builds the model with freshly initialised weights.
    public init(_ config: LanguageConfig) {
        self.config = config
        model = LlamaModel(config)
        super.init()
        lmHead = Linear(config.hiddenSize, config.vocabSize, bias: false)
    }

    /// A fresh cache per layer.
    public func makeCache(dtype: DType? = nil) -> [KVCache] { model.layers.map { _ in KVCache(dtype: dtype) } }

    /// The cache dtype for decoding text: bfloat16 when the layers' weights are stored in bfloat16 or int8 (the
    /// cache is then read at the weights' precision and costs half the bytes per step), float32 otherwise.
    public var decodingCacheDType: DType {
        let w = model.layers.first?.selfAttention.kProj.weight.dtype
        return w == .bfloat16 || w == .int8 ? .bfloat16 : .float32
    }

    /// Runs the decoder on `inputsEmbeds` (B, L, H).
    /// - keyMask: optional (B, S) with 1 for keys to attend to and 0 for hidden ones (padding or, for CFG, the
    ///   unconditional prompt), covering the cached positions and the new ones (S = cached + L).
    /// - cache: per-layer caches, extended in place; positions continue from the cache length.
    /// - stopAfterLayer: run only the first n layers (REPA reads an intermediate layer); the final norm is
    ///   then not applied.
    /// - segments: for packed rows, (B, L) sample ids (-1 for padding): attention stays inside each sample
    ///   and positions restart at 0 for every sample.
    /// - branches: with `segments`, (B, L) branch ids for samples that share a prefix: 0 for the shared prefix
    ///   (first in each sample), k > 0 for the k-th continuation, which attends to the prefix and itself only and
    ///   whose positions continue from the prefix, as if each continuation were a sample of its own.
    /// - sharedPrompt: for classifier-free guidance, a prompt row the batch rows continue (see `SharedPrompt`);
    ///   then `keyMask`, `cache` and `segments` must be nil.
    public func forward(inputsEmbeds: Tensor, keyMask: Tensor? = nil, cache: [KVCache]? = nil,
                        collectHiddenStates: Bool = false, stopAfterLayer: Int? = nil, segments: Tensor? = nil,
                        branches: Tensor? = nil, sharedPrompt: SharedPrompt? = nil) -> LanguageModelOutput {
        precondition(sharedPrompt == nil || (keyMask == nil && cache == nil && segments == nil),
                     "a shared prompt replaces the key mask, the cache and the segments")
        precondition(branches == nil || segments != nil, "branches need segments")
        let offset = sharedPrompt?.length ?? cache?.first?.offset ?? 0
        let l = inputsEmbeds.dim(1)
        // One new position per row, no masks, hidden states not needed: the whole stack as one fused primitive.
        if let cache, l == 1, keyMask == nil, segments == nil, sharedPrompt == nil, stopAfterLayer == nil, !collectHiddenStates {
            let blocks = decoderBlocks
            if FusedDecoding.supports(inputsEmbeds, blocks: blocks, caches: cache) {
                let h = FusedDecoding.step(inputsEmbeds, blocks: blocks, finalNorm: model.norm.weight, caches: cache, shape: attentionShape)
                return LanguageModelOutput(lastHiddenState: h, hiddenStates: [])
            }
        }
        var mask = LanguageModel.additiveMask(queries: l, offset: offset, keyMask: keyMask, dtype: inputsEmbeds.dtype)
        // The rows' positions: offset..<offset + l in every row, unless the prompts or packed samples say otherwise.
        var positions = Tensor.arange(Double(offset), Double(offset + l)).reshaped([1, l])
        let promptRows = sharedPrompt?.rowLayout(rows: inputsEmbeds.dim(0), newTokens: l, dtype: inputsEmbeds.dtype)
        if let promptRows { positions = promptRows.positions }
        if let segments {
            let (m, p) = LanguageModel.packedMaskAndPositions(segments: segments, branches: branches, dtype: inputsEmbeds.dtype)
            mask = m
            positions = p
        }
        let rotary = RotaryTables(positions: positions, dims: config.headDim, base: config.ropeTheta, dtype: inputsEmbeds.dtype)
        var h = inputsEmbeds
        var states: [Tensor] = collectHiddenStates ? [h] : []
        let count = stopAfterLayer ?? model.layers.count
        for (i, layer) in model.layers.prefix(count).enumerated() {
            let shared = sharedPrompt.map {
                SharedPromptLayer(keys: $0.caches[i].keys!, values: $0.caches[i].values!, mask: promptRows!.mask)
            }
            h = layer(h, mask: mask, cache: cache?[i], rotary: rotary, shared: shared)
            if collectHiddenStates && i < count - 1 { states.append(h) }
        }
        if stopAfterLayer != nil && count < model.layers.count {
            if collectHiddenStates { states.append(h) }
            return LanguageModelOutput(lastHiddenState: h, hiddenStates: states)
        }
        h = model.norm(h)
        if collectHiddenStates { states.append(h) }
        return LanguageModelOutput(lastHiddenState: h, hiddenStates: states)
    }

    /// The decoder layers' weights as the engine's fused decoding takes them.
    public var decoderBlocks: [DecoderBlockWeights] {
        model.layers.map { layer in
            let a = layer.selfAttention, m = layer.mlp
            return DecoderBlockWeights(inputNorm: layer.inputLayerNorm.weight, postAttentionNorm: layer.postAttentionLayerNorm.weight,
                                       q: a.qProj, k: a.kProj, v: a.vProj, o: a.oProj, gate: m.gateProj, up: m.upProj, down: m.downProj)
        }
    }

    /// Head counts, head width, rotary base and norm epsilon, as the engine's fused decoding takes them.
    public var attentionShape: DecoderAttentionShape {
        DecoderAttentionShape(heads: config.numAttentionHeads, kvHeads: config.numKeyValueHeads, headDim: config.headDim,
                              ropeBase: config.ropeTheta, normEps: config.rmsNormEps)
    }

    /// Causal mask plus hidden keys, additive (B, 1, L, S); nil when plain causal attention suffices.
    static func additiveMask(queries l: Int, offset: Int, keyMask: Tensor?, dtype: DType) -> Tensor? {
        guard let keyMask else { return nil }
        let s = offset + l
        let causal = NN.causalAdditiveMask(queries: l, keys: s, dtype: dtype)  // (L, S)
        let keep = keyMask.slice(axis: 1, 0, s).asType(.bool).reshaped([keyMask.dim(0), 1, 1, s])
        return causal.reshaped([1, 1, l, s]) + NN.boolMaskToAdditive(keep, dtype: dtype)
    }

    /// Block-diagonal causal mask (B, 1, L, L) and per-sample positions (B, L) for packed rows; with `branches`,
    /// a continuation (branch k > 0) sees its sample's prefix (branch 0) and itself, not the other continuations.
    static func packedMaskAndPositions(segments: Tensor, branches: Tensor? = nil, dtype: DType) -> (Tensor, Tensor) {
        let (b, l) = (segments.dim(0), segments.dim(1))
        let seg = segments.asType(.int32)
        let same = seg.reshaped([b, l, 1]) .== seg.reshaped([b, 1, l])
        let causal = Tensor.arange(l).reshaped([1, l, 1]) .>= Tensor.arange(l).reshaped([1, 1, l])
        var keep = same.logicalAnd(causal).logicalAnd((seg .>= 0).reshaped([b, 1, l]))
        // Segments and branches are contiguous runs: a run starts where either id changes.
        let index = Tensor.arange(l).reshaped([1, l]).broadcast(to: [b, l])
        let zeros = Tensor.zeros([b, l], dtype: .int32)
        func runStarts(_ ids: Tensor) -> Tensor {
            let changes = concatenated([Tensor.ones([b, 1], dtype: .bool), ids.slice(axis: 1, 1) .!= ids.slice(axis: 1, 0, l - 1)], axis: 1)
            return which(changes, index, zeros).cumulativeMax(axis: 1)
        }
        let sampleStart = runStarts(seg)
        guard let branches else { return (NN.boolMaskToAdditive(keep, dtype: dtype).expandedDims(axis: 1), index - sampleStart) }
        let br = branches.asType(.int32)
        keep = keep.logicalAnd((br.reshaped([b, l, 1]) .== br.reshaped([b, 1, l])).logicalOr((br .== 0).reshaped([b, 1, l])))
        // A continuation's positions start at its sample's prefix length (the prefix tokens come first).
        let branchStart = runStarts(seg * 65536 + br)
        let inPrefix = (br .== 0).logicalAnd(seg .>= 0).asType(.int32)
        let prefixBefore = inPrefix.cumsum(axis: 1, inclusive: false)
        let prefixLength = inPrefix.cumsum(axis: 1) - prefixBefore.takeAlong(sampleStart, axis: 1)
        let positions = which(br .== 0, index - sampleStart, prefixLength + index - branchStart)
        return (NN.boolMaskToAdditive(keep, dtype: dtype).expandedDims(axis: 1), positions)
    }

    /// Token embeddings in float32, the compute dtype, whatever dtype the table is stored in: bfloat16 activations
    /// would send every later op down MLX's slow reduced-precision paths and lose precision.
    public func embed(_ ids: Tensor) -> Tensor {
        let e = model.embedTokens(ids)
        return e.dtype.isFloatingPoint && e.dtype != .float32 ? e.asType(.float32) : e
    }

    /// Vocabulary logits (B, L, vocab) of hidden states from `forward`.
    public func logits(_ hidden: Tensor) -> Tensor { lmHead(hidden) }
}
