import Foundation
import CMLXShim

/// Stateless neural-network functions. Images are channels-last (NHWC), MLX's native layout.
public enum NN {
    /// Element-wise SiLU, x * sigmoid(x); a one-pass kernel for float32 when the kernels are on.
    public static func silu(_ x: Tensor) -> Tensor { activation(MLXS_SILU, x) }
    /// GELU with the exact erf form (PyTorch's default).
    public static func gelu(_ x: Tensor) -> Tensor { activation(MLXS_GELU, x) }
    /// GELU with the tanh approximation.
    public static func geluTanh(_ x: Tensor) -> Tensor { activation(MLXS_GELU_TANH, x) }
    /// silu(gate) * up, the SwiGLU gate, in one pass.
    public static func siluGate(_ gate: Tensor, _ up: Tensor) -> Tensor {
        Kernels.enabled ? Tensor.op(gate, up) { mlxs_fast_silu_mul($0[0], $0[1]) } : silu(gate) * up
    }

    /// x + y, on both cores for float32 operands of one shape (a residual connection over many rows); any other
    /// operands, or the kernels off, take MLX's add.
    public static func add(_ x: Tensor, _ y: Tensor) -> Tensor {
        Kernels.enabled ? Tensor.op(x, y) { mlxs_fast_add($0[0], $0[1]) } : x + y
    }

    /// The shim's one-pass kernel (float32; it falls back to MLX ops otherwise), or MLX's ops with kernels off.
    private static func activation(_ op: mlxs_unary_op, _ x: Tensor) -> Tensor {
        Kernels.enabled ? Tensor.op(x) { mlxs_fast_activation(op, $0[0]) } : x.unary(op)
    }
    /// Element-wise max(x, 0).
    public static func relu(_ x: Tensor) -> Tensor { x.maximum(0) }

    /// Softmax along `axis`; `precise` accumulates half-precision inputs in float32.
    public static func softmax(_ x: Tensor, axis: Int = -1, precise: Bool = true) -> Tensor {
        let ax = [Int32(axis)]
        return Tensor.op(x) { mlxs_softmax($0[0], ax, 1, precise) }
    }

    /// Log of the softmax along `axis`, computed as x - logsumexp(x).
    public static func logSoftmax(_ x: Tensor, axis: Int = -1) -> Tensor {
        x - x.logSumExp(axis: axis, keepDims: true)
    }

    /// LayerNorm over the last axis.
    public static func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor {
        var inputs = [x]
        if let weight { inputs.append(weight) }
        if let bias { inputs.append(bias) }
        let fast = Kernels.enabled
        return Tensor.op(inputs) { h in
            let (w, b) = (weight == nil ? nil : h[1], bias == nil ? nil : h[weight == nil ? 1 : 2])
            return fast ? mlxs_fast_layer_norm(h[0], w, b, eps) : mlxs_layer_norm(h[0], w, b, eps)
        }
    }

