import Foundation
import JanusFlow
import JanusFlowImageIO
import JanusFlowTokenizer
import JanusFlowTraining
import MLXEngine
import ShapesWorld

// Scoring a trained demo model on held-out prompts and questions through the public pipeline.
extension ShapesDemo {
    /// Held-out prompts generated together in evaluation.
    static let evaluationBatch = 40

    /// Scores a trained model through the public pipeline on held-out prompts (GenEval rules applied to the
    /// detector's findings) and questions (exact match), and writes the image grids and samples into `report`.
    func evaluate(modelDirectory: URL, vaeDirectory: URL, prompts: [GenerationSample], questions: [QuestionSample], world: WorldConfig,
                  report: URL) throws -> (generation: [String: Double], understanding: [String: Double], position: PositionProbe) {
        let s = settings
        let pipeline = try JanusFlowPipeline(modelDirectory: modelDirectory, vaeDirectory: vaeDirectory, dtype: .float32)
        let detector = Detector(config: world)
        var genResults: [(GenEvalCategory, Bool)] = []
        var grids: [GenEvalCategory: [RGBImage]] = [:]
        var promptLines: [String] = []
        // Prompts in batches (each image still from its own seed, as if generated alone): the tiny model's rows
        // are far too small to keep the cores busy one prompt at a time.
        let images = try generateInBatches(pipeline, prompts: prompts.map(\.prompt), seeds: prompts.indices.map { s.seed &+ UInt64($0) }) { done in
            try reportProgress("GenEval prompts", done, of: prompts.count)
        }
        for (i, sample) in prompts.enumerated() {
            let image = images[i]
            let ok = GenEvalScorer.isCorrect(detector.detect(Self.toShape(image)), sample.requirements)
            genResults.append((sample.requirements.category, ok))
            grids[sample.requirements.category, default: []].append(image)
            promptLines.append("\(sample.requirements.category.rawValue)\t\(ok ? "correct" : "wrong")\t\(sample.prompt)")
        }
        let probe = try probePosition(pipeline: pipeline, prompts: prompts, images: images, detector: detector, world: world)
        var qaRows: [(type: String, expected: String, predicted: String)] = []
        var qaLines = ["| question | expected | answer |", "|---|---|---|"]
        for (i, q) in questions.enumerated() {
            let answer = try pipeline.understand(image: Self.toRGB(q.scene.render(size: s.imageSize)), question: q.question,
                                                 parameters: SamplingParameters(maxNewTokens: 40))
            qaRows.append((q.type, q.answer, answer))
            if i < 40 { qaLines.append("| \(q.question) | \(q.answer) | \(answer) |") }
            try reportProgress("questions", i + 1, of: questions.count)
        }
        try FileManager.default.createDirectory(at: report, withIntermediateDirectories: true)
        for (category, images) in grids {
            try RGBImage.grid(images, columns: Swift.min(10, images.count)).writePNG(to: report.appendingPathComponent("generation_\(category.rawValue).png"))
        }
        try (promptLines.joined(separator: "\n") + "\n").write(to: report.appendingPathComponent("generation_prompts.tsv"), atomically: true, encoding: .utf8)
        try (qaLines.joined(separator: "\n") + "\n").write(to: report.appendingPathComponent("understanding_samples.md"), atomically: true, encoding: .utf8)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(probe).write(to: report.appendingPathComponent("position_probe.json"), options: .atomic)
        log(String(format: "position probe: both objects %.2f, layout %@, relation word changes the drawn relation in %.2f, subject drawn first %.2f, placed objects in their cell %.2f",
                   probe.bothFound, probe.layout.sorted { $0.key < $1.key }.map { String(format: "%@ %.2f", $0.key, $0.value) }.joined(separator: ", "),
                   probe.changedBySwappedRelation, probe.subjectDrawnFirst, probe.placedCellAccuracy))
        return (GenEvalScorer.summarize(genResults), UnderstandingScorer.summarize(qaRows), probe)
    }

    /// `prompts[i]` drawn from `seeds[i]` with the settings' steps and CFG, `evaluationBatch` prompts a pass (each
    /// image as if alone); `progress` gets the number done after each pass.
    func generateInBatches(_ pipeline: JanusFlowPipeline, prompts: [String], seeds: [UInt64],
                           progress: (Int) throws -> Void = { _ in }) throws -> [RGBImage] {
        var images: [RGBImage] = []
        for start in stride(from: 0, to: prompts.count, by: Self.evaluationBatch) {
            let range = start..<Swift.min(start + Self.evaluationBatch, prompts.count)
            images += try pipeline.generate(prompts: Array(prompts[range]), seeds: Array(seeds[range]), steps: settings.sampleSteps,
                                            cfg: settings.cfg, imagesPerPass: range.count)
            try progress(range.upperBound)
        }
        return images
    }

    func logScores(_ generation: [String: Double], _ understanding: [String: Double]) {
        log("generation (GenEval-style): " + generation.sorted { $0.key < $1.key }.map { String(format: "%@ %.2f", $0.key, $0.value) }.joined(separator: ", "))
        log("understanding: " + understanding.sorted { $0.key < $1.key }.map { String(format: "%@ %.2f", $0.key, $0.value) }.joined(separator: ", "))
    }

    /// Accuracy of always answering the most common answer of each question type.
    func chanceAccuracy(_ qs: [QuestionSample]) -> Double {
        var correct = 0
        for type in Set(qs.map(\.type)) {
            let answers = qs.filter { $0.type == type }.map(\.answer)
            let counts = Dictionary(answers.map { ($0, 1) }, uniquingKeysWith: +)
            correct += counts.values.max() ?? 0
        }
        return Double(correct) / Double(Swift.max(qs.count, 1))
    }
}
