import ArgumentParser
import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowTokenizer
import MLXEngine

/// The `--dtype` values every command accepts for weights.
func parseWeightDType(_ text: String) throws -> DType {
    switch text {
    case "bfloat16", "bf16": return .bfloat16
    case "float32", "f32": return .float32
    case "int8": return .int8
    default: throw ValidationError("--dtype must be bfloat16, float32 or int8, not '\(text)'")
    }
}

/// Options every command that loads the model shares.
struct ModelOptions: ParsableArguments {
    @Option(help: "Model folder (config.json, model.safetensors, tokenizer.json) as published on Hugging Face, or its Hub name (deepseek-ai/JanusFlow-1.3B[@REVISION]) found in the Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub).")
    var model: String

    @OptionGroup var deviceOption: DeviceOption

    @Option(help: "Weight dtype for inference: bfloat16 (default, as released), float32, or int8 (the language model's linear layers in int8 with per-group scales, the rest bfloat16).")
    var dtype = "bfloat16"

    @Option(help: "Weight dtype of the SDXL-VAE (with --vae): float32 (default, diffusers' force_upcast) or bfloat16 (what DeepSeek's code casts it to; its convolutions then take the CPU's bf16 products where it has them).")
    var vaeDtype = "float32"

    func weightDType() throws -> DType { try parseWeightDType(dtype) }

    func vaeDType() throws -> DType {
        switch vaeDtype {
        case "float32", "f32": return .float32
        case "bfloat16", "bf16": return .bfloat16
        default: throw ValidationError("--vae-dtype must be float32 or bfloat16, not '\(vaeDtype)'")
        }
    }

    func loadPipeline(vae: String? = nil) throws -> JanusFlowPipeline {
        try deviceOption.select()
        let dir = try resolveModelFolder("--model", model)
        let vaeDir = try vae.map { try resolveModelFolder("--vae", $0) }
        var bar: ProgressBar?
        return try JanusFlowPipeline(modelDirectory: dir, vaeDirectory: vaeDir, dtype: try weightDType(),
                                     vaeDType: try vaeDType()) { done, total in
            if bar == nil { bar = ProgressBar("loading weight files", total: total) }
            bar!.update(done)
        }
    }
}

/// A folder given as a path or as a Hub name in the Hugging Face cache; an error names the option.
func resolveModelFolder(_ option: String, _ value: String) throws -> URL {
    do { return try HuggingFaceCache.resolve(value) } catch let error as HuggingFaceCache.NotFound { throw ValidationError("\(option) \(error.message)") }
}

struct SamplingOptions: ParsableArguments {
    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature = 0.0
    @Option(help: "Nucleus sampling threshold.")
    var topP = 1.0
    @Option(help: "Keep only the k most likely tokens (0 = all).")
    var topK = 0
    @Option(help: "Penalty > 1 for repeating tokens.")
    var repetitionPenalty = 1.0
    @Option(help: "Maximum new tokens.")
    var maxTokens = 512
    @Option(help: "Seed for sampling.")
    var seed: UInt64 = 42

    var parameters: SamplingParameters {
        SamplingParameters(temperature: temperature, topP: topP, topK: topK, repetitionPenalty: repetitionPenalty,
                           maxNewTokens: maxTokens, seed: seed)
    }
}

