import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowTraining
import MLXEngine
import XCTest

/// The public pipeline on the official tiny fixture (float32 weights).
final class PipelineTests: XCTestCase {
    static let pipeline = try! JanusFlowPipeline(modelDirectory: tinyFixture.appendingPathComponent("model"),
                                                 vaeDirectory: tinyFixture.appendingPathComponent("vae"), dtype: .float32)
    let fx = try! Parity.Fixture(directory: tinyFixture)

    func testGreedyUnderstandingReproducesTheOfficialTokens() throws {
        let raw = try fx.require("und.image_u8")
        let image = RGBImage(width: raw.dim(1), height: raw.dim(0), pixels: try raw.values(Int.self).map { UInt8($0) })
        let expected = try fx.require("und.greedy_tokens").values(Int.self)
        let result = try Self.pipeline.respond(image: image, question: "What is shown in this picture?",
                                               parameters: SamplingParameters(maxNewTokens: expected.count))
        XCTAssertEqual(result.tokens, expected)
        // Streaming gives the same text as the one-shot call.
        var streamed = ""
        let text = try Self.pipeline.understand(image: image, question: "What is shown in this picture?",
                                                parameters: SamplingParameters(maxNewTokens: expected.count)) { streamed += $0; return true }
        XCTAssertEqual(text, streamed.trimmingCharacters(in: .whitespacesAndNewlines))
        XCTAssertEqual(text, Self.pipeline.tokenizer.decode(expected, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func testSamplerFromTheFixtureNoiseReproducesTheOfficialLatents() throws {
        let prompt = (fx.index["strings"] as! [String: Any])["gen.sample_prompt_text"] as! String
        XCTAssertTrue(prompt.hasPrefix("User: A small green tree under the sun."))
        let z = try Self.pipeline.sampleLatents(prompt: "A small green tree under the sun.", initialNoise: try fx.require("gen.z0"),
                                                steps: 3, cfg: fx.cfgWeight)
        let row = try Parity.compare("z_final", z, try fx.require("gen.z_final"), tolerance: Parity.chainTolerance)
        XCTAssertTrue(row.passed, "\(row)")
    }

    func testSharedPromptSamplerEqualsTheOfficialMaskedLoop() throws {
        // 3 images and a 30-token prompt: the one-row shared prompt (unconditional rows seeing only BOS) against
        // the official 2B masked rows recomputed every step.
        let model = Self.pipeline.model
        let ids = [1] + (0..<29).map { 10 + ($0 * 7) % 50 }
        let guidance = GuidanceBatch(promptIDs: ids, padID: try fx.specialID("pad"))
        let z0 = Random.normal([3, 4, 8, 8], key: RandomKey(seed: 5))
        let fast = try RectifiedFlowSampler(steps: 3, cfgWeight: 4, reusePromptCache: true).sample(model: model, guidance: guidance, initialNoise: z0)
        let official = try RectifiedFlowSampler(steps: 3, cfgWeight: 4, reusePromptCache: false).sample(model: model, guidance: guidance, initialNoise: z0)
        let row = try Parity.compare("z_final", fast, official, tolerance: 1e-4)
        XCTAssertTrue(row.passed, "\(row)")
        XCTAssertGreaterThan(try (fast - z0).abs().max().item(Float.self), 0.01)
        // Images in passes (the default is one per pass) give what one batch of all of them gives.
        for perPass in [2, 3] {
            let batched = try RectifiedFlowSampler(steps: 3, cfgWeight: 4, imagesPerPass: perPass).sample(model: model, guidance: guidance, initialNoise: z0)
            let row = try Parity.compare("z_final, \(perPass) images per pass", batched, fast, tolerance: 1e-5)
            XCTAssertTrue(row.passed, "\(row)")
        }
    }

    func testPromptsSampledTogetherEqualEachPromptSampledAlone() throws {
        // Three prompts of different lengths in one batch (right-padded prompt caches, per-row positions) and in
        // passes of two: each image must be what its prompt and noise give alone.
        let model = Self.pipeline.model
        let pad = try fx.specialID("pad")
        let prompts = [[1] + (0..<12).map { 10 + ($0 * 7) % 50 }, [1, 20, 21, 22, 23], [1] + (0..<29).map { 5 + ($0 * 3) % 40 }]
        let guidances = prompts.map { GuidanceBatch(promptIDs: $0, padID: pad) }
        let z0 = Random.normal([3, 4, 8, 8], key: RandomKey(seed: 11))
        let alone = try concatenated((0..<3).map { i in
            try RectifiedFlowSampler(steps: 3, cfgWeight: 4).sample(model: model, guidance: guidances[i], initialNoise: z0.slice(axis: 0, i, i + 1))
        }, axis: 0)
        for perPass in [3, 2] {
            var reports: [[Int]] = []
            let together = try RectifiedFlowSampler(steps: 3, cfgWeight: 4, imagesPerPass: perPass)
                .sample(model: model, guidances: guidances, initialNoise: z0) { step, total in reports.append([step, total]); return true }
            let row = try Parity.compare("z_final, 3 prompts, \(perPass) per pass", together, alone, tolerance: 1e-5)
            XCTAssertTrue(row.passed, "\(row)")
            // Progress runs over all passes' steps, each once (two passes of three steps: 0 ... 6 of 6).
            let total = perPass == 3 ? 3 : 6
            XCTAssertEqual(reports, (0...total).map { [$0, total] })
        }
        // The rows really differ by prompt (a mix-up of prompts or positions would not be hidden by equal inputs).
        let swapped = try RectifiedFlowSampler(steps: 3, cfgWeight: 4, imagesPerPass: 3)
            .sample(model: model, guidances: [guidances[1], guidances[0], guidances[2]], initialNoise: z0)
        XCTAssertGreaterThan(try (swapped - alone).abs().max().item(Float.self), 1e-3)
    }

    func testGeneratingSeveralPromptsMatchesOneAtATimeAndChecksItsArguments() throws {
        let p = Self.pipeline
        let batch = try p.generate(prompts: ["a blue square", "two red circles and a triangle"], seeds: [3, 4], steps: 2, imagesPerPass: 2)
        let one = try p.generate(prompt: "a blue square", count: 1, steps: 2, seed: 3)[0]
        let two = try p.generate(prompt: "two red circles and a triangle", count: 1, steps: 2, seed: 4)[0]
        // 8-bit images: a float difference near a rounding boundary may move a channel by one level.
        func assertSame(_ a: RGBImage, _ b: RGBImage, _ what: String) {
            XCTAssertLessThanOrEqual(zip(a.pixels, b.pixels).map { abs(Int($0) - Int($1)) }.max()!, 1, what)
        }
        assertSame(batch[0], one, "first prompt")
        assertSame(batch[1], two, "second prompt")
        XCTAssertNotEqual(batch[0], batch[1])
        // Two images per prompt, in passes of three images: prompt by prompt, as generate(prompt:count:seed:) orders them.
        let pairs = try p.generate(prompts: ["a blue square", "two red circles and a triangle"], seeds: [3, 4], count: 2, steps: 2, imagesPerPass: 3)
        let firstPair = try p.generate(prompt: "a blue square", count: 2, steps: 2, seed: 3)
        let secondPair = try p.generate(prompt: "two red circles and a triangle", count: 2, steps: 2, seed: 4)
        XCTAssertEqual(pairs.count, 4)
        for (i, expected) in (firstPair + secondPair).enumerated() { assertSame(pairs[i], expected, "image \(i) of two per prompt") }
        XCTAssertThrowsError(try p.generate(prompts: ["x", "y"], seeds: [1])) {
            XCTAssertEqual("\($0)", "one seed per prompt (1 seeds for 2 prompts)")
        }
        XCTAssertThrowsError(try p.generate(prompts: [], seeds: [])) { XCTAssertEqual("\($0)", "no prompts given") }
        XCTAssertThrowsError(try p.generate(prompts: ["x"], seeds: [1], imagesPerPass: 0)) {
            XCTAssertEqual("\($0)", "imagesPerPass must be at least 1")
        }
    }

    func testGenerationRefusesOtherSizesAndNeedsAVAE() throws {
        XCTAssertThrowsError(try Self.pipeline.generate(prompt: "x", size: 384)) {
            XCTAssertEqual("\($0)", "this model generates 64x64 images only (asked for 384x384)")
        }
        let noVAE = try JanusFlowPipeline(model: Self.pipeline.model, vae: nil, tokenizer: Self.pipeline.tokenizer)
        XCTAssertThrowsError(try noVAE.generate(prompt: "x")) { XCTAssertEqual("\($0)", "image generation needs the VAE folder (--vae)") }
    }

    func testSeedsAreReproducibleAndCancellable() throws {
        let a = try Self.pipeline.generate(prompt: "a blue square", count: 2, steps: 2, seed: 7)
        let b = try Self.pipeline.generate(prompt: "a blue square", count: 2, steps: 2, seed: 7)
        let c = try Self.pipeline.generate(prompt: "a blue square", count: 1, steps: 2, seed: 8)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a[0], c[0])
        XCTAssertEqual([a[0].width, a[0].height], [64, 64])
        XCTAssertThrowsError(try Self.pipeline.generate(prompt: "x", steps: 5) { step, _ in step < 2 }) {
            XCTAssertEqual("\($0)", "sampling cancelled")
        }
        // torch noise: the demo's bfloat16 draw for seed 12345.
        let noise = try Self.pipeline.initialNoise(count: 1, seed: 12345, source: .torch)
        XCTAssertEqual(Array(try noise.values(Float.self).prefix(3)), [-1.4765625, 0.48828125, -3.015625])
    }
}

/// The built `janusflow` next to the test bundle.
let cliBinary = Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent("janusflow")

/// Runs the CLI; standard error goes to a file so a chatty command cannot block on a full pipe.
func runCLI(_ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = cliBinary
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe()
    let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("cli-stderr-\(UUID().uuidString)")
    FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: errURL) }
    let errHandle = try FileHandle(forWritingTo: errURL)
    process.standardOutput = out
    process.standardError = errHandle
    try process.run()
    let output = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    try errHandle.close()
    let error = (try? Data(contentsOf: errURL)) ?? Data()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
}

