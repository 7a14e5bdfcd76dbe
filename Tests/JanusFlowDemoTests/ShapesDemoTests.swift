import Foundation
import JanusFlow
import JanusFlowDemo
import JanusFlowImageIO
import ShapesWorld
import XCTest

/// The demo as a library type: a very short run from Swift reports every phase in order, writes a model the public
/// pipeline loads, returns the scores it wrote, and stops when the progress handler says so.
final class ShapesDemoTests: XCTestCase {
    static func tinySettings(world: ShapesDemo.World = .standard) -> ShapesDemo.Settings {
        var s = ShapesDemo.Settings(world: world)
        (s.trainScenes, s.trainQuestions, s.trainTexts, s.vaeSteps, s.siglipSteps, s.llmSteps) = (96, 96, 96, 12, 6, 6)
        (s.stageSteps, s.batchSize, s.evalPromptsPerCategory, s.evalQuestions, s.sampleSteps, s.merges) = ([6, 8, 6], 8, 2, 16, 3, 60)
        s.seed = 3
        s.placedCaptions = 24
        return s
    }

    func temporaryDirectory(_ name: String) -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func testShortRunReportsPhasesAndWritesALoadableModel() throws {
        let out = temporaryDirectory("shapes-demo")
        var demo = ShapesDemo(settings: Self.tinySettings(), outputDirectory: out)
        var lines: [String] = []
        var events: [DemoProgress] = []
        demo.log = { lines.append($0) }
        demo.progressHandler = { events.append($0); return true }
        let scores = try demo.run()

        // Phases in the order the run does them, each counting up to its total.
        var phases: [String] = []
        for e in events where phases.last != e.phase { phases.append(e.phase) }
        XCTAssertEqual(phases, ["VAE", "SigLIP", "LLM", "JanusFlow stages", "GenEval prompts", "questions"])
        for phase in phases {
            let steps = events.filter { $0.phase == phase }
            XCTAssertEqual(steps.last?.step, steps.last?.total, phase)
            XCTAssertEqual(steps.map(\.step), steps.map(\.step).sorted(), phase)
        }
        XCTAssertEqual(events.filter { $0.phase == "VAE" }.count, 12)
        XCTAssertEqual(events.last { $0.phase == "JanusFlow stages" }?.total, 20)
        XCTAssertEqual(events.last { $0.phase == "GenEval prompts" }?.total, 12)
        XCTAssertEqual(events.last { $0.phase == "questions" }?.total, 16)
        XCTAssertTrue(lines.first?.hasPrefix("== ShapesWorld, standard (seed 3): 3 shapes, 4 colours, 1 sizes, 1-4 objects in a 2x2 grid, 32 px") == true, "\(lines.first ?? "no log")")

        // The returned scores are the ones written to report/scores.json (compared as written: the file's numbers
        // have JSONSerialization's precision).
        let written = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report/scores.json"))) as! [String: Any]
        let returned = try JSONSerialization.jsonObject(with: JSONSerialization.data(withJSONObject: scores.json, options: [.sortedKeys])) as! [String: Any]
        XCTAssertEqual(written as NSDictionary, returned as NSDictionary)
        XCTAssertEqual(scores.generation.keys.sorted(), ["color_attr", "colors", "counting", "overall", "position", "single_object", "two_object"])
        XCTAssertTrue((0...1).contains(scores.generationOverall) && (0...1).contains(scores.understandingAccuracy))
        XCTAssertEqual(Set(scores.losses.keys), ["understanding", "rf", "repa", "text", "vae", "siglip", "llm"])
        XCTAssertNotNil(scores.chanceAccuracy)
        XCTAssertEqual(demo.history.count, 20)

        // The model folder is a JanusFlow checkpoint the public pipeline runs.
        let pipeline = try JanusFlowPipeline(modelDirectory: out.appendingPathComponent("model"), vaeDirectory: out.appendingPathComponent("vae"),
                                             dtype: .float32)
        let images = try pipeline.generate(prompts: ["a red circle"], seeds: [1], steps: 2, cfg: 2, imagesPerPass: 1)
        XCTAssertEqual(images.count, 1)
        XCTAssertEqual(images[0].width, 32)

        // Re-scoring with other sampling settings trains nothing and writes rescored/.
        let before = try Data(contentsOf: out.appendingPathComponent("model/model.safetensors"))
        var settings = Self.tinySettings()
        settings.sampleSteps = 2
        var rescore = ShapesDemo(settings: settings, outputDirectory: out)
        rescore.log = { _ in }
        var rescorePhases = Set<String>()
        rescore.progressHandler = { rescorePhases.insert($0.phase); return true }
        let again = try rescore.evaluateOnly()
        XCTAssertEqual(rescorePhases, ["GenEval prompts", "questions"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("rescored/scores.json").path))
        XCTAssertEqual(again.generation.count, scores.generation.count)
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("model/model.safetensors")), before)
    }

    func testExtendedWorldTrainsOnItsThreeByThreeGrid() throws {
        let out = temporaryDirectory("shapes-demo-extended")
        let settings = Self.tinySettings(world: .extended)
        XCTAssertEqual(settings.imageSize, 48)
        XCTAssertEqual(settings.worldConfig, WorldConfig.extended)
        var demo = ShapesDemo(settings: settings, outputDirectory: out)
        var lines: [String] = []
        demo.log = { lines.append($0) }
        let scores = try demo.run()
        XCTAssertTrue(lines.first?.hasPrefix("== ShapesWorld, extended (seed 3): 4 shapes, 7 colours, 2 sizes, 1-4 objects in a 3x3 grid, 48 px") == true,
                      "\(lines.first ?? "no log")")
        // The understanding encoder sees 2x2 patches per cell: 6x6 patches of 8 pixels.
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("model/config.json"))) as! [String: Any]
        let vision = (config["vision_und_enc_config"] as? [String: Any])?["params"] as? [String: Any]
        XCTAssertEqual(vision?["image_size"] as? Int, 48)
        XCTAssertEqual(vision?["patch_size"] as? Int, 8)
        let written = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report/config.json"))) as! [String: Any]
        XCTAssertEqual(written["world"] as? String, "extended")
        // Held-out questions of the extended world include size questions; the model draws 48-pixel images.
        XCTAssertNotNil(scores.understanding["size"])
        let pipeline = try JanusFlowPipeline(modelDirectory: out.appendingPathComponent("model"), vaeDirectory: out.appendingPathComponent("vae"),
                                             dtype: .float32)
        XCTAssertEqual(try pipeline.generate(prompts: ["a photo of a small white diamond"], seeds: [1], steps: 2, cfg: 2, imagesPerPass: 1)[0].width, 48)
    }

    func testProgressHandlerCancelsInEachPhase() throws {
        for phase in ["VAE", "JanusFlow stages", "questions"] {
            let out = temporaryDirectory("shapes-demo-cancel")
            var demo = ShapesDemo(settings: Self.tinySettings(), outputDirectory: out)
            demo.log = { _ in }
            var seen: [DemoProgress] = []
            demo.progressHandler = { p in
                seen.append(p)
                return !(p.phase == phase && p.step == 2)
            }
            XCTAssertThrowsError(try demo.run(), phase) { XCTAssertTrue($0 is CancellationError, "\(phase): \($0)") }
            // Nothing after the cancelled step was run.
            XCTAssertEqual(seen.last?.phase, phase)
            XCTAssertEqual(seen.last?.step, 2)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("report/scores.json").path), phase)
        }
    }

    func testBadSettingsFileNamesTheFileAndKey() throws {
        let dir = temporaryDirectory("shapes-demo-settings")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("s.json")
        try #"{"vaeSteps": 3, "stageStep": [1, 1, 1]}"#.write(to: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ShapesDemo.Settings().overridden(byJSONFile: file)) { error in
            XCTAssertTrue((error as? ShapesDemoError)?.message.hasPrefix("\(file.path): unknown setting 'stageStep' (known: ") == true, "\(error)")
        }
        // Found by the fuzzer (Fuzz/Regressions/DemoSettings): a number past Int's range was a DecodingError.
        XCTAssertThrowsError(try ShapesDemo.Settings().overridden(byJSON: Data(#"{"merges": 33333333333333333333333}"#.utf8), name: "s.json")) {
            XCTAssertEqual(($0 as? ShapesDemoError)?.message, "s.json: setting 'merges' is out of range for its type")
        }
        XCTAssertThrowsError(try ShapesDemo.Settings().overridden(byJSON: Data(#"{"world": "huge"}"#.utf8), name: "s.json")) {
            XCTAssertEqual(($0 as? ShapesDemoError)?.message, "s.json: setting 'world' must be one of 'standard', 'extended' (got huge)")
        }
        // The extended world's 3x3 grid needs a side divisible by 6; its preset draws 48 pixels.
        XCTAssertThrowsError(try ShapesDemo.Settings().overridden(byJSON: Data(#"{"world": "extended"}"#.utf8), name: "s.json")) {
            XCTAssertEqual(($0 as? ShapesDemoError)?.message,
                           "s.json: setting 'imageSize' must be at least 16 and a multiple of 8 and of 6 in the extended world (32)")
        }
        XCTAssertEqual(try ShapesDemo.Settings().overridden(byJSON: Data(#"{"world": "extended", "imageSize": 48}"#.utf8), name: "s.json").worldConfig,
                       WorldConfig.extended)
        // Every count, step number and rate is range-checked, by name, in a file and from Swift alike.
        let outOfRange: [(String, String)] = [
            (#"{"batchSize": 0}"#, "s.json: setting 'batchSize' must be at least 1 (0)"),
            (#"{"stageSteps": [10, 20]}"#, "s.json: setting 'stageSteps' must be 3 step counts >= 1, one per stage ([10, 20])"),
            (#"{"stageSteps": [10, 0, 5]}"#, "s.json: setting 'stageSteps' must be 3 step counts >= 1, one per stage ([10, 0, 5])"),
            (#"{"trainQuestions": 4}"#, "s.json: setting 'trainQuestions' must be at least questionsPerImage (8) (4)"),
            (#"{"sampleSteps": -3}"#, "s.json: setting 'sampleSteps' must be at least 1 (-3)"),
            (#"{"learningRate": 0}"#, "s.json: setting 'learningRate' must be > 0 (0.0)"),
            (#"{"cfg": -1}"#, "s.json: setting 'cfg' must be >= 0 (-1.0)"),
            (#"{"questionsPerImage": 0}"#, "s.json: setting 'questionsPerImage' must be at least 1 (0)"),
        ]
        for (json, message) in outOfRange {
            XCTAssertThrowsError(try ShapesDemo.Settings().overridden(byJSON: Data(json.utf8), name: "s.json"), json) {
                XCTAssertEqual(($0 as? ShapesDemoError)?.message, message)
            }
        }
        var bad = ShapesDemo.Settings.quick
        bad.vaeSteps = 0
        var demo = ShapesDemo(settings: bad, outputDirectory: dir.appendingPathComponent("out"))
        XCTAssertThrowsError(try demo.run()) {
            XCTAssertEqual(($0 as? ShapesDemoError)?.message, "settings: setting 'vaeSteps' must be at least 1 (0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out").path))
        try #"{"vaeSteps": 3}"#.write(to: file, atomically: true, encoding: .utf8)
        let s = try ShapesDemo.Settings.quick.overridden(byJSONFile: file)
        XCTAssertEqual(s.vaeSteps, 3)
        XCTAssertEqual(s.trainScenes, 600)  // the rest as the base settings
    }

    func testPositionProbeMeasuresWhatIsDrawn() throws {
        // Images that follow their prompts: every prompt right, and its twin (the opposite relation) drawn the
        // same, so the twins are all wrong and the relation word "changed" nothing: the probe's reading of a model
        // that ignores the relation.
        var world = WorldGenerator(seed: 5)
        let prompts = (0..<40).map { _ in world.generationSample(category: .position) }
        let images = prompts.map { RGBImage(width: 32, height: 32, pixels: $0.scene.render(size: 32).pixels) }
        let detector = Detector(config: .standard)
        let ignoring = PositionProbe.measure(prompts: prompts, images: images, twinImages: images, detector: detector)
        XCTAssertEqual(ignoring.prompts, 40)
        XCTAssertEqual(ignoring.bothFound, 1)
        XCTAssertEqual(ignoring.accuracy, 1)
        XCTAssertEqual(ignoring.swappedAccuracy, 0)
        XCTAssertEqual(ignoring.changedBySwappedRelation, 0)
        XCTAssertEqual((ignoring.layout["same_row"] ?? 0) + (ignoring.layout["same_column"] ?? 0), 1, accuracy: 1e-9)
        for (asked, drawn) in ignoring.drawnByAsked { XCTAssertEqual(drawn, [asked: 1], asked) }
        // The subject comes first in reading order exactly for "left of" and "above".
        let firstAsked = prompts.filter { [.leftOf, .above].contains($0.requirements.include[1].position!.relation) }.count
        XCTAssertEqual(ignoring.subjectDrawnFirst, Double(firstAsked) / 40, accuracy: 1e-9)
        // Twins drawn as their own prompts ask (subject and reference trade cells): every relation changes.
        let twins = prompts.map { sample -> RGBImage in
            var scene = sample.scene
            (scene.objects[0].cell, scene.objects[1].cell) = (scene.objects[1].cell, scene.objects[0].cell)
            return RGBImage(width: 32, height: 32, pixels: scene.render(size: 32).pixels)
        }
        let following = PositionProbe.measure(prompts: prompts, images: images, twinImages: twins, detector: detector)
        XCTAssertEqual(following.changedBySwappedRelation, 1)
        XCTAssertEqual(following.swappedAccuracy, 1)
        // The twin's prompt and requirements name the opposite relation.
        let twin = try XCTUnwrap(WorldGenerator.positionTwin(of: prompts[0]))
        let relation = prompts[0].requirements.include[1].position!.relation
        XCTAssertNotEqual(twin.requirements.include[1].position!.relation, relation)
        XCTAssertTrue(twin.prompt.contains(" \(twin.requirements.include[1].position!.relation.rawValue) "), twin.prompt)
        XCTAssertNil(WorldGenerator.positionTwin(of: world.generationSample(category: .twoObject)))
        // Placed prompts name every object's cell: drawn as asked all are in place; each object moved one cell
        // along its row, none is.
        let placed = (0..<30).map { _ in world.placedSample() }
        XCTAssertTrue(placed.allSatisfy { $0.prompt.contains(" at the \($0.scene.objects[0].cell.name)") }, placed[0].prompt)
        let asked = placed.map { RGBImage(width: 32, height: 32, pixels: $0.scene.render(size: 32).pixels) }
        XCTAssertEqual(PositionProbe.placedCellAccuracy(placed, asked, detector: detector), 1)
        let moved = placed.map { sample -> RGBImage in
            var scene = sample.scene
            for i in scene.objects.indices { scene.objects[i].cell = Cell(column: 1 - scene.objects[i].cell.column, row: scene.objects[i].cell.row) }
            return RGBImage(width: 32, height: 32, pixels: scene.render(size: 32).pixels)
        }
        XCTAssertEqual(PositionProbe.placedCellAccuracy(placed, moved, detector: detector), 0)
    }
}
