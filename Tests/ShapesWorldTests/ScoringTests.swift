import Foundation
import ShapesWorld
import XCTest

final class ScoringTests: XCTestCase {
    let held = heldOutPrompts(perCategory: 50, seed: 9_001)

    func geneval(_ images: [ShapeImage], _ samples: [GenerationSample]) -> [String: Double] {
        GenEvalScorer.geneval(results: zip(images, samples).map { ($1.requirements.category, GenEvalScorer.score(image: $0, requirements: $1.requirements)) })
    }

    func testGroundTruthImagesOfHeldOutPromptsScoreHigh() {
        let scores = geneval(held.map { $0.scene.render(size: 32) }, held)
        print("GenEval on ground-truth images of 300 held-out prompts: \(format(scores))")
        XCTAssertGreaterThanOrEqual(scores["overall"]!, 0.95)
        XCTAssertEqual(Set(scores.keys), Set(GenEvalCategory.allCases.map(\.rawValue) + ["overall"]))
    }

    func testWrongImagesScoreLow() {
        let blank = Scene(objects: []).render(size: 32)
        let blankScores = geneval(held.map { _ in blank }, held)
        XCTAssertEqual(blankScores["overall"], 0)

        var rng = WorldRandom(seed: 4)
        let noiseScores = geneval(held.map { _ in uniformNoiseImage(size: 32, rng: &rng) }, held)
        print("GenEval on uniform noise: \(format(noiseScores))")
        XCTAssertLessThanOrEqual(noiseScores["overall"]!, 0.1)

        // Images of other held-out prompts. Under GenEval's rules an image of another prompt often still satisfies a
        // lenient one ("a photo of a circle" is satisfied by any image with a circle), so the wrong images are those
        // whose scenes do not satisfy the prompt.
        var wrong: [(ShapeImage, GenerationSample)] = []
        var anyOther: [(ShapeImage, GenerationSample)] = []
        for (i, sample) in held.enumerated() {
            let other = held[(i * 7 + 13) % held.count]
            anyOther.append((other.scene.render(size: 32), sample))
            for k in 1..<held.count {
                let candidate = held[(i + k * 37) % held.count]
                if !GenEvalScorer.isCorrect(candidate.scene.annotations(), sample.requirements) {
                    wrong.append((candidate.scene.render(size: 32), sample))
                    break
                }
            }
        }
        XCTAssertEqual(wrong.count, held.count)
        let wrongScores = geneval(wrong.map(\.0), wrong.map(\.1))
        print("GenEval on images of other prompts that do not satisfy the prompt: \(format(wrongScores))")
        XCTAssertLessThanOrEqual(wrongScores["overall"]!, 0.1)
        let otherScores = geneval(anyOther.map(\.0), anyOther.map(\.1))
        print("GenEval on images of arbitrary other prompts (chance level of GenEval's lenient rules): \(format(otherScores))")
        XCTAssertLessThan(otherScores["overall"]!, 0.5)

        // Near misses: the right scene with one attribute changed.
        var nearMisses: [(ShapeImage, GenerationSample)] = []
        for sample in held {
            var scene = sample.scene
            let r = sample.requirements
            switch r.category {
            case .singleObject, .twoObject:
                let used = Set(scene.objects.map(\.kind))
                scene.objects[0].kind = [ShapeKind.circle, .square, .triangle].first { !used.contains($0) }!
            case .colors, .colorAttr:
                scene.objects[0].color = [ShapeColor.red, .green].first { $0 != scene.objects[0].color }!
            case .counting:
                if scene.objects.count == 4 { scene.objects.removeLast() } else {
                    let free = Cell.all(gridSize: 2).first { c in !scene.objects.contains { $0.cell == c } }!
                    scene.objects.append(ShapeObject(kind: scene.objects[0].kind, color: scene.objects[0].color, cell: free))
                }
            case .position:
                (scene.objects[0].cell, scene.objects[1].cell) = (scene.objects[1].cell, scene.objects[0].cell)
            }
            XCTAssertFalse(GenEvalScorer.isCorrect(scene.annotations(), r), "\(sample.prompt) \(scene)")
            nearMisses.append((scene.render(size: 32), sample))
        }
        let nearScores = geneval(nearMisses.map(\.0), nearMisses.map(\.1))
        print("GenEval on near misses (one attribute, count or relation wrong): \(format(nearScores))")
        XCTAssertLessThanOrEqual(nearScores["overall"]!, 0.1)
    }