/// Runs a program to its end; what it printed on stdout and stderr together.
func runProgram(_ executable: URL, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, printed)
}

/// The command-line tool end to end on the tiny model.
final class CLITests: XCTestCase {
    var binary: URL { cliBinary }
    func run(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) { try runCLI(arguments) }

    func testUnderstandAndGenerateWriteValidOutputs() throws {
        guard FileManager.default.fileExists(atPath: binary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let model = tinyFixture.appendingPathComponent("model").path, vae = tinyFixture.appendingPathComponent("vae").path
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        let image = out.appendingPathComponent("in.png")
        try RGBImage(width: 30, height: 20, fill: (200, 30, 30)).writePNG(to: image)

        let understand = try run(["understand", "--model", model, "--dtype", "float32", "--image", image.path, "--max-tokens", "4", "what is it?"])
        XCTAssertEqual(understand.status, 0, understand.error)
        XCTAssertFalse(understand.output.isEmpty)

        let generate = try run(["generate", "--model", model, "--vae", vae, "--count", "2", "--steps", "2", "--out", out.path, "a red circle"])
        XCTAssertEqual(generate.status, 0, generate.error)
        for name in ["0000.png", "0001.png"] {
            let png = try RGBImage(contentsOf: out.appendingPathComponent(name))
            XCTAssertEqual([png.width, png.height], [64, 64])
        }

        let metadata = out.appendingPathComponent("prompts.jsonl")
        try "{\"tag\": \"single_object\", \"prompt\": \"a photo of a cat\"}\n{\"tag\": \"colors\", \"prompt\": \"a blue dog\"}\n"
            .write(to: metadata, atomically: true, encoding: .utf8)
        let geneval = try run(["generate", "--model", model, "--vae", vae, "--steps", "1", "--metadata", metadata.path, "--out", out.appendingPathComponent("geneval").path])
        XCTAssertEqual(geneval.status, 0, geneval.error)
        for folder in ["00000", "00001"] {
            let dir = out.appendingPathComponent("geneval/\(folder)")
            XCTAssertNoThrow(try RGBImage(contentsOf: dir.appendingPathComponent("samples/0000.png")))
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("metadata.jsonl").path))
        }
        // Both prompts in one pass, two images each: the images one prompt at a time gives, to an 8-bit level on the
        // float32-arithmetic paths; on the paths that round activations to bfloat16 (the bf16 weights' products), a
        // value the batch moves by a float32 ulp can round to the other bfloat16, so a few levels.
        let paths = Kernels.bestCPUPath == .avx2 ? [Kernels.CPUPath.avx2] : [.avx2, Kernels.bestCPUPath]
        for path in paths {
            var environment = ProcessInfo.processInfo.environment
            environment["MLXS_CPU_PATH"] = path.rawValue
            for (name, extra) in [("alone", [String]()), ("together", ["--prompts-per-pass", "2"])] {
                let result = try runCLI(["generate", "--model", model, "--vae", vae, "--steps", "2", "--count", "2", "--metadata", metadata.path,
                                         "--out", out.appendingPathComponent("\(path.rawValue)-\(name)").path] + extra, environment: environment)
                XCTAssertEqual(result.status, 0, result.error)
            }
            let (tolerance, meanTolerance) = path >= .avx512BF16 ? (3, 0.5) : (1, 0.1)
            for sample in ["00000/samples/0000.png", "00000/samples/0001.png", "00001/samples/0000.png", "00001/samples/0001.png"] {
                let a = try RGBImage(contentsOf: out.appendingPathComponent("\(path.rawValue)-alone/\(sample)"))
                let b = try RGBImage(contentsOf: out.appendingPathComponent("\(path.rawValue)-together/\(sample)"))
                let differences = zip(a.pixels, b.pixels).map { abs(Int($0) - Int($1)) }
                XCTAssertLessThanOrEqual(differences.max()!, tolerance, "\(path.rawValue) \(sample)")
                XCTAssertLessThan(Double(differences.reduce(0, +)) / Double(differences.count), meanTolerance, "\(path.rawValue) \(sample): mean difference")
            }
        }
        // The VAE in bfloat16 (--vae-dtype): the images within a few levels of the float32 VAE's, from the same
        // latents (the language model's part is the same run); another dtype is refused by name.
        let bf16VAE = try run(["generate", "--model", model, "--vae", vae, "--vae-dtype", "bfloat16", "--steps", "2", "--count", "2",
                               "--metadata", metadata.path, "--out", out.appendingPathComponent("bf16-vae").path])
        XCTAssertEqual(bf16VAE.status, 0, bf16VAE.error)
        let bestPath = Kernels.bestCPUPath.rawValue
        for sample in ["00000/samples/0000.png", "00001/samples/0001.png"] {
            let a = try RGBImage(contentsOf: out.appendingPathComponent("\(bestPath)-alone/\(sample)"))
            let b = try RGBImage(contentsOf: out.appendingPathComponent("bf16-vae/\(sample)"))
            let differences = zip(a.pixels, b.pixels).map { abs(Int($0) - Int($1)) }
            XCTAssertLessThanOrEqual(differences.max()!, 6, "bf16 VAE \(sample)")
            XCTAssertLessThan(Double(differences.reduce(0, +)) / Double(differences.count), 1.0, "bf16 VAE \(sample): mean difference")
        }
        let badVAEType = try run(["generate", "--model", model, "--vae", vae, "--vae-dtype", "float16", "--out", out.path, "x"])
        XCTAssertNotEqual(badVAEType.status, 0)
        XCTAssertTrue(badVAEType.error.contains("--vae-dtype must be float32 or bfloat16, not 'float16'"), badVAEType.error)
        // A kernel path the variable cannot name, or one this CPU lacks, is said and the best path used instead.
        var environment = ProcessInfo.processInfo.environment
        environment["MLXS_CPU_PATH"] = "avx9"
        let unknownPath = try runCLI(["generate", "--help"], environment: environment)
        XCTAssertEqual(unknownPath.status, 0, unknownPath.error)
        XCTAssertTrue(unknownPath.error.contains("MLXS_CPU_PATH=avx9 is not one of auto, avx2, avx512, avx512_bf16, amx; using \(Kernels.bestCPUPath.rawValue)"), unknownPath.error)
        if Kernels.bestCPUPath < .amx {
            environment["MLXS_CPU_PATH"] = "amx"
            let lacking = try runCLI(["generate", "--help"], environment: environment)
            XCTAssertTrue(lacking.error.contains("MLXS_CPU_PATH=amx: this CPU runs at most \(Kernels.bestCPUPath.rawValue)"), lacking.error)
        }
        let badPass = try run(["generate", "--model", model, "--vae", vae, "--prompts-per-pass", "0", "--metadata", metadata.path, "--out", out.path])
        XCTAssertNotEqual(badPass.status, 0)
        XCTAssertTrue(badPass.error.contains("--prompts-per-pass must be at least 1"), badPass.error)

