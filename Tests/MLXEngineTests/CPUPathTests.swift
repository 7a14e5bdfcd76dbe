import MLXEngine
import XCTest

/// The instruction-set paths of the products with bfloat16 weights: every path this CPU supports against MLX's
/// float32 product of what that path multiplies (x itself on avx2 / avx512, x rounded to bfloat16 on avx512_bf16 /
/// amx), the choice of path, and the kernel each one names in the profile.
final class CPUPathTests: KernelTestCase {
    override func tearDown() {
        Kernels.profiling = false
        Kernels.resetProfile()
        Kernels.bf16Gemm = true
        super.tearDown()
    }

    /// The profile name of the many-rows bf16 product on each path with the shim's GEMM on.
    private func gemmKernelName(_ path: Kernels.CPUPath) -> String {
        switch path {
        case .avx2: return "FastLinear.bf16_gemm"
        case .avx512: return "FastLinear.bf16_gemm_avx512"
        case .avx512BF16: return "FastLinear.dpbf16_gemm"
        case .amx: return "FastLinear.amx_gemm"
        }
    }

    func testPathsAreOrderedAndOnlySupportedOnesCanBeSet() {
        XCTAssertEqual(Kernels.CPUPath.allCases, [.avx2, .avx512, .avx512BF16, .amx])
        XCTAssertLessThan(Kernels.CPUPath.avx512, .avx512BF16)
        XCTAssertEqual(Kernels.supportedCPUPaths.first, .avx2)
        XCTAssertEqual(Kernels.supportedCPUPaths.last, Kernels.bestCPUPath)
        XCTAssertLessThanOrEqual(Kernels.cpuPath, Kernels.bestCPUPath)
        let features = Kernels.cpuFeatures.split(separator: " ").map(String.init)
        XCTAssertTrue(features.contains("avx2") && features.contains("fma"), Kernels.cpuFeatures)
        // Each path needs the instruction sets the feature list names.
        XCTAssertEqual(Kernels.bestCPUPath >= .avx512, features.contains("avx512f") && features.contains("avx512bw/vl/dq"), Kernels.cpuFeatures)
        XCTAssertEqual(Kernels.bestCPUPath >= .avx512BF16, Kernels.bestCPUPath >= .avx512 && features.contains("avx512_bf16"), Kernels.cpuFeatures)
        XCTAssertEqual(Kernels.bestCPUPath == .amx, Kernels.bestCPUPath >= .avx512BF16 && features.contains("amx_bf16"), Kernels.cpuFeatures)
        for path in Kernels.CPUPath.allCases where path > Kernels.bestCPUPath {
            let before = Kernels.cpuPath
            XCTAssertFalse(Kernels.useCPUPath(path), "\(path) set on a CPU without it")
            XCTAssertEqual(Kernels.cpuPath, before, "a refused path changed the one in use")
        }
        forEachCPUPath { path in
            XCTAssertEqual(Kernels.cpuPath, path)
            Kernels.bf16Gemm = true
            XCTAssertEqual(Kernels.bf16RoundsActivations, path >= .avx512BF16, "\(path)")
            Kernels.bf16Gemm = false
            XCTAssertFalse(Kernels.bf16RoundsActivations, "\(path) rounds with the shim's GEMM off")
        }
    }

    func testProfileNamesEachPathsKernelOnlyWhileOn() throws {
        let x = tensor([100, 64], seed: 1), w = tensor([48, 64], seed: 2).asType(.bfloat16)
        try forEachCPUPath { path in
            // 100 rows take the many-rows path: the shim's bf16 GEMM of this path, or convert + sgemm in two parts.
            for (gemm, names) in [(true, ["FastLinear", gemmKernelName(path)]), (false, ["FastLinear", "FastLinear.sgemm", "FastLinear.bf16_to_f32"])] {
                Kernels.bf16Gemm = gemm
                Kernels.profiling = true
                Kernels.resetProfile()
                try NN.linear(x, weight: w).eval()
                try NN.linear(x, weight: w).eval()
                let report = Kernels.profileReport()
                for name in names {
                    let line = report.split(separator: "\n").first { $0.split(separator: " ").first == Substring(name) }
                    XCTAssertNotNil(line, "\(path): \(name) missing from:\n\(report)")
                    XCTAssertTrue(line?.hasSuffix(" 2 calls") ?? false, "\(path) \(name): \(line ?? "")")
                }
                let others = Set(Kernels.CPUPath.allCases.map(gemmKernelName)).subtracting(names)
                for other in others { XCTAssertFalse(report.contains(other + " "), "\(path) ran \(other):\n\(report)") }
            }
        }
        Kernels.profiling = false
        Kernels.resetProfile()
        try NN.linear(x, weight: w).eval()
        XCTAssertFalse(Kernels.profileReport().contains("FastLinear"), Kernels.profileReport())
    }

