import MLXEngine
import XCTest

/// The shim's fast kernels against the same computation in plain MLX ops.
final class KernelTests: XCTestCase {
    override func tearDown() { Kernels.enabled = true }

    func reference(_ body: () -> Tensor) -> [Float] {
        Kernels.enabled = false
        defer { Kernels.enabled = true }
        return values(body())
    }

    func testFastLinearMatchesReference() throws {
        for rows in [1, 3, 17] {
            for k in [5, 64, 77] {
                for dtype in [DType.float32, .bfloat16] {
                    let x = tensor([rows, k], seed: UInt64(rows * 100 + k))
                    let w = tensor([37, k], seed: 9).asType(dtype)
                    let expected = reference { NN.linear(x, weight: w) }
                    assertClose(NN.linear(x, weight: w), expected, atol: 1e-5, rtol: 1e-5, "rows \(rows) k \(k) \(dtype)")
                    // Batched leading axes keep their shape.
                    XCTAssertEqual(NN.linear(x.reshaped([1, rows, k]), weight: w).shape, [1, rows, 37])
                }
            }
        }
        // Large enough for the blocked bf16 -> sgemm path.
        let x = tensor([40, 300], seed: 1), w = tensor([700, 300], seed: 2).asType(.bfloat16)
        let expected = reference { NN.linear(x, weight: w) }
        assertClose(NN.linear(x, weight: w), expected, atol: 1e-4, rtol: 1e-4, "blocked bf16")
    }

    func testFastLinearGradients() throws {
        let x = tensor([3, 20], seed: 4), w = tensor([6, 20], seed: 5)
        let (_, fast) = try Autograd.valueAndGrad([x, w]) { [(NN.linear($0[0], weight: $0[1]) * tensor([3, 6], seed: 6)).sum()] }
        Kernels.enabled = false
        let (_, plain) = try Autograd.valueAndGrad([x, w]) { [(NN.linear($0[0], weight: $0[1]) * tensor([3, 6], seed: 6)).sum()] }
        Kernels.enabled = true
        for i in 0..<2 { assertClose(fast[i], values(plain[i]), atol: 1e-5, rtol: 1e-5, "grad \(i)") }
    }
}

final class DepthwiseKernelTests: XCTestCase {
    override func tearDown() { Kernels.enabled = true }

    func testDepthwiseMatchesGroupedConvolution() throws {
        for (b, h, w, c, k, p) in [(1, 9, 9, 6, 7, 3), (2, 5, 7, 13, 3, 1), (1, 24, 24, 16, 7, 3), (1, 6, 6, 8, 3, 0)] {
            let x = tensor([b, h, w, c], seed: UInt64(h * c)), wt = tensor([c, k, k], seed: UInt64(k + c))
            Kernels.enabled = false
            let expected = values(NN.depthwiseConv2d(x, weight: wt, padding: (p, p)))
            Kernels.enabled = true
            let fast = NN.depthwiseConv2d(x, weight: wt, padding: (p, p))
            XCTAssertEqual(fast.shape, [b, h + 2 * p - k + 1, w + 2 * p - k + 1, c])
            assertClose(fast, expected, atol: 1e-5, rtol: 1e-5, "\(b)x\(h)x\(w)x\(c) k\(k) p\(p)")
        }
    }

    func testDepthwiseGradients() throws {
        let x = tensor([1, 6, 5, 10], seed: 1), w = tensor([10, 3, 3], seed: 2), r = tensor([1, 6, 5, 10], seed: 3)
        let (_, fast) = try Autograd.valueAndGrad([x, w]) { [(NN.depthwiseConv2d($0[0], weight: $0[1], padding: (1, 1)) * r).sum()] }
        Kernels.enabled = false
        let (_, plain) = try Autograd.valueAndGrad([x, w]) { [(NN.depthwiseConv2d($0[0], weight: $0[1], padding: (1, 1)) * r).sum()] }
        Kernels.enabled = true
        for i in 0..<2 { assertClose(fast[i], values(plain[i]), atol: 1e-4, rtol: 1e-4, "grad \(i)") }
    }
}
