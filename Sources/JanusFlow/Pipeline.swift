import Foundation
import JanusFlowImageIO
import JanusFlowTokenizer
import MLXEngine
import PyTorchRandom

/// Where the initial noise of image generation comes from.
public enum NoiseSource: String, Sendable, CaseIterable {
    /// MLX's random generator (fast, reproducible within this implementation).
    case mlx
    /// Exactly `torch.manual_seed(seed); torch.randn(..., dtype=torch.bfloat16)` on CPU, as DeepSeek's demo draws it.
    case torch
}

/// Everything a Swift program needs to use JanusFlow: load a Hugging Face-style folder, ask questions about
/// images, generate images.
///
/// ```swift
/// let pipeline = try JanusFlowPipeline(modelDirectory: URL(fileURLWithPath: "JanusFlow-1.3B"),
///                                      vaeDirectory: URL(fileURLWithPath: "sdxl-vae"))
/// let answer = try pipeline.understand(image: RGBImage(contentsOf: photoURL), question: "What is in this picture?")
/// let images = try pipeline.generate(prompt: "a red fox in the snow", count: 2, steps: 30, cfg: 2, seed: 12345)
/// try images[0].writePNG(to: URL(fileURLWithPath: "fox.png"))
/// ```
public final class JanusFlowPipeline: @unchecked Sendable {
    /// The loaded JanusFlow model.
    public let model: JanusFlowModel
    /// The SDXL-VAE that decodes generated latents; nil when none was loaded, and then image generation throws.
    public let vae: AutoencoderKL?
    /// The model folder's tokenizer (its EOS id ends answers).
    public let tokenizer: Tokenizer
    /// Builds chat and generation prompts, expanding each image tag into the image's placeholder tokens.
    public let processor: ChatProcessor
    /// Resizes and normalises images to the SigLIP input size.
    public let preprocessor: ImagePreprocessor
    /// The last generation prompts' keys/values, reused by `generate(prompt:)` and `sampleLatents` for the same
    /// prompt (another seed, count or CFG weight). Clear it after changing the model's weights.
    public let promptCaches = PromptCacheStore()

    /// Wraps an already loaded model, VAE and tokenizer; the chat processor is built for the model's image token
    /// count and the preprocessor for its image size.
    /// - Throws: when the chat processor cannot be built from `tokenizer`.
    public init(model: JanusFlowModel, vae: AutoencoderKL?, tokenizer: Tokenizer) throws {
        self.model = model
        self.vae = vae
        self.tokenizer = tokenizer
        processor = try ChatProcessor(tokenizer: tokenizer, imageTokens: model.config.siglip.tokens)
        preprocessor = ImagePreprocessor(size: model.config.siglip.imageSize)
    }

