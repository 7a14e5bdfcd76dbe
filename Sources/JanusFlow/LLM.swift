import MLXEngine

// DeepSeek-LLM in the Llama layout: pre-norm decoder blocks with RMSNorm, rotary positions (rotate-half),
// causal self-attention and a SwiGLU MLP; a final RMSNorm and an untied output head.

public final class LlamaAttention: Module {
    @Child("q_proj") var qProj: Linear
    @Child("k_proj") var kProj: Linear
    @Child("v_proj") var vProj: Linear
    @Child("o_proj") var oProj: Linear
    let heads: Int
    let kvHeads: Int
    let headDim: Int
    let ropeTheta: Float

    init(_ config: LanguageConfig) {
        heads = config.numAttentionHeads
        kvHeads = config.numKeyValueHeads
        headDim = config.headDim
        ropeTheta = config.ropeTheta
        super.init()
        let h = config.hiddenSize
        qProj = Linear(h, heads * headDim, bias: false)
        kProj = Linear(h, kvHeads * headDim, bias: false)
        vProj = Linear(h, kvHeads * headDim, bias: false)
        oProj = Linear(heads * headDim, h, bias: false)
    }

    /// x (B, L, H); positions start at `offset` in every row. `mask` is additive, broadcastable to (B, 1, L, S).
    /// With `shared` (classifier-free guidance), the rows also attend to one shared prompt row's keys/values.
    func callAsFunction(_ x: Tensor, mask: Tensor?, offset: Int, cache: KVCache?, rotary: RotaryTables? = nil,
                        shared: SharedPromptLayer? = nil) -> Tensor {
        let (b, l) = (x.dim(0), x.dim(1))
        // (B, L, heads * D) -> (B, heads, L, D); with one position (decoding) that is a plain reshape, which saves
        // MLX a graph node and a copy per projection on the path where per-op overhead matters most.
        func split(_ t: Tensor, _ n: Int) -> Tensor {
            l == 1 ? t.reshaped([b, n, 1, headDim]) : t.reshaped([b, l, n, headDim]).transposed([0, 2, 1, 3])
        }
        func merge(_ o: Tensor) -> Tensor {
            l == 1 ? o.reshaped([b, 1, heads * headDim]) : o.transposed([0, 2, 1, 3]).reshaped([b, l, heads * headDim])
        }
        var q = split(qProj(x), heads)
        var k = split(kProj(x), kvHeads)
        var v = split(vProj(x), kvHeads)
        if let rotary {
            q = NN.rope(q, tables: rotary)
            k = NN.rope(k, tables: rotary)
        } else {
            q = NN.rope(q, dims: headDim, traditional: false, base: ropeTheta, offset: offset)
            k = NN.rope(k, dims: headDim, traditional: false, base: ropeTheta, offset: offset)
        }
        if let cache { (k, v) = cache.update(keys: k, values: v) }
        let scale = 1 / Float(headDim).squareRoot()
        if let shared {
            return oProj(merge(shared.attention(queries: q, keys: k, values: v, scale: scale)))
        }
        let o = mask == nil
            ? NN.attention(queries: q, keys: k, values: v, scale: scale, causal: l > 1)
            : NN.attention(queries: q, keys: k, values: v, scale: scale, mask: mask)
        return oProj(merge(o))
    }
}

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

    func callAsFunction(_ x: Tensor, mask: Tensor?, offset: Int, cache: KVCache?, rotary: RotaryTables? = nil,
                        shared: SharedPromptLayer? = nil) -> Tensor {
        let h = x + selfAttention(inputLayerNorm(x), mask: mask, offset: offset, cache: cache, rotary: rotary, shared: shared)
        return h + mlp(postAttentionLayerNorm(h))
    }
}

/// `language_model.model`: embeddings, decoder layers, final norm.
public final class LlamaModel: Module {
    @Child("embed_tokens") public var embedTokens: Embedding
    public let layers: [LlamaDecoderLayer]
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
/// zero, so attending to the visible keys alone gives the official result without computing the padded prompt.
///
/// With `promptLengths`, the caches hold one prompt per conditional row instead (right-padded to the longest):
/// conditional row i sees the first `promptLengths[i]` keys of prompt i, unconditional row i its first
/// `unconditionalKeys`, and both continue from position `promptLengths[i]`, as if each prompt ran on its own.
public struct SharedPrompt {
    /// One cache per layer, each holding a single row (or, with `promptLengths`, one row per prompt).
    public let caches: [KVCache]
    public let conditionalRows: Int
    public let unconditionalKeys: Int
    /// Several prompts: the real length of each cache row; nil for the single shared row.
    public let promptLengths: [Int]?

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