    /// RMSNorm over the last axis: w * x / sqrt(mean(x^2) + eps), accumulated in float32.
    public static func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float) -> Tensor {
        var inputs = [x]
        if let weight { inputs.append(weight) }
        let fast = Kernels.enabled
        return Tensor.op(inputs) { h in
            fast ? mlxs_fast_rms_norm(h[0], weight == nil ? nil : h[1], eps) : mlxs_rms_norm(h[0], weight == nil ? nil : h[1], eps)
        }
    }

    /// GroupNorm on channels-last input (N, ..., C), as torch.nn.GroupNorm computes it on NCHW; `silu` applies SiLU
    /// to the result in the same kernel.
    public static func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Float, silu: Bool = false) -> Tensor {
        var inputs = [x]
        if let weight { inputs.append(weight) }
        if let bias { inputs.append(bias) }
        return Tensor.op(inputs) { h in
            mlxs_group_norm(h[0], Int32(groups), weight == nil ? nil : h[1], bias == nil ? nil : h[weight == nil ? 1 : 2], eps, silu)
        }
    }

    /// Rotary position embedding on x (..., L, D) for positions offset..<offset+L.
    /// `traditional` false is the rotate-half layout of Llama/HF; true pairs adjacent features.
    public static func rope(_ x: Tensor, dims: Int, traditional: Bool = false, base: Float = 10000, scale: Float = 1,
                            offset: Int = 0) -> Tensor {
        Tensor.op(x) { mlxs_rope($0[0], Int32(dims), traditional, base, scale, Int32(offset)) }
    }

    /// Rotary embedding (rotate-half layout) at explicit positions: x (B, H, L, D), positions (B, L).
    /// Used when positions restart inside a row (packed sequences).
    public static func rope(_ x: Tensor, positions: Tensor, dims: Int, base: Float = 10000) -> Tensor {
        rope(x, tables: RotaryTables(positions: positions, dims: dims, base: base, dtype: x.dtype))
    }

    /// Rotary embedding with precomputed tables (one set serves every layer's queries and keys).
    public static func rope(_ x: Tensor, tables: RotaryTables) -> Tensor {
        let half = tables.dims / 2
        let x1 = x.slice(axis: -1, 0, half), x2 = x.slice(axis: -1, half, tables.dims)
        return x * tables.cos + concatenated([-x2, x1], axis: -1) * tables.sin
    }

    /// Attention heads from a projection's rows: x (B, L, heads * D) -> (B, heads, P + L, D). With `rotary`, each
    /// head vector is rotated as `rope(_:tables:)` does (tables for B rows or a divisor of B, row n % rows for
    /// batch row n); with `prefix` (B or a divisor of B rows, heads, P, D), its P positions come first in every
    /// plane (a shared prompt's cached keys or values). One multithreaded pass in the shim; without the fast
    /// kernels, the transpose, rotation and concatenation as plain ops.
    public static func splitHeads(_ x: Tensor, heads: Int, rotary: RotaryTables? = nil, prefix: Tensor? = nil) -> Tensor {
        var inputs = [x]
        if let rotary { inputs += [rotary.cos, rotary.sin] }
        if let prefix { inputs.append(prefix) }
        return Tensor.op(inputs) { h in
            mlxs_split_heads(h[0], Int32(heads), rotary == nil ? nil : h[1], rotary == nil ? nil : h[2], prefix == nil ? nil : h[h.count - 1])
        }
    }

    /// `attention` with its output as (B, Lq, Hq * D), the heads side by side as the output projection reads them
    /// (the fast kernel writes that layout directly instead of a transpose afterwards).
    public static func attentionMergingHeads(queries q: Tensor, keys k: Tensor, values v: Tensor, scale: Float,
                                             causal: Bool = false, mask: Tensor? = nil) -> Tensor {
        guard Kernels.enabled else {
            let o = referenceAttention(queries: q, keys: k, values: v, scale: scale, causal: causal, mask: mask)
            return o.transposed([0, 2, 1, 3]).reshaped([q.dim(0), q.dim(2), q.dim(1) * q.dim(3)])
        }
        return fastAttention(q, k, v, scale: scale, causal: causal, mask: mask, merged: true)
    }

    /// Scaled dot-product attention. q (B, H, Lq, D), k/v (B, Hkv, Lk, D).
    /// `mask` is additive (float, -inf hides) or boolean (true keeps), broadcastable to (B, H, Lq, Lk); with
    /// `causal`, it is added to the causal scores as it is (a (B, 1, 1, Lk) mask of hidden keys stays that small).
    public static func attention(queries q: Tensor, keys k: Tensor, values v: Tensor, scale: Float,
                                 causal: Bool = false, mask: Tensor? = nil) -> Tensor {
        guard Kernels.enabled else { return referenceAttention(queries: q, keys: k, values: v, scale: scale, causal: causal, mask: mask) }
        return fastAttention(q, k, v, scale: scale, causal: causal, mask: mask, merged: false)
    }

    private static func fastAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, scale: Float, causal: Bool, mask: Tensor?,
                                      merged: Bool) -> Tensor {
        var inputs = [q, k, v]
        if let mask { inputs.append(mask.dtype == .bool ? boolMaskToAdditive(mask, dtype: q.dtype) : mask) }
        return Tensor.op(inputs) { h in mlxs_fast_attention(h[0], h[1], h[2], scale, causal, h.count > 3 ? h[3] : nil, merged) }
    }

    /// Attention written with plain ops (the definition the kernels are tested against).
    public static func referenceAttention(queries q: Tensor, keys k: Tensor, values v: Tensor, scale: Float,
                                          causal: Bool = false, mask: Tensor? = nil) -> Tensor {
        var k = k, v = v
        let hq = q.dim(1), hkv = k.dim(1)
        if hq != hkv {
            k = k.repeated(hq / hkv, axis: 1)
            v = v.repeated(hq / hkv, axis: 1)
        }
        var scores = matmul(q * Double(scale), k.swappedAxes(-1, -2))
        if causal { scores = scores + causalAdditiveMask(queries: q.dim(-2), keys: k.dim(-2), dtype: scores.dtype) }
        if let mask { scores = scores + (mask.dtype == .bool ? boolMaskToAdditive(mask, dtype: scores.dtype) : mask) }
        return matmul(softmax(scores, axis: -1), v)
    }

    /// The additive value that hides a key. Finite on purpose: a query whose keys are all hidden (a padding
    /// position) then gets a harmless average instead of NaN, which would leak into every later layer.
    public static func hiddenKeyValue(_ dtype: DType) -> Double { dtype == .float16 ? -3e4 : -1e9 }

    /// (Lq, Lk) additive mask: 0 where key j <= query i + (Lk - Lq), a large negative value elsewhere.
    public static func causalAdditiveMask(queries: Int, keys: Int, dtype: DType = .float32) -> Tensor {
        let qi = Tensor.arange(Double(keys - queries), Double(keys), dtype: .int32).reshaped([queries, 1])
        let kj = Tensor.arange(keys).reshaped([1, keys])
        return which(kj .<= qi, Tensor(0.0, dtype: dtype), Tensor(hiddenKeyValue(dtype), dtype: dtype))
    }

    /// An additive mask of `dtype` from a boolean one (true keeps): 0 where true, `hiddenKeyValue(dtype)` where false.
    public static func boolMaskToAdditive(_ mask: Tensor, dtype: DType) -> Tensor {
        which(mask, Tensor(0.0, dtype: dtype), Tensor(hiddenKeyValue(dtype), dtype: dtype))
    }

    /// 2D convolution on NHWC input with an OHWI weight (MLX layout).
    public static func conv2d(_ x: Tensor, weight: Tensor, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                              dilation: (Int, Int) = (1, 1), groups: Int = 1) -> Tensor {
        let fast = Kernels.enabled
        return Tensor.op(x, weight) {
            (fast ? mlxs_fast_conv2d : mlxs_conv2d)($0[0], $0[1], Int32(stride.0), Int32(stride.1), Int32(padding.0), Int32(padding.1),
                                                   Int32(dilation.0), Int32(dilation.1), Int32(groups))
        }
    }

    /// Transposed 2D convolution on NHWC input with an OHWI weight.
    public static func convTranspose2d(_ x: Tensor, weight: Tensor, stride: (Int, Int) = (1, 1),
                                       padding: (Int, Int) = (0, 0), outputPadding: (Int, Int) = (0, 0),
                                       groups: Int = 1) -> Tensor {
        Tensor.op(x, weight) {
            mlxs_conv_transpose2d($0[0], $0[1], Int32(stride.0), Int32(stride.1), Int32(padding.0), Int32(padding.1),
                                  1, 1, Int32(outputPadding.0), Int32(outputPadding.1), Int32(groups))
        }
    }

    /// Depthwise 2D convolution: x NHWC (B, H, W, C), weight (C, kh, kw), stride 1.
    public static func depthwiseConv2d(_ x: Tensor, weight: Tensor, padding: (Int, Int)) -> Tensor {
        Tensor.op(x, weight) { mlxs_depthwise_conv2d($0[0], $0[1], Int32(padding.0), Int32(padding.1)) }
    }

    /// y = x @ w^T with w (out, in), float32 or bfloat16; the fast path for decode-sized inputs.
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) -> Tensor {
        if Kernels.enabled {
            // The bias goes into the primitive, which adds it on both cores.
            if let bias { return Tensor.op(x, weight, bias) { mlxs_fast_linear($0[0], $0[1], $0[2]) } }
            return Tensor.op(x, weight) { mlxs_fast_linear($0[0], $0[1], nil) }
        }
        let y = matmul(x, weight.asType(x.dtype).T)
        return bias.map { y + $0.asType(y.dtype) } ?? y
    }

    /// y = x @ w^T with int8 weights (out, in) and float32 scales (out, in / groupSize), as `Linear.quantize` makes
    /// them; accumulated in float32.
    public static func quantizedLinear(_ x: Tensor, weight: Tensor, scales: Tensor, groupSize: Int) -> Tensor {
        Tensor.op(x, weight, scales) { mlxs_linear_q8($0[0], $0[1], $0[2], Int32(groupSize)) }
    }

    /// Pixel shuffle on NHWC input: (B, H, W, C*r*r) -> (B, H*r, W*r, C), where output channel c at (r*y+i, r*x+j)
    /// comes from input channel c*r*r + i*r + j (PyTorch's nn.PixelShuffle ordering).
    public static func pixelShuffle(_ x: Tensor, factor r: Int) -> Tensor {
        let s = x.shape
        let (b, h, w, cr) = (s[0], s[1], s[2], s[3])
        let c = cr / (r * r)
        return x.reshaped([b, h, w, c, r, r]).transposed([0, 1, 4, 2, 5, 3]).reshaped([b, h * r, w * r, c])
    }

    /// Nearest-neighbour upsampling of NHWC input by an integer factor.
    public static func upsampleNearest(_ x: Tensor, factor: Int) -> Tensor {
        let s = x.shape
        let (b, h, w, c) = (s[0], s[1], s[2], s[3])
        return x.reshaped([b, h, 1, w, 1, c]).broadcast(to: [b, h, factor, w, factor, c]).reshaped([b, h * factor, w * factor, c])
    }

    /// Mean cross-entropy of logits (..., V) against integer targets (...); positions where `mask` is false
    /// (or 0) are left out of the mean.
    public static func crossEntropy(logits: Tensor, targets: Tensor, mask: Tensor? = nil) -> Tensor {
        let losses = Tensor.op(logits, targets) { mlxs_cross_entropy($0[0], $0[1]) }
        guard let mask else { return losses.mean() }
        let m = mask.asType(.float32)
        // `which`, not a product alone: a left-out position's loss may be NaN (a target outside the vocabulary).
        return which(m .!= 0, losses * m, Tensor(0.0)).sum() / m.sum().maximum(1)
    }

    /// Mean over every element of the squared difference of `a` and `b`.
    public static func mseLoss(_ a: Tensor, _ b: Tensor) -> Tensor { (a - b).square().mean() }

    /// Channels-first (NCHW) to channels-last (NHWC).
    public static func nchwToNHWC(_ x: Tensor) -> Tensor { x.transposed([0, 2, 3, 1]) }
    /// Channels-last (NHWC) to channels-first (NCHW).
    public static func nhwcToNCHW(_ x: Tensor) -> Tensor { x.transposed([0, 3, 1, 2]) }
}

