import Foundation
import JanusFlow
import JanusFlowImageIO
import MLXEngine
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `janusflow train` killed with SIGKILL at seeded moments (some of them inside a checkpoint write) and resumed
/// each time ends with the same bytes as a run never interrupted; `latest` never names a partial checkpoint; a full
/// disk gives an error naming the checkpoint and leaves the previous one as it was.
final class KilledTrainingTests: XCTestCase {
    static let steps = 48

    /// A run folder: images, three manifests, and `name.json` per output name (two stages, a checkpoint every 2 steps).
    func makeRun(outputs: [String: URL]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("killed-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("images"), withIntermediateDirectories: true)
        var und: [String] = [], gen: [String] = []
        for (i, (name, rgb)) in [("red", (200, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 200))].enumerated() {
            try RGBImage(width: 24, height: 24, fill: (UInt8(rgb.0), UInt8(rgb.1), UInt8(rgb.2))).writePNG(to: dir.appendingPathComponent("images/\(i).png"))
            und.append(#"{"image": "images/\#(i).png", "conversation": [{"role": "User", "content": "<image_placeholder>\nwhat colour?"}, {"role": "Assistant", "content": "\#(name)"}]}"#)
            gen.append(#"{"image": "images/\#(i).png", "caption": "a \#(name) square"}"#)
        }
        try und.joined(separator: "\n").write(to: dir.appendingPathComponent("und.jsonl"), atomically: true, encoding: .utf8)
        try gen.joined(separator: "\n").write(to: dir.appendingPathComponent("gen.jsonl"), atomically: true, encoding: .utf8)
        try #"{"text": "a red square and a blue square."}"#.write(to: dir.appendingPathComponent("text.jsonl"), atomically: true, encoding: .utf8)
        for (name, output) in outputs {
            let half = Self.steps / 2
            let config: [String: Any] = [
                "model": tinyFixture.appendingPathComponent("model").path, "vae": tinyFixture.appendingPathComponent("vae").path,
                "data": ["understanding": dir.appendingPathComponent("und.jsonl").path, "generation": dir.appendingPathComponent("gen.jsonl").path,
                         "text": dir.appendingPathComponent("text.jsonl").path],
                "output": output.path, "repa_layer": NSNull(), "checkpoint_every": 2, "log_every": 1,
                "stages": [["name": "a", "steps": half, "lr": 1e-3, "batch_size": 4, "ratio": [1, 1, 1]],
                           ["name": "b", "steps": Self.steps - half, "lr": 5e-4, "warmup_steps": 2, "batch_size": 4, "ratio": [1, 2, 1]]],
            ]
            try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("\(name).json"))
        }
        return dir
    }

    /// The files of the final checkpoint that carry the training state, by name.
    func finalState(_ output: URL) throws -> [String: Data] {
        let folder = output.appendingPathComponent(String(format: "checkpoints/step-%08d", Self.steps))
        var files: [String: Data] = [:]
        for name in ["model.safetensors", "ema.safetensors", "optimizer.safetensors", "repa_projector.safetensors", "state.json"] {
            files[name] = try Data(contentsOf: folder.appendingPathComponent(name))
        }
        return files
    }

    /// What `latest` names, checked whole: its state.json parses and every safetensors file's header is valid.
    func checkLatest(_ output: URL, after kill: Int) throws -> Int? {
        let checkpoints = output.appendingPathComponent("checkpoints")
        guard let name = try? String(contentsOf: checkpoints.appendingPathComponent("latest"), encoding: .utf8) else { return nil }
        let folder = checkpoints.appendingPathComponent(name)
        let state = try XCTUnwrap(try? JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("state.json"))) as? [String: Any],
                                  "kill \(kill): latest names \(name), whose state.json is missing or partial")
        for file in ["model.safetensors", "ema.safetensors", "optimizer.safetensors", "repa_projector.safetensors"] {
            XCTAssertNoThrow(try Safetensors.header(of: folder.appendingPathComponent(file)), "kill \(kill): \(name)/\(file) is partial")
        }
        return state["step"] as? Int
    }

