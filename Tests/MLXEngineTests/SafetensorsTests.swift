import Foundation
import MLXEngine
import XCTest

final class SafetensorsTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func testRoundTripEveryDType() throws {
        var tensors: [String: Tensor] = [:]
        let base = Tensor([0, 1, 2, 3, 4, 5] as [Float], shape: [2, 3])
        for dtype in DType.allCases { tensors["t_\(dtype)"] = (dtype == .bool ? base .> 2 : base.asType(dtype)) }
        let url = dir.appendingPathComponent("all.safetensors")
        try Safetensors.save(tensors, metadata: ["format": "pt"], to: url)
        let (loaded, metadata) = try Safetensors.load(url)
        XCTAssertEqual(metadata["format"], "pt")
        XCTAssertEqual(Set(loaded.keys), Set(tensors.keys))
        for (name, t) in tensors {
            XCTAssertEqual(loaded[name]!.dtype, t.dtype, name)
            XCTAssertEqual(loaded[name]!.shape, [2, 3], name)
            XCTAssertEqual(try loaded[name]!.rawBytes(), try t.rawBytes(), name)
        }
        let header = try Safetensors.header(of: url)
        XCTAssertEqual(header.entries["t_bfloat16"]?.dtype, .bfloat16)
        XCTAssertEqual(header.entries["t_float16"]?.byteRange.count, 12)
        // No temporary files are left beside the result.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["all.safetensors"])
    }

    /// A file written by hand in the published format (as Python's safetensors writes it) reads correctly.
    func testReadsHandWrittenFile() throws {
        let header = #"{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"i":{"dtype":"I64","shape":[1],"data_offsets":[4,12]}}"#
        var data = Data()
        var length = UInt64(header.utf8.count).littleEndian
        data.append(Data(bytes: &length, count: 8))
        data.append(header.data(using: .utf8)!)
        data.append(contentsOf: [0x80, 0x3F, 0x40, 0xC0])  // bf16 1.0, -3.0
        data.append(contentsOf: [7, 0, 0, 0, 0, 0, 0, 0])  // int64 7
        let url = dir.appendingPathComponent("hand.safetensors")
        try data.write(to: url)
        let (t, _) = try Safetensors.load(url)
        XCTAssertEqual(try t["w"]!.values(Float.self), [1.0, -3.0])
        XCTAssertEqual(try t["i"]!.values(Int64.self), [7])
    }

    func testBadFilesGiveErrorsNamingFileAndTensor() throws {
        let url = dir.appendingPathComponent("good.safetensors")
        try Safetensors.save(["layer.weight": Tensor.ones([4, 4]), "layer.bias": Tensor.ones([4])], to: url)
        let bytes = try Data(contentsOf: url)

        let missing = dir.appendingPathComponent("missing.safetensors")
        XCTAssertThrowsError(try Safetensors.load(missing)) {
            XCTAssertEqual("\($0)", "\(missing.path): file not found or not readable")
        }

        let truncated = dir.appendingPathComponent("truncated.safetensors")
        try bytes.prefix(bytes.count - 10).write(to: truncated)
        XCTAssertThrowsError(try Safetensors.load(truncated)) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(truncated.path): truncated file: tensor '"), "\(error)")
        }

        let tiny = dir.appendingPathComponent("tiny.safetensors")
        try Data([1, 2, 3]).write(to: tiny)
        XCTAssertThrowsError(try Safetensors.load(tiny)) {
            XCTAssertEqual("\($0)", "\(tiny.path): truncated file (3 bytes, no header)")
        }

        let corrupt = dir.appendingPathComponent("corrupt.safetensors")
        var broken = bytes
        broken[8] = UInt8(ascii: "X")  // the JSON header's opening brace
        try broken.write(to: corrupt)
        XCTAssertThrowsError(try Safetensors.load(corrupt)) {
            XCTAssertEqual("\($0)", "\(corrupt.path): header is not a JSON object")
        }

        let hugeHeader = dir.appendingPathComponent("huge.safetensors")
        var huge = bytes
        huge.replaceSubrange(0..<8, with: [0xFF, 0xFF, 0, 0, 0, 0, 0, 0])
        try huge.write(to: hugeHeader)
        XCTAssertThrowsError(try Safetensors.load(hugeHeader)) { error in
            XCTAssertTrue("\(error)".contains("truncated or corrupt header"), "\(error)")
        }
    }

    /// Headers the fuzzer (Fuzz/Targets/Safetensors) is aimed at: sizes that overflow, numbers that are not
    /// integers, bytes given in memory.
    func testHostileHeadersAreRefusedByName() throws {
        func file(_ header: String, data: Int = 0) -> Data {
            var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Data($0) }
            bytes.append(Data(header.utf8))
            bytes.append(Data(count: data))
            return bytes
        }
        let overflow = file(#"{"t": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 4]}}"#, data: 4)
        XCTAssertThrowsError(try Safetensors.load(from: overflow, name: "big.safetensors")) {
            XCTAssertEqual("\($0)", "big.safetensors: tensor 't': 4 bytes for shape [4294967296, 4294967296, 16] F32 (expected more than \(Int.max))")
        }
        let fractional = file(#"{"t": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}"#, data: 4)
        XCTAssertThrowsError(try Safetensors.load(from: fractional, name: "f.safetensors")) {
            XCTAssertEqual("\($0)", "f.safetensors: tensor 't': missing or invalid shape")
        }
        let past = file(#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [1e30, 1e30]}}"#, data: 4)
        XCTAssertThrowsError(try Safetensors.load(from: past, name: "p.safetensors")) {
            XCTAssertEqual("\($0)", "p.safetensors: tensor 't': missing or invalid data_offsets")
        }
        let good = file(#"{"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"k": "v"}}"#, data: 8)
        let (tensors, metadata) = try Safetensors.load(from: good, name: "g.safetensors")
        XCTAssertEqual(try tensors["t"]?.values(Float.self), [0, 0])
        XCTAssertEqual(metadata, ["k": "v"])
    }

    func testWrongShapeParameterNamesTheTensor() throws {
        let url = dir.appendingPathComponent("linear.safetensors")
        try Safetensors.save(["weight": Tensor.ones([3, 5]), "bias": Tensor.ones([3])], to: url)
        let layer = Linear(4, 3)
        XCTAssertThrowsError(try layer.load(weights: Safetensors.load(url).tensors, source: url.path)) {
            XCTAssertEqual("\($0)", "\(url.path): weights do not match the model: wrong shape or dtype for 1 tensor(s): weight: expected [3, 4], found [3, 5]")
        }
    }
}

final class BLASGuardTests: XCTestCase {
    /// The wheel bundles a slow reference BLAS; the link order must make OpenBLAS supply cblas_sgemm.
    func testSgemmComesFromOpenBLAS() {
        XCTAssertTrue(BLASInfo.processSgemmLibrary.contains("openblas"), "process cblas_sgemm: \(BLASInfo.processSgemmLibrary)")
        XCTAssertTrue(BLASInfo.mlxSgemmLibrary.contains("openblas"), "libmlx's cblas_sgemm: \(BLASInfo.mlxSgemmLibrary)")
    }
}
