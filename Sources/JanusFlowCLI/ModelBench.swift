import ArgumentParser
import Dispatch
import Foundation
import JanusFlow
import MLXEngine

/// `--profile`: the time spent inside each fast kernel during a benchmark row.
struct ProfileOption: ParsableArguments {
    @Flag(help: "After each row, the time spent inside each fast kernel during it (the rest is MLX's own ops).")
    var profile = false

    /// Starts a row's kernel profile.
    func start() {
        guard profile else { return }
        Kernels.profiling = true
        Kernels.resetProfile()
    }

    /// The kernel profile since `start` ("" without --profile).
    func report() -> String { profile ? Kernels.profileReport() : "" }

    func print() { Swift.print(report(), terminator: "") }
}

/// Per-stage timings of the model with random weights of any config (the full 1.3B included).
struct ModelBenchOptions: ParsableArguments {
    @Option(help: "Model config: 'janusflow-1.3b' or a path to a config.json (or a folder holding one).")
    var config = "janusflow-1.3b"

    @Option(help: "Weight dtype: bfloat16, float32, int8 (language-model linears in int8, the rest bfloat16).")
    var dtype = "bfloat16"

    @Option(help: "Timed repetitions per stage (the best is reported).")
    var repeats = 2

    @Option(help: "Prompt length for the prefill row.")
    var prefillTokens = 600

    @Option(help: "Tokens to decode for the tokens/s row.")
    var decodeTokens = 16

    @Flag(help: "Use MLX's own ops instead of the shim's fast kernels.")
    var noFastKernels = false

    @OptionGroup var profiling: ProfileOption
    @OptionGroup var deviceOption: DeviceOption

    @Flag(help: "After the rows: the compute-bound stages again with the shim's bf16 GEMM and with float32 conversion + OpenBLAS, alternating over three rounds in this one process, so the host's drift between processes does not blur the comparison.")
    var compareBf16Gemm = false

    @Flag(help: "After the rows: the compute-bound stages again on every kernel path this CPU supports (amx, avx512_bf16, avx512, avx2), alternating over three rounds in this one process.")
    var compareCpuPaths = false

    var comparing: Bool { compareBf16Gemm || compareCpuPaths }

    /// `body(label)` three times with each compared setting (--compare-bf16-gemm, --compare-cpu-paths), alternating.
    func alternatingSettings(_ body: (String) throws -> Void) rethrows {
        let (originalGemm, originalPath) = (Kernels.bf16Gemm, Kernels.cpuPath)
        defer {
            Kernels.bf16Gemm = originalGemm
            Kernels.useCPUPath(originalPath)
        }
        var settings: [(label: String, apply: () -> Void)] = []
        if compareBf16Gemm {
            settings += [true, false].map { on in
                (on ? "shim bf16 GEMM" : "f32 + OpenBLAS", { Kernels.useCPUPath(originalPath); Kernels.bf16Gemm = on })
            }
        }
        if compareCpuPaths {
            settings += Kernels.supportedCPUPaths.reversed().map { path in
                ("path \(path.rawValue)", { Kernels.bf16Gemm = originalGemm; Kernels.useCPUPath(path) })
            }
        }
        for round in 1...3 {
            for setting in settings {
                setting.apply()
                try body("\(setting.label) (round \(round))")
            }
        }
    }

    func loadConfig() throws -> JanusFlowConfig {
        if config == "janusflow-1.3b" { return .janusFlow1_3B }
        var url = URL(fileURLWithPath: config)
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue {
            url = url.appendingPathComponent("config.json")
        }
        return try JanusFlowConfig.load(url)
    }

    func weightDType() throws -> DType { try parseWeightDType(dtype) }

    /// A model with random weights, materialised in the requested dtype.
    func makeModel() throws -> JanusFlowModel {
        Kernels.enabled = !noFastKernels
        try deviceOption.select()
        let cfg = try loadConfig()
        let start = Date()
        note("building \(config) with random \(dtype) weights ...")
        Initializer.seed(0)
        let model = JanusFlowModel(cfg)
        let dtype = try weightDType()
        model.cast(to: dtype == .int8 ? .bfloat16 : dtype)
        // Materialise in groups so peak memory stays near the final size.
        let slots = model.parameterSlots()
        for chunk in stride(from: 0, to: slots.count, by: 32) {
            try Tensor.eval(slots[chunk..<Swift.min(chunk + 32, slots.count)].map { $0.1.tensor! })
        }
        if dtype == .int8 { try model.quantizeLanguageModel() }
        note(String(format: "built %d parameters in %.1f s", model.parameterCount, Date().timeIntervalSince(start)))
        return model
    }
}

