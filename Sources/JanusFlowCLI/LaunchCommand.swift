import ArgumentParser
import Foundation
import MLXEngine
#if canImport(Glibc)
import Glibc
#endif

/// `janusflow launch -n N -- COMMAND ...`: N processes of this program on this machine, joined by MLX's ring
/// backend over 127.0.0.1 (as `mlx.launch -n N` would start them). If one fails, the others are stopped.
struct LaunchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "launch",
        abstract: "Run a janusflow command (train or demo) as N local processes of one data-parallel run (MLX ring backend over 127.0.0.1), e.g. launch -n 2 -- train --config FILE.")

    @Option(name: .short, help: "Number of processes.")
    var n = 2

    @Option(help: "Folder for the host file (default: a fresh temporary folder).")
    var hostfileDirectory: String?

    @Argument(parsing: .postTerminator, help: "The janusflow command each process runs (after --).")
    var command: [String] = []

    func validate() throws {
        guard n >= 1 else { throw ValidationError("-n must be at least 1 (got \(n))") }
        guard !command.isEmpty else { throw ValidationError("give the command to run after --, e.g. launch -n 2 -- train --config FILE") }
        guard ["train", "demo"].contains(command[0]) else { throw ValidationError("launch runs train or demo (got '\(command[0])')") }
    }

    func run() throws { try Self.runLocally(processes: n, command: command, hostfileDirectory: hostfileDirectory) }

    /// Starts `command` (arguments of this program) as `n` ranks over 127.0.0.1 and waits for all of them; the first
    /// to fail stops the others and its status is thrown. Rank 0's standard output is this process's.
    static func runLocally(processes n: Int, command: [String], hostfileDirectory: String? = nil) throws {
        let folder = URL(fileURLWithPath: hostfileDirectory ?? NSTemporaryDirectory()).appendingPathComponent("janusflow-launch-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let hostfile = folder.appendingPathComponent("hosts.json")
        try ProcessGroup.loopbackHostfile(processes: n).write(to: hostfile)

        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var processes: [Process] = []
        for rank in 0..<n {
            let process = Process()
            process.executableURL = executable
            process.arguments = command
            var env = ProcessGroup.sharedCoreEnvironment(processes: n, base: ProcessInfo.processInfo.environment)
            env["MLX_RANK"] = "\(rank)"
            env["MLX_HOSTFILE"] = hostfile.path
            process.environment = env
            if rank > 0 { process.standardOutput = FileHandle.nullDevice }  // rank 0 speaks for the run; errors still show
            try process.run()
            processes.append(process)
        }
        // Wait for all; the first failure stops the rest (a rank blocked on a dead peer would wait forever).
        var failure: (rank: Int, process: Process)?
        while failure == nil && processes.contains(where: \.isRunning) {
            usleep(100_000)
            if let rank = processes.indices.first(where: { !processes[$0].isRunning && (processes[$0].terminationStatus != 0 || processes[$0].terminationReason != .exit) }) {
                failure = (rank, processes[rank])
            }
        }
        guard let failure else { return }
        for p in processes where p.isRunning { p.terminate() }
        let deadline = Date().addingTimeInterval(5)
        while processes.contains(where: \.isRunning) && Date() < deadline { usleep(50_000) }
        for p in processes where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        let how = failure.process.terminationReason == .exit ? "exited with status \(failure.process.terminationStatus)"
                                                             : "was killed by signal \(failure.process.terminationStatus)"
        note("janusflow launch: rank \(failure.rank) of \(n) \(how); stopped the other ranks")
        throw ExitCode(failure.process.terminationReason == .exit ? failure.process.terminationStatus : 1)
    }
}
