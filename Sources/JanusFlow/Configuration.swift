import Foundation

/// A problem with a model folder or its config; the message names the file and the field.
public struct ModelLoadingError: Error, CustomStringConvertible, Equatable {
    /// The text shown to the user, usually starting with the path of the file at fault.
    public let message: String
    /// Wraps a ready-made message.
    public init(_ message: String) { self.message = message }
    /// The message itself.
    public var description: String { message }
}

/// Decodes a JSON config file, turning DecodingError into a message that names the file and the dotted field.
public func decodeConfig<T: Decodable>(_ type: T.Type, from url: URL) throws -> T {
    guard let data = FileManager.default.contents(atPath: url.path) else {
        throw ModelLoadingError("\(url.path): file not found")
    }
    return try decodeConfig(type, from: data, name: url.path)
}

/// Decodes JSON `data` as `type`, turning decoding failures into a `ModelLoadingError` that starts with `name`
/// and names the dotted field (such as `language_config.hidden_size`).
/// - Throws: `ModelLoadingError` for a missing, null, mistyped or invalid field (including a `ModelLoadingError`
///   thrown by the type's own decoder, which gets `name` prefixed); other errors pass through unchanged.
public func decodeConfig<T: Decodable>(_ type: T.Type, from data: Data, name: String) throws -> T {
    func path(_ codingPath: [CodingKey], _ last: CodingKey? = nil) -> String {
        (codingPath + (last.map { [$0] } ?? [])).map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
    }
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch let DecodingError.keyNotFound(key, context) {
        throw ModelLoadingError("\(name): missing field '\(path(context.codingPath, key))'")
    } catch let DecodingError.typeMismatch(_, context) {
        throw ModelLoadingError("\(name): field '\(path(context.codingPath))' has the wrong type (\(context.debugDescription))")
    } catch let DecodingError.valueNotFound(_, context) {
        throw ModelLoadingError("\(name): field '\(path(context.codingPath))' is null")
    } catch let DecodingError.dataCorrupted(context) {
        let field = path(context.codingPath)
        throw ModelLoadingError("\(name): \(field.isEmpty ? "" : "field '\(field)': ")\(context.debugDescription)")
    } catch let error as ModelLoadingError {
        throw ModelLoadingError("\(name): \(error.message)")
    }
}

