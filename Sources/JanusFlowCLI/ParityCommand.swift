import ArgumentParser
import Foundation
import JanusFlow

struct ParityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parity",
        abstract: "Compare every stage with a reference fixture folder (model/, vae/, io.safetensors, io.json).")

    @Argument(help: "Fixture folder made by the official PyTorch code.")
    var directory: String

    func run() throws {
        let url = URL(fileURLWithPath: directory)
        let report = try Parity.run(fixtureDirectory: url) { print($0) }
        let failed = report.rows.filter { !$0.passed }.count
        print("\(report.rows.count - failed) passed, \(failed) failed")
        if failed > 0 || report.rows.isEmpty { throw ExitCode(1) }
    }
}