/// cos and sin of the rotary angles at explicit positions (B, L), laid out (B, 1, L, dims) for the rotate-half
/// layout: computed once per forward instead of once per layer and projection.
public struct RotaryTables {
    /// Rotated features per head, the last axis of `cos` and `sin`.
    public let dims: Int
    /// Cosines of the angles, (B, 1, L, dims): each frequency's value in both halves of the last axis.
    public let cos: Tensor
    /// Sines of the angles, (B, 1, L, dims): each frequency's value in both halves of the last axis.
    public let sin: Tensor

    /// Tables for `positions` (B, L) with frequencies base^(-2i/dims), computed in float32 and stored as `dtype`.
    public init(positions: Tensor, dims: Int, base: Float = 10000, dtype: DType = .float32) {
        let half = dims / 2
        let inv = (Tensor.arange(0, Double(half), dtype: .float32) * (-2 * Foundation.log(Double(base)) / Double(dims))).exp()
        let angles = positions.asType(.float32).expandedDims(axis: -1) * inv.reshaped([1, 1, half])  // (B, L, half)
        self.dims = dims
        cos = concatenated([angles.cos(), angles.cos()], axis: -1).expandedDims(axis: 1).asType(dtype)
        sin = concatenated([angles.sin(), angles.sin()], axis: -1).expandedDims(axis: 1).asType(dtype)
    }
}

