import ArgumentParser
import Foundation
import JanusFlow
import MLXEngine

struct ParityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parity",
        abstract: "Compare every stage with a reference fixture folder (model/, vae/, io.safetensors, io.json).")

    @Argument(help: "Fixture folder made by the official PyTorch code.")
    var directory: String

    @Option(help: "Weight dtype: float32 (exact parity), bfloat16 (release precision, looser bounds) or int8 (int8 language-model linears, bounds twice bf16's).")
    var dtype = "float32"

    @OptionGroup var deviceOption: DeviceOption

    func run() throws {
        try deviceOption.select()
        let url = URL(fileURLWithPath: directory)
        let weights = try parseWeightDType(dtype)
        let report = try Parity.run(fixtureDirectory: url, weights: weights) { print($0) }
        let failed = report.rows.filter { !$0.passed }.count
        print("\(report.rows.count - failed) passed, \(failed) failed")
        if failed > 0 || report.rows.isEmpty { throw ExitCode(1) }
    }
}
