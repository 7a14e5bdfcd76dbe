import MLXEngine
import XCTest

/// The shim's one-pass normalisations and activations against MLX's own ops (kernels off), values and gradients.
final class PointwiseKernelTests: KernelTestCase {
    func testActivationsMatchMLXAcrossTheRange() throws {
        // Sizes with vector tails, and values from the far tails (exp under/overflow, erf saturation) to zero.
        let extremes: [Float] = [-100, -90, -88, -40, -20, -9, -5, -1e-3, -1e-30, 0, 1e-30, 1e-3, 0.5, 3, 9, 20, 40, 88, 100]
        for count in [1, 7, 8, 13, 100, 40_000] {
            let x = count == extremes.count ? Tensor(extremes, shape: [count]) : tensor([count], seed: UInt64(count), scale: 12)
            // Relative bounds: vector exp keeps ~1 ulp, the erfc fit ~1e-7; MLX's own erf differs by a few ulp.
            assertMatchesFallback("silu \(count)", atol: 1e-6, rtol: 2e-6) { NN.silu(x) }
            assertMatchesFallback("gelu \(count)", atol: 1e-6, rtol: 2e-6) { NN.gelu(x) }
            assertMatchesFallback("gelu tanh \(count)", atol: 1e-6, rtol: 2e-6) { NN.geluTanh(x) }
        }
        let x = Tensor(extremes, shape: [extremes.count])
        assertMatchesFallback("silu extremes", atol: 1e-6, rtol: 2e-6) { NN.silu(x) }
        assertMatchesFallback("gelu extremes", atol: 1e-6, rtol: 2e-6) { NN.gelu(x) }
        assertMatchesFallback("gelu tanh extremes", atol: 1e-6, rtol: 2e-6) { NN.geluTanh(x) }
        // The negative tail keeps its relative accuracy: GELU(-5) = -5 * Phi(-5) = -1.43325786e-6.
        XCTAssertEqual(try NN.gelu(Tensor([-5] as [Float])).item(Float.self), -1.43325786e-6, accuracy: 1e-12)
        XCTAssertEqual(try NN.silu(Tensor([-20] as [Float])).item(Float.self), -4.1223072e-8, accuracy: 1e-13)
    }

    func testSiluGateAndNormsMatchMLX() throws {
        for (rows, d) in [(1, 8), (3, 13), (5, 64), (17, 100), (300, 2048)] {
            let a = tensor([rows, d], seed: UInt64(rows * d), scale: 6), b = tensor([rows, d], seed: UInt64(rows + d))
            let w = tensor([d], seed: 3), bias = tensor([d], seed: 4)
            assertMatchesFallback("silu gate \(rows)x\(d)", atol: 1e-6, rtol: 2e-6) { NN.siluGate(a, b) }
            assertMatchesFallback("rms norm \(rows)x\(d)", atol: 1e-6, rtol: 1e-5) { NN.rmsNorm(a, weight: w, eps: 1e-6) }
            assertMatchesFallback("rms norm, no weight \(rows)x\(d)", atol: 1e-6, rtol: 1e-5) { NN.rmsNorm(a, weight: nil, eps: 1e-5) }
            assertMatchesFallback("layer norm \(rows)x\(d)", atol: 1e-5, rtol: 1e-5) { NN.layerNorm(a, weight: w, bias: bias, eps: 1e-6) }
            assertMatchesFallback("layer norm, bias only \(rows)x\(d)", atol: 1e-5, rtol: 1e-5) { NN.layerNorm(a + 3, weight: nil, bias: bias, eps: 1e-5) }
            // bfloat16 parameters are read as float32.
            assertMatchesFallback("rms norm, bf16 weight \(rows)x\(d)", atol: 1e-6, rtol: 1e-5) { NN.rmsNorm(a, weight: w.asType(.bfloat16), eps: 1e-6) }
        }
        // Batched (B, L, D) input and broadcasting operands (the reference path) keep their shapes.
        let x = tensor([2, 3, 24], seed: 9)
        assertMatchesFallback("rms norm 3-D") { NN.rmsNorm(x, weight: tensor([24], seed: 1), eps: 1e-6) }
        assertMatchesFallback("silu gate broadcast") { NN.siluGate(x, tensor([24], seed: 2)) }
    }

    func testGradientsMatchMLX() throws {
        let a = tensor([4, 24], seed: 1, scale: 3), b = tensor([4, 24], seed: 2), w = tensor([24], seed: 3), c = tensor([24], seed: 4)
        try assertGradientsMatchFallback([a, b], "silu gate") { NN.siluGate($0[0], $0[1]) }
        try assertGradientsMatchFallback([a, w], "rms norm") { NN.rmsNorm($0[0], weight: $0[1], eps: 1e-6) }
        try assertGradientsMatchFallback([a, w, c], "layer norm") { NN.layerNorm($0[0], weight: $0[1], bias: $0[2], eps: 1e-6) }
        try assertGradientsMatchFallback([a], "gelu") { NN.gelu($0[0]) }
        try assertGradientsMatchFallback([a], "gelu tanh") { NN.geluTanh($0[0]) }
        try assertGradientsMatchFallback([a], "silu") { NN.silu($0[0]) }
    }