    func testScoresSurviveNoiseAndBlur() {
        var rng = WorldRandom(seed: 5)
        let degraded = held.map { boxBlur(addNoise($0.scene.render(size: 32), amplitude: 20, rng: &rng)) }
        let scores = geneval(degraded, held)
        print("GenEval on ground truth with noise +-20 then a 3x3 blur: \(format(scores))")
        XCTAssertGreaterThanOrEqual(scores["overall"]!, 0.9)
    }

    func testGenEvalRulesOnHandBuiltDetections() {
        func object(_ kind: ShapeKind, _ color: ShapeColor, x: Double, y: Double, side: Double = 10, confidence: Double = 0.9) -> DetectedObject {
            DetectedObject(kind: kind, color: color, size: .large,
                           box: BoundingBox(x0: x - side / 2, y0: y - side / 2, x1: x + side / 2, y1: y + side / 2),
                           area: Int(side * side), confidence: confidence)
        }
        // relative_position: offset minus 0.1 x (both sizes), normalised by the offset's length, beyond 0.5.
        let a = object(.circle, .red, x: 8, y: 8), b = object(.square, .blue, x: 24, y: 8)
        XCTAssertEqual(GenEvalScorer.relations(of: a.box, to: b.box), [.leftOf])
        XCTAssertEqual(GenEvalScorer.relations(of: b.box, to: a.box), [.rightOf])
        XCTAssertEqual(GenEvalScorer.relations(of: a.box, to: object(.square, .blue, x: 24, y: 24).box), [.leftOf, .above])
        XCTAssertEqual(GenEvalScorer.relations(of: a.box, to: object(.square, .blue, x: 9, y: 9).box), [])
        // dx = 6, dy = 2.5: revised (4, 0.5) / 6.5 -> only "right of".
        XCTAssertEqual(GenEvalScorer.relations(of: object(.circle, .red, x: 14, y: 10.5).box, to: object(.circle, .red, x: 8, y: 8).box), [.rightOf])

        let position = Requirements(category: .position, include: [.init(shape: .square, count: 1),
                                                                   .init(shape: .circle, count: 1, position: .init(.leftOf, of: 0))])
        XCTAssertTrue(GenEvalScorer.isCorrect([a, b], position))
        XCTAssertFalse(GenEvalScorer.isCorrect([object(.circle, .red, x: 24, y: 8), object(.square, .blue, x: 8, y: 8)], position))
        XCTAssertEqual(GenEvalScorer.evaluate([a], position).reasons, ["expected square>=1, found 0", "no target for circle to be left of"])

        // Counting: include n, exclude n + 1.
        let three = Requirements(category: .counting, include: [.init(shape: .circle, count: 3)], exclude: [.init(shape: .circle, count: 4)])
        let centres: [(Double, Double)] = [(8, 8), (24, 8), (8, 24), (24, 24)]
        let circles = centres.map { object(.circle, .green, x: $0.0, y: $0.1) }
        XCTAssertFalse(GenEvalScorer.isCorrect(Array(circles.prefix(2)), three))
        XCTAssertTrue(GenEvalScorer.isCorrect(Array(circles.prefix(3)), three))
        XCTAssertTrue(GenEvalScorer.isCorrect(Array(circles.prefix(3)) + [b], three))
        XCTAssertEqual(GenEvalScorer.evaluate(circles, three).reasons, ["expected circle<4, found 4"])

        // Colours: the most confident object of the class must have the colour (GenEval takes the top `count`).
        let red = Requirements(category: .colors, include: [.init(shape: .circle, count: 1, color: .red)])
        XCTAssertTrue(GenEvalScorer.isCorrect([object(.circle, .red, x: 8, y: 8, confidence: 0.9), object(.circle, .blue, x: 24, y: 8, confidence: 0.8)], red))
        XCTAssertFalse(GenEvalScorer.isCorrect([object(.circle, .red, x: 8, y: 8, confidence: 0.8), object(.circle, .blue, x: 24, y: 8, confidence: 0.9)], red))
        // Single object: any colour, extra objects allowed.
        let single = Requirements(category: .singleObject, include: [.init(shape: .triangle, count: 1)])
        XCTAssertTrue(GenEvalScorer.isCorrect([object(.triangle, .yellow, x: 8, y: 8), a], single))
        XCTAssertFalse(GenEvalScorer.isCorrect([a, b], single))
        // Attribute binding.
        let binding = Requirements(category: .colorAttr, include: [.init(shape: .circle, count: 1, color: .red), .init(shape: .square, count: 1, color: .blue)])
        XCTAssertTrue(GenEvalScorer.isCorrect([a, b], binding))
        XCTAssertFalse(GenEvalScorer.isCorrect([object(.circle, .blue, x: 8, y: 8), object(.square, .red, x: 24, y: 8)], binding))
    }