struct UnderstandCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "understand", abstract: "Answer a question about an image (streams the answer).")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var sampling: SamplingOptions

    @Option(help: "The image (PNG or JPEG).")
    var image: String

    @Argument(help: "The question.")
    var question: String

    func run() throws {
        let picture = try RGBImage(contentsOf: URL(fileURLWithPath: image))
        let pipeline = try modelOptions.loadPipeline()
        _ = try pipeline.understand(image: picture, question: question, parameters: sampling.parameters) { piece in
            FileHandle.standardOutput.write(piece.data(using: .utf8)!)
            return true
        }
        print("")
    }
}

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate images from a prompt (or a GenEval metadata.jsonl) and write PNG files.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "The SDXL-VAE folder (config.json, diffusion_pytorch_model.safetensors), or its Hub name (stabilityai/sdxl-vae) in the Hugging Face cache.")
    var vae: String

    @Option(help: "Images per prompt.")
    var count = 1
    @Option(help: "Euler steps.")
    var steps = 30
    @Option(help: "Classifier-free guidance weight (>= 1).")
    var cfg = 2.0
    @Option(help: "Random seed.")
    var seed: UInt64 = 12345
    @Option(help: "Image size; the model makes only its own size (384 for JanusFlow-1.3B).")
    var size: Int?
    @Option(help: "Initial noise: mlx, or torch (exactly torch.randn in bfloat16 as DeepSeek's demo draws it).")
    var noise = "mlx"
    @Option(help: "Output folder.")
    var out: String
    @Option(help: "GenEval metadata.jsonl: one prompt per line; writes OUT/NNNNN/{metadata.jsonl, samples/NNNN.png}.")
    var metadata: String?

    @Option(help: "With --metadata: prompts sampled together (each image still exactly as if alone). Worth it for small models such as the demo's; keep 1 for JanusFlow-1.3B.")
    var promptsPerPass = 1

    @Argument(help: "The prompt (omit with --metadata).")
    var prompt: String?

    func run() throws {
        guard let source = NoiseSource(rawValue: noise) else { throw ValidationError("--noise must be mlx or torch") }
        guard (prompt == nil) != (metadata == nil) else { throw ValidationError("give either a prompt or --metadata FILE") }
        guard promptsPerPass >= 1 else { throw ValidationError("--prompts-per-pass must be at least 1") }
        let pipeline = try modelOptions.loadPipeline(vae: vae)
        if let size, size != pipeline.imageSize {
            throw ValidationError("--size \(size): this model generates \(pipeline.imageSize)x\(pipeline.imageSize) images only")
        }
        let outDir = URL(fileURLWithPath: out)
        if let prompt {
            for (i, image) in try generate(pipeline, prompt: prompt, seed: seed, source: source).enumerated() {
                let url = outDir.appendingPathComponent(String(format: "%04d.png", i))
                try image.writePNG(to: url)
                print(url.path)
            }
            return
        }
        // GenEval layout: one folder per prompt with its metadata line and samples/NNNN.png.
        let text = try String(contentsOf: URL(fileURLWithPath: metadata!), encoding: .utf8)
        let lines = text.split(separator: "\n").map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        var prompts: [String] = []
        for (index, line) in lines.enumerated() {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                  let p = object["prompt"] as? String
            else { throw ValidationError("\(metadata!): line \(index + 1) is not a JSON object with a 'prompt'") }
            prompts.append(p)
        }
        for start in stride(from: 0, to: lines.count, by: promptsPerPass) {
            let range = start..<Swift.min(start + promptsPerPass, lines.count)
            note(range.count == 1 ? "[\(start + 1)/\(lines.count)] \(prompts[start])" : "[\(range.lowerBound + 1)-\(range.upperBound)/\(lines.count)]")
            let images: [RGBImage]
            if range.count == 1 {
                images = try generate(pipeline, prompt: prompts[start], seed: seed &+ UInt64(start), source: source)
            } else {
                let bar = ProgressBar("sampling", total: steps)
                images = try pipeline.generate(prompts: Array(prompts[range]), seeds: range.map { seed &+ UInt64($0) }, count: count,
                                               steps: steps, cfg: cfg, imagesPerPass: range.count * count, noise: source) { step, _ in
                    bar.update(step)
                    return true
                }
            }
            for (offset, index) in range.enumerated() {
                let folder = outDir.appendingPathComponent(String(format: "%05d", index))
                try FileManager.default.createDirectory(at: folder.appendingPathComponent("samples"), withIntermediateDirectories: true)
                try (lines[index] + "\n").write(to: folder.appendingPathComponent("metadata.jsonl"), atomically: true, encoding: .utf8)
                for i in 0..<count {
                    try images[offset * count + i].writePNG(to: folder.appendingPathComponent("samples/\(String(format: "%04d", i)).png"))
                }
            }
        }
        print(outDir.path)
    }

    func generate(_ pipeline: JanusFlowPipeline, prompt: String, seed: UInt64, source: NoiseSource) throws -> [RGBImage] {
        let bar = ProgressBar("sampling", total: steps)
        return try pipeline.generate(prompt: prompt, count: count, steps: steps, cfg: cfg, seed: seed, noise: source) { step, _ in
            bar.update(step)
            return true
        }
    }
}

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Interactive multi-turn chat, with or without images. Commands: /image PATH, /reset, /quit.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var sampling: SamplingOptions

    func run() throws {
        let pipeline = try modelOptions.loadPipeline()
        var conversation: [ChatMessage] = []
        var images: [RGBImage] = []
        var attached: [RGBImage] = []  // go with the next message
        print("JanusFlow chat. /image PATH attaches a picture to your next message, /reset forgets the conversation, /quit leaves.")
        while true {
            print("> ", terminator: "")
            flushStandardOutput()
            guard let line = readLine() else { break }
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            if text == "/quit" || text == "/exit" { break }
            if text == "/reset" {
                (conversation, images, attached) = ([], [], [])
                print("(conversation cleared)")
                continue
            }
            if text.hasPrefix("/image ") {
                let path = String(text.dropFirst(7)).trimmingCharacters(in: .whitespaces)
                do {
                    let image = try RGBImage(contentsOf: URL(fileURLWithPath: path))
                    attached.append(image)
                    print("(image \(images.count + attached.count) attached: \(image.width)x\(image.height); it goes with your next message)")
                } catch {
                    print("error: \(error)")
                }
                continue
            }
            // Each attached picture as an image tag before the text, as DeepSeek's template places it.
            let message = ChatMessage.user((attached.map { _ in ChatTemplate.imageTag + "\n" }).joined() + text)
            let answer = try pipeline.understand(conversation: conversation + [message], images: images + attached,
                                                 parameters: sampling.parameters) { piece in
                print(piece, terminator: "")
                flushStandardOutput()
                return true
            }
            print("")
            conversation += [message, .assistant(answer)]
            images += attached
            attached = []
        }
    }
}

/// `--device`: where the model runs.
struct DeviceOption: ParsableArguments {
    @Option(help: "Where to run: gpu (MLX's CUDA build, `make setup BACKEND=cuda`), cpu, or auto (the GPU when MLX has one).")
    var device = "auto"

    func validate() throws {
        guard ["auto", "cpu", "gpu"].contains(device) else { throw ValidationError("--device must be cpu, gpu or auto (got '\(device)')") }
    }

    /// Makes the chosen device MLX's default; an unavailable GPU is an error saying why and what to do.
    func select() throws {
        let chosen = device == "auto" ? Device.preferred : Device(rawValue: device)!
        // The CPU is the default already; leaving it untouched keeps --no-fast-kernels and the like as set.
        guard chosen == .gpu else { return }
        do { try Device.use(.gpu) } catch let error as Device.Unavailable {
            throw ValidationError("--device gpu: \(error.message)" + (Device.isCUDABuild ? "" : "; build with `make setup BACKEND=cuda` on a machine with an NVIDIA GPU, or use --device cpu"))
        }
        note("running on the GPU (\(Device.gpuName ?? "unnamed"))")
    }
}
