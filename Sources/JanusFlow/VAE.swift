import Foundation
import MLXEngine

// The SDXL-VAE (diffusers' AutoencoderKL): the decoder turns generated latents into pixels, the encoder turns
// training images into latents. Channels-last inside; NCHW at the public boundary like the official code.

/// diffusers' AutoencoderKL `config.json`.
///
/// Required: `block_out_channels`, `layers_per_block`, `in_channels`, `out_channels`, `latent_channels`,
/// `norm_num_groups`, `scaling_factor`, `sample_size`, `down_block_types`, `up_block_types`, `act_fn` (must be
/// "silu"). Optional with diffusers' defaults: `mid_block_add_attention`, `use_quant_conv`, `use_post_quant_conv`
/// (true), `force_upcast` (true), `shift_factor` (none). Decode through `decodeConfig` (or `AutoencoderKL.load`)
/// to get messages such as `config.json: missing field 'block_out_channels'`.
public struct VAEConfig: Codable, Equatable, Sendable {
    /// `in_channels`: channels of the images the encoder reads (3).
    public var inChannels: Int
    /// `out_channels`: channels of the images the decoder writes (3).
    public var outChannels: Int
    /// `latent_channels`: channels of a latent (4 for the SDXL-VAE).
    public var latentChannels: Int
    /// `block_out_channels`: widths of the levels from the pixel side down ([128, 256, 512, 512] for SDXL); each a
    /// positive multiple of `norm_num_groups`. Every level but the last halves the resolution.
    public var blockOutChannels: [Int]
    /// `layers_per_block`: ResNet blocks per encoder level (the decoder's levels have one more); at least 1.
    public var layersPerBlock: Int
    /// `norm_num_groups`: groups of every GroupNorm (32 for SDXL).
    public var normNumGroups: Int
    /// `scaling_factor`: the generator works on VAE latents times this factor, so its latents are divided by it
    /// before `AutoencoderKL.decode` (0.13025 for SDXL).
    public var scalingFactor: Double
    /// `shift_factor`: optional latent shift (absent for SDXL); decoded and written back, but never applied.
    public var shiftFactor: Double?
    /// `sample_size`: the image side the VAE was trained at (1024 for SDXL); informational only.
    public var sampleSize: Int
    /// `force_upcast`: diffusers' hint to run the VAE in float32 (default true); not acted on here.
    public var forceUpcast: Bool
    /// `down_block_types`: must be `DownEncoderBlock2D`, once per entry of `block_out_channels`.
    public var downBlockTypes: [String]
    /// `up_block_types`: must be `UpDecoderBlock2D`, once per entry of `block_out_channels`.
    public var upBlockTypes: [String]
    /// `mid_block_add_attention`: whether the mid blocks have their self-attention layer (default true).
    public var midBlockAddAttention: Bool
    /// `use_quant_conv`: whether a 1x1 `quant_conv` follows the encoder (default true).
    public var useQuantConv: Bool
    /// `use_post_quant_conv`: whether a 1x1 `post_quant_conv` precedes the decoder (default true).
    public var usePostQuantConv: Bool