struct UnderstandBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "understand", abstract: "SigLIP encode, prefill and KV-cached decode.")
    @OptionGroup var options: ModelBenchOptions

    @Option(help: "After the rows: decode again with each of these matrix-vector prefetch distances in bytes (comma-separated, e.g. 0,4096,16384), alternating in two rounds in this one process, so the host's drift between processes does not blur the comparison.")
    var comparePrefetch: String?

    @Flag(help: "After the rows: decode with int8 weights on AVX-512 VNNI (activations rounded to int8) and with the weights widened to float32, alternating over three rounds in this one process (needs --dtype int8).")
    var compareInt8Vnni = false

    @Option(help: "KV cache dtype for the decode row: auto (what text generation uses: bfloat16 with bfloat16 or int8 weights), float32, bfloat16.")
    var cacheDtype = "auto"

    func validate() throws {
        guard ["auto", "float32", "bfloat16"].contains(cacheDtype) else {
            throw ValidationError("--cache-dtype must be auto, float32 or bfloat16 (got '\(cacheDtype)')")
        }
        if compareInt8Vnni, options.dtype != "int8" {
            throw ValidationError("--compare-int8-vnni needs --dtype int8 (got --dtype \(options.dtype))")
        }
        if comparePrefetch != nil, prefetchDistances == nil {
            throw ValidationError("--compare-prefetch must be comma-separated byte counts >= 0 (got '\(comparePrefetch!)')")
        }
    }

    var prefetchDistances: [Int]? { comparePrefetch.flatMap { commaSeparated($0, atLeast: 0) } }

    func run() throws {
        let peak = PeakMeter()
        // This machine's bandwidth swings with its neighbours' load: the best of many reads, taken again after decoding.
        var bandwidth = MachineFigures.readBandwidth(bytes: 1 << 30, repeats: 10)
        let model = try options.makeModel()
        let cfg = model.config
        Memory.resetPeak()
        emit(machineLine(peak: peak.first, bandwidth: bandwidth, extra: "weights \(options.dtype)"))

        let s = cfg.siglip
        let pixels = Random.uniform([1, 3, s.imageSize, s.imageSize], key: RandomKey(seed: 1)) * 2 - 1
        options.profiling.start()
        let encode = try bestTime(repeats: options.repeats) { model.encodeImages(pixels) }
        let vitFlops = 2.0 * Double(model.understandingEncoder.parameterCount) * Double(s.tokens)
            + 4.0 * Double(s.builtLayers * s.tokens * s.tokens * s.width)
        report("SigLIP encode, 1 image (\(s.imageSize) px)", seconds: encode, gflop: vitFlops / 1e9, peak: peak)
        options.profiling.print()

        let lm = model.languageModel
        let l = options.prefillTokens
        let llmParams = Double(lm.parameterCount - lm.model.embedTokens.parameterCount - lm.lmHead.parameterCount)
        let h = cfg.languageConfig.hiddenSize
        let embeds = Random.normal([1, l, h], key: RandomKey(seed: 2)) * 0.02
        options.profiling.start()
        let prefillPass = { lm.logits(lm.forward(inputsEmbeds: embeds).lastHiddenState.slice(axis: 1, -1)) }
        let prefill = try bestTime(repeats: options.repeats, prefillPass)
        let prefillFlops = 2.0 * llmParams * Double(l) + 4.0 * Double(cfg.languageConfig.numHiddenLayers * l * l * h) / 2
            + 2.0 * Double(h * cfg.languageConfig.vocabSize)
        report("LLM prefill, \(l) tokens (last logit)", seconds: prefill, gflop: prefillFlops / 1e9, peak: peak)
        options.profiling.print()

        // Decode: one token at a time from a prefilled cache.
        let cacheType: DType
        switch cacheDtype {
        case "auto": cacheType = lm.decodingCacheDType
        case "float32": cacheType = .float32
        default: cacheType = .bfloat16
        }
        let cache = lm.makeCache(dtype: cacheType)
        try lm.forward(inputsEmbeds: embeds, cache: cache).lastHiddenState.eval()
        var token = Tensor([Int32(1)], shape: [1, 1])
        func decodeSeconds() throws -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<options.decodeTokens {
                let logits = lm.logits(lm.forward(inputsEmbeds: lm.embed(token), cache: cache).lastHiddenState)
                token = logits.argMax(axis: -1).asType(.int32)
                try token.eval()
            }
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        options.profiling.start()
        let perToken = try decodeSeconds() / Double(options.decodeTokens)
        let decodeProfile = options.profiling.report()
        bandwidth = Swift.max(bandwidth, MachineFigures.readBandwidth(bytes: 1 << 30, repeats: 10))
        // Weight bytes one token reads: every linear layer of the language model (int8 scales included).
        let bytes = Double(lm.namedModules().compactMap { $0.1 as? Linear }.reduce(0) {
            $0 + $1.weight.size * $1.weight.dtype.size + ($1.scales?.size ?? 0) * 4
        })
        emit(row("LLM decode, KV cache (\(cacheType == .bfloat16 ? "bf16" : "f32") cache)", String(format: "%.2f tokens/s", 1 / perToken),
                  String(format: "%.1f GB/s of weights = %@ of read bandwidth (%.1f GB/s)", bytes / perToken / 1e9,
                         pct(bytes / perToken / 1e9 / bandwidth), bandwidth)))
        print(decodeProfile, terminator: "")
        print(row("peak memory", String(format: "%.2f GB", Double(Memory.peak) / 1e9), ""))
        if options.comparing {
            try options.alternatingSettings { label in
                report("SigLIP encode, \(label)", seconds: try bestTime(repeats: 1) { model.encodeImages(pixels) }, gflop: vitFlops / 1e9, peak: peak)
                report("LLM prefill, \(label)", seconds: try bestTime(repeats: 1, prefillPass), gflop: prefillFlops / 1e9, peak: peak)
            }
        }
        print(peak.summary)
        if compareInt8Vnni {
            let original = Kernels.int8VNNI
            defer { Kernels.int8VNNI = original }
            var rates: [Bool: [Double]] = [:]
            for round in 1...3 {
                for vnni in [true, false] {
                    Kernels.int8VNNI = vnni
                    let label = vnni ? (Kernels.int8QuantizesActivations ? "VNNI, int8 activations" : "VNNI unavailable here") : "weights widened to f32"
                    let perToken = try decodeSeconds() / Double(options.decodeTokens)
                    rates[vnni, default: []].append(1 / perToken)
                    print(row("decode, \(label) (round \(round))", String(format: "%.2f tokens/s", 1 / perToken),
                              String(format: "%.1f GB/s of weights", bytes / perToken / 1e9)))
                }
            }
            let mean = { (v: [Double]) in v.reduce(0, +) / Double(v.count) }
            print(row("decode, VNNI / widened", String(format: "%.2fx", mean(rates[true]!) / mean(rates[false]!)), "mean of the rounds"))
        }
        if let distances = prefetchDistances {
            // The cache keeps growing by decodeTokens positions a run; alternating spreads that over every value.
            let original = Kernels.matvecPrefetchBytes
            defer { Kernels.matvecPrefetchBytes = original }
            for round in 1...2 {
                for distance in distances {
                    Kernels.matvecPrefetchBytes = distance
                    let perToken = try decodeSeconds() / Double(options.decodeTokens)
                    print(row("decode, prefetch \(distance) B (round \(round))", String(format: "%.2f tokens/s", 1 / perToken),
                              String(format: "%.1f GB/s of weights", bytes / perToken / 1e9)))
                }
            }
        }
    }
}

