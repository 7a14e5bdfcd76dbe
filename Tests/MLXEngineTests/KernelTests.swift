import MLXEngine
import XCTest

/// The shim's fast kernels (MLX custom primitives) against the same computation in plain MLX ops
/// (`Kernels.enabled = false`), forward and through autograd.
class KernelTestCase: XCTestCase {
    private var startingCPUPath = Kernels.CPUPath.avx2

    override func setUp() {
        super.setUp()
        startingCPUPath = Kernels.cpuPath
    }

    override func tearDown() {
        Kernels.enabled = true
        Kernels.useCPUPath(startingCPUPath)
        super.tearDown()
    }

    /// `NN.linear(x, weight: w, bias:)` with the kernels on against MLX's product of what the kernel multiplies: x
    /// itself, or x rounded to bfloat16 where the path rounds it (bfloat16 weights on avx512_bf16 / amx).
    func assertLinearMatchesFallback(_ x: Tensor, _ w: Tensor, bias: Tensor? = nil, _ message: String, atol: Float = 2e-5,
                                     rtol: Float = 1e-4, file: StaticString = #filePath, line: UInt = #line) {
        let rounds = w.dtype == .bfloat16 && Kernels.bf16RoundsActivations
        let input = rounds ? x.asType(.bfloat16).asType(.float32) : x
        Kernels.enabled = false
        let expected = values(NN.linear(input, weight: w, bias: bias))
        Kernels.enabled = true
        let fast = NN.linear(x, weight: w, bias: bias)
        XCTAssertFalse(expected.isEmpty, "fallback gave nothing: \(message)", file: file, line: line)
        assertClose(fast, expected, atol: atol, rtol: rtol, "\(message) on \(Kernels.cpuPath.rawValue)", file: file, line: line)
    }

    /// Runs `body` on every kernel path this CPU supports, the path in use restored after.
    func forEachCPUPath(_ body: (Kernels.CPUPath) throws -> Void) rethrows {
        let current = Kernels.cpuPath
        defer { Kernels.useCPUPath(current) }
        for path in Kernels.supportedCPUPaths {
            XCTAssertTrue(Kernels.useCPUPath(path), "\(path) is supported but could not be set")
            try body(path)
        }
    }

    /// Builds `body` with the fast kernels off and on and compares the results.
    func assertMatchesFallback(_ message: String, atol: Float = 2e-5, rtol: Float = 1e-4,
                               file: StaticString = #filePath, line: UInt = #line, _ body: () -> Tensor) {
        Kernels.enabled = false
        let plain = body()
        let expected = values(plain)
        Kernels.enabled = true
        let fast = body()
        XCTAssertEqual(fast.shape, plain.shape, "shape \(message)", file: file, line: line)
        XCTAssertFalse(expected.isEmpty, "fallback gave nothing: \(message)", file: file, line: line)
        assertClose(fast, expected, atol: atol, rtol: rtol, message, file: file, line: line)
    }

    /// Gradients of sum(f(inputs) * r) with the fast kernels on equal those with them off.
    func assertGradientsMatchFallback(_ inputs: [Tensor], _ message: String, atol: Float = 1e-5, rtol: Float = 1e-4,
                                      file: StaticString = #filePath, line: UInt = #line,
                                      _ f: @escaping ([Tensor]) -> Tensor) throws {
        func grads() throws -> [Tensor] {
            try Autograd.valueAndGrad(inputs) { inputs in
                let y = f(inputs)
                return [(y * tensor(y.shape, seed: 4242)).sum()]
            }.grads
        }
        Kernels.enabled = false
        let plain = try grads().map { values($0.asType(.float32)) }
        Kernels.enabled = true
        let fast = try grads()
        XCTAssertEqual(fast.count, inputs.count, file: file, line: line)
        for (i, g) in fast.enumerated() {
            XCTAssertEqual(g.shape, inputs[i].shape, "\(message) grad \(i) shape", file: file, line: line)
            assertClose(g.asType(.float32), plain[i], atol: atol, rtol: rtol, "\(message) grad \(i)", file: file, line: line)
        }
    }
}

final class KernelTests: KernelTestCase {
    // MARK: linear

    func testFastLinearMatchesReference() throws {
        // Up to 64 (f32) or 32 (bf16) rows: the AVX2 rows kernel; beyond: OpenBLAS (f32) or the blocked bf16 GEMM.
        forEachCPUPath { _ in
            for rows in [1, 2, 3, 8, 17, 33, 40, 70] {
                for k in [5, 16, 64, 77, 300] {
                    for (n, dtype) in [(37, DType.float32), (37, .bfloat16), (13, .bfloat16), (8, .float32)] {
                        let x = tensor([rows, k], seed: UInt64(rows * 100 + k))
                        let w = tensor([n, k], seed: UInt64(9 + n)).asType(dtype)
                        // bf16: the reference is float32 math on the same bf16-rounded weights.
                        assertLinearMatchesFallback(x, w, "rows \(rows) k \(k) n \(n) \(dtype)")
                    }
                }
            }
        }
    }

