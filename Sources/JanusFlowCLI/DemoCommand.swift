import ArgumentParser
import Foundation
import JanusFlowDemo
import MLXEngine

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Train a tiny JanusFlow from scratch on ShapesWorld (three stages, AR + RF + REPA) and score it.")

    @Option(help: "Output folder (report/, model/, vae/, training/).")
    var out = "demo-out"

    @Flag(help: "The short variant used in CI.")
    var quick = false

    @Option(help: "Which ShapesWorld: 'standard' (3 shapes, 4 colours, 2x2 grid, 32 px) or 'extended' (4 shapes, 7 colours, two sizes, 3x3 grid, 48 px).")
    var world = "standard"

    @Option(help: "Seed for the world, the weights and the training run (default: the settings file's seed, else 0).")
    var seed: UInt64?

    @Option(help: "A JSON file overriding any of the demo settings (the keys of report/config.json), e.g. {\"stageSteps\": [300, 1600, 500]}.")
    var settings: String?

    @Flag(help: "Skip training: re-score the model/ and vae/ an earlier run left in --out (with --settings, e.g. another cfg or sampleSteps) into --out/rescored.")
    var evaluateOnly = false

    @Option(help: "Ablation: 'repa' runs the same budget without REPA and reports the difference (paper Table 6).")
    var ablate: String?

    @Option(help: "Processes of one data-parallel run on this machine (MLX ring backend over 127.0.0.1): every batch split between them in rank order, gradients averaged; rank 0 writes --out and scores the model.")
    var processes = 1

    func validate() throws {
        guard ShapesDemo.World(rawValue: world) != nil else {
            throw ValidationError("--world must be one of \(ShapesDemo.World.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(world)')")
        }
        if let ablate, ablate != "repa" { throw ValidationError("--ablate supports 'repa' (got '\(ablate)')") }
        guard processes >= 1 else { throw ValidationError("--processes must be at least 1 (got \(processes))") }
        if processes > 1 && (evaluateOnly || ablate != nil) {
            throw ValidationError("--processes trains one model; it does not combine with --evaluate-only or --ablate")
        }
    }

    func run() throws {
        let world = ShapesDemo.World(rawValue: self.world)!
        var settings = quick ? ShapesDemo.Settings.quick(world: world) : ShapesDemo.Settings(world: world)
        if let path = self.settings {
            do { settings = try settings.overridden(byJSONFile: URL(fileURLWithPath: path)) } catch let error as ShapesDemoError { throw ValidationError(error.message) }
        }
        if let seed { settings.seed = seed }  // a seed in the settings file counts unless --seed is given
        for (name, batch) in [("batchSize", settings.batchSize), ("the VAE's batch", 16)] where batch % processes != 0 {
            throw ValidationError("--processes \(processes): \(name) \(batch) does not split into \(processes) processes")
        }
        let root = URL(fileURLWithPath: out)
        let start = Date()
        if processes > 1 && ProcessInfo.processInfo.environment["MLX_RANK"] == nil {
            // The launcher: this same command line again as `processes` ranks, which join below.
            guard ProcessGroup.isAvailable("ring") else { throw ValidationError("--processes: this MLX build has no ring backend") }
            try LaunchCommand.runLocally(processes: processes, command: Array(CommandLine.arguments.dropFirst()))
            print(String(format: "demo on %d processes finished in %.0f s; scores in %@", processes, Date().timeIntervalSince(start),
                         root.appendingPathComponent("report/scores.json").path))
            return
        }
        var demo = ShapesDemo(settings: settings, outputDirectory: root)
        if processes > 1 {
            let group = try ProcessGroup.join(backend: "ring")
            guard group.size == processes else {
                throw ValidationError("--processes \(processes): the run this process joined has \(group.size) processes")
            }
            demo.processGroup = group
        }
        // One bar per phase, as the phases arrive (rank 0's only).
        var bar: ProgressBar?
        let showsProgress = demo.processGroup.isWriter
        demo.progressHandler = { p in
            guard showsProgress else { return true }
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
            if processes == 1 {
                print(String(format: "demo finished in %.0f s; scores in %@", Date().timeIntervalSince(start), root.appendingPathComponent("report/scores.json").path))
            }
            return
        }
        let table = try demo.runWithREPAAblation().table
        print(String(data: try JSONSerialization.data(withJSONObject: table, options: [.prettyPrinted, .sortedKeys]), encoding: .utf8)!)
    }
}