        let missing = try run(["understand", "--model", out.appendingPathComponent("nope").path, "--image", image.path, "q"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.error.contains("nope: no such folder"), missing.error)
        let noTokenizer = try run(["understand", "--model", out.path, "--image", image.path, "q"])
        XCTAssertTrue(noTokenizer.error.contains("\(out.path): no tokenizer.json in the model folder"), noTokenizer.error)
    }
}

/// The embedded demo's short variant: every loss falls (the text loss is kept) and both scores beat chance clearly.
final class QuickDemoTests: XCTestCase {
    func testQuickDemoLearns() throws {
        let binary = Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent("janusflow")
        guard FileManager.default.fileExists(atPath: binary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("demo-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        let process = Process()
        process.executableURL = binary
        process.arguments = ["demo", "--quick", "--out", out.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let scores = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report/scores.json"))) as! [String: Any]
        let losses = scores["losses"] as! [String: [String: Double]]
        // The stages' text loss is the LLM pretraining objective ("llm", which must fall) on the same corpus: the
        // stages start where pretraining ended, so there it must be kept (the paper's reason for text data), not fall.
        for (name, pair) in losses where name != "text" {
            XCTAssertLessThan(pair["last"]!, pair["first"]!, "\(name) loss did not fall: \(pair)")
        }
        let text = try XCTUnwrap(losses["text"])
        XCTAssertLessThan(text["last"]!, text["first"]! * 1.15, "text loss rose by more than 15% during the stages: \(text)")
        XCTAssertLessThan(text["last"]!, losses["llm"]!["first"]! * 0.5, "text: \(text), llm: \(losses["llm"]!)")
        for name in ["vae", "siglip", "llm", "understanding", "rf"] {
            XCTAssertLessThan(losses[name]!["last"]! / losses[name]!["first"]!, 0.5, "\(name): \(losses[name]!)")
        }
        let chance = scores["chance"] as! [String: Double]
        let generation = scores["generation"] as! [String: Double], understanding = scores["understanding"] as! [String: Double]
        XCTAssertEqual(Set(generation.keys), ["overall", "single_object", "two_object", "counting", "colors", "position", "color_attr"])
        XCTAssertGreaterThanOrEqual(generation["overall"]!, chance["generation_overall"]! + 0.1, "\(generation)")
        XCTAssertGreaterThanOrEqual(understanding["accuracy"]!, chance["understanding_accuracy"]! + 0.1, "\(understanding)")
        for file in ["loss_curves.png", "generation_colors.png", "understanding_samples.md", "config.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("report/\(file)").path), file)
        }
        // The trained model is in the published layout: the pipeline loads it and answers.
        let pipeline = try JanusFlowPipeline(modelDirectory: out.appendingPathComponent("model"), vaeDirectory: out.appendingPathComponent("vae"), dtype: .float32)
        XCTAssertEqual(try pipeline.generate(prompt: "a photo of a red circle", steps: 2).count, 1)
    }
}

/// `janusflow train` on manifests: bad records are reported and skipped, checkpoints load in the pipeline,
/// and a resumed run continues from the checkpoint.
final class TrainCommandTests: XCTestCase {
    func testTrainFromManifestsAndResume() throws {
        let binary = Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent("janusflow")
        guard FileManager.default.fileExists(atPath: binary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("train-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("images"), withIntermediateDirectories: true)
        for (i, color) in [(200, 30, 30), (30, 200, 30), (30, 30, 200)].enumerated() {
            try RGBImage(width: 40, height: 30, fill: (UInt8(color.0), UInt8(color.1), UInt8(color.2))).writePNG(to: dir.appendingPathComponent("images/\(i).png"))
        }
        try "not a png".write(to: dir.appendingPathComponent("images/broken.png"), atomically: true, encoding: .utf8)
        let und = [#"{"image": "images/0.png", "conversation": [{"role": "User", "content": "<image_placeholder>\nwhat colour?"}, {"role": "Assistant", "content": "red"}]}"#,
                   #"{"image": "images/1.png", "conversation": [{"role": "User", "content": "<image_placeholder>\nwhat colour?"}, {"role": "Assistant", "content": "green"}]}"#,
                   #"{"image": "images/broken.png", "conversation": [{"role": "User", "content": "<image_placeholder>\nwhat?"}, {"role": "Assistant", "content": "x"}]}"#,
                   #"{"image": "images/missing.png", "conversation": [{"role": "User", "content": "<image_placeholder>\nwhat?"}, {"role": "Assistant", "content": "x"}]}"#]
        let gen = [#"{"image": "images/0.png", "caption": "a red picture"}"#, #"{"image": "images/2.png", "caption": "a blue picture"}"#,
                   #"{"image": "images/1.png", "caption": ""}"#, "{broken json"]
        try und.joined(separator: "\n").write(to: dir.appendingPathComponent("und.jsonl"), atomically: true, encoding: .utf8)
        try gen.joined(separator: "\n").write(to: dir.appendingPathComponent("gen.jsonl"), atomically: true, encoding: .utf8)
        try #"{"text": "a red picture and a blue picture."}"#.write(to: dir.appendingPathComponent("text.jsonl"), atomically: true, encoding: .utf8)
        let config: [String: Any] = [
            "model": tinyFixture.appendingPathComponent("model").path, "vae": tinyFixture.appendingPathComponent("vae").path,
            "data": ["understanding": dir.appendingPathComponent("und.jsonl").path, "generation": dir.appendingPathComponent("gen.jsonl").path,
                     "text": dir.appendingPathComponent("text.jsonl").path],
            "output": dir.appendingPathComponent("run").path, "repa_layer": NSNull(), "checkpoint_every": 2, "log_every": 1,
            "stages": [["name": "a", "steps": 2, "lr": 1e-3, "batch_size": 4, "ratio": [1, 1, 1]],
                       ["name": "b", "steps": 2, "lr": 1e-3, "batch_size": 4, "ratio": [1, 1, 0]]],
        ]
        let configURL = dir.appendingPathComponent("train.json")
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        func run(_ args: [String]) throws -> (Int32, String) {
            let result = try runCLI(args)
            return (result.status, result.error)
        }
        let (status, log) = try run(["train", "--config", configURL.path, "--until", "2"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("und.jsonl: 2 of 4 records used, 2 skipped: 1 missing image, 1 unreadable image"), log)
        XCTAssertTrue(log.contains("gen.jsonl: 2 of 4 records used, 2 skipped: 1 empty caption, 1 invalid JSON"), log)
        let checkpoint = dir.appendingPathComponent("run/checkpoints/step-00000002")
        let pipeline = try JanusFlowPipeline(modelDirectory: checkpoint, vaeDirectory: tinyFixture.appendingPathComponent("vae"), dtype: .float32)
        XCTAssertEqual(try pipeline.generate(prompt: "a red picture", steps: 1).count, 1)
        let (resumed, resumeLog) = try run(["train", "--config", configURL.path, "--resume"])
        XCTAssertEqual(resumed, 0, resumeLog)
        XCTAssertTrue(resumeLog.contains("resumed at step 2"), resumeLog)
        let metrics = try String(contentsOf: dir.appendingPathComponent("run/metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(metrics.count, 4)
        for f in ["run/final/model.safetensors", "run/final-ema/model.safetensors", "run/loss_curves.png", "run/checkpoints/step-00000004/optimizer.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent(f).path), f)
        }
    }
}

final class StreamingTests: XCTestCase {
    func testGenerationAndAnswerStreams() async throws {
        let pipeline = PipelineTests.pipeline
        var steps: [Int] = []
        var images: [RGBImage] = []
        for try await event in pipeline.generateStream(prompt: "a red circle", count: 1, steps: 3, seed: 5) {
            switch event {
            case .step(let k, _): steps.append(k)
            case .images(let result): images = result
            }
        }
        XCTAssertEqual(steps, [0, 1, 2, 3])
        XCTAssertEqual(images, try pipeline.generate(prompt: "a red circle", count: 1, steps: 3, seed: 5))
        var text = ""
        let image = RGBImage(width: 20, height: 20, fill: (10, 200, 10))
        for try await piece in pipeline.understandStream(image: image, question: "what?", parameters: SamplingParameters(maxNewTokens: 5)) { text += piece }
        XCTAssertEqual(text.trimmingCharacters(in: .whitespacesAndNewlines),
                       try pipeline.understand(image: image, question: "what?", parameters: SamplingParameters(maxNewTokens: 5)))
    }
}

/// `janusflow shapes` writes manifests that the training reader takes without skipping anything, deterministically.
final class ShapesDatasetCommandTests: XCTestCase {
    func testDatasetFeedsTheManifestReaderAndIsDeterministic() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("shapes-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let args = ["--understanding-images", "4", "--questions-per-image", "2", "--generation-images", "6", "--text-lines", "5",
                    "--eval-prompts", "1", "--eval-images", "2", "--seed", "7"]
        for name in ["a", "b"] {
            let result = try runCLI(["shapes", "--out", root.appendingPathComponent(name).path] + args)
            XCTAssertEqual(result.status, 0, result.error)
        }
        let a = root.appendingPathComponent("a")
        let expected: [(String, ManifestKind, Int)] = [("understanding.jsonl", .understanding, 8), ("generation.jsonl", .generation, 6),
                                                         ("text.jsonl", .text, 5)]
        for (file, kind, count) in expected {
            let (records, report) = try Manifest.read(a.appendingPathComponent(file), kind: kind)
            XCTAssertEqual(records.count, count, "\(file): \(report)")
            XCTAssertEqual(report.skippedCount, 0, "\(file): \(report)")
            XCTAssertEqual(try Data(contentsOf: a.appendingPathComponent(file)),
                           try Data(contentsOf: root.appendingPathComponent("b/\(file)")), "\(file) differs between runs")
        }
        let metadata = try String(contentsOf: a.appendingPathComponent("eval/evaluation_metadata.jsonl"), encoding: .utf8)
        XCTAssertEqual(metadata.split(separator: "\n").count, 6)
        XCTAssertEqual(try Data(contentsOf: a.appendingPathComponent("images/000000.png")),
                       try Data(contentsOf: root.appendingPathComponent("b/images/000000.png")))
        // The extended world: a 3x3 grid drawn at 48 pixels unless --image-size says otherwise.
        let extended = try runCLI(["shapes", "--out", root.appendingPathComponent("x").path, "--extended"] + args)
        XCTAssertEqual(extended.status, 0, extended.error)
        let png = try RGBImage(contentsOf: root.appendingPathComponent("x/images/000000.png"))
        XCTAssertEqual(png.width, 48)
        let bad = try runCLI(["shapes", "--out", root.appendingPathComponent("c").path, "--eval-images=-1"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.error.contains("--eval-images must not be negative (got -1)"), bad.error)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent("c").path))
    }
}

/// A fresh folder (removed when the test ends) holding `tiny.json`: demo settings that train and score in seconds.
func tinyDemoFolder(_ test: XCTestCase, prefix: String) throws -> (root: URL, settings: URL) {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    test.addTeardownBlock { try? FileManager.default.removeItem(at: root) }
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    let settings = root.appendingPathComponent("tiny.json")
    try #"{"trainScenes": 96, "trainQuestions": 96, "trainTexts": 96, "vaeSteps": 12, "siglipSteps": 6, "llmSteps": 6, "stageSteps": [6, 8, 6], "batchSize": 8, "evalPromptsPerCategory": 2, "evalQuestions": 16, "sampleSteps": 3, "merges": 60, "placedCaptions": 24}"#
        .write(to: settings, atomically: true, encoding: .utf8)
    return (root, settings)
}

/// The demo is a deterministic function of its seed: two runs of a very short variant give the same scores and
/// byte-identical trained weights.
final class DemoDeterminismTests: XCTestCase {
    func testSameSeedSameScoresAndWeights() throws {
        let (root, settings) = try tinyDemoFolder(self, prefix: "demo-det")
        var scores: [[String: Any]] = []
        for name in ["a", "b"] {
            let result = try runCLI(["demo", "--settings", settings.path, "--seed", "3", "--out", root.appendingPathComponent(name).path])
            XCTAssertEqual(result.status, 0, result.error)
            scores.append(try JSONSerialization.jsonObject(with: Data(contentsOf: root.appendingPathComponent("\(name)/report/scores.json"))) as! [String: Any])
        }
        // The time each phase took (and the host's sgemm peak read at the end) is the one part that may differ.
        for i in scores.indices {
            let time = try XCTUnwrap(scores[i].removeValue(forKey: "time") as? [String: Any])
            XCTAssertGreaterThan(time["total_seconds"] as? Double ?? 0, 0)
            XCTAssertGreaterThan(time["sgemm_peak_gflops"] as? Double ?? 0, 0)
            let phases = try XCTUnwrap(time["phases_seconds"] as? [String: Double])
            XCTAssertEqual(Set(phases.keys), ["world and tokenizer", "VAE", "SigLIP", "LLM", "stage data (latents, REPA targets)",
                                              "JanusFlow stages", "evaluation", "report"])
            XCTAssertEqual(phases.values.reduce(0, +), time["total_seconds"] as? Double ?? -1, accuracy: 1e-6)
        }
        XCTAssertEqual(scores[0] as NSDictionary, scores[1] as NSDictionary)
        for file in ["model/model.safetensors", "vae/diffusion_pytorch_model.safetensors", "model/tokenizer.json", "report/generation_prompts.tsv"] {
            XCTAssertEqual(try Data(contentsOf: root.appendingPathComponent("a/\(file)")), try Data(contentsOf: root.appendingPathComponent("b/\(file)")),
                           "\(file) differs between two runs with the same seed")
        }
        // A seed in the settings file counts when --seed is not given: the same run as --seed 3.
        var tiny = try JSONSerialization.jsonObject(with: Data(contentsOf: settings)) as! [String: Any]
        tiny["seed"] = 3
        let seeded = root.appendingPathComponent("seeded.json")
        try JSONSerialization.data(withJSONObject: tiny).write(to: seeded)
        let fromFile = try runCLI(["demo", "--settings", seeded.path, "--out", root.appendingPathComponent("from-file").path])
        XCTAssertEqual(fromFile.status, 0, fromFile.error)
        XCTAssertEqual(try Data(contentsOf: root.appendingPathComponent("from-file/model/model.safetensors")),
                       try Data(contentsOf: root.appendingPathComponent("a/model/model.safetensors")), "the settings file's seed was not used")
        tiny["seed"] = nil
        // Without REPA (what --ablate repa trains) the report leaves the REPA loss out instead of failing on NaN.
        let noRepa = root.appendingPathComponent("no-repa.json")
        tiny["repa"] = false
        try JSONSerialization.data(withJSONObject: tiny).write(to: noRepa)
        let ablated = try runCLI(["demo", "--settings", noRepa.path, "--seed", "3", "--out", root.appendingPathComponent("c").path])
        XCTAssertEqual(ablated.status, 0, ablated.error)
        let ablatedScores = try JSONSerialization.jsonObject(with: Data(contentsOf: root.appendingPathComponent("c/report/scores.json"))) as! [String: Any]
        let losses = ablatedScores["losses"] as! [String: Any]
        XCTAssertNil(losses["repa"])
        XCTAssertNotNil(losses["rf"])
        // Bad settings files stop the run before it writes anything, with an error naming the file and the key.
        for (name, json, message) in [("unknown", #"{"stageStep": [1, 1, 1]}"#, "unknown setting 'stageStep'"),
                                      ("zero", #"{"questionsPerImage": 0}"#, "setting 'questionsPerImage' must be at least 1 (0)"),
                                      ("placed", #"{"placedCaptions": -1}"#, "setting 'placedCaptions' must be >= 0 (-1)"),
                                      ("mix", #"{"captionMix": [1, 2, 3]}"#, "setting 'captionMix' must be 6 counts >= 0, not all 0 ([1, 2, 3])"),
                                      ("types", #"{"questionMix": {"pope": 2, "popes": 1}}"#, "setting 'questionMix' has an unknown question type 'popes'"),
                                      ("no-types", #"{"questionMix": {"shape": 0, "color": 0, "count": 0, "position": 0, "pope": 0, "describe": 0}}"#,
                                       "setting 'questionMix' must have counts >= 0, not 0 for every type")] {
            let file = root.appendingPathComponent("\(name).json"), out = root.appendingPathComponent("out-\(name)")
            try json.write(to: file, atomically: true, encoding: .utf8)
            let bad = try runCLI(["demo", "--settings", file.path, "--out", out.path])
            XCTAssertNotEqual(bad.status, 0)
            XCTAssertTrue(bad.error.contains("\(file.path): \(message)"), bad.error)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        }
        let out = root.appendingPathComponent("out-world")
        let badWorld = try runCLI(["demo", "--world", "huge", "--out", out.path])
        XCTAssertNotEqual(badWorld.status, 0)
        XCTAssertTrue(badWorld.error.contains("--world must be one of standard, extended (got 'huge')"), badWorld.error)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    }

    func testBenchRefusesTheInt8ComparisonWithoutInt8Weights() throws {
        let bad = try runCLI(["bench", "understand", "--compare-int8-vnni", "--dtype", "float32"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.error.contains("--compare-int8-vnni needs --dtype int8 (got --dtype float32)"), bad.error)
    }
}