    func testFastLinearShapesAndLayouts() throws {
        let x = tensor([2, 3, 45], seed: 1), w = tensor([29, 45], seed: 2)
        for dtype in [DType.float32, .bfloat16] {
            let wd = w.asType(dtype)
            assertLinearMatchesFallback(x, wd, "batched \(dtype)")
            XCTAssertEqual(NN.linear(x, weight: wd).shape, [2, 3, 29])
            // Non-contiguous inputs: a transposed x and a transposed weight.
            let xt = tensor([45, 3], seed: 3).T, wt = tensor([45, 29], seed: 4).asType(dtype).T
            assertLinearMatchesFallback(xt, wt, "transposed \(dtype)")
            // A single vector.
            let v = tensor([45], seed: 5)
            assertLinearMatchesFallback(v, wd, "vector \(dtype)")
        }
        // Several weight blocks per core (rows kernel), and two conversion blocks on the bf16 -> sgemm path.
        let xb = tensor([40, 300], seed: 1), wb = tensor([700, 300], seed: 2).asType(.bfloat16)
        assertLinearMatchesFallback(xb, wb, "rows kernel bf16 700x300")
        let xg = tensor([70, 2048], seed: 3, scale: 0.1), wg = tensor([2100, 2048], seed: 4, scale: 0.1).asType(.bfloat16)
        assertLinearMatchesFallback(xg, wg, "blocked bf16 sgemm")
        let v = tensor([1, 1000], seed: 6), wv = tensor([3000, 1000], seed: 7, scale: 0.1)
        // With and without the software prefetch (its default depends on the CPU).
        let prefetch = Kernels.matvecPrefetchBytes
        defer { Kernels.matvecPrefetchBytes = prefetch }
        for distance in [0, 4096] {
            Kernels.matvecPrefetchBytes = distance
            XCTAssertEqual(Kernels.matvecPrefetchBytes, distance)
            for dtype in [DType.float32, .bfloat16] {
                let wd = wv.asType(dtype)
                assertLinearMatchesFallback(v, wd, "matvec 3000x1000 \(dtype), prefetch \(distance)")
            }
        }
    }

    func testFastLinearGradients() throws {
        for (rows, dtype) in [(3, DType.float32), (1, .bfloat16), (17, .float32), (40, .bfloat16), (70, .bfloat16), (40, .float32)] {
            let x = tensor([rows, 20], seed: 4), w = tensor([6, 20], seed: 5).asType(dtype)
            try assertGradientsMatchFallback([x, w], "linear rows \(rows) \(dtype)", atol: 1e-4) { NN.linear($0[0], weight: $0[1]) }
        }
    }

    func testFastLinearAddsItsBiasInside() throws {
        // Rows kernel, OpenBLAS and the blocked GEMM; float32 and bf16 biases; 3-D input.
        for (shape, n, dtype) in [([3, 40], 37, DType.float32), ([70, 64], 21, .float32), ([2, 50, 96], 40, .bfloat16), ([1, 33], 9, .bfloat16)] {
            let x = tensor(shape, seed: UInt64(n)), w = tensor([n, shape.last!], seed: 2).asType(dtype), b = tensor([n], seed: 3).asType(dtype)
            let expected = values(NN.linear(x, weight: w) + b.asType(.float32))
            assertClose(NN.linear(x, weight: w, bias: b), expected, atol: 0, rtol: 0, "linear \(shape) -> \(n) \(dtype) + bias")
            assertLinearMatchesFallback(x, w, bias: b, "linear \(shape) -> \(n) \(dtype) + bias, against MLX ops")
        }
        let x = tensor([70, 12], seed: 4), w = tensor([10, 12], seed: 5), b = tensor([10], seed: 6)
        try assertGradientsMatchFallback([x, w, b], "linear with bias", atol: 1e-4) { NN.linear($0[0], weight: $0[1], bias: $0[2]) }
        try assertGradientsMatchFallback([b], "the bias alone", atol: 1e-4) { NN.linear(x, weight: w, bias: $0[0]) }
        // A bias of the wrong length is MLX's broadcast error, not a kernel's read past its end.
        XCTAssertThrowsError(try NN.linear(x, weight: w, bias: tensor([7], seed: 7)).eval())
    }

    func testLinearGradientsOnSplitProducts() throws {
        // Products big enough for the shim's sgemm to split across cores: by rows (901 rows, not a multiple of the
        // 16-row shares), by columns (few rows, many outputs), batched 3D input; the weight gradient (130 x 96 over
        // 901 rows) splits by its rows too.
        defer { Kernels.profiling = false; Kernels.resetProfile() }
        Kernels.profiling = true
        Kernels.resetProfile()
        let cases: [([Int], Int)] = [([901, 96], 130), ([40, 64], 3000), ([3, 300, 96], 130)]
        for (shape, n) in cases {
            let x = tensor(shape, seed: UInt64(n), scale: 0.5), w = tensor([n, shape.last!], seed: 7, scale: 0.5)
            assertMatchesFallback("linear \(shape) -> \(n)", atol: 1e-4) { NN.linear(x, weight: w) }
            try assertGradientsMatchFallback([x, w], "linear \(shape) -> \(n)", atol: 2e-4) { NN.linear($0[0], weight: $0[1]) }
        }
        // Only the weight's gradient (a frozen input).
        let x = tensor([500, 70], seed: 1), w = tensor([90, 70], seed: 2)
        try assertGradientsMatchFallback([w], "linear weight only", atol: 2e-4) { NN.linear(x, weight: $0[0]) }
        XCTAssertTrue(Kernels.profileReport().contains("FastGemm"), Kernels.profileReport())
    }

    func testSplitLimitIsSettableAndBothSgemmPathsAgree() throws {
        let original = Kernels.gemmSplitLimit
        defer { Kernels.gemmSplitLimit = original }
        // 1.26 GFLOP, above the default limit: OpenBLAS's threads by default, one call per core when split.
        let x = tensor([1200, 256], seed: 3, scale: 0.5), w = tensor([2048, 256], seed: 4, scale: 0.5)
        for limit in [0.0, 1e15] {
            Kernels.gemmSplitLimit = limit
            XCTAssertEqual(Kernels.gemmSplitLimit, limit)
            assertMatchesFallback("linear split limit \(limit)", atol: 1e-4) { NN.linear(x, weight: w) }
        }
        Kernels.gemmSplitLimit = -5
        XCTAssertEqual(Kernels.gemmSplitLimit, 0)
    }