    func testActivationGradientsAtEveryLengthAndInTheTails() throws {
        // Lengths with vector tails and one past a pool chunk (16384); values far into both tails, where the
        // sigmoid saturates and erf's complement is tiny.
        let extremes: [Float] = [-90, -30, -12, -5, -1e-3, 0, 1e-3, 5, 12, 30, 90]
        for n in [extremes.count, 7, 37, 16_391] {
            let base = try tensor([n], seed: UInt64(n), scale: 4).values(Float.self)
            let x = Tensor(n == extremes.count ? extremes : base, shape: [n])
            let gate = tensor([n], seed: UInt64(n) + 1)
            try assertGradientsMatchFallback([x], "gelu n \(n)") { NN.gelu($0[0]) }
            try assertGradientsMatchFallback([x], "gelu tanh n \(n)") { NN.geluTanh($0[0]) }
            try assertGradientsMatchFallback([x], "silu n \(n)") { NN.silu($0[0]) }
            try assertGradientsMatchFallback([x, gate], "silu gate n \(n)") { NN.siluGate($0[0], $0[1]) }
        }
        // Only the gate's gradient asked for: the other input is a constant.
        let up = tensor([5, 24], seed: 7)
        try assertGradientsMatchFallback([tensor([5, 24], seed: 8, scale: 3)], "silu gate, gate only") { NN.siluGate($0[0], up) }
    }

    func testActivationGradientsUseTheFastKernel() throws {
        defer { Kernels.profiling = false; Kernels.resetProfile() }
        Kernels.profiling = true
        Kernels.resetProfile()
        let a = tensor([6, 40], seed: 1, scale: 3), b = tensor([6, 40], seed: 2)
        let grads = try Autograd.valueAndGrad([a, b]) { [(NN.siluGate($0[0], $0[1]) + NN.gelu($0[0])).sum()] }.grads
        try Tensor.eval(grads)
        let line = Kernels.profileReport().split(separator: "\n").first { $0.split(separator: " ").first == "FastActivationGrad" }
        XCTAssertTrue(line?.hasSuffix(" 2 calls") ?? false, Kernels.profileReport())
    }

    // MARK: cross-entropy

    func testCrossEntropyMatchesMLX() throws {
        // Vocabulary sizes with and without an AVX tail, rows of large logits (the max subtraction), a mask.
        for (rows, v) in [(3, 7), (5, 8), (17, 533), (2, 1000), (64, 45)] {
            let logits = tensor([rows, v], seed: UInt64(v), scale: 30)
            let targets = Tensor((0..<rows).map { Int32(($0 * 7 + 3) % v) })
            let mask = Tensor((0..<rows).map { Float($0 % 3 == 0 ? 0 : 1) })
            assertMatchesFallback("cross-entropy \(rows)x\(v)", atol: 1e-5, rtol: 2e-6) { NN.crossEntropy(logits: logits, targets: targets) }
            assertMatchesFallback("masked cross-entropy \(rows)x\(v)", atol: 1e-5, rtol: 2e-6) {
                NN.crossEntropy(logits: logits, targets: targets, mask: mask)
            }
            try assertGradientsMatchFallback([logits], "cross-entropy gradient \(rows)x\(v)", atol: 1e-6) {
                NN.crossEntropy(logits: $0[0], targets: targets, mask: mask)
            }
        }
        // Batched (b, t, v) logits, and bf16 logits converted first.
        let logits = tensor([2, 6, 33], seed: 9), targets = Tensor((0..<12).map { Int32($0 * 5 % 33) }, shape: [2, 6])
        assertMatchesFallback("cross-entropy 2x6x33") { NN.crossEntropy(logits: logits, targets: targets) }
        assertMatchesFallback("cross-entropy bf16", atol: 1e-2) { NN.crossEntropy(logits: logits.asType(.bfloat16), targets: targets) }
    }

    func testCrossEntropyOutsideTheVocabulary() throws {
        let logits = tensor([3, 10], seed: 1)
        // A target outside the vocabulary reads as NaN, unless the mask leaves that position out.
        let bad = Tensor([1, 10, 2] as [Int32])
        XCTAssertTrue(try NN.crossEntropy(logits: logits, targets: bad).item(Float.self).isNaN)
        let kept = try NN.crossEntropy(logits: logits, targets: bad, mask: Tensor([1, 0, 1] as [Float])).item(Float.self)
        let twoRows = try NN.crossEntropy(logits: concatenated([logits[0].expandedDims(axis: 0), logits[2].expandedDims(axis: 0)], axis: 0),
                                          targets: Tensor([1, 2] as [Int32])).item(Float.self)
        XCTAssertEqual(kept, twoRows, accuracy: 1e-6)
        XCTAssertThrowsError(try NN.crossEntropy(logits: logits, targets: Tensor([1, 2] as [Int32])).eval())
    }

    func testCrossEntropyGradientUsesTheFastKernel() throws {
        defer { Kernels.profiling = false; Kernels.resetProfile() }
        Kernels.profiling = true
        Kernels.resetProfile()
        let (values, grads) = try Autograd.valueAndGrad([tensor([4, 50], seed: 2)]) {
            [NN.crossEntropy(logits: $0[0], targets: Tensor([0, 1, 2, 3] as [Int32]))]
        }
        try Tensor.eval(values + grads)
        for name in ["FastCrossEntropy", "FastCrossEntropyGrad"] {
            let line = Kernels.profileReport().split(separator: "\n").first { $0.split(separator: " ").first.map(String.init) == name }
            XCTAssertTrue(line?.hasSuffix(" 1 calls") ?? false, "\(name) in\n\(Kernels.profileReport())")
        }
    }
}
