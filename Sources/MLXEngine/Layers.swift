import Foundation

/// Where new layers draw their initial weights: a seeded key stream, so a seeded model is reproducible.
public enum Initializer {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var key = RandomKey(seed: 0)

    /// Restarts the stream (call before building a model to make its initial weights reproducible).
    public static func seed(_ seed: UInt64) {
        lock.lock(); defer { lock.unlock() }
        key = RandomKey(seed: seed)
    }

    /// Splits the next key off the shared stream (thread-safe); each call gives a different key.
    public static func nextKey() -> RandomKey {
        lock.lock(); defer { lock.unlock() }
        return key.next()
    }

    /// Uniform in [-bound, bound), PyTorch's default for Linear and Conv (bound = 1/sqrt(fan_in)).
    public static func uniform(_ shape: [Int], bound: Double, dtype: DType = .float32) -> Tensor {
        (Random.uniform(shape, key: nextKey()) * (2 * bound) - bound).asType(dtype)
    }

    /// Normal samples with mean 0 and standard deviation `std`, drawn in float32 from the shared stream, then cast to `dtype`.
    public static func normal(_ shape: [Int], std: Double, dtype: DType = .float32) -> Tensor {
        (Random.normal(shape, key: nextKey()) * std).asType(dtype)
    }
}

/// y = x W^T + b, with W (out, in) as in PyTorch checkpoints.
public final class Linear: Module {
    /// The weight matrix, (out, in); int8 after `quantize(groupSize:)`.
    @Parameter public var weight: Tensor
    /// The bias, (out), or nil for a layer built with `bias: false`.
    @Parameter public var bias: Tensor?
    /// After `quantize`: `weight` holds int8 values and these their float32 scales, one per `quantizationGroup`
    /// consecutive inputs of each output row, (out, in / group).
    public private(set) var scales: Tensor?
    /// Consecutive inputs that share one scale after `quantize(groupSize:)`; 0 before.
    public private(set) var quantizationGroup = 0

    /// A layer from `inFeatures` to `outFeatures` with PyTorch's default initialisation: weight and bias uniform in ±1/sqrt(inFeatures).
    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) {
        let bound = 1 / Foundation.sqrt(Double(inFeatures))
        self.weight = Initializer.uniform([outFeatures, inFeatures], bound: bound)
        self.bias = bias ? Initializer.uniform([outFeatures], bound: bound) : nil
        super.init()
    }

    /// Maps x (..., in) to (..., out); a quantized layer runs `NN.quantizedLinear` and adds the bias afterwards.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard let scales else { return NN.linear(x, weight: weight, bias: bias) }
        var y = NN.quantizedLinear(x, weight: weight, scales: scales, groupSize: quantizationGroup)
        if let bias { y = y + bias.asType(y.dtype) }
        return y
    }

    /// Replaces the weights by symmetric int8 values with one scale per `groupSize` inputs of each output row
    /// (round to nearest: max |w| of a group maps to 127); widths that `groupSize` does not divide use groups of
    /// 32 or 16. Returns false, changing nothing, when the input width is not a multiple of 16. Inference only.
    @discardableResult
    public func quantize(groupSize preferred: Int = 64) throws -> Bool {
        guard scales == nil else { return true }
        let (n, k) = (weight.dim(0), weight.dim(1))
        guard let groupSize = [preferred, 32, 16].first(where: { $0 > 0 && $0 % 16 == 0 && k % $0 == 0 }) else { return false }
        let groups = weight.asType(.float32).reshaped([n, k / groupSize, groupSize])
        let maxima = groups.abs().max(axis: 2)
        let s = which(maxima .> 0, maxima / 127, Tensor.ones([n, k / groupSize]))
        let q = (groups / s.expandedDims(axis: 2)).rounded().clipped(min: -127, max: 127).asType(.int8).reshaped([n, k])
        try Tensor.eval([q, s])
        weight = q
        scales = s
        quantizationGroup = groupSize
        return true
    }
}

/// Lookup table of row vectors.
public final class Embedding: Module {
    /// The table, (count, dimensions).
    @Parameter public var weight: Tensor

    /// A table of `count` vectors of `dimensions` values drawn from the standard normal (PyTorch's default).
    public init(_ count: Int, _ dimensions: Int) {
        self.weight = Initializer.normal([count, dimensions], std: 1)
        super.init()
    }

    /// The rows of integer `ids` of any shape, giving (ids..., dimensions); ids are cast to int32.
    public func callAsFunction(_ ids: Tensor) -> Tensor { weight.take(ids.asType(.int32), axis: 0) }

    /// Logits against the embedding table (tied output layer).
    public func asLinear(_ x: Tensor) -> Tensor { matmul(x, weight.T) }
}