/// The Llama-layout language model (`language_config`).
public struct LanguageConfig: Codable, Equatable, Sendable {
    /// `hidden_size`: width of the residual stream and of each token embedding (2048 for JanusFlow-1.3B).
    public var hiddenSize: Int
    /// `intermediate_size`: hidden width of each SwiGLU MLP (5632 for JanusFlow-1.3B).
    public var intermediateSize: Int
    /// `num_attention_heads`: query heads per attention layer; must divide `hidden_size`.
    public var numAttentionHeads: Int
    /// `num_hidden_layers`: number of decoder blocks (24 for JanusFlow-1.3B).
    public var numHiddenLayers: Int
    /// `num_key_value_heads`: key/value heads (grouped-query attention when fewer than the query heads);
    /// defaults to `num_attention_heads`.
    public var numKeyValueHeads: Int
    /// `vocab_size`: rows of the token embedding table and of the output head (102400 for JanusFlow-1.3B).
    public var vocabSize: Int
    /// `rms_norm_eps`: epsilon of every RMSNorm; default 1e-6.
    public var rmsNormEps: Float
    /// `rope_theta`: base of the rotary position frequencies; default 10000.
    public var ropeTheta: Float
    /// `max_position_embeddings`: the context length the checkpoint was trained for; default 16384. Recorded only:
    /// nothing here limits sequences to it.
    public var maxPositionEmbeddings: Int

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numAttentionHeads = "num_attention_heads"
        case numHiddenLayers = "num_hidden_layers", numKeyValueHeads = "num_key_value_heads", vocabSize = "vocab_size"
        case rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta", maxPositionEmbeddings = "max_position_embeddings"
    }

    /// Builds a config in code; `numKeyValueHeads` nil means one key/value head per query head. Unlike decoding,
    /// this does not check that the heads divide `hiddenSize`.
    public init(hiddenSize: Int, intermediateSize: Int, numAttentionHeads: Int, numHiddenLayers: Int,
                numKeyValueHeads: Int? = nil, vocabSize: Int, rmsNormEps: Float = 1e-6, ropeTheta: Float = 10000,
                maxPositionEmbeddings: Int = 16384) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numAttentionHeads = numAttentionHeads
        self.numHiddenLayers = numHiddenLayers
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.vocabSize = vocabSize
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.maxPositionEmbeddings = maxPositionEmbeddings
    }

    /// Decodes `language_config`, throwing when `hidden_size` is not a multiple of `num_attention_heads`.
    ///
    /// Required: the sizes. Defaulted as transformers' LlamaConfig does: KV heads = heads, eps 1e-6, theta 10000.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decodeSize(.hiddenSize)
        intermediateSize = try c.decodeSize(.intermediateSize)
        numAttentionHeads = try c.decodeSize(.numAttentionHeads)
        numHiddenLayers = try c.decodeSize(.numHiddenLayers)
        numKeyValueHeads = try c.decodeSize(.numKeyValueHeads, default: numAttentionHeads)
        vocabSize = try c.decodeSize(.vocabSize)
        rmsNormEps = try c.decodePositive(.rmsNormEps, default: 1e-6)
        ropeTheta = try c.decodePositive(.ropeTheta, default: 10000)
        maxPositionEmbeddings = try c.decodeSize(.maxPositionEmbeddings, default: 16384)
        guard hiddenSize % numAttentionHeads == 0 else {
            throw c.invalid(.hiddenSize, "hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads)")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw c.invalid(.numKeyValueHeads, "num_attention_heads \(numAttentionHeads) is not a multiple of num_key_value_heads \(numKeyValueHeads)")
        }
    }

    /// Width of one attention head: `hiddenSize / numAttentionHeads` (128 for JanusFlow-1.3B).
    public var headDim: Int { hiddenSize / numAttentionHeads }
}

/// The SigLIP understanding encoder (`vision_und_enc_config.params`).
public struct SigLIPConfig: Codable, Equatable, Sendable {
    /// `model_name`: the official SigLIP variant (such as `siglip_large_patch16_384`); a known name supplies any
    /// geometry field the file leaves out.
    public var modelName: String
    /// `image_size`: side of the square input image in pixels (384 for JanusFlow-1.3B).
    public var imageSize: Int
    /// `patch_size`: side of one square patch in pixels (16 for JanusFlow-1.3B).
    public var patchSize: Int
    /// `width`: token width of the ViT (1024 for the large variant).
    public var width: Int
    /// `layers`: transformer blocks of the full ViT, before `select_layer` trims them.
    public var layers: Int
    /// `heads`: attention heads per block.
    public var heads: Int
    /// `mlp_ratio`: MLP hidden width as a multiple of `width` (4 for the large variant).
    public var mlpRatio: Double
    /// `select_layer`: the block whose output is used; -1 (the default) is the last. See `builtLayers`.
    public var selectLayer: Int
    /// `select_feature`: which tokens are kept; default `same`. Decoded but not used: every patch token is kept.
    public var selectFeature: String

    enum CodingKeys: String, CodingKey {
        case modelName = "model_name", imageSize = "image_size", patchSize = "patch_size", width, layers, heads
        case mlpRatio = "mlp_ratio", selectLayer = "select_layer", selectFeature = "select_feature"
    }

    /// The geometry table of the official SigLIP factory (siglip_vit.py).
    static let known: [String: (image: Int, patch: Int, width: Int, layers: Int, heads: Int, mlp: Double)] = [
        "siglip_large_patch16_384": (384, 16, 1024, 24, 16, 4),
        "siglip_large_patch16_256": (256, 16, 1024, 24, 16, 4),
        "siglip_so400m_patch14_384": (336, 14, 1152, 27, 16, 3.7362),
        "siglip_so400m_patch14_224": (224, 14, 1152, 27, 16, 3.7362),
    ]

