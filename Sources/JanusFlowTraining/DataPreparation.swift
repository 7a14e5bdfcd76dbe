import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowTokenizer
import MLXEngine

/// Turns manifests into training examples: conversations tokenized with the chat template, images
/// preprocessed, generation images encoded to VAE latents (times the scaling factor) and to understanding-encoder
/// features for REPA. Latents and features are computed once and cached next to the run.
public struct DataPreparation {
    /// The model: its SigLIP settings size the images, and its understanding encoder makes the REPA targets.
    public let model: JanusFlowModel
    /// Encodes the generation images; needed only when the config has generation data.
    public let vae: AutoencoderKL?
    /// Tokenizes conversations, captions and text, and supplies the pad id.
    public let tokenizer: Tokenizer
    /// Records longer than this many tokens (for generation: prompt plus image tokens) are skipped.
    public let maxSequenceLength: Int
    /// Called for each understanding and generation record with the task name, records done and the total.
    public var progress: ((String, Int, Int) -> Void)?

    /// Creates a preparation step; set `progress` afterwards to follow it.
    public init(model: JanusFlowModel, vae: AutoencoderKL?, tokenizer: Tokenizer, maxSequenceLength: Int) {
        self.model = model
        self.vae = vae
        self.tokenizer = tokenizer
        self.maxSequenceLength = maxSequenceLength
    }

    var size: Int { model.config.siglip.imageSize }

    /// Generation images: resize the short side to the model size, then centre crop (the paper crops randomly).
    func squareCrop(_ image: RGBImage) -> RGBImage {
        let short = Swift.min(image.width, image.height)
        let w = image.width * size / short, h = image.height * size / short
        let resized = PillowResize.resize(image, width: Swift.max(w, size), height: Swift.max(h, size))
        var out = RGBImage(width: size, height: size)
        out.paste(resized, x: -(resized.width - size) / 2, y: -(resized.height - size) / 2)
        return out
    }

    /// Reads the config's manifests and turns their records into examples, skipping unreadable images and too-long samples.
    ///
    /// Generation latents and REPA features are loaded from, or added to, `cacheDirectory/generation-<hash>.safetensors`,
    /// keyed by the manifest's bytes and the image size, VAE scaling factor and encoder width (not the weights).
    ///
    /// - Returns: The examples, and one report per manifest read.
    /// - Throws: `TrainingError` when a manifest cannot be read or generation data has no VAE; errors from reading or writing the cache.
    public func build(config: TrainingConfig, cacheDirectory: URL) throws -> (data: TrainingData, reports: [ManifestReport]) {
        let processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: model.config.siglip.tokens)
        let preprocessor = ImagePreprocessor(size: size)
        var data = TrainingData(padID: tokenizer.padID)
        var reports: [ManifestReport] = []

        if let path = config.data.understanding {
            let (records, report0) = try Manifest.read(URL(fileURLWithPath: path), kind: .understanding)
            var report = report0
            for (i, record) in records.enumerated() {
                guard case .understanding(let imageURL, let turns) = record else { continue }
                progress?("understanding", i + 1, records.count)
                guard let image = try? RGBImage(contentsOf: imageURL) else {
                    report.used -= 1
                    report.skip(line: i + 1, "unreadable image", detail: imageURL.lastPathComponent)
                    continue
                }
                let (prompt, labels) = processor.processForTraining(conversation: turns.map { ChatMessage(role: $0.role, content: $0.content) })
                guard prompt.ids.count <= maxSequenceLength else {
                    report.used -= 1
                    report.skip(line: i + 1, "too long", detail: "\(prompt.ids.count) tokens")
                    continue
                }
                data.understanding.append(UnderstandingExample(ids: prompt.ids, labelMask: labels, imageSeqMask: prompt.imageSeqMask,
                                                               pixels: Tensor(preprocessor.pixelValues(image), shape: [3, size, size])))
            }
            reports.append(report)
        }

        if let path = config.data.generation {
            guard let vae else { throw TrainingError("data.generation needs a VAE folder ('vae' in the config)") }
            let url = URL(fileURLWithPath: path)
            let (records, report0) = try Manifest.read(url, kind: .generation)
            var report = report0
            // Cache keyed by the manifest's contents and the model geometry.
            let manifestData = try Data(contentsOf: url)
            var hasher = Hasher64()
            hasher.combine(manifestData)
            hasher.combine(Data("\(size) \(vae.config.scalingFactor) \(model.config.siglip.width)".utf8))
            let cacheURL = cacheDirectory.appendingPathComponent("generation-\(String(hasher.value, radix: 16)).safetensors")
            var cached: [String: Tensor] = [:]
            if FileManager.default.fileExists(atPath: cacheURL.path) { cached = try Safetensors.load(cacheURL).tensors }
            var fresh: [String: Tensor] = [:]
            for (i, record) in records.enumerated() {
                guard case .generation(let imageURL, let caption) = record else { continue }
                progress?("generation", i + 1, records.count)
                let ids = processor.generationIDs(caption)
                guard ids.count + model.config.siglip.tokens <= maxSequenceLength else {
                    report.used -= 1
                    report.skip(line: i + 1, "too long", detail: "\(ids.count) tokens")
                    continue
                }
                var latent = cached["latent.\(i)"], target = cached["repa.\(i)"]
                if latent == nil || target == nil {
                    guard let image = try? RGBImage(contentsOf: imageURL) else {
                        report.used -= 1
                        report.skip(line: i + 1, "unreadable image", detail: imageURL.lastPathComponent)
                        continue
                    }
                    let plain = ImagePreprocessor(size: size)
                    let pixels = Tensor(plain.pixelValues(squareCrop(image)), shape: [1, 3, size, size])
                    let z = vae.encode(pixels).mean * vae.config.scalingFactor
                    let f = model.understandingEncoder(pixels)
                    try Tensor.eval([z, f])
                    latent = z[0]
                    target = f[0]
                    fresh["latent.\(i)"] = latent
                    fresh["repa.\(i)"] = target
                }
                data.generation.append(GenerationExample(promptIDs: ids, latent: latent!, repaTarget: target!))
            }
            if !fresh.isEmpty {
                try Safetensors.save(cached.merging(fresh) { a, _ in a }, to: cacheURL)
            }
            reports.append(report)
        }

        if let path = config.data.text {
            let (records, report0) = try Manifest.read(URL(fileURLWithPath: path), kind: .text)
            var report = report0
            for (i, record) in records.enumerated() {
                guard case .text(let text) = record else { continue }
                let ids = tokenizer.encode(text) + [tokenizer.eosID]
                guard ids.count <= maxSequenceLength else {
                    report.used -= 1
                    report.skip(line: i + 1, "too long", detail: "\(ids.count) tokens")
                    continue
                }
                data.text.append(TextExample(ids: ids))
            }
            reports.append(report)
        }
        return (data, reports)
    }
}

/// FNV-1a, 64-bit: a stable content hash for cache names (Swift's Hasher is seeded per process).
struct Hasher64 {
    var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func combine(_ data: Data) {
        for b in data {
            value ^= UInt64(b)
            value = value &* 0x100_0000_01b3
        }
    }
}