    func testGenEvalSummaryIsTheMeanOfCategoryScores() {
        let results: [(GenEvalCategory, Bool)] = [(.singleObject, true), (.singleObject, true), (.twoObject, true), (.twoObject, false),
                                                  (.counting, false), (.colors, true), (.position, false), (.position, false),
                                                  (.position, true), (.position, true), (.colorAttr, true)]
        let s = GenEvalScorer.geneval(results: results)
        XCTAssertEqual(s["single_object"], 1)
        XCTAssertEqual(s["two_object"], 0.5)
        XCTAssertEqual(s["counting"], 0)
        XCTAssertEqual(s["position"], 0.5)
        XCTAssertEqual(s["overall"]!, (1 + 0.5 + 0 + 1 + 0.5 + 1) / 6, accuracy: 1e-12)
        XCTAssertEqual(GenEvalScorer.summarize(results), s)
        XCTAssertEqual(GenEvalScorer.geneval(results: [(.counting, true), (.colors, false)])["overall"], 0.5)
    }

    func testUnderstandingExactAnswersScoreOneAndShuffledAnswersScoreChance() {
        var world = WorldGenerator(seed: 6)
        let questions = (0..<4000).map { _ in world.question(about: world.scene()) }
        let exact = UnderstandingScorer.summarize(questions.map { ($0.type, $0.answer, " " + $0.answer.uppercased() + ".") })
        XCTAssertEqual(exact["accuracy"], 1)
        for type in world.questionTypes { XCTAssertEqual(exact[type.rawValue], 1, type.rawValue) }
        XCTAssertEqual(exact["pope_accuracy"], 1)
        XCTAssertEqual(exact["pope_f1"], 1)

        // Answers shuffled within each type: accuracy is the chance that two random answers of the type agree.
        var rng = WorldRandom(seed: 7)
        var rows: [(type: String, expected: String, predicted: String)] = []
        var chance = 0.0
        for type in world.questionTypes.map(\.rawValue) {
            let answers = questions.filter { $0.type == type }.map(\.answer)
            let shuffled = rng.shuffled(answers)
            rows += zip(answers, shuffled).map { (type, $0, $1) }
            let counts = Dictionary(answers.map { ($0, 1) }, uniquingKeysWith: +)
            chance += counts.values.map { Double($0) * Double($0) / Double(answers.count) }.reduce(0, +)
        }
        chance /= Double(questions.count)
        let scores = UnderstandingScorer.summarize(rows)
        print(String(format: "understanding: shuffled answers %.3f, chance %.3f", scores["accuracy"]!, chance))
        XCTAssertEqual(scores["accuracy"]!, chance, accuracy: 0.03)
        XCTAssertLessThan(scores["accuracy"]!, 0.45)
        XCTAssertEqual(scores["pope_accuracy"]!, 0.5, accuracy: 0.06)
    }