    /// The many-rows bf16 products at their edges on every path: rows off the 6-row (avx2), 12-row (avx512_bf16) and
    /// 32-row (amx) blocks and across the AVX2 kernel's row blocks (401 rows as 204 + 197, 1154 as 5 x 234 less 16);
    /// columns off the 16-column tiles and their pairs (5, 20, 33, 37) and across many column groups (1100, 4100);
    /// inner sizes off the 32-position tiles and 8-wide transposes, across chunks (1536 positions: 2000, 3100, 4100) and
    /// a 2048 multiple (the padded row stride); an x over 16 MB (1040 x 4100). Against MLX's float32 product, and
    /// against the convert + OpenBLAS path of the same rounding.
    func testBf16GemmMatchesReferenceOnEveryPath() throws {
        let shapes = [(65, 64, 16), (200, 1100, 37), (401, 515, 5), (97, 8, 300), (193, 1031, 129), (1154, 72, 33),
                      (481, 40, 20), (1040, 4100, 40), (40, 2000, 1100), (40, 64, 4100), (45, 2048, 96), (33, 3100, 70)]
        forEachCPUPath { path in
            for (m, k, n) in shapes {
                let x = tensor([m, k], seed: UInt64(m + k), scale: 0.5), w = tensor([n, k], seed: UInt64(n + 3), scale: 0.5).asType(.bfloat16)
                Kernels.bf16Gemm = true
                Kernels.profiling = true
                Kernels.resetProfile()
                assertLinearMatchesFallback(x, w, "bf16 GEMM \(m)x\(k) -> \(n)", atol: 1e-4)
                XCTAssertTrue(Kernels.profileReport().contains(gemmKernelName(path)), "\(path): the GEMM did not run for \(m)x\(k) -> \(n)")
                Kernels.profiling = false
                let blocked = values(NN.linear(x, weight: w))
                // The convert + sgemm path multiplies x as given: compare it on the same rounded input.
                let input = Kernels.bf16RoundsActivations ? x.asType(.bfloat16).asType(.float32) : x
                Kernels.bf16Gemm = false
                assertClose(NN.linear(input, weight: w), blocked, atol: 1e-4, rtol: 1e-4, "\(path) bf16 GEMM against OpenBLAS \(m)x\(k) -> \(n)")
            }
            // Batched input: the rows of every batch entry are one matrix.
            Kernels.bf16Gemm = true
            let xb = tensor([3, 70, 96], seed: 11), wb = tensor([50, 96], seed: 12).asType(.bfloat16)
            assertLinearMatchesFallback(xb, wb, "bf16 GEMM batched")
        }
    }

    /// A row's result does not depend on how many rows share the product (the rows kernel, the GEMM and the
    /// matrix-vector kernel round alike), so a prompt's logits do not change with the batch beside it.
    func testBf16ProductsDoNotDependOnTheRowCount() throws {
        let x = tensor([150, 300], seed: 21), w = tensor([90, 300], seed: 22).asType(.bfloat16)
        try forEachCPUPath { path in
            let all: [Float] = try NN.linear(x, weight: w).values()
            for rows in [1, 7, 40] {
                let part = NN.linear(x[0..<rows], weight: w)
                assertClose(part, Array(all[0..<(rows * 90)]), atol: 2e-5, rtol: 1e-5, "\(path): \(rows) rows against 150")
            }
        }
    }
}
