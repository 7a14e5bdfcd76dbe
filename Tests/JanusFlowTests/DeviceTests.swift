import Foundation
import JanusFlowImageIO
import MLXEngine
import XCTest

/// `--device` and `Device`: the CPU build says plainly that it has no GPU; asking for one is an error, not a crash.
final class DeviceTests: XCTestCase {
    let noGPU = "this build uses MLX's CPU backend (mlx-cpu), which has no GPU"

    func testLibraryDevice() throws {
        XCTAssertEqual(Device.current, .cpu)
        guard !Device.gpuAvailable else {
            // A GPU machine with the CUDA build: the GPU can be chosen, and the fast CPU kernels go off with it.
            try Device.use(.gpu)
            XCTAssertEqual(Device.current, .gpu)
            XCTAssertFalse(Kernels.enabled)
            try Device.use(.cpu)
            XCTAssertTrue(Kernels.enabled)
            return
        }
        XCTAssertEqual(Device.preferred, .cpu)
        XCTAssertNil(Device.gpuName)
        XCTAssertThrowsError(try Device.use(.gpu)) { error in
            XCTAssertEqual("\(error)", Device.isCUDABuild ? "MLX's CUDA build found no usable NVIDIA GPU on this machine" : noGPU)
        }
        XCTAssertEqual(Device.current, .cpu)
        XCTAssertTrue(Kernels.enabled)
    }

    func testCommandLine() throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("device-\(UUID().uuidString).png")
        defer { try? FileManager.default.removeItem(at: image) }
        try RGBImage(width: 20, height: 20, fill: (10, 20, 200)).writePNG(to: image)
        let model = tinyFixture.appendingPathComponent("model").path
        let understand = ["understand", "--model", model, "--dtype", "float32", "--image", image.path, "--max-tokens", "3", "what?"]
        let bad = try runCLI(understand + ["--device", "tpu"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.error.contains("--device must be cpu, gpu or auto (got 'tpu')"), bad.error)
        let cpu = try runCLI(understand + ["--device", "cpu"])
        XCTAssertEqual(cpu.status, 0, cpu.error)
        let auto = try runCLI(understand)
        XCTAssertEqual(auto.output, cpu.output)
        guard !Device.gpuAvailable else { return }
        for command in [understand, ["parity", tinyFixture.path], ["bench", "understand", "--config", model, "--repeats", "1"]] {
            let gpu = try runCLI(command + ["--device", "gpu"])
            XCTAssertEqual(gpu.status, 64, "\(command[0]): \(gpu.error)")  // a usage error, not a crash
            XCTAssertTrue(gpu.error.contains("--device gpu: \(noGPU); build with `make setup BACKEND=cuda` on a machine with an NVIDIA GPU, or use --device cpu"),
                          "\(command[0]): \(gpu.error)")
            XCTAssertFalse(gpu.output.contains("passed"), gpu.output)
        }
    }
}
