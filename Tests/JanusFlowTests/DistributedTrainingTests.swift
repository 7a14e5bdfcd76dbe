import Foundation
import JanusFlowImageIO
import MLXEngine
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Data-parallel training on MLX's ring backend over 127.0.0.1, as real processes of the CLI.
final class DistributedTrainingTests: XCTestCase {
    /// A run folder with three small manifests and a training config per (name, grad_accum, steps).
    func makeRun(_ configs: [(name: String, accumulation: Int, steps: Int, batch: Int)]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ddp-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("images"), withIntermediateDirectories: true)
        let colours: [(String, (UInt8, UInt8, UInt8))] = [("red", (200, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 200)), ("yellow", (200, 200, 30))]
        var und: [String] = [], gen: [String] = []
        for (i, (name, rgb)) in colours.enumerated() {
            try RGBImage(width: 40, height: 30, fill: rgb).writePNG(to: dir.appendingPathComponent("images/\(i).png"))
            und.append(#"{"image": "images/\#(i).png", "conversation": [{"role": "User", "content": "<image_placeholder>\nwhat colour?"}, {"role": "Assistant", "content": "\#(name)"}]}"#)
            gen.append(#"{"image": "images/\#(i).png", "caption": "a \#(name) picture"}"#)
        }
        try und.joined(separator: "\n").write(to: dir.appendingPathComponent("und.jsonl"), atomically: true, encoding: .utf8)
        try gen.joined(separator: "\n").write(to: dir.appendingPathComponent("gen.jsonl"), atomically: true, encoding: .utf8)
        try #"{"text": "a red picture and a blue picture."}"#.write(to: dir.appendingPathComponent("text.jsonl"), atomically: true, encoding: .utf8)
        for c in configs {
            let config: [String: Any] = [
                "model": tinyFixture.appendingPathComponent("model").path, "vae": tinyFixture.appendingPathComponent("vae").path,
                "data": ["understanding": dir.appendingPathComponent("und.jsonl").path, "generation": dir.appendingPathComponent("gen.jsonl").path,
                         "text": dir.appendingPathComponent("text.jsonl").path],
                "output": dir.appendingPathComponent("run-\(c.name)").path, "repa_layer": NSNull(), "checkpoint_every": 2, "log_every": 1,
                "stages": [["name": "a", "steps": c.steps, "lr": 1e-3, "batch_size": c.batch, "grad_accum": c.accumulation, "ratio": [1, 1, 1]]],
            ]
            try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("\(c.name).json"))
        }
        return dir
    }

