import Foundation
import JanusFlowTraining
import MLXEngine

/// `bench train --processes N`: the same step in N local processes joined by the ring backend, against one process
/// measured in the same run (weak scaling: every process keeps --batch-size).
extension TrainBench {
    /// Starts one process alone, then N together, each a `bench train --step-only` of this binary; prints the table.
    func compareProcessCounts() throws {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let common = ["bench", "train", "--step-only", "--repeats", "\(repeats)", "--batch-size", "\(batchSize)"] + (noFastKernels ? ["--no-fast-kernels"] : [])
        func measure(_ count: Int, threadsOf share: Int) throws -> [String: Double] {
            let folder = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("janusflow-bench-\(getpid())-\(count)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: folder) }
            let hostfile = folder.appendingPathComponent("hosts.json")
            try ProcessGroup.loopbackHostfile(processes: count).write(to: hostfile)
            var ranks: [(Process, Pipe)] = []
            for rank in 0..<count {
                let process = Process(), out = Pipe()
                process.executableURL = executable
                process.arguments = common + ["--processes", "\(count)"]
                var env = ProcessGroup.sharedCoreEnvironment(processes: share, base: ProcessInfo.processInfo.environment)
                env["JANUSFLOW_BENCH_CHILD"] = "1"
                if count > 1 { (env["MLX_RANK"], env["MLX_HOSTFILE"]) = ("\(rank)", hostfile.path) }
                process.environment = env
                process.standardOutput = out
                process.standardError = FileHandle.nullDevice
                try process.run()
                ranks.append((process, out))
            }
            let text = String(decoding: ranks[0].1.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            for (p, _) in ranks { p.waitUntilExit() }
            guard ranks.allSatisfy({ $0.0.terminationStatus == 0 }), let line = text.split(separator: "\n").last(where: { $0.hasPrefix("measured ") }) else {
                throw TrainingError("bench train --processes \(count) failed: \(text)")
            }
            var values: [String: Double] = [:]
            for pair in line.dropFirst("measured ".count).split(separator: " ") {
                let kv = pair.split(separator: "=")
                if kv.count == 2, let v = Double(kv[1]) { values[String(kv[0])] = v }
            }
            return values
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount, share = Swift.max(1, cores / processes)
        note("one process on all \(cores) cores, one on \(share), then \(processes) processes on \(share) each, batch \(batchSize) each ...")
        let whole = try measure(1, threadsOf: 1), one = try measure(1, threadsOf: processes), many = try measure(processes, threadsOf: processes)
        let (tw, t1, tn) = (whole["step_seconds"] ?? .nan, one["step_seconds"] ?? .nan, many["step_seconds"] ?? .nan)
        print("data-parallel training step, tiny JanusFlow, batch \(batchSize) per process, ring backend over 127.0.0.1, \(cores) cores")
        print(row("1 process, \(cores) threads: whole step", String(format: "%.1f ms", tw * 1e3), String(format: "%.0f samples/s", Double(batchSize) / tw)))
        print(row("1 process, \(share) threads: whole step", String(format: "%.1f ms", t1 * 1e3), String(format: "%.0f samples/s", Double(batchSize) / t1)))
        print(row("\(processes) processes: whole step with all-reduce", String(format: "%.1f ms", tn * 1e3),
                  String(format: "%.0f samples/s", Double(processes * batchSize) / tn)))
        print(row("  of which the gradient all-reduce", String(format: "%.1f ms", (many["allreduce_seconds"] ?? .nan) * 1e3),
                  String(format: "%.2f MB of gradients in %.0f buckets, %.2f MB sent per process", (many["gradient_bytes"] ?? .nan) / 1e6,
                         many["buckets"] ?? .nan, (many["sent_bytes"] ?? .nan) / 1e6)))
        print(row("scaling efficiency", String(format: "%.0f%%", 100 * t1 / tn),
                  String(format: "throughput / (%d x one process of %d threads); %.2fx one process on all cores", processes, share, Double(processes) * tw / tn)))
    }

    /// In each rank of an N-process bench: the all-reduce of one step's gradients alone; rank 0 prints the figures.
    func reportProcessStep(group: ProcessGroup, step: Double, modules: TrainingModules, gradients: [String: Tensor]) throws {
        try Tensor.eval(Array(gradients.values))
        let reduce = try bestTime(repeats: repeats) { concatenated(group.allSum(gradients).values.map { $0.reshaped([-1]) }) }
        let elements = gradients.values.reduce(0) { $0 + $1.size }
        let bytes = Double(4 * elements)
        let buckets = (Double(elements) / Double(ProcessGroup.defaultBucketElements)).rounded(.up)
        // A ring all-reduce sends 2 (N - 1) / N of the data from each process.
        let sent = bytes * 2 * Double(group.size - 1) / Double(group.size)
        if group.isWriter {
            print(String(format: "measured step_seconds=%.6f allreduce_seconds=%.6f gradient_bytes=%.0f buckets=%.0f sent_bytes=%.0f", step, reduce, bytes, buckets, sent))
        }
    }
}