/// 2D convolution on NHWC input; the weight is kept in PyTorch's (out, in/groups, kh, kw) layout so it binds
/// to checkpoint tensors unchanged.
public final class Conv2d: Module {
    /// The kernel in PyTorch's layout, (out, in / groups, kh, kw).
    @Parameter public var weight: Tensor
    /// The bias, (out), or nil for a layer built with `bias: false`.
    @Parameter public var bias: Tensor?
    /// Step between kernel positions, (vertical, horizontal).
    public let stride: (Int, Int)
    /// Zero rows and columns added on each side, (vertical, horizontal).
    public let padding: (Int, Int)
    /// Number of channel groups; the channel count for a depthwise convolution.
    public let groups: Int

    /// A square-kernel convolution with PyTorch's default initialisation: weight and bias uniform in ±1/sqrt(fan_in).
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                groups: Int = 1, bias: Bool = true) {
        let fanIn = inChannels / groups * kernelSize * kernelSize
        let bound = 1 / Foundation.sqrt(Double(fanIn))
        self.weight = Initializer.uniform([outChannels, inChannels / groups, kernelSize, kernelSize], bound: bound)
        self.bias = bias ? Initializer.uniform([outChannels], bound: bound) : nil
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.groups = groups
        super.init()
    }

    /// Convolves x (B, H, W, in) into (B, H', W', out), the weight cast to x's dtype; depthwise stride-1 layers take the shim's depthwise kernel.
    /// bfloat16 weights on float32 input stay bfloat16 for the shim's convolution, whose products then follow the
    /// bf16 linear layers' rule (the bf16 GEMM on the CPU paths that have one, the widened weights elsewhere).
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let channels = weight.dim(0)
        let depthwise = groups == channels && weight.dim(1) == 1 && stride == (1, 1) && x.dim(-1) == channels
        let keepsBF16 = !depthwise && groups == 1 && Kernels.enabled && x.dtype == .float32 && self.weight.dtype == .bfloat16
        let weight = keepsBF16 ? self.weight : self.weight.asType(x.dtype)
        var y: Tensor
        if depthwise {
            // Depthwise: the shim's kernel (weight as (C, kh, kw)).
            y = NN.depthwiseConv2d(x, weight: weight.squeezed(axis: 1), padding: padding)
        } else {
            y = NN.conv2d(x, weight: weight.transposed([0, 2, 3, 1]), stride: stride, padding: padding, groups: groups)
        }
        if let bias { y = y + bias.asType(y.dtype) }
        return y
    }
}

/// Layer normalisation over the last axis, with an optional learned per-feature scale and shift.
public final class LayerNorm: Module {
    /// Per-feature scale, ones at first; nil without `affine`.
    @Parameter public var weight: Tensor?
    /// Per-feature shift, zeros at first; nil without `affine`.
    @Parameter public var bias: Tensor?
    /// Added to the variance before its square root.
    public let eps: Float

    /// A LayerNorm over `dimensions` features; `affine` false leaves out the scale and shift.
    public init(_ dimensions: Int, eps: Float = 1e-5, affine: Bool = true) {
        self.weight = affine ? Tensor.ones([dimensions]) : nil
        self.bias = affine ? Tensor.zeros([dimensions]) : nil
        self.eps = eps
        super.init()
    }

    /// Normalises x over its last axis, then scales and shifts it.
    public func callAsFunction(_ x: Tensor) -> Tensor { NN.layerNorm(x, weight: weight, bias: bias, eps: eps) }
}

/// Root-mean-square normalisation over the last axis with a learned per-feature scale (no mean subtraction, no shift).
public final class RMSNorm: Module {
    /// Per-feature scale, ones at first.
    @Parameter public var weight: Tensor
    /// Added to the mean square before its square root.
    public let eps: Float

    /// An RMSNorm over `dimensions` features.
    public init(_ dimensions: Int, eps: Float = 1e-6) {
        self.weight = Tensor.ones([dimensions])
        self.eps = eps
        super.init()
    }

    /// Normalises x over its last axis, as `NN.rmsNorm(_:weight:eps:)` does.
    public func callAsFunction(_ x: Tensor) -> Tensor { NN.rmsNorm(x, weight: weight, eps: eps) }
}

/// GroupNorm over the channels of NHWC input (PyTorch semantics).
public final class GroupNorm: Module {
    /// Per-channel scale, ones at first.
    @Parameter public var weight: Tensor
    /// Per-channel shift, zeros at first.
    @Parameter public var bias: Tensor
    /// Number of channel groups; it must divide the channel count.
    public let groups: Int
    /// Added to each group's variance before its square root.
    public let eps: Float