    /// Decodes `vision_und_enc_config.params`; geometry keys present in the file win, missing ones come from the
    /// table of known `model_name`s.
    /// - Throws: `DecodingError.keyNotFound` when a geometry key is missing and the model name is not in the table.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let name = try c.decode(String.self, forKey: .modelName)
        let table = SigLIPConfig.known[name]
        func value<T: Decodable>(_ key: CodingKeys, _ fallback: T?) throws -> T {
            if let v = try c.decodeIfPresent(T.self, forKey: key) { return v }
            if let fallback { return fallback }
            throw DecodingError.keyNotFound(key, .init(codingPath: c.codingPath,
                                                       debugDescription: "unknown SigLIP model '\(name)' needs explicit geometry"))
        }
        // Explicit geometry keys win (the official code ignores them; tiny fixtures carry them for unknown names).
        let w: Int = try value(.width, table?.width)
        let l: Int = try value(.layers, table?.layers)
        let h: Int = try value(.heads, table?.heads)
        let m: Double = try value(.mlpRatio, table?.mlp)
        let p: Int = try value(.patchSize, table?.patch)
        let i: Int = try value(.imageSize, table?.image)
        for (key, v) in [(CodingKeys.width, w), (.layers, l), (.heads, h), (.patchSize, p), (.imageSize, i)]
        where !(1...largestConfigSize).contains(v) {
            throw c.invalid(key, "must be from 1 to \(largestConfigSize) (got \(v))")
        }
        guard w % h == 0 else { throw c.invalid(.heads, "width \(w) is not a multiple of heads \(h)") }
        guard p <= i else { throw c.invalid(.patchSize, "patch_size \(p) is larger than image_size \(i)") }
        guard m.isFinite, m > 0, m * Double(w) <= Double(largestConfigSize) else {
            throw c.invalid(.mlpRatio, "must be above 0 and give an MLP width of at most \(largestConfigSize) (got \(m))")
        }
        modelName = name
        width = w
        layers = l
        heads = h
        mlpRatio = m
        patchSize = p
        imageSize = i
        selectLayer = try c.decodeIfPresent(Int.self, forKey: .selectLayer) ?? -1
        guard (-l...l).contains(selectLayer) else { throw c.invalid(.selectLayer, "must be from -\(l) to \(l) (got \(selectLayer))") }
        selectFeature = try c.decodeIfPresent(String.self, forKey: .selectFeature) ?? "same"
    }

    /// Builds a config in code with explicit geometry; `selectFeature` is `same`.
    public init(modelName: String = "custom", imageSize: Int, patchSize: Int, width: Int, layers: Int, heads: Int,
                mlpRatio: Double = 4, selectLayer: Int = -1) {
        self.modelName = modelName
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.width = width
        self.layers = layers
        self.heads = heads
        self.mlpRatio = mlpRatio
        self.selectLayer = selectLayer
        self.selectFeature = "same"
    }

    /// Blocks actually built: select_layer <= 0 drops the last -select_layer-1 blocks (as create_siglip_vit does).
    public var builtLayers: Int { selectLayer <= 0 ? Swift.min(layers, layers + selectLayer + 1) : Swift.min(layers, selectLayer) }
    /// Patch tokens per image, `(imageSize / patchSize)` squared (576 for 384-pixel images and 16-pixel patches).
    public var tokens: Int { (imageSize / patchSize) * (imageSize / patchSize) }
    /// Hidden width of each block's MLP: `width * mlpRatio`, truncated to an integer.
    public var mlpHidden: Int { Int(Double(width) * mlpRatio) }
}