    /// The only block types an SDXL-style AutoencoderKL uses (and the only ones built here).
    public static let downBlockType = "DownEncoderBlock2D"
    /// The decoder's block type: `UpDecoderBlock2D`.
    public static let upBlockType = "UpDecoderBlock2D"

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", latentChannels = "latent_channels"
        case blockOutChannels = "block_out_channels", layersPerBlock = "layers_per_block", normNumGroups = "norm_num_groups"
        case scalingFactor = "scaling_factor", shiftFactor = "shift_factor", sampleSize = "sample_size"
        case forceUpcast = "force_upcast", downBlockTypes = "down_block_types", upBlockTypes = "up_block_types"
        case midBlockAddAttention = "mid_block_add_attention"
        case useQuantConv = "use_quant_conv", usePostQuantConv = "use_post_quant_conv", actFn = "act_fn"
        case className = "_class_name"
    }

    /// Builds a config in code, filling in the block types; the defaults are the SDXL-VAE's.
    public init(blockOutChannels: [Int], layersPerBlock: Int, normNumGroups: Int, latentChannels: Int = 4,
                scalingFactor: Double = 0.13025, sampleSize: Int = 1024, inChannels: Int = 3, outChannels: Int = 3,
                shiftFactor: Double? = nil, forceUpcast: Bool = true, midBlockAddAttention: Bool = true,
                useQuantConv: Bool = true, usePostQuantConv: Bool = true) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.latentChannels = latentChannels
        self.blockOutChannels = blockOutChannels
        self.layersPerBlock = layersPerBlock
        self.normNumGroups = normNumGroups
        self.scalingFactor = scalingFactor
        self.shiftFactor = shiftFactor
        self.sampleSize = sampleSize
        self.forceUpcast = forceUpcast
        downBlockTypes = Array(repeating: Self.downBlockType, count: blockOutChannels.count)
        upBlockTypes = Array(repeating: Self.upBlockType, count: blockOutChannels.count)
        self.midBlockAddAttention = midBlockAddAttention
        self.useQuantConv = useQuantConv
        self.usePostQuantConv = usePostQuantConv
    }

    /// Decodes a diffusers `config.json`.
    /// - Throws: `DecodingError` when a required field is missing, `act_fn` is not `silu`, a width is not a positive
    ///   multiple of `norm_num_groups`, `layers_per_block` is below 1, a channel count is not positive, or the block
    ///   types differ from the supported ones.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // The block structure first: a file without it is not an AutoencoderKL config at all.
        blockOutChannels = try c.decodeSizes(.blockOutChannels)
        layersPerBlock = try c.decodeSize(.layersPerBlock, in: 1...1024)
        inChannels = try c.decodeSize(.inChannels)
        outChannels = try c.decodeSize(.outChannels)
        latentChannels = try c.decodeSize(.latentChannels)
        normNumGroups = try c.decodeSize(.normNumGroups)
        scalingFactor = try c.decodePositive(.scalingFactor)
        sampleSize = try c.decodeSize(.sampleSize)
        downBlockTypes = try c.decode([String].self, forKey: .downBlockTypes)
        upBlockTypes = try c.decode([String].self, forKey: .upBlockTypes)
        let act = try c.decode(String.self, forKey: .actFn)
        shiftFactor = try c.decodeIfPresent(Double.self, forKey: .shiftFactor)
        forceUpcast = try c.decodeIfPresent(Bool.self, forKey: .forceUpcast) ?? true
        midBlockAddAttention = try c.decodeIfPresent(Bool.self, forKey: .midBlockAddAttention) ?? true
        useQuantConv = try c.decodeIfPresent(Bool.self, forKey: .useQuantConv) ?? true
        usePostQuantConv = try c.decodeIfPresent(Bool.self, forKey: .usePostQuantConv) ?? true

        guard act == "silu" else { throw c.invalid(.actFn, "unsupported activation '\(act)' (only silu)") }
        guard blockOutChannels.allSatisfy({ $0 % normNumGroups == 0 }) else {
            throw c.invalid(.blockOutChannels, "every width must be a positive multiple of norm_num_groups \(normNumGroups)")
        }
        guard downBlockTypes == Array(repeating: Self.downBlockType, count: blockOutChannels.count) else {
            throw c.invalid(.downBlockTypes, "expected \(blockOutChannels.count) x \(Self.downBlockType), found \(downBlockTypes)")
        }
        guard upBlockTypes == Array(repeating: Self.upBlockType, count: blockOutChannels.count) else {
            throw c.invalid(.upBlockTypes, "expected \(blockOutChannels.count) x \(Self.upBlockType), found \(upBlockTypes)")
        }
    }

    /// Writes the config as a diffusers `config.json` object, with `_class_name` `AutoencoderKL` and `act_fn` `silu`.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode("AutoencoderKL", forKey: .className)
        try c.encode(inChannels, forKey: .inChannels)
        try c.encode(outChannels, forKey: .outChannels)
        try c.encode(latentChannels, forKey: .latentChannels)
        try c.encode(blockOutChannels, forKey: .blockOutChannels)
        try c.encode(layersPerBlock, forKey: .layersPerBlock)
        try c.encode(normNumGroups, forKey: .normNumGroups)
        try c.encode(scalingFactor, forKey: .scalingFactor)
        try c.encode(shiftFactor, forKey: .shiftFactor)
        try c.encode(sampleSize, forKey: .sampleSize)
        try c.encode(forceUpcast, forKey: .forceUpcast)
        try c.encode(downBlockTypes, forKey: .downBlockTypes)
        try c.encode(upBlockTypes, forKey: .upBlockTypes)
        try c.encode(midBlockAddAttention, forKey: .midBlockAddAttention)
        try c.encode(useQuantConv, forKey: .useQuantConv)
        try c.encode(usePostQuantConv, forKey: .usePostQuantConv)
        try c.encode("silu", forKey: .actFn)
    }

    /// SDXL-VAE as published (stabilityai/sdxl-vae).
    public static let sdxl = VAEConfig(blockOutChannels: [128, 256, 512, 512], layersPerBlock: 2, normNumGroups: 32,
                                       latentChannels: 4, scalingFactor: 0.13025, sampleSize: 1024)

    /// Pixels per latent cell along each side.
    public var downsamplingFactor: Int { 1 << (blockOutChannels.count - 1) }
}

