import ArgumentParser
import Foundation
import MLXEngine

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks that print figures beside this machine's measured limits.",
        subcommands: [KernelsBench.self, UnderstandBench.self, GenerateBench.self, TrainBench.self, TokenizerBench.self])
}

struct KernelsBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kernels", abstract: "Engine kernels: matmul, linear, matrix-vector, convolutions, attention.")

    @Option(help: "Timed repetitions per kernel (best is reported).")
    var repeats = 5

    @Flag(help: "Use MLX's own ops instead of the shim's fast kernels.")
    var noFastKernels = false

    @Option(help: "After the rows: the 1.3B model's linear shapes (bf16 weights) with each of these sgemm split limits in flops (comma-separated, e.g. 1e9,1e12), interleaved over six rounds in this one process (best and median).")
    var compareSplitLimits: String?

    @Flag(help: "After the rows: the 1.3B model's linear shapes (bf16 weights) with the shim's bf16 GEMM and with float32 conversion + OpenBLAS, interleaved over six rounds in this one process (best and median).")
    var compareBf16Gemm = false

    @Flag(help: "After the rows: the 1.3B model's linear shapes (bf16 weights) on every kernel path this CPU supports (avx2, avx512, avx512_bf16, amx), interleaved over six rounds in this one process (best and median).")
    var compareCpuPaths = false

    func validate() throws {
        if let compareSplitLimits, splitLimits == nil {
            throw ValidationError("--compare-split-limits must be comma-separated flop counts >= 0 (got '\(compareSplitLimits)')")
        }
    }

    var splitLimits: [Double]? { compareSplitLimits.flatMap { commaSeparated($0, atLeast: 0.0) } }

    /// The linear layers of the model's stages, each with every setting in turn, so the host's drift between
    /// processes does not blur the comparison.
    func compareLinear(_ what: String, settings: [(label: String, apply: () -> Void)], randn: ([Int], DType) throws -> Tensor) throws {
        let shapes: [(name: String, rows: Int, inputs: Int, outputs: Int)] = [
            ("step q/k/v/o", 1154, 2048, 2048), ("step gate/up", 1154, 2048, 5632), ("step down", 1154, 5632, 2048),
            ("prefill q/k/v/o", 600, 2048, 2048), ("prefill gate/up", 600, 2048, 5632), ("prefill down", 600, 5632, 2048),
            ("SigLIP q/k/v/o", 577, 1024, 1024), ("SigLIP fc1", 577, 1024, 4096), ("SigLIP fc2", 577, 4096, 1024),
        ]
        // Eight weight matrices a shape, taken in turn, so that each call reads its weights from memory as a layer of
        // the model does (one matrix called again and again would sit in the cache).
        let layers = 8
        let operands = try shapes.map { shape in
            (try randn([shape.rows, shape.inputs], .float32), try (0..<layers).map { _ in try randn([shape.outputs, shape.inputs], .bfloat16) })
        }
        let (originalLimit, originalGemm, originalPath) = (Kernels.gemmSplitLimit, Kernels.bf16Gemm, Kernels.cpuPath)
        defer {
            (Kernels.gemmSplitLimit, Kernels.bf16Gemm) = (originalLimit, originalGemm)
            Kernels.useCPUPath(originalPath)
        }
        // Settings interleaved within each shape, many rounds: the host's speed moves within seconds here.
        let rounds = 6
        var rates = [[[Double]]](repeating: [[Double]](repeating: [], count: settings.count), count: shapes.count)
        for (i, shape) in shapes.enumerated() {
            for _ in 0..<rounds {
                for (j, setting) in settings.enumerated() {
                    setting.apply()
                    try NN.linear(operands[i].0, weight: operands[i].1[0]).eval()
                    let start = DispatchTime.now().uptimeNanoseconds
                    for weight in operands[i].1 { try NN.linear(operands[i].0, weight: weight).eval() }
                    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(layers)
                    rates[i][j].append(2.0 * Double(shape.rows * shape.inputs * shape.outputs) / seconds / 1e9)
                }
            }
        }
        emit("GFLOP/s by \(what), bf16 weights (\(layers) weight matrices a shape, in turn), \(rounds) interleaved rounds (best / median):")
        for (i, shape) in shapes.enumerated() {
            let cells = settings.indices.map { j -> String in
                let sorted = rates[i][j].sorted()
                return "\(settings[j].label): \(fmt(sorted.last!)) / \(fmt(sorted[sorted.count / 2]))"
            }
            emit("  \("\(shape.name) \(shape.rows)x\(shape.inputs)->\(shape.outputs)".padding(toLength: 34, withPad: " ", startingAt: 0)) " + cells.joined(separator: "   "))
        }
    }

    func run() throws {
        Kernels.enabled = !noFastKernels
        let peak = PeakMeter(repeats: repeats)
        let bandwidth = MachineFigures.readBandwidth(bytes: 1 << 30, repeats: 10)
        emit(machineLine(peak: peak.first, bandwidth: bandwidth, extra: "MLX \(mlxVersion); fast kernels \(Kernels.enabled ? "on" : "off")"))
        print("kernel                                       figure          fraction")
        defer { print(peak.summary) }

        func row(_ name: String, gflop: Double, seconds: Double) {
            let rate = gflop / seconds
            emit("\(name.padding(toLength: 44, withPad: " ", startingAt: 0)) \(fmt(rate).leftPad(8)) GFLOP/s  \(pct(peak.fraction(of: rate, row: name).fraction)) of sgemm peak")
        }
        func rowBandwidth(_ name: String, gigabytes: Double, seconds: Double) {
            let rate = gigabytes / seconds
            emit("\(name.padding(toLength: 44, withPad: " ", startingAt: 0)) \(fmt(rate).leftPad(8)) GB/s     \(pct(rate / bandwidth)) of read bandwidth")
        }
        let key = RandomKey(seed: 0)
        func randn(_ shape: [Int], _ dtype: DType = .float32) throws -> Tensor {
            let t = Random.normal(shape, key: key).asType(dtype)
            try t.eval()
            return t
        }

        let a = try randn([2048, 2048]), b = try randn([2048, 2048])
        row("matmul 2048x2048x2048", gflop: 2 * pow(2048, 3) / 1e9, seconds: try bestTime(repeats: repeats) { matmul(a, b) })

        let x = try randn([1200, 2048]), w = try randn([5632, 2048])
        row("linear 1200x2048 -> 5632 (f32)", gflop: 2 * 1200 * 2048 * 5632 / 1e9, seconds: try bestTime(repeats: repeats) { NN.linear(x, weight: w) })
        let wb = try randn([5632, 2048], .bfloat16)
        // Every path this CPU supports, the one in use first (the others are what MLXS_CPU_PATH would choose).
        let inUse = Kernels.cpuPath
        for path in [inUse] + Kernels.supportedCPUPaths.reversed().filter({ $0 != inUse }) {
            Kernels.useCPUPath(path)
            defer { Kernels.useCPUPath(inUse) }
            row("linear 1200x2048 -> 5632 (bf16 W, \(path.rawValue))", gflop: 2 * 1200 * 2048 * 5632 / 1e9,
                seconds: try bestTime(repeats: repeats) { NN.linear(x, weight: wb) })
        }

        let v = try randn([1, 2048])
        rowBandwidth("matvec 5632x2048 (f32 W)", gigabytes: 5632 * 2048 * 4 / 1e9, seconds: try bestTime(repeats: repeats * 4) { NN.linear(v, weight: w) })
        rowBandwidth("matvec 5632x2048 (bf16 W)", gigabytes: 5632 * 2048 * 2 / 1e9, seconds: try bestTime(repeats: repeats * 4) { NN.linear(v, weight: wb) })

        // The output head's shape: 420 MB of bf16 weights, far beyond the caches, as in decoding.
        let head = Linear(2048, 102400, bias: false)
        head.weight = try randn([102400, 2048], .bfloat16)
        rowBandwidth("matvec 102400x2048 (bf16 W, from DRAM)", gigabytes: 102400 * 2048 * 2 / 1e9, seconds: try bestTime(repeats: repeats * 2) { head(v) })
        try head.quantize(groupSize: 64)
        rowBandwidth("matvec 102400x2048 (int8 W, from DRAM)", gigabytes: 102400 * 2048 * (1 + 4.0 / 64) / 1e9,
                     seconds: try bestTime(repeats: repeats * 2) { head(v) })

        let img = try randn([1, 96, 96, 256]), k3 = try randn([256, 3, 3, 256])
        row("conv 3x3 96x96x256 -> 256", gflop: 2 * 96 * 96 * 256 * 256 * 9 / 1e9, seconds: try bestTime(repeats: repeats) { NN.conv2d(img, weight: k3, padding: (1, 1)) })

        let grid = try randn([1, 24, 24, 768]), dw = try randn([768, 7, 7])
        row("depthwise 7x7 24x24x768", gflop: 2 * 24 * 24 * 768 * 49 / 1e9, seconds: try bestTime(repeats: repeats) { NN.depthwiseConv2d(grid, weight: dw, padding: (3, 3)) })

        let q = try randn([2, 16, 1200, 128]), kk = try randn([2, 16, 1200, 128]), vv = try randn([2, 16, 1200, 128])
        let attnFlop = 4.0 * 2 * 16 * 1200 * 1200 * 128 / 1e9
        row("attention 2x16x1200x128", gflop: attnFlop, seconds: try bestTime(repeats: repeats) {
            NN.attention(queries: q, keys: kk, values: vv, scale: 1 / Float(128).squareRoot())
        })
        row("attention 2x16x1200x128 causal", gflop: attnFlop / 2, seconds: try bestTime(repeats: repeats) {
            NN.attention(queries: q, keys: kk, values: vv, scale: 1 / Float(128).squareRoot(), causal: true)
        })
        if let limits = splitLimits {
            // The split limit concerns OpenBLAS's sgemm, which bf16 weights reach only with the shim's GEMM off.
            try compareLinear("sgemm split limit", settings: limits.map { limit in
                (String(format: "%.0e", limit), { Kernels.gemmSplitLimit = limit; Kernels.bf16Gemm = false })
            }, randn: randn)
        }
        if compareBf16Gemm {
            try compareLinear("bf16 weight path", settings: [("shim GEMM", { Kernels.bf16Gemm = true }),
                                                             ("f32 + OpenBLAS", { Kernels.bf16Gemm = false })], randn: randn)
        }
        if compareCpuPaths {
            try compareLinear("kernel path", settings: Kernels.supportedCPUPaths.map { path in
                (path.rawValue, { Kernels.useCPUPath(path); Kernels.bf16Gemm = true })
            }, randn: randn)
        }
    }
}