    func testTwelveKillsAndResumesEndBitIdentical() throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("killed-out-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: scratch) }
        let reference = scratch.appendingPathComponent("reference"), killed = scratch.appendingPathComponent("killed")
        let dir = try makeRun(outputs: ["reference": reference, "killed": killed])

        let started = Date()
        let plain = try runCLI(["train", "--config", dir.appendingPathComponent("reference.json").path])
        XCTAssertEqual(plain.status, 0, plain.error)
        let runSeconds = Date().timeIntervalSince(started)
        let expected = try finalState(reference)

        // Seeded kill moments: every third waits for a checkpoint being written (a .tmp- folder) and kills inside
        // it; the others wait for the run to log 1 to 4 more steps and kill 0-40 ms later, mid-step.
        var random = SplitMix64(seed: 20261207)
        var kills = 0, insideWrites = 0, steps: [Int] = []
        while kills < 12 {
            let resumedAt = lastLoggedStep(killed)
            let process = Process()
            process.executableURL = cliBinary
            process.arguments = ["train", "--config", dir.appendingPathComponent("killed.json").path] + (kills > 0 ? ["--resume"] : [])
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let launched = Date()
            var wasWriting = false
            if kills % 3 == 2 {
                let checkpoints = killed.appendingPathComponent("checkpoints")
                while process.isRunning, Date().timeIntervalSince(launched) < runSeconds * 2 {
                    let names = (try? FileManager.default.contentsOfDirectory(atPath: checkpoints.path)) ?? []
                    if names.contains(where: { $0.hasPrefix(".tmp-step-") }) { wasWriting = true; break }
                    usleep(200)
                }
            } else {
                let target = resumedAt + 1 + Int(random.next() % 4)
                while process.isRunning, lastLoggedStep(killed) < target, Date().timeIntervalSince(launched) < runSeconds * 2 { usleep(1_000) }
                usleep(useconds_t(random.next() % 40_000))
            }
            guard process.isRunning else {
                process.waitUntilExit()
                XCTFail("the run finished before kill \(kills + 1) (status \(process.terminationStatus)): make it longer")
                return
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            XCTAssertEqual(process.terminationReason, .uncaughtSignal)
            kills += 1
            if wasWriting { insideWrites += 1 }
            if let step = try checkLatest(killed, after: kills) { steps.append(step) }
        }
        let finish = try runCLI(["train", "--config", dir.appendingPathComponent("killed.json").path, "--resume"])
        XCTAssertEqual(finish.status, 0, finish.error)
        print("KilledTrainingTests: \(kills) kills (\(insideWrites) inside a checkpoint write), latest after each: \(steps), run \(String(format: "%.1f", runSeconds)) s")
        XCTAssertGreaterThanOrEqual(insideWrites, 3, "fewer kills than planned landed inside a write")
        // A kill before the first checkpoint leaves no `latest` (the next run starts over); every later one must.
        XCTAssertGreaterThanOrEqual(steps.count, 10, "too few kills came after a checkpoint: \(steps)")
        XCTAssertEqual(steps, steps.sorted(), "latest went backwards: \(steps)")
        let actual = try finalState(killed)
        for (name, bytes) in expected.sorted(by: { $0.key < $1.key }) {
            XCTAssertTrue(actual[name] == bytes, "\(name) differs from the uninterrupted run's")
        }
        // The metrics read as the uninterrupted run's: rows logged after the last checkpoint were dropped on resume.
        XCTAssertEqual(try String(contentsOf: killed.appendingPathComponent("metrics.jsonl"), encoding: .utf8),
                       try String(contentsOf: reference.appendingPathComponent("metrics.jsonl"), encoding: .utf8))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: killed.appendingPathComponent("checkpoints").path).filter { $0.hasPrefix(".") }
        XCTAssertEqual(leftovers, [], "half-written folders left behind")
    }

    func testFullDiskNamesTheCheckpointAndKeepsThePreviousOne() throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        // A small tmpfs holds the run: room for the data cache and one checkpoint, not two.
        let probe = FileManager.default.temporaryDirectory.appendingPathComponent("disk-probe-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: probe) }
        let dir = try makeRun(outputs: ["probe": probe])
        let measured = try runCLI(["train", "--config", dir.appendingPathComponent("probe.json").path, "--until", "2"])
        XCTAssertEqual(measured.status, 0, measured.error)
        let total = try folderBytes(probe), checkpoint = try folderBytes(probe.appendingPathComponent("checkpoints/step-00000002"))

        let mountPoint = FileManager.default.temporaryDirectory.appendingPathComponent("small-disk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        let size = total + checkpoint / 2
        guard shell("mount", "-t", "tmpfs", "-o", "size=\(size)", "tmpfs", mountPoint.path) == 0 else {
            try? FileManager.default.removeItem(at: mountPoint)
            throw XCTSkip("cannot mount a small tmpfs here (needs root): the full-disk case did not run")
        }
        defer {
            _ = shell("umount", mountPoint.path)
            try? FileManager.default.removeItem(at: mountPoint)
        }
        let output = mountPoint.appendingPathComponent("run")
        let small = try makeRun(outputs: ["small": output])
        let result = try runCLI(["train", "--config", small.appendingPathComponent("small.json").path])
        XCTAssertEqual(result.status, 1, "a full disk must fail the run: \(result.error.suffix(500))")
        let folder = output.appendingPathComponent("checkpoints/step-00000004").path
        XCTAssertTrue(result.error.contains("Error: \(folder): could not write the checkpoint ("), result.error.suffix(800).description)
        XCTAssertTrue(result.error.contains("the previous one is unchanged (latest: step-00000002)"), result.error.suffix(800).description)
        XCTAssertEqual(try checkLatest(output, after: 0), 2)
        let names = try FileManager.default.contentsOfDirectory(atPath: output.appendingPathComponent("checkpoints").path).sorted()
        XCTAssertEqual(names, ["latest", "step-00000002"], "the failed write left something behind")
        // With room again the run resumes from it.
        _ = shell("mount", "-o", "remount,size=\(size * 4)", mountPoint.path)
        let resumed = try runCLI(["train", "--config", small.appendingPathComponent("small.json").path, "--resume", "--until", "6"])
        XCTAssertEqual(resumed.status, 0, resumed.error)
        XCTAssertTrue(resumed.error.contains("resumed at step 2"), resumed.error)
    }

    /// The step of the last row in metrics.jsonl (0 before any).
    func lastLoggedStep(_ output: URL) -> Int {
        guard let text = try? String(contentsOf: output.appendingPathComponent("metrics.jsonl"), encoding: .utf8),
              let line = text.split(separator: "\n").last,
              let row = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return 0 }
        return (row["step"] as? Int) ?? Int((row["step"] as? Double) ?? 0)
    }

    func folderBytes(_ url: URL) throws -> Int {
        let enumerator = try XCTUnwrap(FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey]))
        var total = 0
        for case let file as URL in enumerator { total += (try file.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0 }
        return total
    }

    @discardableResult
    func shell(_ arguments: String...) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }
}
