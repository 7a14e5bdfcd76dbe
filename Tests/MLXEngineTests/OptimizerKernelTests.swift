import MLXEngine
import XCTest

/// The one-op optimizer steps (global norm, AdamW, EMA) against the op-by-op MLX versions they replace.
final class OptimizerKernelTests: KernelTestCase {
    /// Parameters of several sizes (one over a work slice, one empty-ish scalar-like) and gradients that include a
    /// column-major one, as MLX leaves a weight's gradient from a transposed matmul.
    func problem(seed: UInt64) -> (params: [String: Tensor], grads: [String: Tensor]) {
        let shapes: [String: [Int]] = ["a.weight": [37, 53], "b.bias": [7], "c.weight": [130, 140], "d.scale": [1]]
        var params: [String: Tensor] = [:], grads: [String: Tensor] = [:]
        for (i, (name, shape)) in shapes.sorted(by: { $0.key < $1.key }).enumerated() {
            params[name] = tensor(shape, seed: seed + UInt64(i))
            grads[name] = tensor(shape, seed: seed + 100 + UInt64(i), scale: 3)
        }
        // (130, 140) stored transposed: the transpose of a row-major (140, 130), evaluated, not copied.
        let stored = tensor([140, 130], seed: seed + 200, scale: 3)
        grads["c.weight"] = stored.transposed()
        return (params, grads)
    }