/// Switch for the shim's hand-written CPU kernels (on by default); off runs MLX's own ops.
public enum Kernels {
    /// Whether the shim's kernels replace MLX ops (process-wide; `Device.use(_:)` switches them off for the GPU).
    public static var enabled: Bool {
        get { mlxs_fast_kernels_enabled() != 0 }
        set { mlxs_set_fast_kernels(newValue ? 1 : 0) }
    }

    /// Smallest image (height x width) whose 3x3 stride-1 convolutions with 32-127 channels take Winograd F(2x2, 3x3)
    /// (default 4096 pixels, or MLXS_WINOGRAD_MIN_PIXELS); smaller images run as im2col + sgemm. Layers with 128+
    /// channels in and out always take Winograd.
    public static var winogradMinimumPixels: Int {
        get { Int(mlxs_winograd_min_pixels()) }
        set { mlxs_set_winograd_min_pixels(Int64(newValue)) }
    }

    /// How far ahead (bytes) the one-row matrix-vector kernel of decoding prefetches its weights; 0: hardware
    /// prefetch only. Default 0 on CPUs with AVX-512, 4096 otherwise (or MLXS_MATVEC_PREFETCH). A tuning knob:
    /// `janusflow bench understand --compare-prefetch` measures values against each other in one process.
    public static var matvecPrefetchBytes: Int {
        get { Int(mlxs_matvec_prefetch_bytes()) }
        set { mlxs_set_matvec_prefetch_bytes(Int32(clamping: newValue)) }
    }

