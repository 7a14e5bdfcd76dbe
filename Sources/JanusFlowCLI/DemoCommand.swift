import ArgumentParser
import Foundation

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Train a tiny JanusFlow from scratch on ShapesWorld (three stages, AR + RF + REPA) and score it.")

    @Option(help: "Output folder (report/, model/, vae/, training/).")
    var out = "demo-out"

    @Flag(help: "The short variant used in CI.")
    var quick = false

    @Option(help: "Seed for the world, the weights and the training run.")
    var seed: UInt64 = 0

    @Option(help: "A JSON file overriding any of the demo settings (the keys of report/config.json), e.g. {\"stageSteps\": [300, 1600, 500]}.")
    var settings: String?

    @Flag(help: "Skip training: re-score the model/ and vae/ an earlier run left in --out (with --settings, e.g. another cfg or sampleSteps) into --out/rescored.")
    var evaluateOnly = false

    @Option(help: "Ablation: 'repa' runs the same budget without REPA and reports the difference (paper Table 6).")
    var ablate: String?

    func validate() throws {
        if let ablate, ablate != "repa" { throw ValidationError("--ablate supports 'repa' (got '\(ablate)')") }
    }

    func run() throws {
        var settings = quick ? ShapesDemo.Settings.quick : ShapesDemo.Settings()
        if let path = self.settings { settings = try settings.overridden(byJSONFile: URL(fileURLWithPath: path)) }
        settings.seed = seed
        let root = URL(fileURLWithPath: out)
        let start = Date()
        var demo = ShapesDemo(settings: settings, out: root)
        if evaluateOnly {
            _ = try demo.run(evaluateOnly: true)
            return
        }
        let scores = try demo.run()
        guard let ablate else {
            print(String(format: "demo finished in %.0f s; scores in %@", Date().timeIntervalSince(start), root.appendingPathComponent("report/scores.json").path))
            return
        }
        var without = settings
        without.repa = false
        var ablation = ShapesDemo(settings: without, out: root.appendingPathComponent("ablation-no-repa"))
        let other = try ablation.run()
        func overall(_ s: [String: Any]) -> Double { (s["generation"] as? [String: Double])?["overall"] ?? .nan }
        func accuracy(_ s: [String: Any]) -> Double { (s["understanding"] as? [String: Double])?["accuracy"] ?? .nan }
        let table: [String: Any] = [
            "with_repa": ["generation_overall": overall(scores), "understanding_accuracy": accuracy(scores)],
            "without_repa": ["generation_overall": overall(other), "understanding_accuracy": accuracy(other)],
            "difference": ["generation_overall": overall(scores) - overall(other), "understanding_accuracy": accuracy(scores) - accuracy(other)],
        ]
        let data = try JSONSerialization.data(withJSONObject: table, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: root.appendingPathComponent("report/ablation_repa.json"), options: .atomic)
        print(String(data: data, encoding: .utf8)!)
    }
}