    // MARK: depthwise convolution

    func testDepthwiseMatchesGroupedConvolution() throws {
        // (b, h, w, c, kh, kw, ph, pw): odd sizes, channels not multiples of 8 or 16, images smaller than the
        // kernel, asymmetric kernels and padding, padding wider than the kernel (rows entirely in the padding).
        let cases: [(Int, Int, Int, Int, Int, Int, Int, Int)] = [
            (1, 9, 9, 6, 7, 7, 3, 3), (2, 5, 7, 13, 3, 3, 1, 1), (1, 24, 24, 16, 7, 7, 3, 3), (1, 6, 6, 8, 3, 3, 0, 0),
            (2, 11, 13, 19, 5, 5, 2, 2), (1, 3, 5, 33, 7, 7, 3, 3), (1, 10, 9, 40, 3, 5, 1, 2), (1, 4, 4, 5, 3, 3, 3, 3),
            (1, 24, 24, 768, 7, 7, 3, 3), (3, 7, 2, 17, 1, 1, 0, 0), (1, 12, 30, 32, 7, 7, 3, 3),
        ]
        for (b, h, w, c, kh, kw, ph, pw) in cases {
            let x = tensor([b, h, w, c], seed: UInt64(h * c + w)), wt = tensor([c, kh, kw], seed: UInt64(kh * 10 + kw + c))
            assertMatchesFallback("\(b)x\(h)x\(w)x\(c) k\(kh)x\(kw) p\(ph),\(pw)") {
                NN.depthwiseConv2d(x, weight: wt, padding: (ph, pw))
            }
            XCTAssertEqual(NN.depthwiseConv2d(x, weight: wt, padding: (ph, pw)).shape,
                           [b, h + 2 * ph - kh + 1, w + 2 * pw - kw + 1, c])
        }
        // A non-contiguous input (NCHW transposed to NHWC).
        let nchw = tensor([2, 12, 9, 10], seed: 8), wt = tensor([12, 3, 3], seed: 9)
        assertMatchesFallback("transposed input") { NN.depthwiseConv2d(nchw.transposed(0, 2, 3, 1), weight: wt, padding: (1, 1)) }
    }

    func testDepthwiseGradients() throws {
        let x = tensor([1, 6, 5, 10], seed: 1), w = tensor([10, 3, 3], seed: 2)
        try assertGradientsMatchFallback([x, w], "depthwise 3x3", atol: 1e-4) { NN.depthwiseConv2d($0[0], weight: $0[1], padding: (1, 1)) }
        let x7 = tensor([2, 9, 8, 19], seed: 3), w7 = tensor([19, 7, 7], seed: 4)
        try assertGradientsMatchFallback([x7, w7], "depthwise 7x7", atol: 1e-4) { NN.depthwiseConv2d($0[0], weight: $0[1], padding: (3, 3)) }
        // Asymmetric kernel and padding, no padding, and padding wider than the kernel (input gradient left to MLX).
        for (c, kh, kw, ph, pw) in [(5, 3, 5, 1, 2), (6, 3, 3, 0, 0), (4, 3, 3, 3, 3)] {
            let xa = tensor([2, 7, 6, c], seed: UInt64(c)), wa = tensor([c, kh, kw], seed: UInt64(kh + kw))
            try assertGradientsMatchFallback([xa, wa], "depthwise \(kh)x\(kw) p\(ph),\(pw)", atol: 1e-4) {
                NN.depthwiseConv2d($0[0], weight: $0[1], padding: (ph, pw))
            }
        }
    }

    // MARK: attention

    /// Additive mask with -inf entries; key 0 is always kept so that every row sees a finite score.
    func infMask(_ shape: [Int], seed: UInt64) -> Tensor {
        let lk = shape.last!
        let r = pseudoRandom(shape.reduce(1, *), seed: seed)
        let m = r.enumerated().map { i, v in (i % lk == 0 || v > -0.4) ? Float(0) : -Float.infinity }
        return Tensor(m, shape: shape)
    }

    /// Queries, keys, values and mask of an attention case (b, hq, hkv, lq, lk, d, causal, mask shape), and its label.
    func attentionInputs(_ c: (Int, Int, Int, Int, Int, Int, Bool, [Int]?)) -> (Tensor, Tensor, Tensor, Tensor?, String) {
        let (b, hq, hkv, lq, lk, d, causal, maskShape) = c
        let seed = UInt64(b * 1000 + lq * 10 + lk + d)
        let q = tensor([b, hq, lq, d], seed: seed, scale: 2)
        let k = tensor([b, hkv, lk, d], seed: seed + 1), v = tensor([b, hkv, lk, d], seed: seed + 2)
        return (q, k, v, maskShape.map { infMask($0, seed: seed + 3) }, "b\(b) h\(hq)/\(hkv) lq\(lq) lk\(lk) d\(d) causal \(causal) mask \(maskShape ?? [])")
    }