    /// Linear layers with bfloat16 (or int8) weights over many rows run the shim's blocked GEMM, which packs the
    /// weights straight into its float32 panels (true, the default), or convert them to float32 for OpenBLAS (false;
    /// also MLXS_BF16_GEMM=0). `janusflow bench kernels` and `--compare-bf16-gemm` measure one against the other.
    public static var bf16Gemm: Bool {
        get { mlxs_bf16_gemm() != 0 }
        set { mlxs_set_bf16_gemm(newValue ? 1 : 0) }
    }

    /// Linear layers with int8 weights over few rows (decoding) round their inputs to int8 too, one scale per weight
    /// group, and multiply bytes by bytes on AVX-512 VNNI (true, the default, on the avx512 path and above where the
    /// CPU has VNNI; also MLXS_INT8_VNNI=0), or widen the weights to float32 against float32 inputs (false).
    /// `janusflow bench understand --dtype int8 --compare-int8-vnni` measures one against the other.
    public static var int8VNNI: Bool {
        get { mlxs_int8_vnni() != 0 }
        set { mlxs_set_int8_vnni(newValue ? 1 : 0) }
    }

    /// Whether few-row products with int8 weights round their inputs to int8 now (`int8VNNI` on a path and CPU that
    /// run it, for weight groups that are multiples of 64); many-row products keep float32 inputs.
    public static var int8QuantizesActivations: Bool { mlxs_int8_quantizes_activations() != 0 }