    func testNormalisation() {
        XCTAssertTrue(UnderstandingScorer.isCorrect(expected: "red", predicted: " Red. "))
        XCTAssertTrue(UnderstandingScorer.isCorrect(expected: "two", predicted: "2"))
        XCTAssertTrue(UnderstandingScorer.isCorrect(expected: "red circle", predicted: "A red circle!"))
        XCTAssertTrue(UnderstandingScorer.isCorrect(expected: "top left", predicted: "top\n left"))
        XCTAssertTrue(UnderstandingScorer.isCorrect(expected: "two objects: a red circle at the top left and a blue square at the bottom right",
                                                    predicted: "Two objects: a red circle at the top left, and a blue square at the bottom right."))
        XCTAssertFalse(UnderstandingScorer.isCorrect(expected: "red", predicted: "red circle"))
        XCTAssertFalse(UnderstandingScorer.isCorrect(expected: "yes", predicted: "no"))
        XCTAssertEqual(UnderstandingScorer.normalize("  The  RED, circle?? "), "red circle")
        // POPE's reading of free-form answers.
        XCTAssertTrue(UnderstandingScorer.popeSaysYes("Yes, there is."))
        XCTAssertFalse(UnderstandingScorer.popeSaysYes("No."))
        XCTAssertFalse(UnderstandingScorer.popeSaysYes("There is not a red circle"))
        XCTAssertFalse(UnderstandingScorer.popeSaysYes("no, there is no red circle. yes"))
        XCTAssertTrue(UnderstandingScorer.popeSaysYes("There is a red circle. No doubt."))
        XCTAssertTrue(UnderstandingScorer.popeSaysYes("red"))
    }

    func testPOPEMetricsOnAHandBuiltConfusionMatrix() {
        // 4 TP, 1 FN, 2 FP, 3 TN (10 questions, 5 yes, 5 no):
        // accuracy 7/10, precision 4/6, recall 4/5, F1 2*(2/3)(4/5)/(2/3+4/5) = 8/11, yes ratio 6/10.
        let pairs: [(truth: Bool, predicted: Bool)] = [(true, true), (true, true), (true, true), (true, true), (true, false),
                                                       (false, true), (false, true), (false, false), (false, false), (false, false)]
        let m = UnderstandingScorer.popeMetrics(pairs)
        XCTAssertEqual(m["accuracy"]!, 0.7, accuracy: 1e-12)
        XCTAssertEqual(m["precision"]!, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(m["recall"]!, 0.8, accuracy: 1e-12)
        XCTAssertEqual(m["f1"]!, 8.0 / 11, accuracy: 1e-12)
        XCTAssertEqual(m["yes_ratio"]!, 0.6, accuracy: 1e-12)
        // Always "no": precision, recall and F1 are 0.
        let no = UnderstandingScorer.popeMetrics(pairs.map { ($0.truth, false) })
        XCTAssertEqual(no["accuracy"], 0.5)
        XCTAssertEqual(no["f1"], 0)
        XCTAssertEqual(no["yes_ratio"], 0)
        // Through summarize, with free-form answers and two POPE settings.
        let rows: [(type: String, expected: String, predicted: String)] = pairs.enumerated().map { i, p in
            (i % 2 == 0 ? "pope_random" : "pope_adversarial", p.truth ? "yes" : "no", p.predicted ? "Yes, there is." : "No, there is not.")
        } + [("color", "red", "red"), ("color", "blue", "green")]
        let s = UnderstandingScorer.summarize(rows)
        XCTAssertEqual(s["color"], 0.5)
        XCTAssertEqual(s["pope_random"], 0, "free-form answers are not exact matches")
        XCTAssertEqual(s["accuracy"]!, 1.0 / 12, accuracy: 1e-12)
        // pope_random: rows 0,2,4,6,8 = TP, TP, FN, FP, TN.
        XCTAssertEqual(s["pope_random_accuracy"]!, 0.6, accuracy: 1e-12)
        XCTAssertEqual(s["pope_random_precision"]!, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(s["pope_random_recall"]!, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(s["pope_random_yes_ratio"]!, 0.6, accuracy: 1e-12)
        // pope_adversarial: rows 1,3,5,7,9 = TP, TP, FP, TN, TN.
        XCTAssertEqual(s["pope_adversarial_accuracy"]!, 0.8, accuracy: 1e-12)
        XCTAssertEqual(s["pope_adversarial_recall"]!, 1, accuracy: 1e-12)
    }
}
