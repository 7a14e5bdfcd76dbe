import Foundation
import XCTest

/// The fuzz targets' ordinary builds replay the committed seeds and the inputs of every crash the fuzzer found and
/// we fixed (Fuzz/Regressions/NAME): a reader that crashes on one of them again fails here, without libFuzzer.
final class FuzzRegressionTests: XCTestCase {
    static let fuzzFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz")
    static let targets = ["Safetensors", "ModelConfig", "TokenizerJSON", "TokenizerText", "PNG", "JPEG", "Manifest",
                          "DemoSettings", "ServerBodies"]

    func testEveryTargetHasSeedsAndItsBinary() throws {
        let binaries = Bundle.module.bundleURL.deletingLastPathComponent()
        for name in Self.targets {
            let seeds = try FileManager.default.contentsOfDirectory(atPath: Self.fuzzFolder.appendingPathComponent("Corpus/\(name)").path)
            XCTAssertFalse(seeds.isEmpty, "\(name) has no seeds")
            XCTAssertTrue(FileManager.default.isExecutableFile(atPath: binaries.appendingPathComponent("Fuzz\(name)").path), "Fuzz\(name) was not built")
        }
        let listed = try FileManager.default.contentsOfDirectory(atPath: Self.fuzzFolder.appendingPathComponent("Targets").path)
        XCTAssertEqual(Set(listed), Set(Self.targets), "Fuzz/Targets and this list differ")
    }

    func testSeedsAndFixedCrashesReplayWithoutCrashing() throws {
        let binaries = Bundle.module.bundleURL.deletingLastPathComponent()
        for name in Self.targets {
            var folders = [Self.fuzzFolder.appendingPathComponent("Corpus/\(name)")]
            let regressions = Self.fuzzFolder.appendingPathComponent("Regressions/\(name)")
            if FileManager.default.fileExists(atPath: regressions.path) { folders.append(regressions) }
            let count = try folders.map { try FileManager.default.contentsOfDirectory(atPath: $0.path).filter { !$0.hasPrefix(".") }.count }.reduce(0, +)
            let (status, printed) = try runProgram(binaries.appendingPathComponent("Fuzz\(name)"), folders.map(\.path))
            XCTAssertEqual(status, 0, "Fuzz\(name) crashed on a committed input:\n\(printed.suffix(2000))")
            XCTAssertEqual(printed.trimmingCharacters(in: .whitespacesAndNewlines), "Fuzz\(name): \(count) inputs replayed, none crashed")
        }
    }
}