    /// Several prompts: each row's first position, (2n, L) positions for `l` new tokens, and the prompt keys each
    /// row may see, additive (2n, 1, 1, P + l) (the rows' own keys all visible; causality is added by attention).
    func rowLayout(newTokens l: Int, dtype: DType) -> (positions: Tensor, keyMask: Tensor)? {
        guard let promptLengths else { return nil }
        let n = promptLengths.count, p = length
        let starts = Tensor((promptLengths + promptLengths).map(Int32.init), shape: [2 * n, 1])
        let positions = starts + Tensor.arange(l).reshaped([1, l])
        let visible = Tensor((promptLengths + Array(repeating: unconditionalKeys, count: n)).map(Int32.init), shape: [2 * n, 1])
        let keep = concatenated([Tensor.arange(p).reshaped([1, p]) .< visible, Tensor.ones([2 * n, l], dtype: .bool)], axis: 1)
        return (positions, NN.boolMaskToAdditive(keep, dtype: dtype).reshaped([2 * n, 1, 1, p + l]))
    }
}

/// One layer's share of a `SharedPrompt`.
struct SharedPromptLayer {
    let keys: Tensor  // (1, Hkv, P, D), or (n, Hkv, P, D) with one prompt per conditional row
    let values: Tensor
    let conditionalRows: Int
    let unconditionalKeys: Int
    /// Several prompts: which prompt keys each row sees (see `SharedPrompt.rowLayout`).
    let keyMask: Tensor?

    /// Causal attention of the rows' queries over the shared prompt's visible keys followed by the rows' own keys.
    func attention(queries q: Tensor, keys k: Tensor, values v: Tensor, scale: Float) -> Tensor {
        if let keyMask {
            // Conditional and unconditional row i both read prompt i; the mask hides what each may not see.
            let keysAll = concatenated([concatenated([keys, keys], axis: 0).asType(k.dtype), k], axis: 2)
            let valuesAll = concatenated([concatenated([values, values], axis: 0).asType(v.dtype), v], axis: 2)
            return NN.attention(queries: q, keys: keysAll, values: valuesAll, scale: scale, causal: true, mask: keyMask)
        }
        let rows = q.dim(0)
        var outputs: [Tensor] = []
        for (range, visible) in [(0..<conditionalRows, keys.dim(2)), (conditionalRows..<rows, unconditionalKeys)] where !range.isEmpty {
            let n = range.count
            func joined(_ prompt: Tensor, _ own: Tensor) -> Tensor {
                let p = prompt.slice(axis: 2, 0, visible)
                let shape = [n, p.dim(1), visible, p.dim(3)]
                return concatenated([p.broadcast(to: shape).asType(own.dtype), own.slice(axis: 0, range.lowerBound, range.upperBound)], axis: 2)
            }
            outputs.append(NN.attention(queries: q.slice(axis: 0, range.lowerBound, range.upperBound), keys: joined(keys, k),
                                        values: joined(values, v), scale: scale, causal: true))
        }
        return outputs.count == 1 ? outputs[0] : concatenated(outputs, axis: 0)
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
    public let config: LanguageConfig
    public let model: LlamaModel
    @Child("lm_head") public var lmHead: Linear

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
        var rotary: RotaryTables?
        let promptRows = sharedPrompt?.rowLayout(newTokens: l, dtype: inputsEmbeds.dtype)
        if let promptRows {
            rotary = model.layers.first.map {
                RotaryTables(positions: promptRows.positions, dims: $0.selfAttention.headDim, base: $0.selfAttention.ropeTheta,
                             dtype: inputsEmbeds.dtype)
            }
        }
        if let segments {
            let (m, p) = LanguageModel.packedMaskAndPositions(segments: segments, branches: branches, dtype: inputsEmbeds.dtype)
            mask = m
            rotary = model.layers.first.map {
                RotaryTables(positions: p, dims: $0.selfAttention.headDim, base: $0.selfAttention.ropeTheta, dtype: inputsEmbeds.dtype)
            }
        }
        var h = inputsEmbeds
        var states: [Tensor] = collectHiddenStates ? [h] : []
        let count = stopAfterLayer ?? model.layers.count
        for (i, layer) in model.layers.prefix(count).enumerated() {
            let shared = sharedPrompt.map {
                SharedPromptLayer(keys: $0.caches[i].keys!, values: $0.caches[i].values!, conditionalRows: $0.conditionalRows,
                                  unconditionalKeys: $0.unconditionalKeys, keyMask: promptRows?.keyMask)
            }
            h = layer(h, mask: mask, offset: offset, cache: cache?[i], rotary: rotary, shared: shared)
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

    public func logits(_ hidden: Tensor) -> Tensor { lmHead(hidden) }
}