    /// Instruction-set paths of the large products, each needing what the one before needs.
    public enum CPUPath: String, CaseIterable, Comparable, Sendable {
        /// AVX2 + FMA: float32 arithmetic throughout.
        case avx2
        /// AVX-512 F/BW/VL/DQ: float32 arithmetic throughout.
        case avx512
        /// AVX512_BF16 (`vdpbf16ps`): bfloat16 weights times activations rounded to bfloat16, float32 sums.
        case avx512BF16 = "avx512_bf16"
        /// AMX BF16 tiles: the same rounding as avx512_bf16.
        case amx

        /// Orders paths by capability, which is their declaration order.
        public static func < (a: CPUPath, b: CPUPath) -> Bool {
            allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
        }
    }

    /// The path in use: the best this CPU has (`bestCPUPath`), or a lower one chosen with `useCPUPath` or by the
    /// MLXS_CPU_PATH environment variable.
    public static var cpuPath: CPUPath { CPUPath(rawValue: String(cString: mlxs_cpu_path())) ?? .avx2 }
    /// The most capable path this CPU can run.
    public static var bestCPUPath: CPUPath { CPUPath(rawValue: String(cString: mlxs_best_cpu_path())) ?? .avx2 }
    /// Switches the kernels to `path`; returns false, keeping the current path, when this CPU cannot run it.
    @discardableResult
    public static func useCPUPath(_ path: CPUPath) -> Bool { mlxs_set_cpu_path(path.rawValue) == 0 }

    /// Every path up to `bestCPUPath`, the ones this CPU can run.
    public static var supportedCPUPaths: [CPUPath] { CPUPath.allCases.filter { $0 <= bestCPUPath } }

    /// Whether linear layers with bfloat16 weights round their inputs to bfloat16 before the product (float32 sums), at
    /// every row count: on the avx512_bf16 and amx paths with `bf16Gemm` on. Elsewhere those products take float32 inputs.
    public static var bf16RoundsActivations: Bool { mlxs_bf16_rounds_activations() != 0 }

    /// The instruction sets the kernels found on this CPU (those that matter to them), e.g. "avx2 fma avx512f ...".
    public static var cpuFeatures: String {
        let size = mlxs_cpu_features(nil, 0)
        var buffer = [CChar](repeating: 0, count: size + 1)
        mlxs_cpu_features(&buffer, buffer.count)
        return cString(buffer)
    }

    /// Products (in flops) up to which the kernels' sgemm runs one single-threaded OpenBLAS call per core on a share
    /// of the rows or columns instead of OpenBLAS's own threading (or MLXS_GEMM_SPLIT_LIMIT; 0: never split).
    /// `janusflow bench kernels --compare-split-limits` measures values against each other in one process.
    public static var gemmSplitLimit: Double {
        get { mlxs_gemm_split_limit() }
        set { mlxs_set_gemm_split_limit(newValue) }
    }

    /// Time spent inside each fast kernel while on (also MLXS_PROFILE=1 in the environment, which prints the
    /// totals at exit); what the wall time has beyond them is MLX's own ops and graph work.
    public static var profiling: Bool {
        get { mlxs_profile_enabled() != 0 }
        set { mlxs_profile_enable(newValue ? 1 : 0) }
    }

    /// Clears the kernel times and restarts the wall clock they are compared with.
    public static func resetProfile() { mlxs_profile_reset() }

    /// The kernel times since the last reset, one line per kernel, longest first.
    public static func profileReport() -> String {
        let length = mlxs_profile_report(nil, 0)
        var buffer = [CChar](repeating: 0, count: length + 1)
        _ = mlxs_profile_report(&buffer, buffer.count)
        return cString(buffer)
    }
}

/// The text of a NUL-terminated C buffer as UTF-8.
private func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
