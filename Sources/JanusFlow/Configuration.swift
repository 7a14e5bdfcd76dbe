import Foundation

/// A problem with a model folder or its config; the message names the file and the field.
public struct ModelLoadingError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Decodes a JSON config file, turning DecodingError into a message that names the file and the dotted field.
public func decodeConfig<T: Decodable>(_ type: T.Type, from url: URL) throws -> T {
    guard let data = FileManager.default.contents(atPath: url.path) else {
        throw ModelLoadingError("\(url.path): file not found")
    }
    return try decodeConfig(type, from: data, name: url.path)
}

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
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numAttentionHeads: Int
    public var numHiddenLayers: Int
    public var numKeyValueHeads: Int
    public var vocabSize: Int
    public var rmsNormEps: Float
    public var ropeTheta: Float
    public var maxPositionEmbeddings: Int

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numAttentionHeads = "num_attention_heads"
        case numHiddenLayers = "num_hidden_layers", numKeyValueHeads = "num_key_value_heads", vocabSize = "vocab_size"
        case rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta", maxPositionEmbeddings = "max_position_embeddings"
    }

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

    /// Required: the sizes. Defaulted as transformers' LlamaConfig does: KV heads = heads, eps 1e-6, theta 10000.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6
        ropeTheta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? 10000
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 16384
        guard hiddenSize % numAttentionHeads == 0 else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [CodingKeys.hiddenSize],
                                                    debugDescription: "hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads)"))
        }
    }

    public var headDim: Int { hiddenSize / numAttentionHeads }
}

/// The SigLIP understanding encoder (`vision_und_enc_config.params`).
public struct SigLIPConfig: Codable, Equatable, Sendable {
    public var modelName: String
    public var imageSize: Int
    public var patchSize: Int
    public var width: Int
    public var layers: Int
    public var heads: Int
    public var mlpRatio: Double
    public var selectLayer: Int
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
        modelName = name
        width = w
        layers = l
        heads = h
        mlpRatio = m
        patchSize = p
        imageSize = i
        selectLayer = try c.decodeIfPresent(Int.self, forKey: .selectLayer) ?? -1
        selectFeature = try c.decodeIfPresent(String.self, forKey: .selectFeature) ?? "same"
    }

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
    public var tokens: Int { (imageSize / patchSize) * (imageSize / patchSize) }
    public var mlpHidden: Int { Int(Double(width) * mlpRatio) }
}

/// ShallowUViT encoder (`vision_gen_enc_config.params`).
public struct UViTEncoderConfig: Codable, Equatable, Sendable {
    public var inputChannels: Int
    public var kernelSize: Int
    public var stride: Int
    public var padding: Int
    public var blockOutChannels: [Int]
    public var layersInMiddle: Int
    public var hiddenSize: Int
    public var useBias: Bool
    public var normEps: Float
    public var useMidBlock: Bool

    enum CodingKeys: String, CodingKey {
        case inputChannels = "input_channels", kernelSize = "kernel_size", stride, padding
        case blockOutChannels = "block_out_channels", layersInMiddle = "layers_in_middle", hiddenSize = "hidden_size"
        case useBias = "use_bias", normEps = "norm_eps", useMidBlock = "use_mid_block"
    }

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

    /// Defaults are the official constructor's (uvit.py); padding defaults to ceil(kernel - stride).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inputChannels = try c.decodeIfPresent(Int.self, forKey: .inputChannels) ?? 3
        kernelSize = try c.decodeIfPresent(Int.self, forKey: .kernelSize) ?? 7
        stride = try c.decodeIfPresent(Int.self, forKey: .stride) ?? 4
        padding = try c.decodeIfPresent(Int.self, forKey: .padding) ?? Swift.max(kernelSize - stride, 0)
        blockOutChannels = try c.decodeIfPresent([Int].self, forKey: .blockOutChannels) ?? [768]
        layersInMiddle = try c.decodeIfPresent(Int.self, forKey: .layersInMiddle) ?? 2
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 2048
        useBias = try c.decodeIfPresent(Bool.self, forKey: .useBias) ?? true
        normEps = try c.decodeIfPresent(Float.self, forKey: .normEps) ?? 1e-6
        useMidBlock = try c.decodeIfPresent(Bool.self, forKey: .useMidBlock) ?? true
        guard !blockOutChannels.isEmpty else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [CodingKeys.blockOutChannels], debugDescription: "must not be empty"))
        }
    }

    public var channels: Int { blockOutChannels[blockOutChannels.count - 1] }
}

