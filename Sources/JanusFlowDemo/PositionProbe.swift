import Foundation
import JanusFlow
import JanusFlowImageIO
import ShapesWorld

/// What a trained demo model draws for position prompts, measured (`report/position_probe.json`): where the subject
/// lands against the reference for each asked relation, and whether the relation word changes the image at all
/// (each prompt again with the opposite relation, same seed).
public struct PositionProbe: Codable, Equatable, Sendable {
    /// Held-out position prompts probed.
    public var prompts: Int
    /// Fraction of images where both the subject's and the reference's shapes were detected.
    public var bothFound: Double
    /// Of those: the subject in the reference's row, in its column, or on a diagonal (GenEval's two relations).
    public var layout: [String: Double]
    /// For each asked relation: the fraction of images (both found) where the subject stands in each relation to
    /// the reference (a diagonal counts for both of its relations).
    public var drawnByAsked: [String: [String: Double]]
    /// Fraction (both found in both images) where the subject's relation to the reference differs between the prompt
    /// and its twin with the opposite relation word: 0 means the relation word is ignored.
    public var changedBySwappedRelation: Double
    /// Fraction where the first-mentioned object (the subject) is the one drawn first in reading order (row by row,
    /// the order of the causal image tokens): 1 means the order of the words decides the layout, not the relation.
    public var subjectDrawnFirst: Double
    /// GenEval's verdict on the prompts, and on their twins with the opposite relation.
    public var accuracy: Double, swappedAccuracy: Double
    /// Held-out placed prompts ("a photo of a red circle at the top left", `WorldGenerator.placedSample`) and the
    /// fraction of their objects drawn in the named cell (chance 1/4 in a 2x2 grid, 1/9 in a 3x3 one): whether the image tokens can place an object
    /// at an absolute position at all, which every relation needs.
    public var placedPrompts = 0, placedCellAccuracy = 0.0

    enum CodingKeys: String, CodingKey {
        case prompts, layout, accuracy, placedPrompts = "placed_prompts", placedCellAccuracy = "placed_cell_accuracy"
        case bothFound = "both_found", drawnByAsked = "drawn_by_asked", changedBySwappedRelation = "changed_by_swapped_relation"
        case subjectDrawnFirst = "subject_drawn_first", swappedAccuracy = "swapped_accuracy"
    }

    /// The most confident detection of `kind` among `found`.
    static func mostConfident(_ kind: ShapeKind, in found: [DetectedObject]) -> DetectedObject? {
        found.filter { $0.kind == kind }.max { $0.confidence < $1.confidence }
    }