    func testAttentionMatchesReference() throws {
        // (b, hq, hkv, lq, lk, d, causal, mask shape)
        let cases: [(Int, Int, Int, Int, Int, Int, Bool, [Int]?)] = [
            (1, 2, 2, 5, 7, 8, false, nil),              // few queries: direct path
            (2, 4, 2, 3, 40, 17, true, nil),             // direct, GQA, odd head size, causal
            (2, 4, 4, 1, 33, 64, false, [2, 1, 1, 33]),  // decode with a padding mask
            (1, 4, 2, 8, 8, 20, true, [1, 1, 8, 8]),     // direct, causal + mask
            (2, 4, 2, 50, 70, 24, false, nil),           // tiled, GQA, Lq != Lk
            (1, 2, 1, 100, 100, 72, true, nil),          // tiled causal
            (1, 1, 1, 61, 45, 130, true, nil),           // causal with Lq > Lk: early queries see no key
            (2, 4, 2, 64, 64, 32, false, [2, 1, 64, 64]),
            (2, 4, 2, 64, 80, 32, true, [1, 1, 64, 80]), // causal + -inf mask
            (1, 2, 2, 20, 30, 16, false, [20, 30]),      // 2-D mask
            (1, 3, 3, 25, 31, 16, false, [1, 3, 1, 31]), // per-head mask
            (1, 2, 2, 30, 9, 16, false, nil),            // fewer keys than a panel
            (1, 2, 2, 30, 1, 16, true, nil),
            (2, 2, 1, 97, 130, 40, true, [2, 2, 97, 130]),
            (1, 2, 2, 49, 49, 512, false, nil),          // a wide head (the VAE's)
            (1, 4, 1, 200, 230, 128, true, nil),         // 96-query blocks, one K/V head shared by every thread
            (2, 2, 2, 150, 150, 96, false, [2, 1, 150, 150]),
        ]
        for c in cases {
            let (q, k, v, mask, label) = attentionInputs(c)
            let (causal, scale) = (c.6, 1 / Float(c.5).squareRoot())
            assertMatchesFallback(label) {
                NN.attention(queries: q, keys: k, values: v, scale: scale, causal: causal, mask: mask)
            }
        }
    }

    func testInt8LinearMatchesTheDequantizedProduct() throws {
        // On every CPU path: rows kernel (few rows) and, for many rows, the blocked GEMM (AVX2 or AVX-512 microkernel,
        // vdpbf16ps or AMX) or dequantise + sgemm; group 64 / 32 / 16, with a bias; inner sizes across the GEMM's 512- (AVX2) and 256-position
        // (AVX-512) blocks, rows across its row blocks (241 rows: two of 126 and 115 on AVX2, 132 and 109 on AVX-512).
        let original = Kernels.bf16Gemm
        defer { Kernels.bf16Gemm = original }
        try forEachCPUPath { path in
            for (k, rows, gemm) in [(128, 1, true), (128, 3, true), (96, 5, true), (176, 2, true), (256, 70, true), (64, 200, true),
                                    (1088, 241, true), (560, 97, true), (256, 70, false), (1088, 201, false)] {
                Kernels.bf16Gemm = gemm
                let linear = Linear(k, 37)
                XCTAssertTrue(try linear.quantize(groupSize: 64))
                let group = linear.quantizationGroup
                XCTAssertEqual(group, [64, 32, 16].first { k % $0 == 0 })
                let q = try linear.weight.values(Float.self), s = try linear.scales!.values(Float.self)
                let dequantized = Tensor((0..<(37 * k)).map { q[$0] * s[($0 / k) * (k / group) + ($0 % k) / group] }, shape: [37, k])
                let x = tensor([rows, k], seed: UInt64(k + rows))
                // Up to 32 rows (at these widths) take the rows kernel, which rounds x to int8 on VNNI for groups of 64;
                // more rows the GEMM, which on the bf16 paths rounds x and the dequantised weights to bf16.
                let int8Rounding = rows <= 32 && group % 64 == 0 && Kernels.int8QuantizesActivations
                let bf16Rounding = rows > 32 && Kernels.bf16RoundsActivations
                var (input, weights) = (x, dequantized)
                if int8Rounding { input = try int8RoundedRows(x, group: group) }
                if bf16Rounding { (input, weights) = (x.asType(.bfloat16).asType(.float32), dequantized.asType(.bfloat16).asType(.float32)) }
                let expected = values(matmul(input, weights.T) + linear.bias!)
                let label = "\(path) k \(k) rows \(rows) gemm \(gemm)"
                assertClose(linear(x), expected, atol: 2e-5, rtol: 1e-4, label)
                if int8Rounding || bf16Rounding {
                    // Against float32 inputs: within the rounding, a small fraction of the output's size.
                    let exact = try (matmul(x, dequantized.T) + linear.bias!).values(Float.self)
                    let fast = try linear(x).values(Float.self)
                    let error = zip(fast, exact).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
                    let size = exact.map { $0 * $0 }.reduce(0, +).squareRoot()
                    XCTAssertLessThan(error, 0.01 * size, label)
                    XCTAssertGreaterThan(error, 0, "\(label): the kernel should have rounded its inputs")
                } else {
                    assertMatchesFallback("\(label) against MLX ops") { linear(x) }
                }
            }
        }
    }

    /// x (rows, k) as the VNNI kernel rounds it: per group of `group` inputs, q = x * (127 / max|x|) to nearest even,
    /// back times max|x| / 127.
    func int8RoundedRows(_ x: Tensor, group: Int) throws -> Tensor {
        let (rows, k) = (x.dim(0), x.dim(1))
        var v = try x.values(Float.self)
        for start in stride(from: 0, to: rows * k, by: group) {
            let amax = v[start..<(start + group)].map { Swift.abs($0) }.max()!
            guard amax > 0 else { continue }
            let (inverse, scale) = (Float(127) / amax, amax / Float(127))
            for i in start..<(start + group) { v[i] = Swift.min(127, Swift.max(-127, (v[i] * inverse).rounded(.toNearestOrEven))) * scale }
        }
        return Tensor(v, shape: [rows, k])
    }

