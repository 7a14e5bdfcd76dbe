import ArgumentParser
import Foundation
import MLXEngine

@main
struct JanusFlowCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "janusflow",
        abstract: "JanusFlow in Swift: image understanding and rectified-flow image generation on MLX.",
        subcommands: [DemoCommand.self, ShapesCommand.self, TrainCommand.self, LaunchCommand.self, PrepareCommand.self, UnderstandCommand.self, GenerateCommand.self, ChatCommand.self, TokenizeCommand.self, ParityCommand.self, BenchCommand.self, ServeCommand.self]
    )

    static func main() async {
        if ProcessInfo.processInfo.environment["MLXS_KEEP_FREED_MEMORY"] != "0" { Memory.keepFreedMemory() }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Writes a line to standard error (progress and diagnostics; standard output stays machine-readable).
func note(_ text: String) {
    FileHandle.standardError.write((text + "\n").data(using: .utf8)!)
}