/// ResnetBlock2D: GroupNorm, SiLU, 3x3 conv, twice, plus a 1x1 shortcut when the width changes.
public final class VAEResnetBlock: Module {
    let norm1: GroupNorm
    let conv1: Conv2d
    let norm2: GroupNorm
    let conv2: Conv2d
    @Child("conv_shortcut") var convShortcut: Conv2d?

    init(_ inChannels: Int, _ outChannels: Int, groups: Int) {
        norm1 = GroupNorm(groups: groups, channels: inChannels, eps: 1e-6)
        conv1 = Conv2d(inChannels, outChannels, kernelSize: 3, padding: 1)
        norm2 = GroupNorm(groups: groups, channels: outChannels, eps: 1e-6)
        conv2 = Conv2d(outChannels, outChannels, kernelSize: 3, padding: 1)
        super.init()
        convShortcut = inChannels == outChannels ? nil : Conv2d(inChannels, outChannels, kernelSize: 1)
    }

    /// `settle` sees the intermediate results (the decoder evaluates them there to bound memory).
    func callAsFunction(_ x: Tensor, settle: (Tensor) -> Void = { _ in }) -> Tensor {
        var h = conv1(norm1.withSiLU(x))
        settle(h)
        h = conv2(norm2.withSiLU(h))
        settle(h)
        return (convShortcut?(x) ?? x) + h
    }
}

/// Single-head self-attention over the H*W positions, with GroupNorm first and a residual.
public final class VAEAttention: Module {
    @Child("group_norm") var groupNorm: GroupNorm
    @Child("to_q") var toQ: Linear
    @Child("to_k") var toK: Linear
    @Child("to_v") var toV: Linear
    @Child("to_out") var toOut: [Linear]

    init(_ channels: Int, groups: Int) {
        super.init()
        groupNorm = GroupNorm(groups: groups, channels: channels, eps: 1e-6)
        toQ = Linear(channels, channels)
        toK = Linear(channels, channels)
        toV = Linear(channels, channels)
        toOut = [Linear(channels, channels)]
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, h, w, c) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3))
        let tokens = groupNorm(x).reshaped([b, 1, h * w, c])
        let o = NN.attention(queries: toQ(tokens), keys: toK(tokens), values: toV(tokens), scale: 1 / Float(c).squareRoot())
        return x + toOut[0](o).reshaped([b, h, w, c])
    }
}

/// The mid block: ResNet block, optional single-head attention, ResNet block, at one width.
public final class VAEMidBlock: Module {
    let resnets: [VAEResnetBlock]
    let attentions: [VAEAttention]

    init(_ channels: Int, groups: Int, attention: Bool) {
        resnets = [VAEResnetBlock(channels, channels, groups: groups), VAEResnetBlock(channels, channels, groups: groups)]
        attentions = attention ? [VAEAttention(channels, groups: groups)] : []
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = resnets[0](x)
        if let attention = attentions.first { h = attention(h) }
        return resnets[1](h)
    }
}

/// 3x3 stride-2 conv after padding right and bottom by one (diffusers' Downsample2D with padding 0).
public final class VAEDownsample: Module {
    let conv: Conv2d
    init(_ channels: Int) {
        conv = Conv2d(channels, channels, kernelSize: 3, stride: 2)
        super.init()
    }
    func callAsFunction(_ x: Tensor) -> Tensor { conv(x.padded(low: [0, 0, 0, 0], high: [0, 1, 1, 0])) }
}

/// Nearest 2x upsampling then a 3x3 conv.
public final class VAEUpsample: Module {
    let conv: Conv2d
    init(_ channels: Int) {
        conv = Conv2d(channels, channels, kernelSize: 3, padding: 1)
        super.init()
    }
    func callAsFunction(_ x: Tensor) -> Tensor { conv(NN.upsampleNearest(x, factor: 2)) }
}