    func testInt8GroupsOf128RoundPerGroup() throws {
        // Two 64-byte chunks per group on VNNI; one and three rows (each weight row read front to back) and six (tiles).
        let linear = Linear(256, 21)
        XCTAssertTrue(try linear.quantize(groupSize: 128))
        XCTAssertEqual(linear.quantizationGroup, 128)
        let q = try linear.weight.values(Float.self), s = try linear.scales!.values(Float.self)
        let weights: [Float] = (0..<(21 * 256)).map { (i: Int) -> Float in q[i] * s[(i / 256) * 2 + (i % 256) / 128] }
        let dequantized = Tensor(weights, shape: [21, 256])
        for rows in [1, 3, 6] {
            let x = tensor([rows, 256], seed: UInt64(rows))
            let input = Kernels.int8QuantizesActivations ? try int8RoundedRows(x, group: 128) : x
            assertClose(linear(x), values(matmul(input, dequantized.T) + linear.bias!), atol: 2e-5, rtol: 1e-4, "rows \(rows)")
        }
    }

    func testInt8VNNIRoundsOnlyWhereItRuns() throws {
        let original = Kernels.int8VNNI
        defer { Kernels.int8VNNI = original }
        let linear = Linear(128, 24, bias: false)
        XCTAssertTrue(try linear.quantize(groupSize: 64))
        // Spread and zero groups: a group of zeros stays zero, NaN still reaches the output.
        var raw = try tensor([3, 128], seed: 5).values(Float.self)
        for i in 0..<64 { raw[128 + i] = 0 }
        let x = Tensor(raw, shape: [3, 128])
        Kernels.int8VNNI = false
        XCTAssertFalse(Kernels.int8QuantizesActivations)
        let widened = try linear(x).values(Float.self)
        Kernels.int8VNNI = true
        let vnniHost = Kernels.cpuPath >= .avx512 && Kernels.cpuFeatures.contains("avx512_vnni")
        XCTAssertEqual(Kernels.int8QuantizesActivations, vnniHost)
        let fast = try linear(x).values(Float.self)
        if vnniHost { XCTAssertNotEqual(fast, widened) } else { XCTAssertEqual(fast, widened) }
        raw[5] = .nan
        let withNaN = try linear(Tensor(raw, shape: [3, 128])).values(Float.self)
        XCTAssertTrue(withNaN[0..<24].allSatisfy(\.isNaN), "a NaN input gives NaN outputs")
        XCTAssertFalse(withNaN[24..<72].contains { $0.isNaN }, "other rows keep their values")
        if Kernels.supportedCPUPaths.contains(.avx2) {
            Kernels.useCPUPath(.avx2)
            XCTAssertFalse(Kernels.int8QuantizesActivations, "the avx2 path widens the weights")
        }
    }

    func testInt8QuantizationErrorIsHalfAStep() throws {
        let linear = Linear(128, 16, bias: false)
        let original = try linear.weight.values(Float.self)
        try linear.quantize(groupSize: 64)
        XCTAssertEqual(linear.weight.dtype, .int8)
        let q = try linear.weight.values(Float.self), s = try linear.scales!.values(Float.self)
        XCTAssertEqual(q.map { Swift.abs($0) }.max(), 127)
        for i in original.indices {
            let scale = s[(i / 128) * 2 + (i % 128) / 64]
            XCTAssertLessThanOrEqual(Swift.abs(q[i] * scale - original[i]), scale / 2 * 1.0001, "weight \(i)")
        }
        XCTAssertFalse(try Linear(40, 8).quantize(), "widths not a multiple of 16 stay as they are")
    }

    func testAttentionReadsStridedKeysAndValues() throws {
        // The filled part of a longer buffer (a KV cache), transposed views, broadcast keys, and k/v with
        // different layouts: the kernel reads or packs each as laid out and matches the reference.
        for (lq, causal) in [(1, false), (3, true), (40, true)] {
            let q = tensor([2, 4, lq, 24], seed: UInt64(lq), scale: 2)
            let kBuffer = tensor([2, 2, 64, 24], seed: 7), vBuffer = tensor([2, 2, 64, 24], seed: 8)
            let k = kBuffer.slice(axis: 2, 0, 45), v = vBuffer.slice(axis: 2, 0, 45)
            assertMatchesFallback("cache slice lq \(lq)") { NN.attention(queries: q, keys: k, values: v, scale: 0.2, causal: causal) }
            let kT = tensor([2, 45, 2, 24], seed: 9).transposed([0, 2, 1, 3])
            assertMatchesFallback("transposed k, sliced v, lq \(lq)") { NN.attention(queries: q, keys: kT, values: v, scale: 0.2, causal: causal) }
            let kB = tensor([1, 2, 45, 24], seed: 10).broadcast(to: [2, 2, 45, 24])
            assertMatchesFallback("broadcast k lq \(lq)") { NN.attention(queries: q, keys: kB, values: v, scale: 0.2, causal: causal) }
        }
    }

