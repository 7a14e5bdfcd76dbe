import MLXEngine
import XCTest

/// Winograd and banded im2col + sgemm convolution and the fused GroupNorm against MLX's own ops (kernels off).
final class ConvKernelTests: KernelTestCase {
    func testConvolutionMatchesMLX() throws {
        // (batch, h, w, cin, cout, kernel, stride, padding)
        let cases: [(Int, Int, Int, Int, Int, Int, Int, Int)] = [
            (1, 9, 11, 5, 7, 3, 1, 1),     // odd sizes, channels not a multiple of 8
            (2, 16, 16, 32, 24, 3, 1, 1),  // batch
            (1, 12, 10, 16, 8, 1, 1, 0),   // 1x1: one sgemm
            (2, 13, 13, 6, 10, 3, 2, 0),   // stride 2, no padding (the VAE encoder's downsampling)
            (1, 8, 8, 4, 9, 2, 2, 0),      // patchify
            (1, 7, 9, 3, 5, 5, 1, 2),      // 5x5
            (1, 150, 150, 24, 16, 3, 1, 1),  // two bands of patches
            (1, 6, 6, 8, 8, 3, 1, 0),      // valid
            // Winograd F(2x2, 3x3) (3x3, stride 1, padding 1, 32+ channels): even and odd sizes, channel tails,
            // batch, several bands of tiles.
            (1, 40, 40, 64, 64, 3, 1, 1),
            (1, 9, 11, 37, 45, 3, 1, 1),
            (2, 7, 5, 32, 40, 3, 1, 1),
            (1, 1, 1, 32, 32, 3, 1, 1),
            (1, 200, 200, 64, 64, 3, 1, 1),
        ]
        // Every case both ways: Winograd from the smallest image up where it applies, and im2col + sgemm only.
        let defaultStart = Kernels.winogradMinimumPixels
        defer { Kernels.winogradMinimumPixels = defaultStart }
        for start in [0, Int.max] {
            Kernels.winogradMinimumPixels = start
            for (b, h, w, cin, cout, k, stride, pad) in cases {
                let seed = UInt64(h * 100 + cin * 10 + k)
                let x = tensor([b, h, w, cin], seed: seed), weight = tensor([cout, k, k, cin], seed: seed + 1)
                assertMatchesFallback("conv b\(b) \(h)x\(w)x\(cin)->\(cout) k\(k) s\(stride) p\(pad), Winograd from \(start) pixels",
                                      atol: 2e-5, rtol: 1e-4) {
                    NN.conv2d(x, weight: weight, stride: (stride, stride), padding: (pad, pad))
                }
            }
        }
        // Cases the kernel leaves to MLX still work: groups, dilation.
        let x = tensor([1, 8, 8, 8], seed: 3)
        assertMatchesFallback("grouped conv") { NN.conv2d(x, weight: tensor([8, 3, 3, 4], seed: 4), padding: (1, 1), groups: 2) }
        assertMatchesFallback("dilated conv") { NN.conv2d(x, weight: tensor([4, 3, 3, 8], seed: 5), padding: (2, 2), dilation: (2, 2)) }
    }

    func testBFloat16WeightsOnEveryCPUPath() throws {
        // bf16 weights on float32 input: the float32 convolution of the widened weights on paths without bf16
        // products (same arithmetic, same tolerance as above); on avx512_bf16 / amx the input rounded to bf16 for
        // im2col and 1x1 layers (then as close as float32), and for Winograd the transformed input and weights rounded,
        // so the whole output is held to bf16's relative error instead.
        // (batch, h, w, cin, cout, kernel, stride, padding, Winograd)
        let cases: [(Int, Int, Int, Int, Int, Int, Int, Int, Bool)] = [
            (1, 9, 11, 5, 7, 3, 1, 1, false), (2, 13, 13, 6, 40, 3, 2, 0, false), (1, 12, 10, 48, 33, 1, 1, 0, false),
            (1, 150, 150, 24, 16, 3, 1, 1, false),
            (1, 40, 40, 64, 64, 3, 1, 1, true), (1, 9, 11, 37, 45, 3, 1, 1, true), (2, 7, 5, 32, 40, 3, 1, 1, true),
            (1, 30, 30, 128, 96, 3, 1, 1, true), (1, 2, 2, 2048, 32, 3, 1, 1, true),
        ]
        let defaultStart = Kernels.winogradMinimumPixels
        defer { Kernels.winogradMinimumPixels = defaultStart }
        try forEachCPUPath { path in
            let rounds = Kernels.bf16RoundsActivations
            for (b, h, w, cin, cout, k, stride, pad, winograd) in cases {
                Kernels.winogradMinimumPixels = winograd ? 0 : Int.max
                let x = tensor([b, h, w, cin], seed: UInt64(h + cin)), weight = tensor([cout, k, k, cin], seed: UInt64(cout + k)).asType(.bfloat16)
                let name = "bf16 conv \(b)x\(h)x\(w)x\(cin)->\(cout) k\(k) s\(stride)\(winograd ? " Winograd" : "") on \(path.rawValue)"
                let input = rounds && !winograd ? x.asType(.bfloat16).asType(.float32) : x
                Kernels.enabled = false
                let expected = try NN.conv2d(input, weight: weight.asType(.float32), stride: (stride, stride), padding: (pad, pad)).values(Float.self)
                Kernels.enabled = true
                let fast = NN.conv2d(x, weight: weight, stride: (stride, stride), padding: (pad, pad))
                if !rounds || !winograd {
                    assertClose(fast, expected, atol: 2e-5, rtol: 1e-4, name)
                    continue
                }
                let got = try fast.values(Float.self)
                XCTAssertEqual(got.count, expected.count, name)
                let error = zip(got, expected).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
                let norm = expected.reduce(0.0) { $0 + Double($1 * $1) }
                // bf16 keeps 8 bits: a relative error of a few 2^-9 (one wrong value in the layout would be ~1).
                XCTAssertLessThan((error / norm).squareRoot(), 1e-2, name)
                XCTAssertGreaterThan(norm, 0, name)
            }
        }
    }