    /// Loads the model folder (config.json, weights, tokenizer.json) and optionally a diffusers VAE folder.
    /// - vaeDType: the VAE's weights: float32 (diffusers' `force_upcast`, the parity reference) or bfloat16 (what
    ///   DeepSeek's code casts the VAE to; on CPUs with bf16 products its convolutions run about twice as fast).
    /// - progress: called with (files loaded, files) while reading weights.
    public convenience init(modelDirectory: URL, vaeDirectory: URL? = nil, dtype: DType = .bfloat16, vaeDType: DType = .float32,
                            progress: ((Int, Int) -> Void)? = nil) throws {
        let tokenizerURL = modelDirectory.appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: tokenizerURL.path) else {
            throw ModelLoadingError("\(modelDirectory.path): no tokenizer.json in the model folder")
        }
        let tokenizer = try Tokenizer(tokenizerJSON: tokenizerURL)
        let model = try JanusFlowModel.load(directory: modelDirectory, dtype: dtype, progress: progress)
        try model.evalParameters()
        // float16 is known to overflow in the SDXL-VAE; bfloat16 has float32's range.
        guard vaeDType == .float32 || vaeDType == .bfloat16 else {
            throw ModelLoadingError("vaeDType: the VAE loads in float32 or bfloat16, not \(vaeDType)")
        }
        let vae = try vaeDirectory.map { try AutoencoderKL.load(directory: $0, dtype: vaeDType) }
        try vae?.evalParameters()
        try self.init(model: model, vae: vae, tokenizer: tokenizer)
    }

    // MARK: Understanding

    /// The answer to `question` about `image` (greedy unless `parameters` samples). `onText` receives the
    /// answer as it is produced, in whole characters; return false to stop early.
    public func understand(image: RGBImage, question: String, history: [ChatMessage] = [],
                           parameters: SamplingParameters = .greedy, onText: ((String) -> Bool)? = nil) throws -> String {
        try answer(image: image, question: question, history: history, parameters: parameters, onText: onText).text
    }

    /// The next assistant turn of a conversation with any number of images (see `answer(conversation:images:...)`).
    public func understand(conversation: [ChatMessage], images: [RGBImage], systemPrompt: String = ChatTemplate.systemPrompt,
                           parameters: SamplingParameters = .greedy, onText: ((String) -> Bool)? = nil) throws -> String {
        try answer(conversation: conversation, images: images, systemPrompt: systemPrompt, parameters: parameters, onText: onText).text
    }

    /// An answer with how it ended.
    public struct Answer: Sendable, Equatable {
        /// The text, without surrounding whitespace.
        public var text: String
        /// New tokens produced (the end-of-sentence token included when produced).
        public var tokenCount: Int
        /// Why an answer ended; the raw values are the finish reasons the server reports.
        public enum Ending: String, Sendable {
            /// The model produced its end-of-sentence token.
            case endOfSentence = "stop"
            /// `maxNewTokens` was reached.
            case length
            /// `onText` returned false.
            case stopped
        }
        /// Why the answer ended.
        public var ending: Ending
        /// Tokens the model read before answering (each image counted as its N + 2 positions).
        public var promptTokenCount: Int
    }

    /// `understand`, also saying how many tokens the answer took and why it ended.
    public func answer(image: RGBImage, question: String, history: [ChatMessage] = [],
                       parameters: SamplingParameters = .greedy, onText: ((String) -> Bool)? = nil) throws -> Answer {
        try answer(conversation: Self.imageQuestion(question, history: history), images: [image], parameters: parameters, onText: onText)
    }

    /// The next assistant turn of a conversation with any number of images (none for plain text chat): each
    /// `<image_placeholder>` in the messages stands for the next of `images`, in order. The messages alternate
    /// User and Assistant and end with a User message; `systemPrompt` "" leaves the system text out.
    public func answer(conversation: [ChatMessage], images: [RGBImage], systemPrompt: String = ChatTemplate.systemPrompt,
                       parameters: SamplingParameters = .greedy, onText: ((String) -> Bool)? = nil) throws -> Answer {
        let embeds = try inputsEmbeds(conversation: conversation, images: images, systemPrompt: systemPrompt)
        var decoder = IncrementalDecoder(tokenizer: tokenizer)
        var text = ""
        var stopped = false
        let result = try generateText(from: embeds, parameters: parameters) { token in
            let piece = decoder.add(token)
            text += piece
            if let onText, !piece.isEmpty, !onText(piece) {
                stopped = true
                return false
            }
            return true
        }
        // A generation that ends inside a multi-byte character still delivers its bytes (as U+FFFD).
        let rest = decoder.finish()
        if !rest.isEmpty {
            text += rest
            if let onText, !stopped { _ = onText(rest) }
        }
        let ending: Answer.Ending = result.stoppedAtEOS ? .endOfSentence : stopped ? .stopped : .length
        return Answer(text: text.trimmingCharacters(in: .whitespacesAndNewlines), tokenCount: result.tokens.count, ending: ending,
                      promptTokenCount: embeds.dim(1))
    }

    /// The answer's tokens (EOS included when produced); `onToken` may stop early by returning false.
    public func respond(image: RGBImage, question: String, history: [ChatMessage] = [], parameters: SamplingParameters = .greedy,
                        onToken: ((Int) -> Bool)? = nil) throws -> TextDecoder.Result {
        try generateText(from: try inputsEmbeds(conversation: Self.imageQuestion(question, history: history), images: [image]),
                         parameters: parameters, onToken: onToken)
    }

    /// The demo's single-image question after earlier turns: the image tag, a newline, the question.
    public static func imageQuestion(_ question: String, history: [ChatMessage]) -> [ChatMessage] {
        history + [.user(ChatTemplate.imageTag + "\n" + question)]
    }

    func generateText(from embeds: Tensor, parameters: SamplingParameters, onToken: ((Int) -> Bool)?) throws -> TextDecoder.Result {
        try TextDecoder.generate(model: model, inputsEmbeds: embeds, parameters: parameters, stopTokens: [tokenizer.eosID], onToken: onToken)
    }

    /// The token ids of the next assistant turn's prompt, after checking the conversation: turns alternate User and
    /// Assistant from User and end with User, and there are as many image tags as images. Cheap (no model work),
    /// so a server can refuse a conversation before it answers.
    public func prompt(conversation: [ChatMessage], images: Int, systemPrompt: String = ChatTemplate.systemPrompt) throws -> ChatProcessor.Prompt {
        for (i, message) in conversation.enumerated() where message.role != (i % 2 == 0 ? "User" : "Assistant") {
            throw ConversationError("message \(i) is from '\(message.role)' where the conversation expects \(i % 2 == 0 ? "User" : "Assistant") (turns alternate, starting with User)")
        }
        guard conversation.count % 2 == 1 else { throw ConversationError("the conversation must end with a User message") }
        let prompt = processor.process(conversation: conversation + [.assistant("")], systemPrompt: systemPrompt)
        guard prompt.imageCount == images else {
            throw ConversationError("the conversation has \(prompt.imageCount) image tag\(prompt.imageCount == 1 ? "" : "s") for \(images) image\(images == 1 ? "" : "s")")
        }
        return prompt
    }

    /// The language model's input (1, T, H) for the next assistant turn of `conversation`: the chat template with
    /// each image's tokens spliced in at its tag (see `answer(conversation:images:...)` for the rules).
    public func inputsEmbeds(conversation: [ChatMessage], images: [RGBImage], systemPrompt: String = ChatTemplate.systemPrompt) throws -> Tensor {
        let prompt = try prompt(conversation: conversation, images: images.count, systemPrompt: systemPrompt)
        let size = preprocessor.size
        let pixels = images.isEmpty ? nil
            : Tensor(images.flatMap { preprocessor.pixelValues($0) }, shape: [1, images.count, 3, size, size])
        let ids = Tensor(prompt.ids.map(Int32.init), shape: [1, prompt.ids.count])
        let mask = images.isEmpty ? nil : Tensor(prompt.imageSeqMask, shape: [1, prompt.ids.count])
        return model.prepareInputsEmbeds(ids: ids, pixels: pixels, imageSeqMask: mask)
    }

    /// A conversation the model cannot take as given (roles out of turn, images and image tags that do not match).
    public struct ConversationError: Error, CustomStringConvertible, Equatable {
        /// What is wrong with the conversation.
        public let message: String
        /// Wraps a message.
        public init(_ message: String) { self.message = message }
        /// Same as `message`.
        public var description: String { message }
    }

    /// The answer as a stream of text pieces.
    public func understandStream(image: RGBImage, question: String, history: [ChatMessage] = [],
                                 parameters: SamplingParameters = .greedy) -> AsyncThrowingStream<String, Error> {
        AsyncThrowingStream { continuation in
            let task = Task.detached {
                do {
                    _ = try self.understand(image: image, question: question, history: history, parameters: parameters) { piece in
                        continuation.yield(piece)
                        return !Task.isCancelled
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    // MARK: Generation

    /// The only image size the model makes (384 for JanusFlow-1.3B).
    public var imageSize: Int { model.config.siglip.imageSize }

    /// A generation request the pipeline refuses: an invalid count, step count, CFG weight, size, prompt list or
    /// seed list, or no VAE loaded.
    public struct GenerationError: Error, CustomStringConvertible {
        /// What was wrong with the request.
        public let message: String
        /// Same as `message`.
        public var description: String { message }
    }

    /// Initial latents (count, 4, h, w) for a seed.
    public func initialNoise(count: Int, seed: UInt64, source: NoiseSource = .mlx) throws -> Tensor {
        guard let vae else { throw GenerationError(message: "image generation needs the VAE folder (--vae)") }
        let side = imageSize / vae.config.downsamplingFactor
        let shape = [count, vae.config.latentChannels, side, side]
        switch source {
        case .mlx:
            return Random.normal(shape, key: RandomKey(seed: seed))
        case .torch:
            return try TorchNoise.randnBFloat16(shape: shape, seed: seed)
        }
    }

    /// `count` images for `prompt` (Euler rectified flow with classifier-free guidance, then the VAE).
    /// - size: must be the model's size (384 for the release); other sizes are refused, never garbled.
    /// - progress: (step, steps); return false to cancel.
    public func generate(prompt: String, count: Int = 1, steps: Int = 30, cfg: Double = 2.0, seed: UInt64 = 12345,
                         size: Int? = nil, noise: NoiseSource = .mlx, progress: ProgressHandler? = nil) throws -> [RGBImage] {
        if let size, size != imageSize {
            throw GenerationError(message: "this model generates \(imageSize)x\(imageSize) images only (asked for \(size)x\(size))")
        }
        let vae = try samplingVAE(count: count, steps: steps, cfg: cfg)
        let z0 = try initialNoise(count: count, seed: seed, source: noise)
        let latents = try sampleLatents(prompt: prompt, initialNoise: z0, steps: steps, cfg: cfg, progress: progress)
        return try decodeLatents(latents, vae: vae)
    }

    /// `count` images per prompt, prompt i from its own seed: the images of prompt i are those
    /// `generate(prompt: prompts[i], count: count, seed: seeds[i])` makes (in order, prompt by prompt), but the
    /// prompts go through the network together, `imagesPerPass` images at a time (worth it for small models,
    /// where one image's rows leave the cores idle; a 1.3B model gains nothing from more than 1).
    public func generate(prompts: [String], seeds: [UInt64], count: Int = 1, steps: Int = 30, cfg: Double = 2.0,
                         imagesPerPass: Int = 1, noise: NoiseSource = .mlx, progress: ProgressHandler? = nil) throws -> [RGBImage] {
        guard !prompts.isEmpty else { throw GenerationError(message: "no prompts given") }
        guard seeds.count == prompts.count else {
            throw GenerationError(message: "one seed per prompt (\(seeds.count) seeds for \(prompts.count) prompts)")
        }
        guard imagesPerPass >= 1 else { throw GenerationError(message: "imagesPerPass must be at least 1") }
        let vae = try samplingVAE(count: count, steps: steps, cfg: cfg)
        let z0 = concatenated(try seeds.map { try initialNoise(count: count, seed: $0, source: noise) }, axis: 0)
        let guidances = prompts.flatMap { Array(repeating: guidance(for: $0), count: count) }
        let sampler = RectifiedFlowSampler(steps: steps, cfgWeight: cfg, imagesPerPass: imagesPerPass)
        let latents = try sampler.sample(model: model, guidances: guidances, initialNoise: z0, progress: progress)
        return try decodeLatents(latents, vae: vae)
    }

    /// The checks every generation call makes, and the VAE it decodes with.
    private func samplingVAE(count: Int, steps: Int, cfg: Double) throws -> AutoencoderKL {
        guard count >= 1 else { throw GenerationError(message: "count must be at least 1") }
        guard steps >= 1 else { throw GenerationError(message: "steps must be at least 1") }
        guard cfg >= 1 else { throw GenerationError(message: "the CFG weight must be at least 1") }
        guard let vae else { throw GenerationError(message: "image generation needs the VAE folder (--vae)") }
        return vae
    }

    /// The classifier-free-guidance rows of a generation prompt (chat template, generation tag).
    private func guidance(for prompt: String) -> GuidanceBatch {
        GuidanceBatch(promptIDs: processor.generationIDs(prompt), padID: tokenizer.padID)
    }

    /// The sampler's final latents for `prompt` from given initial noise (NCHW), before the VAE.
    public func sampleLatents(prompt: String, initialNoise z0: Tensor, steps: Int, cfg: Double,
                              progress: ProgressHandler? = nil) throws -> Tensor {
        try RectifiedFlowSampler(steps: steps, cfgWeight: cfg, promptStore: promptCaches)
            .sample(model: model, guidance: guidance(for: prompt), initialNoise: z0, progress: progress)
    }

    /// Progress events and the final images of `generate`, as an asynchronous stream (cancel by ending it).
    public enum GenerationEvent: Sendable {
        /// Sampling progress: `step` Euler steps done of `of` (0 first; the last event has `step == of`).
        case step(Int, of: Int)
        /// The finished images, sent once after the last step, just before the stream finishes.
        case images([RGBImage])
    }

    /// `generate(prompt:count:steps:cfg:seed:size:noise:progress:)` as an asynchronous stream: step events, then the
    /// images. Ending the stream cancels the generation at the next step.
    public func generateStream(prompt: String, count: Int = 1, steps: Int = 30, cfg: Double = 2.0, seed: UInt64 = 12345,
                               noise: NoiseSource = .mlx) -> AsyncThrowingStream<GenerationEvent, Error> {
        AsyncThrowingStream { continuation in
            let task = Task.detached {
                do {
                    let images = try self.generate(prompt: prompt, count: count, steps: steps, cfg: cfg, seed: seed, noise: noise) { step, total in
                        continuation.yield(.step(step, of: total))
                        return !Task.isCancelled
                    }
                    continuation.yield(.images(images))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// VAE decode of sampler latents, clipped and converted to 8-bit images as the demo does.
    public func decodeLatents(_ latents: Tensor, vae: AutoencoderKL) throws -> [RGBImage] {
        var images: [RGBImage] = []
        for i in 0..<latents.dim(0) {
            let x = vae.decode(latents.slice(axis: 0, i, i + 1) / vae.config.scalingFactor)
            let (h, w) = (x.dim(2), x.dim(3))
            images.append(ImagePreprocessor.image(fromCHW: try x.values(Float.self), width: w, height: h))
        }
        return images
    }
}

/// Initial noise drawn exactly as DeepSeek's demo draws it with PyTorch.
public enum TorchNoise {
    /// `torch.manual_seed(seed); torch.randn(shape, dtype=torch.bfloat16)`, as a float32 tensor.
    public static func randnBFloat16(shape: [Int], seed: UInt64) throws -> Tensor {
        var generator = TorchGenerator(seed: seed)
        return Tensor(generator.randnBFloat16(count: shape.reduce(1, *)), shape: shape)
    }

    /// `torch.manual_seed(seed); torch.randn(shape)` (float32).
    public static func randn(shape: [Int], seed: UInt64) throws -> Tensor {
        var generator = TorchGenerator(seed: seed)
        return Tensor(generator.randn(count: shape.reduce(1, *)), shape: shape)
    }
}