/// ShallowUViT decoder (`vision_gen_dec_config.params`).
public struct UViTDecoderConfig: Codable, Equatable, Sendable {
    public var inChannels: Int
    public var outChannels: Int
    public var blockOutChannels: [Int]
    public var upsamples: Int
    public var layersInMiddle: Int
    public var hiddenSize: Int
    public var useBias: Bool
    public var normEps: Float
    public var useMidBlock: Bool

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", blockOutChannels = "block_out_channels"
        case upsamples, layersInMiddle = "layers_in_middle", hiddenSize = "hidden_size", useBias = "use_bias"
        case normEps = "norm_eps", useMidBlock = "use_mid_block"
    }

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

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inChannels = try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? 768
        outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? 3
        blockOutChannels = try c.decodeIfPresent([Int].self, forKey: .blockOutChannels) ?? [768]
        upsamples = try c.decodeIfPresent(Int.self, forKey: .upsamples) ?? 2
        layersInMiddle = try c.decodeIfPresent(Int.self, forKey: .layersInMiddle) ?? 2
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 2048
        useBias = try c.decodeIfPresent(Bool.self, forKey: .useBias) ?? true
        normEps = try c.decodeIfPresent(Float.self, forKey: .normEps) ?? 1e-6
        useMidBlock = try c.decodeIfPresent(Bool.self, forKey: .useMidBlock) ?? true
        guard !blockOutChannels.isEmpty else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [CodingKeys.blockOutChannels], debugDescription: "must not be empty"))
        }
    }

    public var channels: Int { blockOutChannels[blockOutChannels.count - 1] }
}

/// A sub-config as published: `{"cls": ..., "model_type": ..., "params": {...}}`.
public struct ComponentConfig<Params: Codable & Equatable & Sendable>: Codable, Equatable, Sendable {
    public var cls: String
    public var modelType: String?
    public var params: Params

    enum CodingKeys: String, CodingKey { case cls, modelType = "model_type", params }

    public init(cls: String, modelType: String? = nil, params: Params) {
        self.cls = cls
        self.modelType = modelType
        self.params = params
    }
}

/// The published JanusFlow `config.json` (MultiModalityConfig).
public struct JanusFlowConfig: Codable, Equatable, Sendable {
    public var languageConfig: LanguageConfig
    public var visionUndEncConfig: ComponentConfig<SigLIPConfig>
    public var visionGenEncConfig: ComponentConfig<UViTEncoderConfig>
    public var visionGenDecConfig: ComponentConfig<UViTDecoderConfig>

    enum CodingKeys: String, CodingKey {
        case languageConfig = "language_config", visionUndEncConfig = "vision_und_enc_config"
        case visionGenEncConfig = "vision_gen_enc_config", visionGenDecConfig = "vision_gen_dec_config"
    }

    public init(language: LanguageConfig, siglip: SigLIPConfig, genEncoder: UViTEncoderConfig, genDecoder: UViTDecoderConfig) {
        languageConfig = language
        visionUndEncConfig = ComponentConfig(cls: "CLIPVisionTower", modelType: "vision_und_enc", params: siglip)
        visionGenEncConfig = ComponentConfig(cls: "ShallowUViTEncoder", modelType: "vision_gen_enc", params: genEncoder)
        visionGenDecConfig = ComponentConfig(cls: "ShallowUViTDecoder", modelType: "vision_gen_dec", params: genDecoder)
    }

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

    public var siglip: SigLIPConfig { visionUndEncConfig.params }
    public var genEncoder: UViTEncoderConfig { visionGenEncConfig.params }
    public var genDecoder: UViTDecoderConfig { visionGenDecConfig.params }

    /// JanusFlow-1.3B as published (the values of the manifest's config).
    public static let janusFlow1_3B = JanusFlowConfig(
        language: LanguageConfig(hiddenSize: 2048, intermediateSize: 5632, numAttentionHeads: 16, numHiddenLayers: 24,
                                 numKeyValueHeads: 16, vocabSize: 102400),
        siglip: SigLIPConfig(modelName: "siglip_large_patch16_384", imageSize: 384, patchSize: 16, width: 1024, layers: 24, heads: 16),
        genEncoder: UViTEncoderConfig(channels: 768, hiddenSize: 2048),
        genDecoder: UViTDecoderConfig(inChannels: 768, channels: 768, hiddenSize: 2048))

    public static func load(_ url: URL) throws -> JanusFlowConfig { try decodeConfig(JanusFlowConfig.self, from: url) }
}