    func testGroupNormMatchesMLX() throws {
        for (b, h, w, c, groups) in [(1, 5, 7, 8, 2), (2, 9, 9, 24, 8), (1, 3, 3, 12, 12), (1, 32, 32, 64, 32), (2, 4, 4, 6, 1)] {
            // An offset mean tests the centred variance.
            let x = tensor([b, h, w, c], seed: UInt64(c + groups), scale: 3) + 5
            let weight = tensor([c], seed: 1), bias = tensor([c], seed: 2)
            assertMatchesFallback("group norm \(b)x\(h)x\(w)x\(c) / \(groups)", atol: 2e-5, rtol: 1e-4) {
                NN.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: 1e-6)
            }
            assertMatchesFallback("group norm + silu \(b)x\(h)x\(w)x\(c) / \(groups)", atol: 2e-5, rtol: 1e-4) {
                NN.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: 1e-6, silu: true)
            }
        }
        // Against the definition on a case small enough to write out: one group of four values.
        let x = Tensor([1, 2, 3, 6] as [Float], shape: [1, 2, 2, 1])
        let y = try NN.groupNorm(x, groups: 1, weight: nil, bias: nil, eps: 0).values(Float.self)
        let sd = Float(3.5).squareRoot()  // mean 3, variance (4 + 1 + 0 + 9) / 4
        for (got, want) in zip(y, [-2 / sd, -1 / sd, 0, 3 / sd]) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        XCTAssertThrowsError(try NN.groupNorm(tensor([1, 2, 2, 6], seed: 1), groups: 4, weight: nil, bias: nil, eps: 1e-5).eval())
    }

    func testGradientsMatchMLX() throws {
        // Gradients through the fast convolution (training the VAE and the UViT): (batch, h, w, cin, cout, kernel,
        // stride, padding), including strides whose windows leave a remainder.
        let cases: [(Int, Int, Int, Int, Int, Int, Int, Int)] = [
            (1, 6, 6, 4, 5, 3, 1, 1), (2, 9, 7, 3, 6, 3, 1, 1), (2, 9, 9, 4, 6, 3, 2, 0), (1, 10, 10, 4, 3, 3, 2, 0),
            (1, 8, 8, 4, 6, 2, 2, 0), (2, 5, 5, 6, 4, 1, 1, 0), (1, 7, 9, 3, 5, 5, 1, 2), (1, 6, 6, 3, 4, 3, 1, 0),
            (1, 12, 12, 40, 36, 3, 1, 1), (1, 7, 8, 3, 4, 3, 2, 1),
        ]
        let defaultStart = Kernels.winogradMinimumPixels
        defer { Kernels.winogradMinimumPixels = defaultStart }
        Kernels.winogradMinimumPixels = 0  // the input gradient of 3x3 stride-1 layers with 32+ channels by Winograd
        for (b, h, w, cin, cout, k, stride, pad) in cases {
            let x = tensor([b, h, w, cin], seed: UInt64(h + cin)), weight = tensor([cout, k, k, cin], seed: UInt64(k + cout))
            try assertGradientsMatchFallback([x, weight], "conv b\(b) \(h)x\(w)x\(cin)->\(cout) k\(k) s\(stride) p\(pad)", atol: 5e-5) {
                NN.conv2d($0[0], weight: $0[1], stride: (stride, stride), padding: (pad, pad))
            }
        }
        // Several bands of patches (the weight gradient accumulates over them, col2im scatters each).
        for stride in [1, 2] {
            let x = tensor([2, 70, 70, 24], seed: 5), weight = tensor([16, 3, 3, 24], seed: 6)
            try assertGradientsMatchFallback([x, weight], "conv 2x70x70x24->16 s\(stride), several bands", atol: 2e-4, rtol: 2e-4) {
                NN.conv2d($0[0], weight: $0[1], stride: (stride, stride), padding: (1, 1))
            }
        }
        // Only one of the two asked for: the weight (a first layer, its input a constant) or the input.
        let image = tensor([2, 9, 9, 3], seed: 7), kernel = tensor([8, 3, 3, 3], seed: 8)
        try assertGradientsMatchFallback([kernel], "conv, weight only") { NN.conv2d(image, weight: $0[0], padding: (1, 1)) }
        try assertGradientsMatchFallback([image], "conv, input only") { NN.conv2d($0[0], weight: kernel, stride: (2, 2), padding: (1, 1)) }
    }

    func testGroupNormGradientsMatchMLX() throws {
        // (batch, h, w, channels, groups): channel tails, one channel per group, one group, offset means.
        for (b, h, w, c, groups) in [(1, 6, 6, 4, 2), (2, 9, 7, 24, 8), (1, 5, 5, 12, 12), (2, 4, 4, 6, 1), (1, 40, 40, 32, 8)] {
            let x = tensor([b, h, w, c], seed: UInt64(c + groups), scale: 3) + 2
            let weight = tensor([c], seed: 3), bias = tensor([c], seed: 4)
            for silu in [false, true] {
                try assertGradientsMatchFallback([x, weight, bias], "group norm \(b)x\(h)x\(w)x\(c) / \(groups) silu \(silu)", atol: 1e-4) {
                    NN.groupNorm($0[0], groups: groups, weight: $0[1], bias: $0[2], eps: 1e-5, silu: silu)
                }
            }
            try assertGradientsMatchFallback([x], "group norm without affine \(c) / \(groups)", atol: 1e-4) {
                NN.groupNorm($0[0], groups: groups, weight: nil, bias: nil, eps: 1e-5, silu: true)
            }
        }
    }

    func testConvolutionAndGroupNormGradientsUseTheFastKernels() throws {
        defer { Kernels.profiling = false; Kernels.resetProfile() }
        Kernels.profiling = true
        Kernels.resetProfile()
        let x = tensor([2, 8, 8, 16], seed: 1), weight = tensor([16, 3, 3, 16], seed: 2), scale = tensor([16], seed: 3)
        let grads = try Autograd.valueAndGrad([x, weight, scale]) {
            [NN.conv2d(NN.groupNorm($0[0], groups: 4, weight: $0[2], bias: nil, eps: 1e-5, silu: true), weight: $0[1],
                       stride: (2, 2), padding: (1, 1)).square().sum()]
        }.grads
        try Tensor.eval(grads)
        let report = Kernels.profileReport()
        for name in ["FastConv2dGrad", "FastGroupNormGrad"] {
            let line = report.split(separator: "\n").first { $0.split(separator: " ").first.map(String.init) == name }
            XCTAssertTrue(line?.hasSuffix(" 1 calls") ?? false, "\(name) in\n\(report)")
        }
    }
}