/// The sgemm peak a benchmark row is measured against. This host's speed drifts by tens of percent over seconds, so
/// a single reading at the start can land in a slow or a fast moment; the peak is read again after every row and
/// each row is set against the best reading so far (the conservative choice: a higher peak, a lower fraction).
final class PeakMeter {
    private(set) var first: Double
    private(set) var best: Double
    private(set) var readings = 1
    /// The GFLOP/s of each row reported so far, for the closing fractions against the run's best reading.
    private var rows: [(name: String, rate: Double)] = []

    init(repeats: Int = 5) {
        first = MachineFigures.sgemmPeak(n: 2048, repeats: repeats)
        best = first
    }

    /// A fresh reading folded into the best.
    func refreshed() -> Double {
        best = Swift.max(best, MachineFigures.sgemmPeak(n: 2048, repeats: 3))
        readings += 1
        return best
    }

    /// A row's rate against the best reading up to and just after it.
    func fraction(of rate: Double, row name: String) -> (fraction: Double, peak: Double) {
        rows.append((name, rate))
        let peak = refreshed()
        return (rate / peak, peak)
    }

    /// The readings, and every row against the best of them (a row that ran in a slow moment of the host keeps
    /// its figure; only the peak it is set against can rise).
    var summary: String {
        var text = "sgemm peak readings: \(readings), first \(fmt(first)) GFLOP/s, best \(fmt(best)) GFLOP/s"
        if !rows.isEmpty {
            text += "; against the best: " + rows.map { "\($0.name) \(pct($0.rate / best).trimmingCharacters(in: .whitespaces))" }.joined(separator: ", ")
        }
        return text
    }
}