/// ShallowUViT encoder (`vision_gen_enc_config.params`).
public struct UViTEncoderConfig: Codable, Equatable, Sendable {
    /// `input_channels`: channels of the latents the encoder reads (4 for SDXL-VAE latents); 3 when missing.
    public var inputChannels: Int
    /// `kernel_size`: side of the patchify convolution's kernel (2 for JanusFlow-1.3B); 7 when missing.
    public var kernelSize: Int
    /// `stride`: stride of the patchify convolution (2 for JanusFlow-1.3B); 4 when missing.
    public var stride: Int
    /// `padding`: zero padding of the patchify convolution; `kernel_size - stride` (at least 0) when missing.
    public var padding: Int
    /// `block_out_channels`: channel widths (default [768]). The patchify conv and the time features use the first
    /// entry and the ConvNeXt blocks the last, so only a single entry builds a consistent encoder.
    public var blockOutChannels: [Int]
    /// `layers_in_middle`: ConvNeXt blocks after the patchify conv (default 2).
    public var layersInMiddle: Int
    /// `hidden_size`: width of the time embedding, which is also an LLM token, so the LLM's hidden size (default 2048).
    public var hiddenSize: Int
    /// `use_bias`: whether the time-embedding MLP and the ConvNeXt layers have biases (default true); the patchify
    /// conv always has one.
    public var useBias: Bool
    /// `norm_eps`: epsilon of the ConvNeXt blocks' RMSNorms (default 1e-6).
    public var normEps: Float
    /// `use_mid_block`: whether the ConvNeXt blocks are built at all (default true).
    public var useMidBlock: Bool

    enum CodingKeys: String, CodingKey {
        case inputChannels = "input_channels", kernelSize = "kernel_size", stride, padding
        case blockOutChannels = "block_out_channels", layersInMiddle = "layers_in_middle", hiddenSize = "hidden_size"
        case useBias = "use_bias", normEps = "norm_eps", useMidBlock = "use_mid_block"
    }

    /// Builds a config in code with the single block width `channels`, biases and the mid block on; the other
    /// defaults are JanusFlow-1.3B's (4 latent channels, a 2x2 kernel with stride 2, no padding).
    public init(inputChannels: Int = 4, kernelSize: Int = 2, stride: Int = 2, padding: Int = 0, channels: Int,
                layersInMiddle: Int = 2, hiddenSize: Int, normEps: Float = 1e-6) {
        self.inputChannels = inputChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.blockOutChannels = [channels]
        self.layersInMiddle = layersInMiddle
        self.hiddenSize = hiddenSize
        self.useBias = true
        self.normEps = normEps
        self.useMidBlock = true
    }

    /// Decodes `vision_gen_enc_config.params`, throwing when `block_out_channels` is empty.
    ///
    /// Defaults are the official constructor's (uvit.py); padding defaults to ceil(kernel - stride).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inputChannels = try c.decodeSize(.inputChannels, default: 3)
        kernelSize = try c.decodeSize(.kernelSize, default: 7, in: 1...1024)
        stride = try c.decodeSize(.stride, default: 4, in: 1...1024)
        padding = try c.decodeSize(.padding, default: Swift.max(kernelSize - stride, 0), in: 0...1024)
        blockOutChannels = try c.decodeSizes(.blockOutChannels, default: [768])
        layersInMiddle = try c.decodeSize(.layersInMiddle, default: 2, in: 0...1024)
        hiddenSize = try c.decodeSize(.hiddenSize, default: 2048)
        useBias = try c.decodeIfPresent(Bool.self, forKey: .useBias) ?? true
        normEps = try c.decodeIfPresent(Float.self, forKey: .normEps) ?? 1e-6
        useMidBlock = try c.decodeIfPresent(Bool.self, forKey: .useMidBlock) ?? true
        guard !blockOutChannels.isEmpty else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [CodingKeys.blockOutChannels], debugDescription: "must not be empty"))
        }
    }

    /// The last entry of `blockOutChannels`: the width of the features the encoder returns.
    public var channels: Int { blockOutChannels[blockOutChannels.count - 1] }
}