struct GenerateBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "One Euler step (1 and 5 images) with CFG.")
    @OptionGroup var options: ModelBenchOptions

    @Option(help: "Prompt length in tokens (the demo's prompts are about 20).")
    var promptTokens = 20

    @Option(help: "Image counts of the Euler-step rows (comma-separated; the ratio row needs 1 among them).")
    var images = "1,5"

    @Flag(help: "Skip the SDXL-VAE decode row.")
    var noVae = false

    @Option(help: "Weight dtype of the SDXL-VAE row: float32 (diffusers' force_upcast) or bfloat16 (bf16 convolution products where the CPU has them).")
    var vaeDtype = "float32"

    @Flag(help: "Only the SDXL-VAE decode row (no language model is built; --repeats decodes after one untimed).")
    var vaeOnly = false

    var imageCounts: [Int]? { commaSeparated(images, atLeast: 1) }

    func validate() throws {
        guard imageCounts != nil else { throw ValidationError("--images must be comma-separated counts >= 1 (got '\(images)')") }
        guard vaeDtype == "float32" || vaeDtype == "bfloat16" else {
            throw ValidationError("--vae-dtype must be float32 or bfloat16 (got '\(vaeDtype)')")
        }
    }

    func run() throws {
        let peak = PeakMeter()
        if vaeOnly {
            Kernels.enabled = !options.noFastKernels
            try options.deviceOption.select()
            let config = try options.loadConfig()
            emit(machineLine(peak: peak.first, extra: "VAE weights \(vaeDtype)"))
            Memory.resetPeak()
            try benchVAE(latentSide: Int(Double(config.siglip.tokens).squareRoot()) * config.genEncoder.stride, peak: peak, repeats: options.repeats)
            print(row("peak memory (VAE)", String(format: "%.2f GB", Double(Memory.peak) / 1e9), ""))
            print(peak.summary)
            return
        }
        let model = try options.makeModel()
        Memory.resetPeak()
        emit(machineLine(peak: peak.first, extra: "weights \(options.dtype) (\(String(format: "%.2f GB", Double(Memory.active) / 1e9)) in memory)"))
        let guidance = GuidanceBatch(promptIDs: [1] + Array(repeating: 100, count: promptTokens - 1), padID: 0)
        var oneImage = 0.0
        var oneImagePeak = 0
        for images in imageCounts! {
            let z = Random.normal([images, 4, latentSide(model), latentSide(model)], key: RandomKey(seed: 3))
            let sampler = RectifiedFlowSampler(steps: 1, cfgWeight: 2)
            // Timed: one step including the prompt cache (computed once per generation; a 30-step run amortises it).
            var best = Double.infinity
            var freshPages = Int.max
            options.profiling.start()
            for _ in 0..<options.repeats {
                let faults = MachineFigures.minorPageFaults
                let start = DispatchTime.now().uptimeNanoseconds
                _ = try sampler.sample(model: model, guidance: guidance, initialNoise: z)
                best = Swift.min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                freshPages = Swift.min(freshPages, MachineFigures.minorPageFaults - faults)
            }
            if images == 1 {
                oneImage = best
                oneImagePeak = Memory.peak
            }
            // LLM work of the step as the issue's table counts it (3.01 TFLOP for one image): the linear layers over
            // 1 + N new positions in each of the 2B rows plus the 2-row prompt, and causal attention over the full
            // rows (prompt + t_emb + N image tokens). The prompt is computed once here, so this is the work done by
            // the official code's step, which recomputes it.
            let lm = model.languageModel
            let llmParams = Double(lm.parameterCount - lm.model.embedTokens.parameterCount - lm.lmHead.parameterCount)
            let rowLength = Double(promptTokens + imageTokens(model))
            let c = model.config.languageConfig
            let attention = 4.0 * Double(c.numHiddenLayers * c.numAttentionHeads * c.headDim) * rowLength * rowLength / 2 * Double(2 * images)
            let flops = 2.0 * llmParams * (Double((1 + imageTokens(model)) * 2 * images) + Double(2 * (promptTokens - 1))) + attention
            let extra = images == 1 || oneImage == 0 ? "" : String(format: "  (%.2fx the 1-image step)", best / oneImage)
            report("Euler step, \(images) image(s), CFG batch \(2 * images)", seconds: best, gflop: flops / 1e9, peak: peak, suffix: extra)
            if options.profiling.profile {
                // Fresh memory the kernel zeroed during a step (see Memory.keepFreedMemory), fewest over the repeats.
                print(String(format: "  fresh pages faulted in: %.1f MB a step", Double(freshPages) * 4096 / 1e6))
            }
            options.profiling.print()
            if options.comparing && (images == 1 || options.compareCpuPaths) {
                try options.alternatingSettings { label in
                    let start = DispatchTime.now().uptimeNanoseconds
                    _ = try sampler.sample(model: model, guidance: guidance, initialNoise: z)
                    report("Euler step, \(images) image(s), \(label)", seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9,
                           gflop: flops / 1e9, peak: peak)
                }
            }
        }
        let stepsPeak = Memory.peak
        Memory.resetPeak()
        var vaePeak = 0
        if !noVae {
            try benchVAE(latentSide: latentSide(model), peak: peak, repeats: Swift.max(1, options.repeats - 1))
            // The weights stay resident, so each peak includes them.
            vaePeak = Memory.peak
        }
        let what = noVae ? "steps" : "steps + VAE"
        if oneImage > 0 {
            print(row("peak memory, 1 image (\(what))", String(format: "%.2f GB", Double(Swift.max(oneImagePeak, vaePeak)) / 1e9), ""))
        }
        let most = imageCounts!.max()!
        if most > 1 {
            print(row("peak memory, \(most) images (\(what))", String(format: "%.2f GB", Double(Swift.max(stepsPeak, vaePeak)) / 1e9), ""))
        }
        print(peak.summary)
    }

    /// The SDXL-VAE decode row: one latent of `side` x `side` (random weights in --vae-dtype), best of `repeats`
    /// after one untimed decode.
    func benchVAE(latentSide side: Int, peak: PeakMeter, repeats: Int) throws {
        let vae = AutoencoderKL(config: .sdxl)
        if vaeDtype == "bfloat16" { vae.cast(to: .bfloat16) }
        try vae.evalParameters()
        let latent = Random.normal([1, 4, side, side], key: RandomKey(seed: 4))
        options.profiling.start()
        let decode = try bestTime(repeats: repeats) { vae.decode(latent) }
        report("SDXL-VAE decode \(side)x\(side) -> \(side * 8)x\(side * 8)\(vaeDtype == "bfloat16" ? ", bf16" : "")", seconds: decode,
               gflop: vaeDecodeFlops(side: side) / 1e9, peak: peak)
        options.profiling.print()
    }

    /// Convolution FLOPs of the SDXL-VAE decoder at a latent side (3x3 convs dominate; attention is small).
    func vaeDecodeFlops(side: Int) -> Double {
        var flops = 0.0
        func conv(_ cin: Int, _ cout: Int, _ hw: Int, _ k: Int = 3) { flops += 2.0 * Double(cin * cout * k * k * hw * hw) }
        conv(4, 512, side)
        for _ in 0..<4 { conv(512, 512, side) }  // mid block: two resnets
        let widths = [512, 512, 256, 128]
        var hw = side, cin = 512
        for (i, w) in widths.enumerated() {
            for r in 0..<3 { conv(r == 0 ? cin : w, w, hw); conv(w, w, hw); if r == 0 && cin != w { conv(cin, w, hw, 1) } }
            cin = w
            if i < widths.count - 1 { hw *= 2; conv(w, w, hw) }
        }
        conv(128, 3, hw)
        return flops
    }

    func latentSide(_ model: JanusFlowModel) -> Int {
        // 576 tokens at full size: a 24x24 grid from 48x48 latents (stride-2 patchify).
        let grid = Int(Double(model.config.siglip.tokens).squareRoot())
        return grid * model.config.genEncoder.stride
    }

    func imageTokens(_ model: JanusFlowModel) -> Int { model.config.siglip.tokens }
}

func row(_ name: String, _ figure: String, _ fraction: String) -> String {
    "\(name.padding(toLength: 44, withPad: " ", startingAt: 0)) \(figure.padding(toLength: 18, withPad: " ", startingAt: 0)) \(fraction)"
}

func report(_ name: String, seconds: Double, gflop: Double, peak meter: PeakMeter, suffix: String = "") {
    let rate = gflop / seconds
    let (fraction, peak) = meter.fraction(of: rate, row: name)
    emit(row(name, String(format: "%.3f s", seconds), "\(fmt(rate)) GFLOP/s = \(pct(fraction)) of sgemm peak \(fmt(peak))\(suffix)"))
}