    func testAttentionMaskKinds() throws {
        let q = tensor([2, 2, 12, 16], seed: 1), k = tensor([2, 2, 19, 16], seed: 2), v = tensor([2, 2, 19, 16], seed: 3)
        // Boolean mask (true keeps), finite large negative mask, and a mask with a row hidden entirely by -1e9.
        let keep = tensor([2, 1, 12, 19], seed: 4) .> -0.5
        assertMatchesFallback("bool mask") { NN.attention(queries: q, keys: k, values: v, scale: 0.5, mask: keep) }
        let finite = which(keep, Tensor(0.0), Tensor(-1e9))
        assertMatchesFallback("finite mask") { NN.attention(queries: q, keys: k, values: v, scale: 0.5, mask: finite) }
        let hiddenRow = which(Tensor.arange(12).reshaped([1, 1, 12, 1]) .== 3.0, Tensor(-1e9), Tensor(0.0))
            .broadcast(to: [1, 1, 12, 19])
        assertMatchesFallback("row hidden by -1e9") { NN.attention(queries: q, keys: k, values: v, scale: 0.5, mask: hiddenRow) }
        // The LLM's mask: causal plus padded keys (-1e9), batch 1 padded at both ends so that its first rows see
        // only padding; few queries (direct path) and many (tiled path).
        for (lq, lk) in [(20, 26), (5, 26), (60, 60)] {
            let pad = (0..<2 * lk).map { i -> Float in
                let (b, j) = (i / lk, i % lk)
                return b == 1 && (j < 8 || j >= lk - 3) ? -1e9 : 0
            }
            let llmMask = NN.causalAdditiveMask(queries: lq, keys: lk).reshaped([1, 1, lq, lk]) + Tensor(pad, shape: [2, 1, 1, lk])
            let ql = tensor([2, 4, lq, 32], seed: 8, scale: 2), kl = tensor([2, 2, lk, 32], seed: 9), vl = tensor([2, 2, lk, 32], seed: 10)
            assertMatchesFallback("LLM mask lq \(lq) lk \(lk)") { NN.attention(queries: ql, keys: kl, values: vl, scale: 0.2, mask: llmMask) }
            let padOnly = Tensor(pad, shape: [2, 1, 1, lk])
            assertMatchesFallback("causal + padding lq \(lq) lk \(lk)") {
                NN.attention(queries: ql, keys: kl, values: vl, scale: 0.2, causal: true, mask: padOnly)
            }
        }
        // Non-contiguous q/k/v (B, L, H, D) -> (B, H, L, D) views, as the models produce them.
        let qt = tensor([2, 12, 2, 16], seed: 5).swappedAxes(1, 2), kt = tensor([2, 19, 2, 16], seed: 6).swappedAxes(1, 2)
        let vt = tensor([2, 19, 2, 16], seed: 7).swappedAxes(1, 2)
        assertMatchesFallback("transposed inputs") { NN.attention(queries: qt, keys: kt, values: vt, scale: 0.25, causal: true) }
        // Hand-derived: one query, two keys with equal scores -> mean of the values.
        let q1 = Tensor.zeros([1, 1, 1, 2]), k1 = Tensor.ones([1, 1, 2, 2])
        let v1 = Tensor([1, 2, 3, 4] as [Float], shape: [1, 1, 2, 2])
        XCTAssertEqual(try NN.attention(queries: q1, keys: k1, values: v1, scale: 1).values(Float.self), [2, 3])
    }