/// ShallowUViT decoder (`vision_gen_dec_config.params`).
public struct UViTDecoderConfig: Codable, Equatable, Sendable {
    /// `in_channels`: width of the aligned LLM output the decoder reads (768 for JanusFlow-1.3B, also the default).
    public var inChannels: Int
    /// `out_channels`: channels of the predicted velocity, i.e. the latent channels (4 for SDXL-VAE latents); 3 when
    /// missing.
    public var outChannels: Int
    /// `block_out_channels`: channel widths (default [768]); the last is the width of the encoder skip it joins and
    /// of the stages between upsamplings.
    public var blockOutChannels: [Int]
    /// `upsamples`: pixel-shuffle-by-2 stages at the end (1 for JanusFlow-1.3B, undoing the stride-2 patchify); 2
    /// when missing.
    public var upsamples: Int
    /// `layers_in_middle`: ConvNeXt blocks over the joined input and skip (default 2).
    public var layersInMiddle: Int
    /// `hidden_size`: width of the time embedding that conditions the ConvNeXt blocks (default 2048).
    public var hiddenSize: Int
    /// `use_bias`: whether the ConvNeXt layers and the unpatchify convs have biases (default true).
    public var useBias: Bool
    /// `norm_eps`: epsilon of the decoder's RMSNorms (default 1e-6).
    public var normEps: Float
    /// `use_mid_block`: whether the ConvNeXt blocks are built at all (default true).
    public var useMidBlock: Bool

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", blockOutChannels = "block_out_channels"
        case upsamples, layersInMiddle = "layers_in_middle", hiddenSize = "hidden_size", useBias = "use_bias"
        case normEps = "norm_eps", useMidBlock = "use_mid_block"
    }

    /// Builds a config in code with the single block width `channels`, biases and the mid block on; the other
    /// defaults are JanusFlow-1.3B's (4 output channels, one upsampling).
    public init(inChannels: Int, outChannels: Int = 4, channels: Int, upsamples: Int = 1, layersInMiddle: Int = 2,
                hiddenSize: Int, normEps: Float = 1e-6) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.blockOutChannels = [channels]
        self.upsamples = upsamples
        self.layersInMiddle = layersInMiddle
        self.hiddenSize = hiddenSize
        self.useBias = true
        self.normEps = normEps
        self.useMidBlock = true
    }

    /// Decodes `vision_gen_dec_config.params` with the official constructor's defaults, throwing when
    /// `block_out_channels` is empty.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inChannels = try c.decodeSize(.inChannels, default: 768)
        outChannels = try c.decodeSize(.outChannels, default: 3)
        blockOutChannels = try c.decodeSizes(.blockOutChannels, default: [768])
        upsamples = try c.decodeSize(.upsamples, default: 2, in: 0...16)
        layersInMiddle = try c.decodeSize(.layersInMiddle, default: 2, in: 0...1024)
        hiddenSize = try c.decodeSize(.hiddenSize, default: 2048)
        useBias = try c.decodeIfPresent(Bool.self, forKey: .useBias) ?? true
        normEps = try c.decodeIfPresent(Float.self, forKey: .normEps) ?? 1e-6
        useMidBlock = try c.decodeIfPresent(Bool.self, forKey: .useMidBlock) ?? true
        guard !blockOutChannels.isEmpty else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [CodingKeys.blockOutChannels], debugDescription: "must not be empty"))
        }
    }

    /// The last entry of `blockOutChannels`: the skip's width and the width between upsampling stages.
    public var channels: Int { blockOutChannels[blockOutChannels.count - 1] }
}

/// A sub-config as published: `{"cls": ..., "model_type": ..., "params": {...}}`.
public struct ComponentConfig<Params: Codable & Equatable & Sendable>: Codable, Equatable, Sendable {
    /// `cls`: the official Python class; `JanusFlowConfig` accepts only the one it expects for each component.
    public var cls: String
    /// `model_type`: an optional tag such as `vision_gen_enc`; not checked.
    public var modelType: String?
    /// `params`: the component's own settings.
    public var params: Params

    enum CodingKeys: String, CodingKey { case cls, modelType = "model_type", params }

    /// Wraps `params` under the class name `cls`.
    public init(cls: String, modelType: String? = nil, params: Params) {
        self.cls = cls
        self.modelType = modelType
        self.params = params
    }
}

