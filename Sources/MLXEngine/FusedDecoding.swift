import CMLXShim

/// The weights of one pre-norm decoder block in the Llama layout: RMSNorm, rotary (rotate-half) self-attention,
/// RMSNorm, SwiGLU MLP, each sub-layer added to the residual stream. Linear layers without biases.
public struct DecoderBlockWeights {
    /// Weight of the RMSNorm before self-attention, (hidden).
    public var inputNorm: Tensor
    /// Weight of the RMSNorm before the MLP, (hidden).
    public var postAttentionNorm: Tensor
    /// The attention's query, key, value and output projections and the MLP's gate, up and down projections.
    public var q, k, v, o, gate, up, down: Linear

    /// Collects one block's two norm weights and seven linear layers.
    public init(inputNorm: Tensor, postAttentionNorm: Tensor, q: Linear, k: Linear, v: Linear, o: Linear, gate: Linear,
                up: Linear, down: Linear) {
        self.inputNorm = inputNorm
        self.postAttentionNorm = postAttentionNorm
        (self.q, self.k, self.v, self.o, self.gate, self.up, self.down) = (q, k, v, o, gate, up, down)
    }

    var linears: [Linear] { [q, k, v, o, gate, up, down] }
}

/// The shape of the attention in a stack of decoder blocks.
public struct DecoderAttentionShape: Equatable {
    /// Number of query heads.
    public var heads: Int
    /// Number of key/value heads; fewer than `heads` for grouped-query attention.
    public var kvHeads: Int
    /// Features per head.
    public var headDim: Int
    /// Base of the rotary embedding's frequencies (10000 in Llama).
    public var ropeBase: Float
    /// Epsilon of every RMSNorm in the stack, the final norm included.
    public var normEps: Float

    /// Groups the head counts, head width and the rotary and norm constants.
    public init(heads: Int, kvHeads: Int, headDim: Int, ropeBase: Float, normEps: Float) {
        (self.heads, self.kvHeads, self.headDim, self.ropeBase, self.normEps) = (heads, kvHeads, headDim, ropeBase, normEps)
    }
}

/// Decoding one position through a whole stack of decoder blocks as a single shim primitive (inference only).
/// Decoding reads every weight once per token; run as ~20 small graph ops per block, the hand-offs between them
/// cost about a fifth of each token on two cores. Same result as the blocks run op by op (tested).
public enum FusedDecoding {
    /// Whether `step` can run these blocks and caches: fast kernels on, float32 rows of one position, bias-free
    /// float32/bfloat16/int8 linears, and float32 or bfloat16 caches that already hold at least one position.
    public static func supports(_ x: Tensor, blocks: [DecoderBlockWeights], caches: [KVCache]) -> Bool {
        guard Kernels.enabled, !blocks.isEmpty, caches.count == blocks.count, x.ndim == 3, x.dim(1) == 1, x.dtype == .float32,
              let first = caches.first, first.offset > 0 else { return false }
        guard let cacheType = first.keyBuffer?.dtype, cacheType == .float32 || cacheType == .bfloat16 else { return false }
        for cache in caches {
            guard cache.offset == first.offset, let keys = cache.keyBuffer, keys.dtype == cacheType, cache.valueBuffer?.dtype == cacheType,
                  keys.dim(0) == x.dim(0) else { return false }
        }
        for block in blocks {
            for linear in block.linears {
                guard linear.bias == nil, [.float32, .bfloat16, .int8].contains(linear.weight.dtype) else { return false }
            }
        }
        return true
    }

    /// Runs x (B, 1, H) at the caches' next position through `blocks`, then `finalNorm` (if any), appending each
    /// block's key and value to its cache. Check `supports` first.
    public static func step(_ x: Tensor, blocks: [DecoderBlockWeights], finalNorm: Tensor?, caches: [KVCache],
                            shape: DecoderAttentionShape) -> Tensor {
        precondition(supports(x, blocks: blocks, caches: caches), "FusedDecoding.step: unsupported inputs (check supports first)")
        let past = caches[0].offset
        var buffers: [Tensor] = []
        for cache in caches { buffers += cache.reserve(1) }
        var tensors: [Tensor] = [x] + (finalNorm.map { [$0] } ?? [])
        var blockTensors: [Tensor] = []
        var scales: [Tensor?] = []
        var groups: [Int32] = []
        for (i, block) in blocks.enumerated() {
            blockTensors += [block.inputNorm, block.postAttentionNorm, buffers[2 * i], buffers[2 * i + 1]]
            for linear in block.linears {
                blockTensors.append(linear.weight)
                scales.append(linear.scales)
                groups.append(Int32(linear.quantizationGroup))
            }
        }
        tensors += blockTensors + scales.compactMap { $0 }
        for t in tensors where t.handle == nil { return Tensor(error: t.error!) }
        let n = blocks.count
        var outputs = [mlxs_array?](repeating: nil, count: 1 + 2 * n)
        let status = withExtendedLifetime(tensors) { () -> Int32 in
            let blockHandles = blockTensors.map(\.handle)
            let scaleHandles = scales.map { $0?.handle }
            return mlxs_decode_step(x.handle, finalNorm?.handle, blockHandles, scaleHandles, groups, Int32(n), Int32(shape.heads),
                                    Int32(shape.kvHeads), Int32(shape.headDim), Int32(past), shape.normEps, shape.ropeBase, &outputs)
        }
        buffers.removeAll()  // the caches must hold their buffers alone so that the appends below write in place
        if status != 0 { return Tensor(error: MLXError(String(cString: mlxs_last_error()))) }
        let results = outputs.map { Tensor(checked: $0) }
        for (i, cache) in caches.enumerated() { cache.append(keys: results[1 + 2 * i], values: results[2 + 2 * i]) }
        return results[0]
    }
}