    func testAttentionGradients() throws {
        let q = tensor([2, 4, 20, 16], seed: 1), k = tensor([2, 2, 24, 16], seed: 2), v = tensor([2, 2, 24, 16], seed: 3)
        let mask = infMask([2, 1, 20, 24], seed: 4)
        try assertGradientsMatchFallback([q, k, v], "attention causal GQA") {
            NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.3, causal: true)
        }
        try assertGradientsMatchFallback([q, k, v], "attention masked GQA") {
            NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.3, mask: mask)
        }
        let q1 = tensor([2, 4, 1, 16], seed: 5)
        try assertGradientsMatchFallback([q1, k, v], "attention decode") {
            NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.3)
        }
        // Causal with more queries than keys (the first rows see no key), an odd head size, no GQA.
        let q2 = tensor([1, 2, 30, 13], seed: 6, scale: 2), k2 = tensor([1, 2, 21, 13], seed: 7), v2 = tensor([1, 2, 21, 13], seed: 8)
        try assertGradientsMatchFallback([q2, k2, v2], "attention causal lq > lk") {
            NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.4, causal: true)
        }
        // The LLM's training mask: causal plus padded keys (-1e9) at both ends of one row, and a row whose every
        // key is padding; gradients for the queries alone, and keys given as a transposed view.
        let lk = 26
        let pad = (0..<2 * lk).map { i -> Float in
            let (b, j) = (i / lk, i % lk)
            return b == 1 && (j < 8 || j >= lk - 3) ? -1e9 : 0
        }
        let llmMask = NN.causalAdditiveMask(queries: lk, keys: lk).reshaped([1, 1, lk, lk]) + Tensor(pad, shape: [2, 1, 1, lk])
        let ql = tensor([2, 4, lk, 32], seed: 9, scale: 2), vl = tensor([2, 2, lk, 32], seed: 11)
        let kl = tensor([2, lk, 2, 32], seed: 10).swappedAxes(1, 2)
        try assertGradientsMatchFallback([ql, kl, vl], "attention LLM mask") {
            NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.2, mask: llmMask)
        }
        // The same padding as a key mask beside causality (rows whose every key in view is padding included).
        let padKeys = Tensor(pad, shape: [2, 1, 1, lk])
        try assertGradientsMatchFallback([ql, kl, vl], "attention causal + padded keys") {
            NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.2, causal: true, mask: padKeys)
        }
        try assertGradientsMatchFallback([ql], "attention LLM mask, queries only") {
            NN.attention(queries: $0[0], keys: kl, values: vl, scale: 0.2, mask: llmMask)
        }
        let allHidden = Tensor([Float](repeating: -1e9, count: lk), shape: [1, 1, 1, lk])
        try assertGradientsMatchFallback([ql, kl, vl], "attention, every key hidden by the mask") {
            NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.2, mask: allHidden)
        }
        // Several 48-row blocks, key counts and head sizes off the 16-wide panels, GQA with causality and a mask.
        let q3 = tensor([1, 2, 100, 40], seed: 15, scale: 2), k3 = tensor([1, 1, 100, 40], seed: 16), v3 = tensor([1, 1, 100, 40], seed: 17)
        try assertGradientsMatchFallback([q3, k3, v3], "attention causal, 100 rows, d 40") {
            NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.15, causal: true)
        }
        let q4 = tensor([2, 2, 70, 20], seed: 18, scale: 2), k4 = tensor([2, 2, 83, 20], seed: 19), v4 = tensor([2, 2, 83, 20], seed: 20)
        let mask4 = infMask([2, 1, 70, 83], seed: 21)
        try assertGradientsMatchFallback([q4, k4, v4], "attention masked, 70 x 83 keys, d 20") {
            NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.2, mask: mask4)
        }
        // A plane above the row-by-row limit takes MLX's vjp: same gradients either way.
        let qb = tensor([1, 1, 8, 64], seed: 12), kb = tensor([1, 1, 1100, 64], seed: 13), vb = tensor([1, 1, 1100, 64], seed: 14)
        try assertGradientsMatchFallback([qb, kb, vb], "attention, large plane") {
            NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.125)
        }
    }

    func testAddOnBothCoresIsMLXsAdd() throws {
        // Past one 16K-value task, a tail off the 8-wide vectors; broadcasting and other dtypes take MLX's add.
        let a = tensor([3, 50_001], seed: 1), b = tensor([3, 50_001], seed: 2)
        assertClose(NN.add(a, b), values(a + b), atol: 0, rtol: 0, "same shapes")
        let row = tensor([1, 50_001], seed: 3)
        assertClose(NN.add(a, row), values(a + row), atol: 0, rtol: 0, "a broadcast row")
        XCTAssertEqual(NN.add(a.asType(.bfloat16), b.asType(.bfloat16)).dtype, .bfloat16)
        try assertGradientsMatchFallback([tensor([4, 9], seed: 4), tensor([4, 9], seed: 5)], "add") { NN.add($0[0], $0[1]) }
    }

    // MARK: attention heads

    /// The heads as plain ops: (B, L, H * D) -> (B, H, L, D), rotated with the tables, after the prefix's rows
    /// (row n % rows for batch row n).
    func headsByPlainOps(_ x: Tensor, heads: Int, rotary: RotaryTables?, prefix: Tensor?) -> Tensor {
        let (b, l, d) = (x.dim(0), x.dim(1), x.dim(2) / heads)
        // Row n of t's rows for batch row n.
        func repeated(_ t: Tensor) -> Tensor { concatenated((0..<b).map { t.slice(axis: 0, $0 % t.dim(0), $0 % t.dim(0) + 1) }, axis: 0) }
        var y = x.reshaped([b, l, heads, d]).transposed([0, 2, 1, 3])
        if let rotary {
            let rotated = concatenated([-y.slice(axis: -1, d / 2, d), y.slice(axis: -1, 0, d / 2)], axis: -1)
            y = y * repeated(rotary.cos) + rotated * repeated(rotary.sin)
        }
        return prefix.map { concatenated([repeated($0), y], axis: 2) } ?? y
    }

    func testSplitHeadsMatchesTransposeRotationAndConcatenation() throws {
        // (b, l, heads, d, table rows (0: no rotation), prefix rows (0: none), prefix length)
        let cases: [(Int, Int, Int, Int, Int, Int, Int)] = [
            (1, 5, 2, 8, 1, 0, 0),       // one table row for every batch row
            (2, 70, 4, 32, 2, 0, 0),     // a table per row, several 32-token tasks
            (2, 33, 3, 6, 1, 1, 4),      // d off the 8-wide vectors, one prefix row for both batch rows
            (4, 9, 2, 16, 4, 2, 7),      // prefix rows n % 2 (CFG: conditional and unconditional row i read prompt i)
            (2, 40, 2, 128, 1, 2, 20),   // the 1.3B model's head size
            (2, 12, 2, 10, 0, 1, 3),     // values: no rotation, prefix only
            (1, 1, 4, 64, 1, 1, 5),      // one new position (decoding)
            (3, 17, 1, 24, 0, 0, 0),     // a plain transpose
        ]
        for (b, l, heads, d, tableRows, prefixRows, p) in cases {
            let seed = UInt64(b * 100 + l * 7 + d)
            let x = tensor([b, l, heads * d], seed: seed, scale: 2)
            let rotary = tableRows == 0 ? nil : RotaryTables(
                positions: Tensor((0..<(tableRows * l)).map { Int32(3 * ($0 / l) + $0 % l + 11) }, shape: [tableRows, l]), dims: d)
            let prefix = prefixRows == 0 ? nil : tensor([prefixRows, heads, p, d], seed: seed + 1)
            let expected = values(headsByPlainOps(x, heads: heads, rotary: rotary, prefix: prefix))
            let fast = NN.splitHeads(x, heads: heads, rotary: rotary, prefix: prefix)
            XCTAssertEqual(fast.shape, [b, heads, p + l, d])
            // The same products and sums as the plain ops, so the same floats.
            assertClose(fast, expected, atol: 0, rtol: 0, "b\(b) l\(l) h\(heads) d\(d) tables \(tableRows) prefix \(prefixRows)x\(p)")
        }
    }

    func testSplitHeadsReadsAStridedPrefixInPlace() throws {
        // The shared prompt's keys: the first 3 positions of a longer cache buffer, and a transposed view.
        let cache = tensor([1, 2, 10, 16], seed: 1)
        let x = tensor([2, 5, 32], seed: 2)
        let rotary = RotaryTables(positions: Tensor((3..<8).map(Int32.init), shape: [1, 5]), dims: 16)
        for prefix in [cache.slice(axis: 2, 0, 3), tensor([1, 3, 2, 16], seed: 3).swappedAxes(1, 2),
                       tensor([1, 2, 16, 4], seed: 4).swappedAxes(2, 3)] {
            try prefix.eval()
            let expected = values(headsByPlainOps(x, heads: 2, rotary: rotary, prefix: prefix))
            assertClose(NN.splitHeads(x, heads: 2, rotary: rotary, prefix: prefix), expected, atol: 0, rtol: 0, "prefix \(prefix.shape)")
        }
    }

    func testSplitHeadsRefusesShapesItCannotSplit() {
        let x = tensor([2, 5, 30], seed: 1)
        let cases: [(Tensor, String)] = [
            (NN.splitHeads(x, heads: 4), "split_heads: x must be (B, L, heads * D)"),
            (NN.splitHeads(x, heads: 3, rotary: RotaryTables(positions: Tensor.zeros([1, 4], dtype: .int32), dims: 10)),
             "split_heads: rotary tables must be (B or a divisor of B, 1, L, D)"),
            (NN.splitHeads(x, heads: 3, prefix: tensor([3, 3, 2, 10], seed: 2)),
             "split_heads: prefix must be (B or a divisor of B, heads, P, D)"),
        ]
        for (result, message) in cases {
            XCTAssertThrowsError(try result.eval()) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
    }

    func testSplitHeadsGradients() throws {
        let rotary = RotaryTables(positions: Tensor((0..<12).map { Int32($0 % 6 + 2) }, shape: [2, 6]), dims: 8)
        try assertGradientsMatchFallback([tensor([2, 6, 16], seed: 1), tensor([1, 2, 3, 8], seed: 2)], "rotated heads after a prefix") {
            NN.splitHeads($0[0], heads: 2, rotary: rotary, prefix: $0[1])
        }
        try assertGradientsMatchFallback([tensor([2, 6, 16], seed: 3)], "heads without rotation") { NN.splitHeads($0[0], heads: 4) }
    }

    func testAttentionMergingHeadsIsTheMergedAttention() throws {
        // (b, hq, hkv, lq, lk, d, causal, mask shape): the direct path, tiled blocks, GQA, masks.
        let cases: [(Int, Int, Int, Int, Int, Int, Bool, [Int]?)] = [
            (2, 4, 2, 3, 40, 16, true, nil),
            (1, 4, 4, 1, 33, 64, false, [1, 1, 1, 33]),
            (2, 4, 2, 50, 70, 24, true, nil),
            (2, 2, 1, 97, 130, 40, true, [2, 1, 97, 130]),
            (1, 4, 1, 200, 230, 128, true, nil),
            (2, 2, 2, 4, 30, 16, true, [2, 1, 1, 30]),   // causal plus one row of hidden keys per batch row (a prompt's)
            (2, 4, 2, 60, 80, 32, true, [2, 1, 1, 80]),
        ]
        for c in cases {
            let (q, k, v, mask, label) = attentionInputs(c)
            let (b, hq, lq, d, causal) = (c.0, c.1, c.3, c.5, c.6)
            let heads = NN.attention(queries: q, keys: k, values: v, scale: 0.2, causal: causal, mask: mask)
            let expected = values(heads.transposed([0, 2, 1, 3]).reshaped([b, lq, hq * d]))
            // The kernel's own rows, written elsewhere: the same floats.
            assertClose(NN.attentionMergingHeads(queries: q, keys: k, values: v, scale: 0.2, causal: causal, mask: mask), expected,
                        atol: 0, rtol: 0, label)
            assertMatchesFallback(label) { NN.attentionMergingHeads(queries: q, keys: k, values: v, scale: 0.2, causal: causal, mask: mask) }
        }
    }

    func testAttentionMergingHeadsGradients() throws {
        defer { Kernels.profiling = false; Kernels.resetProfile() }
        let q = tensor([2, 4, 20, 16], seed: 1), k = tensor([2, 2, 24, 16], seed: 2), v = tensor([2, 2, 24, 16], seed: 3)
        Kernels.profiling = true
        Kernels.resetProfile()
        try assertGradientsMatchFallback([q, k, v], "merged attention, causal GQA") {
            NN.attentionMergingHeads(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.3, causal: true)
        }
        // The merged cotangent goes back to the heads' layout for the gradient kernel, not to MLX's vjp.
        XCTAssertTrue(Kernels.profileReport().contains("FastAttentionGrad"), Kernels.profileReport())
        let mask = infMask([2, 1, 20, 24], seed: 4)
        try assertGradientsMatchFallback([q, k, v], "merged attention, masked") {
            NN.attentionMergingHeads(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.3, mask: mask)
        }
    }

    func testAttentionGradientUsesTheFastKernelForSmallPlanes() throws {
        defer { Kernels.profiling = false; Kernels.resetProfile() }
        let q = tensor([2, 4, 20, 16], seed: 1), k = tensor([2, 2, 24, 16], seed: 2), v = tensor([2, 2, 24, 16], seed: 3)
        func calls(_ q: Tensor, _ k: Tensor, _ v: Tensor) throws -> String? {
            Kernels.profiling = true
            Kernels.resetProfile()
            let grads = try Autograd.valueAndGrad([q, k, v]) {
                [NN.attention(queries: $0[0], keys: $0[1], values: $0[2], scale: 0.3, causal: true).sum()]
            }.grads
            try Tensor.eval(grads)
            let line = Kernels.profileReport().split(separator: "\n").first { $0.split(separator: " ").first == "FastAttentionGrad" }
            return line.map(String.init)
        }
        XCTAssertTrue(try calls(q, k, v)?.hasSuffix(" 1 calls") ?? false, Kernels.profileReport())
        let kb = tensor([2, 2, 1100, 64], seed: 2), vb = tensor([2, 2, 1100, 64], seed: 3)
        XCTAssertNil(try calls(tensor([2, 4, 20, 64], seed: 1), kb, vb), "a plane of 1100 x 64 takes MLX's vjp")
    }
}