/// The published JanusFlow `config.json` (MultiModalityConfig).
public struct JanusFlowConfig: Codable, Equatable, Sendable {
    /// `language_config`: the shared LLM.
    public var languageConfig: LanguageConfig
    /// `vision_und_enc_config`: the SigLIP understanding encoder (class `CLIPVisionTower`).
    public var visionUndEncConfig: ComponentConfig<SigLIPConfig>
    /// `vision_gen_enc_config`: the generation encoder (class `ShallowUViTEncoder`).
    public var visionGenEncConfig: ComponentConfig<UViTEncoderConfig>
    /// `vision_gen_dec_config`: the generation decoder (class `ShallowUViTDecoder`).
    public var visionGenDecConfig: ComponentConfig<UViTDecoderConfig>

    enum CodingKeys: String, CodingKey {
        case languageConfig = "language_config", visionUndEncConfig = "vision_und_enc_config"
        case visionGenEncConfig = "vision_gen_enc_config", visionGenDecConfig = "vision_gen_dec_config"
    }

    /// Builds a config in code, wrapping each part under the class name the published file uses.
    public init(language: LanguageConfig, siglip: SigLIPConfig, genEncoder: UViTEncoderConfig, genDecoder: UViTDecoderConfig) {
        languageConfig = language
        visionUndEncConfig = ComponentConfig(cls: "CLIPVisionTower", modelType: "vision_und_enc", params: siglip)
        visionGenEncConfig = ComponentConfig(cls: "ShallowUViTEncoder", modelType: "vision_gen_enc", params: genEncoder)
        visionGenDecConfig = ComponentConfig(cls: "ShallowUViTDecoder", modelType: "vision_gen_dec", params: genDecoder)
    }

    /// Decodes `config.json`, throwing when a component's `cls` is not the one this implementation supports.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        languageConfig = try c.decode(LanguageConfig.self, forKey: .languageConfig)
        visionUndEncConfig = try c.decode(ComponentConfig<SigLIPConfig>.self, forKey: .visionUndEncConfig)
        visionGenEncConfig = try c.decode(ComponentConfig<UViTEncoderConfig>.self, forKey: .visionGenEncConfig)
        visionGenDecConfig = try c.decode(ComponentConfig<UViTDecoderConfig>.self, forKey: .visionGenDecConfig)
        for (key, cls, expected) in [(CodingKeys.visionUndEncConfig, visionUndEncConfig.cls, "CLIPVisionTower"),
                                     (.visionGenEncConfig, visionGenEncConfig.cls, "ShallowUViTEncoder"),
                                     (.visionGenDecConfig, visionGenDecConfig.cls, "ShallowUViTDecoder")] where cls != expected {
            throw DecodingError.dataCorrupted(.init(codingPath: [key], debugDescription: "unsupported cls '\(cls)' (expected '\(expected)')"))
        }
    }

    /// The SigLIP encoder's settings (`vision_und_enc_config.params`).
    public var siglip: SigLIPConfig { visionUndEncConfig.params }
    /// The generation encoder's settings (`vision_gen_enc_config.params`).
    public var genEncoder: UViTEncoderConfig { visionGenEncConfig.params }
    /// The generation decoder's settings (`vision_gen_dec_config.params`).
    public var genDecoder: UViTDecoderConfig { visionGenDecConfig.params }

    /// JanusFlow-1.3B as published (the values of the manifest's config).
    public static let janusFlow1_3B = JanusFlowConfig(
        language: LanguageConfig(hiddenSize: 2048, intermediateSize: 5632, numAttentionHeads: 16, numHiddenLayers: 24,
                                 numKeyValueHeads: 16, vocabSize: 102400),
        siglip: SigLIPConfig(modelName: "siglip_large_patch16_384", imageSize: 384, patchSize: 16, width: 1024, layers: 24, heads: 16),
        genEncoder: UViTEncoderConfig(channels: 768, hiddenSize: 2048),
        genDecoder: UViTDecoderConfig(inChannels: 768, channels: 768, hiddenSize: 2048))

    /// Reads and decodes a `config.json` file.
    /// - Throws: `ModelLoadingError` naming the file and, for a bad value, the dotted field.
    public static func load(_ url: URL) throws -> JanusFlowConfig { try decodeConfig(JanusFlowConfig.self, from: url) }
}
