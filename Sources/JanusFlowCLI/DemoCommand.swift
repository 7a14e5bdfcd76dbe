import ArgumentParser
import Foundation
import JanusFlowDemo

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
        if let path = self.settings {
            do { settings = try settings.overridden(byJSONFile: URL(fileURLWithPath: path)) } catch let error as ShapesDemoError { throw ValidationError(error.message) }
        }
        settings.seed = seed
        let root = URL(fileURLWithPath: out)
        let start = Date()
        var demo = ShapesDemo(settings: settings, outputDirectory: root)
        // One bar per phase, as the phases arrive.
        var bar: ProgressBar?
        demo.progressHandler = { p in
            if bar?.label != p.phase { bar = ProgressBar(p.phase, total: p.total) }
            if p.step % 10 == 0 || p.step == p.total || p.phase == "GenEval prompts" { bar?.update(p.step, detail: p.detail) }
            return true
        }
        if evaluateOnly {
            _ = try demo.evaluateOnly()
            return
        }
        guard ablate != nil else {
            _ = try demo.run()
            print(String(format: "demo finished in %.0f s; scores in %@", Date().timeIntervalSince(start), root.appendingPathComponent("report/scores.json").path))
            return
        }
        let table = try demo.runWithREPAAblation().table
        print(String(data: try JSONSerialization.data(withJSONObject: table, options: [.prettyPrinted, .sortedKeys]), encoding: .utf8)!)
    }
}