/// Which convolutions take Winograd: 3x3 stride-1 layers with 32-127 channels on images of at least the set size,
/// with 128+ channels at any size.
final class WinogradSelectionTests: KernelTestCase {
    func testWinogradStartsAtTheSetImageSize() throws {
        let defaultStart = Kernels.winogradMinimumPixels
        defer { Kernels.winogradMinimumPixels = defaultStart }
        XCTAssertEqual(defaultStart, 4096)
        let weight = tensor([32, 3, 3, 32], seed: 1)
        // A Winograd result differs from im2col's in the last bits; the same bits mean the same path.
        func result(_ side: Int, start: Int) throws -> [Float] {
            Kernels.winogradMinimumPixels = start
            return try NN.conv2d(tensor([1, side, side, 32], seed: 2), weight: weight, padding: (1, 1)).values(Float.self)
        }
        XCTAssertNotEqual(try result(10, start: 0), try result(10, start: Int.max), "Winograd and im2col differ in rounding")
        XCTAssertEqual(try result(10, start: 100), try result(10, start: 0), "10x10 = 100 pixels takes Winograd from 100")
        XCTAssertEqual(try result(9, start: 100), try result(9, start: Int.max), "9x9 = 81 pixels stays on im2col")
        // 128+ channels in and out: Winograd at any size.
        let wide = tensor([128, 3, 3, 128], seed: 3), x = tensor([1, 5, 5, 128], seed: 4)
        Kernels.winogradMinimumPixels = Int.max
        let kept = try NN.conv2d(x, weight: wide, padding: (1, 1)).values(Float.self)
        Kernels.winogradMinimumPixels = 0
        XCTAssertEqual(kept, try NN.conv2d(x, weight: wide, padding: (1, 1)).values(Float.self), "128 channels take Winograd at 5x5")
    }
}
