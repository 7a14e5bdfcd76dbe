import Foundation

/// What a demo run scored, read from the object it writes to `report/scores.json`.
public struct DemoScores: @unchecked Sendable {
    /// GenEval rules per category (`single_object`, ..., `color_attr`): the share of images the detector finds
    /// correct; `overall` is their mean.
    public let generation: [String: Double]
    /// Exact-match accuracy per question type, `accuracy` over all of them, and POPE's `pope_f1`.
    public let understanding: [String: Double]
    /// Each loss's mean over the first and last tenth of its run (`first`, `last`); empty for a re-scoring.
    public let losses: [String: [String: Double]]
    /// The understanding accuracy of always giving each question type's most common answer; nil for a re-scoring.
    public let chanceAccuracy: Double?
    /// The whole object as written to scores.json.
    public let json: [String: Any]

    init(json: [String: Any]) {
        self.json = json
        generation = json["generation"] as? [String: Double] ?? [:]
        understanding = json["understanding"] as? [String: Double] ?? [:]
        losses = json["losses"] as? [String: [String: Double]] ?? [:]
        chanceAccuracy = (json["chance"] as? [String: Double])?["understanding_accuracy"]
    }

    /// GenEval's overall score and the understanding accuracy (NaN when missing).
    public var generationOverall: Double { generation["overall"] ?? .nan }
    /// The understanding accuracy over all held-out questions (NaN when missing).
    public var understandingAccuracy: Double { understanding["accuracy"] ?? .nan }
}

extension ShapesDemo {
    /// Runs these settings with and without REPA on the same budget (the paper's Table 6 ablation); the second run
    /// goes to `ablation-no-repa/` and the difference to `report/ablation_repa.json`.
    public mutating func runWithREPAAblation() throws -> (withREPA: DemoScores, withoutREPA: DemoScores, table: [String: Any]) {
        let with = try run()
        var without = settings
        without.repa = false
        var ablation = ShapesDemo(settings: without, outputDirectory: outputDirectory.appendingPathComponent("ablation-no-repa"))
        ablation.log = log
        ablation.progressHandler = progressHandler
        let other = try ablation.run()
        let table: [String: Any] = [
            "with_repa": ["generation_overall": with.generationOverall, "understanding_accuracy": with.understandingAccuracy],
            "without_repa": ["generation_overall": other.generationOverall, "understanding_accuracy": other.understandingAccuracy],
            "difference": ["generation_overall": with.generationOverall - other.generationOverall,
                           "understanding_accuracy": with.understandingAccuracy - other.understandingAccuracy],
        ]
        let data = try JSONSerialization.data(withJSONObject: table, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: outputDirectory.appendingPathComponent("report/ablation_repa.json"), options: .atomic)
        return (with, other, table)
    }
}