/// One encoder level: its ResNet blocks, then a stride-2 downsampler except at the last level.
public final class VAEDownBlock: Module {
    let resnets: [VAEResnetBlock]
    let downsamplers: [VAEDownsample]
    init(_ inChannels: Int, _ outChannels: Int, layers: Int, groups: Int, downsample: Bool) {
        resnets = (0..<layers).map { VAEResnetBlock($0 == 0 ? inChannels : outChannels, outChannels, groups: groups) }
        downsamplers = downsample ? [VAEDownsample(outChannels)] : []
        super.init()
    }
    func callAsFunction(_ x: Tensor) -> Tensor { downsamplers.reduce(resnets.reduce(x) { $1($0) }) { $1($0) } }
}

/// One decoder level: its ResNet blocks, then a 2x upsampler except at the last level.
public final class VAEUpBlock: Module {
    let resnets: [VAEResnetBlock]
    let upsamplers: [VAEUpsample]
    init(_ inChannels: Int, _ outChannels: Int, layers: Int, groups: Int, upsample: Bool) {
        resnets = (0..<layers).map { VAEResnetBlock($0 == 0 ? inChannels : outChannels, outChannels, groups: groups) }
        upsamplers = upsample ? [VAEUpsample(outChannels)] : []
        super.init()
    }
    func callAsFunction(_ x: Tensor) -> Tensor { upsamplers.reduce(resnets.reduce(x) { $1($0) }) { $1($0) } }
}

/// The VAE encoder (NHWC): `conv_in`, the down blocks, the mid block, GroupNorm and SiLU, then `conv_out` to
/// twice the latent channels (mean and log-variance).
public final class VAEEncoder: Module {
    @Child("conv_in") var convIn: Conv2d
    @Child("down_blocks") var downBlocks: [VAEDownBlock]
    @Child("mid_block") var midBlock: VAEMidBlock
    @Child("conv_norm_out") var convNormOut: GroupNorm
    @Child("conv_out") var convOut: Conv2d

    init(_ c: VAEConfig) {
        super.init()
        let widths = c.blockOutChannels
        convIn = Conv2d(c.inChannels, widths[0], kernelSize: 3, padding: 1)
        downBlocks = widths.indices.map { i in
            VAEDownBlock(i == 0 ? widths[0] : widths[i - 1], widths[i], layers: c.layersPerBlock, groups: c.normNumGroups,
                         downsample: i < widths.count - 1)
        }
        midBlock = VAEMidBlock(widths[widths.count - 1], groups: c.normNumGroups, attention: c.midBlockAddAttention)
        convNormOut = GroupNorm(groups: c.normNumGroups, channels: widths[widths.count - 1], eps: 1e-6)
        convOut = Conv2d(widths[widths.count - 1], 2 * c.latentChannels, kernelSize: 3, padding: 1)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = convIn(x)
        for block in downBlocks { h = block(h) }
        return convOut(convNormOut.withSiLU(midBlock(h)))
    }
}

/// The VAE decoder (NHWC): `conv_in`, the mid block, the up blocks, GroupNorm and SiLU, then `conv_out` to
/// image channels.
public final class VAEDecoder: Module {
    @Child("conv_in") var convIn: Conv2d
    @Child("mid_block") var midBlock: VAEMidBlock
    @Child("up_blocks") var upBlocks: [VAEUpBlock]
    @Child("conv_norm_out") var convNormOut: GroupNorm
    @Child("conv_out") var convOut: Conv2d

    init(_ c: VAEConfig) {
        super.init()
        let reversed = Array(c.blockOutChannels.reversed())
        convIn = Conv2d(c.latentChannels, reversed[0], kernelSize: 3, padding: 1)
        midBlock = VAEMidBlock(reversed[0], groups: c.normNumGroups, attention: c.midBlockAddAttention)
        upBlocks = reversed.indices.map { i in
            VAEUpBlock(i == 0 ? reversed[0] : reversed[i - 1], reversed[i], layers: c.layersPerBlock + 1, groups: c.normNumGroups,
                       upsample: i < reversed.count - 1)
        }
        convNormOut = GroupNorm(groups: c.normNumGroups, channels: c.blockOutChannels[0], eps: 1e-6)
        convOut = Conv2d(c.blockOutChannels[0], c.outChannels, kernelSize: 3, padding: 1)
    }

    /// Evaluate after every ResNet block and upsampler instead of building the whole decoder as one lazy graph:
    /// MLX's evaluation order for the full graph keeps about 1.2 GB more alive at 384 px (one image). Inside a
    /// gradient trace (the demo trains its VAE) evaluation keeps the graph, so gradients are unchanged (tested).
    public var evaluatesBlockByBlock = true

