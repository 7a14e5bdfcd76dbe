import Foundation
import MLXEngine

// The generation encoder and decoder (ShallowUViT): a stride-2 patchify conv and ConvNeXt blocks conditioned
// on the time embedding; the decoder joins the encoder's skip, runs ConvNeXt blocks and pixel-shuffles back to
// a velocity in latent space. Everything here is channels-last (NHWC).

/// Sinusoidal timestep features [cos | sin] (diffusers' Timesteps with flip_sin_to_cos, shift 0).
public func timestepFeatures(_ t: Tensor, dimensions: Int, maxPeriod: Double = 10000) -> Tensor {
    let half = dimensions / 2
    let exponent = Tensor.arange(0, Double(half), dtype: .float32) * (-Foundation.log(maxPeriod) / Double(half))
    let angles = t.asType(.float32).reshaped([-1, 1]) * exponent.exp().reshaped([1, half])
    var features = concatenated([angles.cos(), angles.sin()], axis: -1)
    if dimensions % 2 == 1 { features = features.padded(low: [0, 0], high: [0, 1]) }
    return features
}

/// diffusers' TimestepEmbedding: Linear, SiLU, Linear.
public final class TimestepEmbedding: Module {
    @Child("linear_1") var linear1: Linear
    @Child("linear_2") var linear2: Linear

    init(inChannels: Int, embedDim: Int, bias: Bool) {
        super.init()
        linear1 = Linear(inChannels, embedDim, bias: bias)
        linear2 = Linear(embedDim, embedDim, bias: bias)
    }

    func callAsFunction(_ x: Tensor) -> Tensor { linear2(NN.silu(linear1(x))) }
}

/// ConvNeXt-V2 Global Response Normalisation over NHWC; parameters stored as (1, 1, 1, C).
public final class GlobalResponseNorm: Module {
    /// Per-channel gain gamma (1, 1, 1, C) on the normalised response; zero (with a zero `bias`) makes the layer the identity.
    @Parameter public var weight: Tensor
    /// Per-channel offset beta (1, 1, 1, C).
    @Parameter public var bias: Tensor

    init(_ channels: Int) {
        weight = Tensor.zeros([1, 1, 1, channels])
        bias = Tensor.zeros([1, 1, 1, channels])
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let gx = x.square().sum(axes: [1, 2], keepDims: true).sqrt()
        let nx = gx / (gx.mean(axis: -1, keepDims: true) + 1e-6)
        return bias + (weight * nx + 1) * x
    }
}

/// ConvNeXt block with time conditioning: depthwise 7x7, RMSNorm, MLP with GELU and GRN, residual, then
/// x * (1 + scale) + shift from the condition.
public final class ConvNeXtBlock: Module {
    let depthwise: Conv2d
    let norm: RMSNorm
    @Child("channelwise_linear_1") var linear1: Linear
    @Child("channelwise_norm") var grn: GlobalResponseNorm
    @Child("channelwise_linear_2") var linear2: Linear
    @Child("cond_embeds_mapper") var condMapper: Linear
    let channels: Int

    init(channels: Int, hiddenSize: Int, eps: Float, bias: Bool, expansion: Int = 4) {
        self.channels = channels
        depthwise = Conv2d(channels, channels, kernelSize: 7, padding: 3, groups: channels, bias: bias)
        norm = RMSNorm(channels, eps: eps)
        super.init()
        linear1 = Linear(channels, channels * expansion, bias: bias)
        grn = GlobalResponseNorm(channels * expansion)
        linear2 = Linear(channels * expansion, channels, bias: bias)
        condMapper = Linear(hiddenSize, channels * 2, bias: bias)
    }

    func callAsFunction(_ x: Tensor, condition: Tensor) -> Tensor {
        var h = depthwise(x)
        h = linear2(grn(NN.gelu(linear1(norm(h)))))
        h = h + x
        let mapped = condMapper(NN.silu(condition))  // (B, 2C)
        let b = mapped.dim(0)
        let scale = mapped.slice(axis: 1, 0, channels).reshaped([b, 1, 1, channels])
        let shift = mapped.slice(axis: 1, channels, 2 * channels).reshaped([b, 1, 1, channels])
        return h * (scale + 1) + shift
    }
}

/// UVitBlock without down/upsampling: a stack of ConvNeXt blocks.
public final class UViTMidBlock: Module {
    @Child("res_blocks") var resBlocks: [ConvNeXtBlock]

    init(channels: Int, count: Int, hiddenSize: Int, eps: Float, bias: Bool) {
        super.init()
        resBlocks = (0..<count).map { _ in ConvNeXtBlock(channels: channels, hiddenSize: hiddenSize, eps: eps, bias: bias) }
    }