/// The machine line every benchmark starts with.
func machineLine(peak: Double, bandwidth: Double? = nil, extra: String) -> String {
    let memory = bandwidth.map { String(format: ", read bandwidth %@ GB/s", fmt($0)) } ?? ""
    return "machine: sgemm peak \(fmt(peak)) GFLOP/s (2048^3, OpenBLAS core \(BLASInfo.coreName))\(memory); \(extra)\n"
        + cpuLine()
}

/// The CPU's instruction sets, the kernel path the large products take, and the environment's OpenBLAS pin (reported,
/// never changed).
func cpuLine() -> String {
    let pin = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"].map { "OPENBLAS_CORETYPE=\($0)" } ?? "no OPENBLAS_CORETYPE pin"
    let path = Kernels.cpuPath == Kernels.bestCPUPath ? Kernels.cpuPath.rawValue : "\(Kernels.cpuPath.rawValue) (best \(Kernels.bestCPUPath.rawValue))"
    return "cpu: \(Kernels.cpuFeatures); kernel path \(path); \(pin)"
}

/// A benchmark option's comma-separated values, nil unless every one parses and is at least `minimum`.
func commaSeparated<T: LosslessStringConvertible & Comparable>(_ text: String, atLeast minimum: T) -> [T]? {
    let values = text.split(separator: ",").map { T($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, values.allSatisfy({ $0.map { $0 >= minimum } ?? false }) else { return nil }
    return values.map { $0! }
}

/// Prints a benchmark line at once: rows take seconds to minutes each, and redirected output is block-buffered.
func emit(_ line: String) {
    print(line)
    fflush(nil)
}

func fmt(_ x: Double) -> String { String(format: x >= 100 ? "%.0f" : x >= 10 ? "%.1f" : "%.2f", x) }
func pct(_ x: Double) -> String { String(format: "%5.1f%%", x * 100) }

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
