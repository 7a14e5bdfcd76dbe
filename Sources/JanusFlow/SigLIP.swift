import Foundation
import MLXEngine

// The understanding encoder: a SigLIP ViT (timm layout) without class token. JanusFlow keeps every patch
// token of the last built block after the final LayerNorm; the attention-pool head is in the checkpoint but
// never runs in the official model.

/// `patch_embed`: a convolution with kernel and stride `patch_size` from RGB to `width` channels, flattened to tokens.
public final class PatchEmbed: Module {
    let proj: Conv2d

    init(patch: Int, width: Int) {
        proj = Conv2d(3, width, kernelSize: patch, stride: patch)
        super.init()
    }

    /// NHWC image -> (B, tokens, width), tokens in row-major patch order.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = proj(x)
        return y.reshaped([y.dim(0), y.dim(1) * y.dim(2), y.dim(3)])
    }
}

/// Multi-head self-attention over all tokens (no mask) with a fused `qkv` projection and an output `proj`, both with biases.
public final class ViTAttention: Module {
    let qkv: Linear
    let proj: Linear
    let heads: Int

    init(width: Int, heads: Int) {
        qkv = Linear(width, 3 * width)
        proj = Linear(width, width)
        self.heads = heads
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let hd = x.dim(2) / heads
        // qkv's rows are (3, heads, D) each: as 3 * heads heads, queries, keys and values are three runs of them.
        let all = NN.splitHeads(qkv(x), heads: 3 * heads)
        let (q, k, v) = (all.slice(axis: 1, 0, heads), all.slice(axis: 1, heads, 2 * heads), all.slice(axis: 1, 2 * heads, 3 * heads))
        return proj(NN.attentionMergingHeads(queries: q, keys: k, values: v, scale: 1 / Float(hd).squareRoot()))
    }
}

/// The block MLP: `fc1`, exact GELU, `fc2`.
public final class ViTMLP: Module {
    let fc1: Linear
    let fc2: Linear

    init(width: Int, hidden: Int) {
        fc1 = Linear(width, hidden)
        fc2 = Linear(hidden, width)
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor { fc2(NN.gelu(fc1(x))) }
}

/// One pre-norm ViT block: LayerNorm, attention and residual, then LayerNorm, MLP and residual (eps 1e-6).
public final class ViTBlock: Module {
    let norm1: LayerNorm
    let attn: ViTAttention
    let norm2: LayerNorm
    let mlp: ViTMLP

    init(_ c: SigLIPConfig) {
        norm1 = LayerNorm(c.width, eps: 1e-6)
        attn = ViTAttention(width: c.width, heads: c.heads)
        norm2 = LayerNorm(c.width, eps: 1e-6)
        mlp = ViTMLP(width: c.width, hidden: c.mlpHidden)
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let h = x + attn(norm1(x))
        return h + mlp(norm2(h))
    }
}

/// timm's AttentionPoolLatent ("map" pooling): one learned query attends over the tokens, then an MLP.
public final class AttentionPoolLatent: Module {
    /// The learned query (1, 1, width).
    @Parameter public var latent: Tensor
    let q: Linear
    let kv: Linear
    let proj: Linear
    let norm: LayerNorm
    let mlp: ViTMLP
    let heads: Int

    init(_ c: SigLIPConfig) {
        latent = Initializer.normal([1, 1, c.width], std: 1 / Foundation.sqrt(Double(c.width)))
        q = Linear(c.width, c.width)
        kv = Linear(c.width, 2 * c.width)
        proj = Linear(c.width, c.width)
        norm = LayerNorm(c.width, eps: 1e-6)
        mlp = ViTMLP(width: c.width, hidden: c.mlpHidden)
        heads = c.heads
        super.init()
    }

    /// Pools each image's tokens into one vector.
    ///
    /// (B, N, C) -> (B, C)
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, n, c) = (x.dim(0), x.dim(1), x.dim(2))
        let hd = c / heads
        let query = q(latent.broadcast(to: [b, 1, c])).reshaped([b, 1, heads, hd]).transposed([0, 2, 1, 3])
        let keysValues = kv(x).reshaped([b, n, 2, heads, hd]).transposed([2, 0, 3, 1, 4])
        var o = NN.attention(queries: query, keys: keysValues[0], values: keysValues[1], scale: 1 / Float(hd).squareRoot())
        o = proj(o.transposed([0, 2, 1, 3]).reshaped([b, 1, c]))
        o = o + mlp(norm(o))
        return o.squeezed(axis: 1)
    }
}

/// `vision_und_enc_model.vision_tower`.
public final class SigLIPVisionTransformer: Module {
    /// The configuration the tower was built from.
    public let config: SigLIPConfig
    @Child("patch_embed") var patchEmbed: PatchEmbed
    /// `pos_embed` (1, tokens, width): learned position embeddings added after patch embedding (there is no class token).
    @Parameter("pos_embed") public var posEmbed: Tensor
    /// The `config.builtLayers` transformer blocks (`blocks.N`).
    public let blocks: [ViTBlock]
    /// The final LayerNorm, applied to every token.
    public let norm: LayerNorm
    /// `attn_pool`: loaded from the checkpoint but never run (JanusFlow uses the patch tokens).
    @Child("attn_pool") public var attnPool: AttentionPoolLatent

    /// Builds the tower with freshly initialised weights; only `config.builtLayers` blocks are created.
    public init(_ config: SigLIPConfig) {
        self.config = config
        blocks = (0..<config.builtLayers).map { _ in ViTBlock(config) }
        norm = LayerNorm(config.width, eps: 1e-6)
        super.init()
        patchEmbed = PatchEmbed(patch: config.patchSize, width: config.width)
        posEmbed = Initializer.normal([1, config.tokens, config.width], std: 0.02)
        attnPool = AttentionPoolLatent(config)
    }

    /// Runs the ViT and returns its patch tokens.
    ///
    /// NCHW pixels in [-1, 1] -> every patch token after the final LayerNorm (B, tokens, width).
    /// `blockOutputs` receives each block's output when given.
    public func callAsFunction(_ pixels: Tensor, blockOutputs: ((Int, Tensor) -> Void)? = nil) -> Tensor {
        var x = patchEmbed(NN.nchwToNHWC(pixels)) + posEmbed
        for (i, block) in blocks.enumerated() {
            x = block(x)
            blockOutputs?(i, x)
        }
        return norm(x)
    }

    /// Output right after patch embedding plus position embedding (before the blocks).
    public func embed(_ pixels: Tensor) -> Tensor { patchEmbed(NN.nchwToNHWC(pixels)) + posEmbed }
}

/// `vision_und_enc_model`: the official CLIPVisionTower wrapper around the SigLIP ViT.
public final class VisionUnderstandingEncoder: Module {
    /// `vision_tower`: the SigLIP ViT.
    @Child("vision_tower") public var visionTower: SigLIPVisionTransformer

    /// Builds the encoder with freshly initialised weights.
    public init(_ config: SigLIPConfig) {
        super.init()
        visionTower = SigLIPVisionTransformer(config)
    }

    /// Patch features (B, tokens, width) of NCHW pixels (B, 3, H, W) normalised to [-1, 1].
    public func callAsFunction(_ pixels: Tensor) -> Tensor { visionTower(pixels) }
}