    /// A GroupNorm of `channels` channels split into `groups` groups.
    public init(groups: Int, channels: Int, eps: Float = 1e-5) {
        self.weight = Tensor.ones([channels])
        self.bias = Tensor.zeros([channels])
        self.groups = groups
        self.eps = eps
        super.init()
    }

    /// Normalises NHWC x over each sample's groups of channels, then scales and shifts per channel.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        NN.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps)
    }

    /// silu(GroupNorm(x)) in one kernel (the pre-activation of diffusers' ResNet blocks).
    public func withSiLU(_ x: Tensor) -> Tensor {
        NN.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps, silu: true)
    }
}

/// The GELU activation as a module, in the exact (erf) form or the tanh approximation.
public final class GELU: Module {
    /// Whether the layer uses the tanh approximation rather than the erf form.
    public let approximateTanh: Bool
    /// A GELU layer, exact unless `approximateTanh` is true.
    public init(approximateTanh: Bool = false) {
        self.approximateTanh = approximateTanh
        super.init()
    }
    /// Applies GELU element-wise.
    public func callAsFunction(_ x: Tensor) -> Tensor { approximateTanh ? NN.geluTanh(x) : NN.gelu(x) }
}

/// The SiLU (swish) activation, x * sigmoid(x), as a module.
public final class SiLU: Module {
    /// A SiLU layer; it has no parameters.
    public override init() { super.init() }
    /// Applies SiLU element-wise.
    public func callAsFunction(_ x: Tensor) -> Tensor { NN.silu(x) }
}

/// Zeroes elements with probability p in training mode and rescales the rest by 1/(1-p).
public final class Dropout: Module {
    /// Probability of zeroing each element.
    public let p: Double
    /// A dropout layer that drops each element with probability `p`.
    public init(p: Double) {
        self.p = p
        super.init()
    }

    /// In training mode drops elements of x, drawing from `key` or else from `Initializer`'s stream; otherwise returns x unchanged.
    public func callAsFunction(_ x: Tensor, key: RandomKey? = nil) -> Tensor {
        guard training, p > 0 else { return x }
        let keep = Random.bernoulli(1 - p, shape: x.shape, key: key ?? Initializer.nextKey())
        return which(keep, x / (1 - p), Tensor.zeros([], dtype: x.dtype))
    }
}

/// Keys and values of the positions seen so far, for incremental decoding. Arrays are (B, H, L, D).
///
/// The positions live in buffers with room to spare (grown `step` positions at a time) and new ones are written in
/// place, so a decode step costs no copy of the whole cache; `keys`/`values` are views of the filled part, which
/// the attention kernel reads without copying.
public final class KVCache {
    private(set) var keyBuffer: Tensor?
    private(set) var valueBuffer: Tensor?
    /// Number of cached positions.
    public private(set) var offset = 0
    /// Positions added when the buffers are full.
    public let step: Int
    /// The dtype positions are stored in (nil: as they come). A bfloat16 cache halves what each decoding step
    /// reads; `update` still returns the dtype it is given.
    public let dtype: DType?

    /// An empty cache whose buffers grow `step` positions at a time, storing in `dtype` (nil: the dtype of what is appended).
    public init(step: Int = 256, dtype: DType? = nil) {
        self.step = step
        self.dtype = dtype
    }

    /// The cached keys, (B, H, offset, D), or nil before the first append.
    public var keys: Tensor? { keyBuffer.map { $0.dim(2) == offset ? $0 : $0.slice(axis: 2, 0, offset) } }
    /// The cached values, (B, H, offset, D), or nil before the first append.
    public var values: Tensor? { valueBuffer.map { $0.dim(2) == offset ? $0 : $0.slice(axis: 2, 0, offset) } }

    /// Appends new keys/values and returns everything cached so far.
    public func update(keys newKeys: Tensor, values newValues: Tensor) -> (Tensor, Tensor) {
        append(keys: newKeys, values: newValues)
        let (k, v) = (keys!, values!)
        return (k.dtype == newKeys.dtype ? k : k.asType(newKeys.dtype), v.dtype == newValues.dtype ? v : v.asType(newValues.dtype))
    }

    /// Appends new keys/values (B, H, n, D).
    public func append(keys newKeys: Tensor, values newValues: Tensor) {
        let n = newKeys.dim(2)
        func stored(_ x: Tensor) -> Tensor { dtype.map { x.dtype == $0 ? x : x.asType($0) } ?? x }
        keyBuffer = Self.write(stored(newKeys), into: keyBuffer, at: offset, step: step)
        valueBuffer = Self.write(stored(newValues), into: valueBuffer, at: offset, step: step)
        offset += n
    }