    func assertBitIdentical(_ a: [Float], _ b: [Float], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, "\(message): sizes", file: file, line: line)
        let differing = zip(a, b).filter { $0.bitPattern != $1.bitPattern }
        XCTAssertTrue(differing.isEmpty, "\(message): \(differing.count) of \(a.count) values differ, e.g. \(differing.prefix(3))",
                      file: file, line: line)
    }

    func runAdamW(fused: Bool, steps: Int, weightDecay: Double, scaled: Bool) throws -> [String: [Float]] {
        Kernels.enabled = fused
        Kernels.profiling = true
        Kernels.resetProfile()
        defer {
            Kernels.enabled = true
            Kernels.profiling = false
        }
        var (params, _) = problem(seed: 1)
        let opt = AdamW(schedule: WarmupConstantSchedule(peak: 3e-2, warmupSteps: 2), beta1: 0.9, beta2: 0.95, eps: 1e-8,
                        weightDecay: weightDecay)
        for s in 0..<steps {
            let grads = problem(seed: 10 + UInt64(s)).grads
            try Tensor.eval(Array(grads.values))
            // A fixed clipping factor: the two norms round differently (double against float32 sums).
            let scale = scaled ? Tensor(Float(0.37) + Float(s) * 0.1) : nil
            params = opt.update(parameters: params, gradients: grads, gradientScale: scale)
            try Tensor.eval(Array(params.values) + Array(opt.stateTensors().values))
        }
        // The fused run must have taken the kernel (else the comparison below compares the fallback with itself).
        XCTAssertEqual(Kernels.profileReport().contains("FusedAdamW"), fused, Kernels.profileReport())
        var out = params.mapValues { values($0) }
        for (k, t) in opt.stateTensors() { out[k] = values(t) }
        return out
    }

    func testFusedAdamWIsBitIdenticalToTheOpByOpUpdate() throws {
        for (decay, scaled) in [(0.0, false), (0.1, true), (0.01, false)] {
            let plain = try runAdamW(fused: false, steps: 4, weightDecay: decay, scaled: scaled)
            let fast = try runAdamW(fused: true, steps: 4, weightDecay: decay, scaled: scaled)
            XCTAssertEqual(Set(fast.keys), Set(plain.keys))
            XCTAssertEqual(plain.count, 12, "4 parameters and their two moments")
            for (k, v) in plain {
                assertBitIdentical(fast[k]!, v, "\(k) (weight decay \(decay), clipped \(scaled))")
            }
        }
    }

    func testFusedStepsAreTheKernelsAndMixedDtypesFallBack() throws {
        let (params, grads) = problem(seed: 3)
        Kernels.profiling = true
        Kernels.resetProfile()
        defer { Kernels.profiling = false }
        let opt = AdamW(learningRate: 1e-3)
        let updated = opt.update(parameters: params, gradients: grads)
        let ema = EMA(decay: 0.9, parameters: params)
        ema.update(with: updated)
        try Tensor.eval(Array(updated.values) + Array(ema.shadow.values) + [globalNorm(grads)])
        let report = Kernels.profileReport()
        for kernel in ["FusedAdamW", "FusedEMA", "FusedGlobalNorm"] { XCTAssertTrue(report.contains(kernel), "\(kernel) not run:\n\(report)") }

        // A bfloat16 parameter: the op-by-op update, the same as with the kernels off.
        var mixed = params
        mixed["b.bias"] = params["b.bias"]!.asType(.bfloat16)
        let fast = AdamW(learningRate: 1e-3).update(parameters: mixed, gradients: grads)
        Kernels.enabled = false
        let plain = AdamW(learningRate: 1e-3).update(parameters: mixed, gradients: grads)
        Kernels.enabled = true
        XCTAssertEqual(fast["b.bias"]!.dtype, .bfloat16)
        for k in plain.keys { assertBitIdentical(values(fast[k]!.asType(.float32)), values(plain[k]!.asType(.float32)), k) }
    }

    func testFusedEMAIsBitIdenticalAndSeedsNewParameters() throws {
        func run(fused: Bool) throws -> [String: [Float]] {
            Kernels.enabled = fused
            Kernels.profiling = true
            Kernels.resetProfile()
            defer {
                Kernels.enabled = true
                Kernels.profiling = false
            }
            var (params, _) = problem(seed: 5)
            let late = params.removeValue(forKey: "d.scale")!
            let ema = EMA(decay: 0.99, parameters: params)
            for s in 0..<3 {
                var next = problem(seed: 50 + UInt64(s)).params
                if s == 0 { next.removeValue(forKey: "d.scale") }
                if s == 1 { XCTAssertNil(ema.shadow["d.scale"]) }
                ema.update(with: next)
                try Tensor.eval(Array(ema.shadow.values))
            }
            XCTAssertNotEqual(values(ema.shadow["d.scale"]!), values(late))
            XCTAssertEqual(Kernels.profileReport().contains("FusedEMA"), fused, Kernels.profileReport())
            return ema.shadow.mapValues { values($0) }
        }
        let plain = try run(fused: false), fast = try run(fused: true)
        XCTAssertEqual(plain.count, 4)
        for (k, v) in plain { assertBitIdentical(fast[k]!, v, k) }
        // A parameter first seen at step 1 starts from its value then: one averaging step later it is
        // 0.99 * (its step-1 value) + 0.01 * (its step-2 value).
        let first = values(problem(seed: 51).params["d.scale"]!)[0], second = values(problem(seed: 52).params["d.scale"]!)[0]
        XCTAssertEqual(fast["d.scale"]![0], Float(0.99) * first + Float(0.01) * second, accuracy: 1e-6)
    }

    func testGlobalNormAndClippingFactor() throws {
        let (_, grads) = problem(seed: 7)
        try Tensor.eval(Array(grads.values))
        var expected = 0.0
        for g in grads.values { expected += values(g).reduce(0.0) { $0 + Double($1) * Double($1) } }
        expected = expected.squareRoot()
        let fast = try globalNorm(grads).item(Float.self)
        XCTAssertEqual(Double(fast), expected, accuracy: expected * 1e-7)
        Kernels.enabled = false
        let plain = try globalNorm(grads).item(Float.self)
        Kernels.enabled = true
        XCTAssertEqual(Double(plain), expected, accuracy: expected * 1e-5)
        // Same value run after run (the sum is grouped by fixed slices, not by thread).
        for _ in 0..<3 { XCTAssertEqual(try globalNorm(grads).item(Float.self), fast) }
        // Unevaluated and non-float32 inputs.
        let lazy = ["x": Tensor([3, 4] as [Float]) * 2, "y": Tensor([0] as [Float]).asType(.bfloat16)]
        XCTAssertEqual(try globalNorm(lazy).item(Float.self), 10, accuracy: 1e-6)
        let (scale, norm) = gradientClipping(["a": Tensor([3, 4] as [Float]), "b": Tensor([12] as [Float])], maxNorm: 1.3)
        XCTAssertEqual(try norm.item(Float.self), 13, accuracy: 1e-5)
        XCTAssertEqual(try scale.item(Float.self), 0.1, accuracy: 1e-7)
        XCTAssertEqual(try gradientClipping(["a": Tensor([0.3, 0.4] as [Float])], maxNorm: 1).scale.item(Float.self), 1)
    }
}