    /// Measures `prompts` (position prompts; others are skipped) with `images[i]` drawn for `prompts[i]` and
    /// `twinImages[i]` for its twin (`WorldGenerator.positionTwin(of:)`) from the same seed.
    public static func measure(prompts: [GenerationSample], images: [RGBImage], twinImages: [RGBImage], detector: Detector) -> PositionProbe {
        func located(_ found: [DetectedObject], _ sample: GenerationSample) -> (subject: DetectedObject, reference: DetectedObject)? {
            guard let reference = mostConfident(sample.requirements.include[0].shape, in: found),
                  let subject = mostConfident(sample.requirements.include[1].shape, in: found) else { return nil }
            return (subject, reference)
        }
        var both = 0, changed = 0, compared = 0, first = 0, correct = 0, swappedCorrect = 0
        var layout: [String: Int] = [:]
        var drawn: [String: [String: Int]] = [:], asked: [String: Int] = [:]
        for (i, sample) in prompts.enumerated() {
            guard let relation = sample.requirements.include[1].position?.relation, let twin = WorldGenerator.positionTwin(of: sample) else { continue }
            let found = detector.detect(ShapesDemo.toShape(images[i])), twinFound = detector.detect(ShapesDemo.toShape(twinImages[i]))
            if GenEvalScorer.isCorrect(found, sample.requirements) { correct += 1 }
            if GenEvalScorer.isCorrect(twinFound, twin.requirements) { swappedCorrect += 1 }
            guard let pair = located(found, sample) else { continue }
            both += 1
            asked[relation.rawValue, default: 0] += 1
            let relations = GenEvalScorer.relations(of: pair.subject.box, to: pair.reference.box)
            for r in relations { drawn[relation.rawValue, default: [:]][r.rawValue, default: 0] += 1 }
            let horizontal = relations.contains(.leftOf) || relations.contains(.rightOf)
            let vertical = relations.contains(.above) || relations.contains(.below)
            layout[horizontal && vertical ? "diagonal" : horizontal ? "same_row" : vertical ? "same_column" : "overlapping", default: 0] += 1
            let subjectFirst = (pair.subject.centerY, pair.subject.centerX) < (pair.reference.centerY, pair.reference.centerX)
            if subjectFirst { first += 1 }
            if let twinPair = located(twinFound, twin) {
                compared += 1
                if GenEvalScorer.relations(of: twinPair.subject.box, to: twinPair.reference.box) != relations { changed += 1 }
            }
        }
        let probed = prompts.filter { WorldGenerator.positionTwin(of: $0) != nil }.count
        func fraction(_ n: Int, _ d: Int) -> Double { d == 0 ? 0 : Double(n) / Double(d) }
        return PositionProbe(
            prompts: probed, bothFound: fraction(both, probed), layout: layout.mapValues { fraction($0, both) },
            drawnByAsked: Dictionary(uniqueKeysWithValues: drawn.map { key, counts in (key, counts.mapValues { fraction($0, asked[key] ?? 0) }) }),
            changedBySwappedRelation: fraction(changed, compared), subjectDrawnFirst: fraction(first, both),
            accuracy: fraction(correct, probed), swappedAccuracy: fraction(swappedCorrect, probed))
    }
}

extension PositionProbe {
    /// The fraction of the objects of `samples` (placed prompts) that `images` show in the named cell: the most
    /// confident detection of the object's shape, by the cell of its box centre.
    public static func placedCellAccuracy(_ samples: [GenerationSample], _ images: [RGBImage], detector: Detector) -> Double {
        var right = 0, total = 0
        for (sample, image) in zip(samples, images) {
            let found = detector.detect(ShapesDemo.toShape(image))
            for object in sample.scene.objects {
                total += 1
                guard let best = mostConfident(object.kind, in: found) else { continue }
                if best.cell(imageWidth: image.width, imageHeight: image.height, gridSize: object.cell.gridSize) == object.cell { right += 1 }
            }
        }
        return total == 0 ? 0 : Double(right) / Double(total)
    }
}

extension ShapesDemo {
    /// Draws every position prompt of `prompts` and its twin with the opposite relation (same seeds as the
    /// evaluation) and measures them; `images` are the evaluation's images of `prompts`, in order. Also draws
    /// held-out placed prompts of `world` (as many as the prompts of a category) and scores their cells.
    func probePosition(pipeline: JanusFlowPipeline, prompts: [GenerationSample], images: [RGBImage], detector: Detector,
                       world: WorldConfig) throws -> PositionProbe {
        let s = settings
        let twinned = prompts.indices.compactMap { i in WorldGenerator.positionTwin(of: prompts[i]).map { (index: i, twin: $0) } }
        let twins = try generateInBatches(pipeline, prompts: twinned.map(\.twin.prompt), seeds: twinned.map { s.seed &+ UInt64($0.index) })
        var probe = PositionProbe.measure(prompts: twinned.map { prompts[$0.index] }, images: twinned.map { images[$0.index] },
                                          twinImages: twins, detector: detector)
        var placedWorld = WorldGenerator(seed: s.seed &+ 424_242, config: world)
        let placed = (0..<s.evalPromptsPerCategory).map { _ in placedWorld.placedSample() }
        let placedImages = try generateInBatches(pipeline, prompts: placed.map(\.prompt), seeds: placed.indices.map { s.seed &+ 7_000 &+ UInt64($0) })
        (probe.placedPrompts, probe.placedCellAccuracy) = (placed.count, PositionProbe.placedCellAccuracy(placed, placedImages, detector: detector))
        return probe
    }
}