    func metrics(_ run: URL) throws -> [[String: Double]] {
        try String(contentsOf: run.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Double] }
    }

    func assertClose(_ a: Double, _ b: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertLessThanOrEqual(abs(a - b), 1e-5 * max(abs(a), abs(b), 1e-12), "\(what): \(a) vs \(b)", file: file, line: line)
    }

    /// Two processes at batch 4 each (grad_accum 1 of a batch of 8 split two ways) against one process drawing the
    /// same 8 examples as two accumulated micro-batches: the same losses and the same weights.
    func testTwoProcessesEqualOneProcessAtTheDoubledBatch() throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let dir = try makeRun([("one", 2, 3, 8), ("two", 1, 3, 8), ("odd", 1, 3, 3)])
        // The baseline with the threads each launched process gets (one of the two cores): a kernel's split over
        // threads changes its float summation order, which Adam's first steps amplify in near-zero weights.
        let shared = ProcessGroup.sharedCoreEnvironment(processes: 2, base: ProcessInfo.processInfo.environment)
        let one = try runCLI(["train", "--config", dir.appendingPathComponent("one.json").path], environment: shared)
        XCTAssertEqual(one.status, 0, one.error)
        let two = try runCLI(["launch", "-n", "2", "--", "train", "--config", dir.appendingPathComponent("two.json").path])
        XCTAssertEqual(two.status, 0, two.error)
        XCTAssertTrue(two.error.contains("process 0 of 2 (ring backend)"), two.error)

        let (m1, m2) = (try metrics(dir.appendingPathComponent("run-one")), try metrics(dir.appendingPathComponent("run-two")))
        XCTAssertEqual(m1.count, 3)
        XCTAssertEqual(m2.count, 3)  // one writer
        for (a, b) in zip(m1, m2) {
            XCTAssertEqual(a.keys.sorted(), b.keys.sorted())
            for key in a.keys { assertClose(a[key]!, b[key]!, "step \(a["step"]!) \(key)") }
        }
        for file in ["final/model.safetensors", "final-ema/model.safetensors"] {
            let a = try Safetensors.load(dir.appendingPathComponent("run-one/\(file)")).tensors
            let b = try Safetensors.load(dir.appendingPathComponent("run-two/\(file)")).tensors
            XCTAssertEqual(a.keys.sorted(), b.keys.sorted())
            for (name, x) in a {
                let (u, v) = (try x.asType(.float32).values(Float.self), try b[name]!.asType(.float32).values(Float.self))
                let worst = zip(u, v).map { abs(Double($0) - Double($1)) / max(abs(Double($0)), 1e-3) }.max() ?? 0
                XCTAssertLessThanOrEqual(worst, 1e-5, "\(file) \(name)")
            }
        }
        // A batch that does not split over the processes is refused by every rank, and launch says which one failed.
        let odd = try runCLI(["launch", "-n", "2", "--", "train", "--config", dir.appendingPathComponent("odd.json").path])
        XCTAssertNotEqual(odd.status, 0)
        XCTAssertTrue(odd.error.contains("stage 'a': batch_size 3 does not split into 2 processes x gradient_accumulation 1"), odd.error)
        XCTAssertTrue(odd.error.contains("janusflow launch: rank "), odd.error)
        XCTAssertTrue(odd.error.contains(" of 2 exited with status 1; stopped the other ranks"), odd.error)
    }

    /// Killing one rank: the other stops within seconds with the backend's error, the last checkpoint is whole,
    /// and one process resumes the run from it.
    func testKilledRankStopsTheOtherAndOneProcessResumes() throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let dir = try makeRun([("long", 1, 400, 8)])
        let hosts = dir.appendingPathComponent("hosts.json")
        try ProcessGroup.loopbackHostfile(processes: 2).write(to: hosts)
        var ranks: [(Process, URL)] = []
        for rank in 0..<2 {
            let process = Process()
            process.executableURL = cliBinary
            process.arguments = ["train", "--config", dir.appendingPathComponent("long.json").path, "--hosts", hosts.path]
            process.environment = ProcessInfo.processInfo.environment.merging(["MLX_RANK": "\(rank)"]) { _, new in new }
            let log = dir.appendingPathComponent("rank\(rank).log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: log)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            ranks.append((process, log))
        }
        defer { for (p, _) in ranks where p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let checkpoints = dir.appendingPathComponent("run-long/checkpoints")
        let started = Date()
        while ((try? FileManager.default.contentsOfDirectory(atPath: checkpoints.path)) ?? []).filter({ $0.hasPrefix("step-") }).count < 2 {
            XCTAssertTrue(ranks.allSatisfy { $0.0.isRunning }, "a rank stopped early: \((try? String(contentsOf: ranks[0].1, encoding: .utf8)) ?? "")")
            guard ranks.allSatisfy({ $0.0.isRunning }), Date().timeIntervalSince(started) < 120 else { return XCTFail("no checkpoints within 120 s") }
            usleep(50_000)
        }
        kill(ranks[1].0.processIdentifier, SIGKILL)
        let killed = Date()
        while ranks[0].0.isRunning && Date().timeIntervalSince(killed) < 10 { usleep(20_000) }
        XCTAssertFalse(ranks[0].0.isRunning, "rank 0 still running 10 s after its peer died")
        ranks[0].0.waitUntilExit()
        XCTAssertEqual(ranks[0].0.terminationReason, .exit)
        XCTAssertEqual(ranks[0].0.terminationStatus, 1)
        let log = try String(contentsOf: ranks[0].1, encoding: .utf8)
        XCTAssertTrue(log.contains("Error: [ring] connection to a peer was lost"), log)

        // The latest checkpoint is complete, and one process continues the run from it.
        let latest = try String(contentsOf: checkpoints.appendingPathComponent("latest"), encoding: .utf8)
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: checkpoints.appendingPathComponent("\(latest)/state.json"))) as! [String: Any]
        let step = try XCTUnwrap(state["step"] as? Int)
        XCTAssertGreaterThanOrEqual(step, 2)
        let resumed = try runCLI(["train", "--config", dir.appendingPathComponent("long.json").path, "--resume", "--until", "\(step + 2)"])
        XCTAssertEqual(resumed.status, 0, resumed.error)
        XCTAssertTrue(resumed.error.contains("resumed at step \(step)"), resumed.error)
        XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoints.appendingPathComponent(String(format: "step-%08d", step + 2)).path))
    }

    /// `demo --processes 2`: the tiny demo trained by two ranks, each on half of every batch with averaged gradients,
    /// against one process with the same threads: the pretraining losses (whole-batch means either way) agree, rank 0
    /// writes the model and the report; batches that do not split and re-scoring are refused before anything is written.
    func testDemoOnTwoProcessesTrainsTheSameBatches() throws {
        guard FileManager.default.fileExists(atPath: cliBinary.path) else { return XCTFail("janusflow is not built next to the tests (run make test)") }
        let (root, settings) = try tinyDemoFolder(self, prefix: "ddp-demo")
        let shared = ProcessGroup.sharedCoreEnvironment(processes: 2, base: ProcessInfo.processInfo.environment)
        let one = try runCLI(["demo", "--settings", settings.path, "--seed", "3", "--out", root.appendingPathComponent("one").path], environment: shared)
        XCTAssertEqual(one.status, 0, one.error)
        let two = try runCLI(["demo", "--settings", settings.path, "--seed", "3", "--processes", "2", "--out", root.appendingPathComponent("two").path])
        XCTAssertEqual(two.status, 0, two.error)
        XCTAssertTrue(two.output.contains("2 processes, each a 1/2 share of every batch"), two.output)
        XCTAssertTrue(two.output.contains("demo on 2 processes finished in "), two.output)
        func scores(_ name: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: root.appendingPathComponent("\(name)/report/scores.json"))) as! [String: Any]
        }
        let (a, b) = (try scores("one"), try scores("two"))
        for phase in ["vae", "siglip"] {
            let (x, y) = (((a["losses"] as! [String: Any])[phase] as! [String: Double])["first"]!, ((b["losses"] as! [String: Any])[phase] as! [String: Double])["first"]!)
            XCTAssertLessThanOrEqual(abs(x - y), 1e-3 * abs(x), "\(phase) pretraining loss, one process \(x) against two \(y)")
        }
        for key in ["generation", "understanding"] { XCTAssertNotNil(b[key] as? [String: Any], "scores.json has no \(key)") }
        for file in ["model/model.safetensors", "model/tokenizer.json", "vae/diffusion_pytorch_model.safetensors", "report/loss_curves.png"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: root.appendingPathComponent("two/\(file)").path), "two processes wrote no \(file)")
        }
        for (arguments, message) in [(["--processes", "3"], "--processes 3: batchSize 8 does not split into 3 processes"),
                                     (["--processes", "2", "--evaluate-only"], "--processes trains one model; it does not combine with --evaluate-only or --ablate")] {
            let out = root.appendingPathComponent("refused")
            let bad = try runCLI(["demo", "--settings", settings.path, "--out", out.path] + arguments)
            XCTAssertNotEqual(bad.status, 0)
            XCTAssertTrue(bad.error.contains(message), bad.error)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        }
    }
}