    func callAsFunction(_ x: Tensor, condition: Tensor) -> Tensor {
        resBlocks.reduce(x) { $1($0, condition: condition) }
    }
}

/// `vision_gen_enc_model`.
public final class ShallowUViTEncoder: Module {
    /// The configuration the encoder was built from.
    public let config: UViTEncoderConfig
    @Child("time_embed") var timeEmbed: TimestepEmbedding
    @Child("in_conv") var inConv: Conv2d
    @Child("mid_block") var midBlock: UViTMidBlock?

    /// Builds the encoder with freshly initialised weights.
    public init(_ config: UViTEncoderConfig) {
        self.config = config
        super.init()
        let c = config.channels
        timeEmbed = TimestepEmbedding(inChannels: config.blockOutChannels[0], embedDim: config.hiddenSize, bias: config.useBias)
        inConv = Conv2d(config.inputChannels, config.blockOutChannels[0], kernelSize: config.kernelSize,
                        stride: config.stride, padding: config.padding)
        midBlock = config.useMidBlock
            ? UViTMidBlock(channels: c, count: config.layersInMiddle, hiddenSize: config.hiddenSize, eps: config.normEps, bias: config.useBias)
            : nil
    }

    /// The sinusoidal features of `t` (official 0..1000 scale), before the embedding MLP.
    public func timeFeatures(_ t: Tensor) -> Tensor { timestepFeatures(t, dimensions: config.blockOutChannels[0]) }

    /// Time embedding of `t` (B,) in the 0..1000 scale: (B, hidden).
    public func timeEmbedding(_ t: Tensor) -> Tensor { timeEmbed(timeFeatures(t)) }

    /// The stride-2 conv on NHWC latents, before the ConvNeXt blocks.
    public func patchify(_ latents: Tensor) -> Tensor { inConv(latents) }

    /// Embeds the time and runs the patchify conv and the ConvNeXt blocks on noisy latents.
    ///
    /// latents NHWC (B, h, w, 4), t (B,) -> (features NHWC, t_emb (B, hidden)); the features are also the
    /// decoder's skip input.
    public func callAsFunction(_ latents: Tensor, t: Tensor) -> (features: Tensor, timeEmbedding: Tensor) {
        let tEmb = timeEmbedding(t)
        var x = patchify(latents)
        if let midBlock { x = midBlock(x, condition: tEmb) }
        return (x, tEmb)
    }
}

/// RMSNorm over channels, 1x1 conv, pixel shuffle by 2 (Unpatchify).
public final class Unpatchify: Module {
    let norm: RMSNorm
    @Child("unpatch_conv") var unpatchConv: Conv2d

    init(inChannels: Int, outChannels: Int, eps: Float, bias: Bool) {
        norm = RMSNorm(inChannels, eps: eps)
        super.init()
        unpatchConv = Conv2d(inChannels, outChannels * 4, kernelSize: 1, bias: bias)
    }

    func callAsFunction(_ x: Tensor) -> Tensor { NN.pixelShuffle(unpatchConv(norm(x)), factor: 2) }
}

/// `vision_gen_dec_model`.
public final class ShallowUViTDecoder: Module {
    /// The configuration the decoder was built from.
    public let config: UViTDecoderConfig
    @Child("input_norm") var inputNorm: RMSNorm
    @Child("mid_block") var midBlock: UViTMidBlock?
    @Child("out_convs") var outConvs: [Unpatchify]

    /// Builds the decoder with freshly initialised weights.
    public init(_ config: UViTDecoderConfig) {
        self.config = config
        super.init()
        let c = config.channels
        inputNorm = RMSNorm(config.inChannels, eps: config.normEps)
        midBlock = config.useMidBlock
            ? UViTMidBlock(channels: config.inChannels + c, count: config.layersInMiddle, hiddenSize: config.hiddenSize,
                           eps: config.normEps, bias: config.useBias)
            : nil
        outConvs = (0..<config.upsamples).map { rank in
            Unpatchify(inChannels: rank == 0 ? c + config.inChannels : c,
                       outChannels: rank == config.upsamples - 1 ? config.outChannels : c,
                       eps: config.normEps, bias: config.useBias)
        }
    }

    /// Joins the normalised `x` with the encoder's skip, runs the ConvNeXt blocks and unpatchifies to a velocity.
    ///
    /// x NHWC (B, h, w, in), skip NHWC from the encoder, t_emb (B, hidden) -> velocity NHWC.
    public func callAsFunction(_ x: Tensor, skip: Tensor, timeEmbedding: Tensor) -> Tensor {
        var h = concatenated([inputNorm(x), skip], axis: -1)
        if let midBlock { h = midBlock(h, condition: timeEmbedding) }
        for conv in outConvs { h = conv(h) }
        return h
    }
}