    /// Grows the buffers (when needed) to hold `n` more positions and returns them, [keys, values], each
    /// (B, H, capacity, D) with the first `offset` positions filled. The cache must hold something already.
    func reserve(_ n: Int) -> [Tensor] {
        precondition(keyBuffer != nil && valueBuffer != nil, "KVCache.reserve: the cache is empty")
        keyBuffer = Self.room(for: n, in: keyBuffer, at: offset, step: step, like: keyBuffer!)
        valueBuffer = Self.room(for: n, in: valueBuffer, at: offset, step: step, like: valueBuffer!)
        return [keyBuffer!, valueBuffer!]
    }

    /// `buffer`, or (when it is missing, too short for `n` more positions or of another dtype than `like`) a new
    /// one in `like`'s shape and dtype with capacity for them, a multiple of `step`, holding its first `offset`.
    private static func room(for n: Int, in buffer: Tensor?, at offset: Int, step: Int, like: Tensor) -> Tensor {
        if let buffer, buffer.dim(2) >= offset + n, buffer.dtype == like.dtype { return buffer }
        var shape = like.shape
        shape[2] = (offset + n + step - 1) / step * step - offset
        let room = Tensor.zeros(shape, dtype: like.dtype)
        return offset == 0 ? room : concatenated([buffer!.slice(axis: 2, 0, offset).asType(like.dtype), room], axis: 2)
    }

    /// `update` written at `offset` of `buffer`, growing the buffer first when it is too short. The old buffer
    /// is released by the caller's assignment before evaluation, so MLX updates it in place.
    private static func write(_ update: Tensor, into buffer: Tensor?, at offset: Int, step: Int) -> Tensor {
        var stop = update.shape
        stop[2] += offset
        return room(for: update.dim(2), in: buffer, at: offset, step: step, like: update)
            .sliceUpdated(update, start: [0, 0, offset, 0], stop: stop)
    }

    /// Keeps only the first `length` positions (to reuse a shared prompt prefix).
    public func truncate(to length: Int) { offset = Swift.min(offset, Swift.max(0, length)) }

    /// A cache holding the same arrays (arrays are immutable, so later updates do not affect the original).
    public func copy() -> KVCache {
        let c = KVCache(step: step, dtype: dtype)
        c.keyBuffer = keyBuffer
        c.valueBuffer = valueBuffer
        c.offset = offset
        return c
    }

    /// Repeats every batch row `count` times along the batch axis.
    public func repeatedBatch(_ count: Int) -> KVCache {
        let c = KVCache(step: step, dtype: dtype)
        c.keyBuffer = keys?.repeated(count, axis: 0)
        c.valueBuffer = values?.repeated(count, axis: 0)
        c.offset = offset
        return c
    }
}

/// Multi-head attention with separate query/key/value/output projections and an optional KV cache.
public final class MultiHeadAttention: Module {
    /// Query projection, checkpoint key `query_proj`.
    @Child("query_proj") public var queryProj: Linear
    /// Key projection, checkpoint key `key_proj`.
    @Child("key_proj") public var keyProj: Linear
    /// Value projection, checkpoint key `value_proj`.
    @Child("value_proj") public var valueProj: Linear
    /// Output projection, checkpoint key `out_proj`.
    @Child("out_proj") public var outProj: Linear
    /// Number of heads; `dimensions` must be a multiple of it.
    public let heads: Int

    /// Attention over `dimensions` features in `heads` heads, with four square (dimensions, dimensions) projections.
    public init(dimensions: Int, heads: Int, bias: Bool = true) {
        self.heads = heads
        super.init()
        queryProj = Linear(dimensions, dimensions, bias: bias)
        keyProj = Linear(dimensions, dimensions, bias: bias)
        valueProj = Linear(dimensions, dimensions, bias: bias)
        outProj = Linear(dimensions, dimensions, bias: bias)
    }

    /// x (B, L, D) attends to memory (B, S, D) (x itself when nil). With a cache, new keys/values are appended.
    public func callAsFunction(_ x: Tensor, memory: Tensor? = nil, causal: Bool = false, mask: Tensor? = nil,
                               cache: KVCache? = nil) -> Tensor {
        let (b, l, d) = (x.dim(0), x.dim(1), x.dim(2))
        let src = memory ?? x
        let s = src.dim(1)
        let hd = d / heads
        let q = queryProj(x).reshaped([b, l, heads, hd]).transposed([0, 2, 1, 3])
        var k = keyProj(src).reshaped([b, s, heads, hd]).transposed([0, 2, 1, 3])
        var v = valueProj(src).reshaped([b, s, heads, hd]).transposed([0, 2, 1, 3])
        if let cache { (k, v) = cache.update(keys: k, values: v) }
        let o = NN.attention(queries: q, keys: k, values: v, scale: 1 / Float(hd).squareRoot(), causal: causal, mask: mask)
        return outProj(o.transposed([0, 2, 1, 3]).reshaped([b, l, d]))
    }
}