    func callAsFunction(_ z: Tensor) -> Tensor {
        var h = midBlock(convIn(z))
        for block in upBlocks {
            for resnet in block.resnets { settle(h); h = resnet(h, settle: settle) }
            for upsampler in block.upsamplers { settle(h); h = upsampler(h) }
        }
        settle(h)
        return convOut(convNormOut.withSiLU(h))
    }

    /// A failed evaluation leaves `h` unevaluated, so the caller's own evaluation reports the error.
    private func settle(_ h: Tensor) {
        if evaluatesBlockByBlock { try? h.eval() }
    }
}

/// `AutoencoderKL` with the published parameter names.
public final class AutoencoderKL: Module {
    /// The configuration the VAE was built from.
    public let config: VAEConfig
    /// `encoder`: images to latent moments.
    public let encoder: VAEEncoder
    /// `decoder`: latents to images.
    public let decoder: VAEDecoder
    @Child("quant_conv") var quantConv: Conv2d?
    @Child("post_quant_conv") var postQuantConv: Conv2d?

    /// Builds the VAE with freshly initialised weights; `quant_conv` and `post_quant_conv` only when the config asks.
    public init(config: VAEConfig) {
        self.config = config
        encoder = VAEEncoder(config)
        decoder = VAEDecoder(config)
        super.init()
        let l = config.latentChannels
        quantConv = config.useQuantConv ? Conv2d(2 * l, 2 * l, kernelSize: 1) : nil
        postQuantConv = config.usePostQuantConv ? Conv2d(l, l, kernelSize: 1) : nil
    }

    /// Latents (NCHW, already divided by the scaling factor) -> images (NCHW, about [-1, 1], not clipped).
    public func decode(_ latents: Tensor) -> Tensor {
        var z = NN.nchwToNHWC(latents)
        if let postQuantConv { z = postQuantConv(z) }
        return NN.nhwcToNCHW(decoder(z).asType(.float32))
    }

    /// Images (NCHW in [-1, 1]) -> the posterior's mean and log-variance (clamped to [-30, 20]), NCHW.
    public func encode(_ images: Tensor) -> (mean: Tensor, logvar: Tensor) {
        var moments = encoder(NN.nchwToNHWC(images))
        if let quantConv { moments = quantConv(moments) }
        let l = config.latentChannels
        let mean = moments.slice(axis: -1, 0, l)
        let logvar = moments.slice(axis: -1, l, 2 * l).clipped(min: -30, max: 20)
        return (NN.nhwcToNCHW(mean).asType(.float32), NN.nhwcToNCHW(logvar).asType(.float32))
    }

    /// Older diffusers checkpoints name the mid-block attention `query/key/value/proj_attn` and may store
    /// those weights as 1x1 convolutions; map them to today's names and shapes.
    public static func remapLegacyNames(_ weights: [String: Tensor]) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        let renames = [".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."]
        for (name, tensor) in weights {
            var n = name
            if n.contains(".attentions.") {
                for (old, new) in renames { n = n.replacingOccurrences(of: old, with: new) }
                if n.hasSuffix(".weight"), tensor.ndim == 4, tensor.dim(2) == 1, tensor.dim(3) == 1 {
                    out[n] = tensor.reshaped([tensor.dim(0), tensor.dim(1)])
                    continue
                }
            }
            out[n] = tensor
        }
        return out
    }

    /// Loads a diffusers VAE folder: config.json and diffusion_pytorch_model.safetensors (or model.safetensors).
    public static func load(directory: URL, dtype: DType = .float32) throws -> AutoencoderKL {
        let fm = FileManager.default
        let configURL = directory.appendingPathComponent("config.json")
        guard fm.fileExists(atPath: configURL.path) else { throw ModelLoadingError("\(directory.path): no config.json in the VAE folder") }
        let config = try decodeConfig(VAEConfig.self, from: configURL)
        let candidates = ["diffusion_pytorch_model.safetensors", "model.safetensors"].map { directory.appendingPathComponent($0) }
        guard let file = candidates.first(where: { fm.fileExists(atPath: $0.path) }) else {
            throw ModelLoadingError("\(directory.path): no diffusion_pytorch_model.safetensors in the VAE folder")
        }
        let vae = AutoencoderKL(config: config)
        try vae.load(weights: remapLegacyNames(try Safetensors.load(file).tensors), dtype: dtype, source: file.path)
        return vae
    }
}
