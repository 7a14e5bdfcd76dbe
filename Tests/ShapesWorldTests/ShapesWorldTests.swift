import Foundation
import ShapesWorld
import XCTest

final class ShapesWorldTests: XCTestCase {
    func samples(_ n: Int, seed: UInt64) -> [GenerationSample] {
        var rng = WorldRandom(seed: seed)
        return (0..<n).map { ShapesWorld.generationSample(GenEvalCategory.allCases[$0 % 6], rng: &rng) }
    }

    func testDeterministic() {
        let a = samples(30, seed: 1), b = samples(30, seed: 1), c = samples(30, seed: 2)
        XCTAssertEqual(a.map(\.prompt), b.map(\.prompt))
        XCTAssertEqual(a.map { $0.scene.render(size: 32) }, b.map { $0.scene.render(size: 32) })
        XCTAssertNotEqual(a.map(\.prompt), c.map(\.prompt))
    }

    func testDetectorFindsGeneratedObjects() {
        var rng = WorldRandom(seed: 3)
        let detector = Detector()
        var exact = 0
        let total = 500
        for _ in 0..<total {
            let scene = ShapesWorld.randomScene(rng: &rng)
            let found = detector.detect(scene.render(size: 32))
            let expected = scene.objects.map { "\($0.color.rawValue) \($0.kind.rawValue)" }.sorted()
            if found.map({ "\($0.color.rawValue) \($0.kind.rawValue)" }).sorted() == expected { exact += 1 }
        }
        XCTAssertGreaterThanOrEqual(Double(exact) / Double(total), 0.98, "\(exact)/\(total)")
    }

    func testGenEvalScoresGroundTruthHighAndWrongImagesLow() {
        let detector = Detector()
        let held = samples(120, seed: 9)
        let right = held.map { ($0.requirements.category, GenEvalScorer.isCorrect(detector.detect($0.scene.render(size: 32)), $0.requirements)) }
        XCTAssertGreaterThanOrEqual(GenEvalScorer.summarize(right)["overall"]!, 0.95)
        // Wrong images: a blank canvas, and images of other prompts (shifted by one).
        let blank = Scene(objects: []).render(size: 32)
        let none = held.map { ($0.requirements.category, GenEvalScorer.isCorrect(detector.detect(blank), $0.requirements)) }
        XCTAssertEqual(GenEvalScorer.summarize(none)["overall"]!, 0)
        var noise = WorldRandom(seed: 4)
        let random = ShapeImage(width: 32, height: 32, pixels: (0..<(32 * 32 * 3)).map { _ in UInt8(noise.int(256)) })
        let noisy = held.map { ($0.requirements.category, GenEvalScorer.isCorrect(detector.detect(random), $0.requirements)) }
        XCTAssertLessThanOrEqual(GenEvalScorer.summarize(noisy)["overall"]!, 0.1)
        let shifted = held.indices.map { i in
            (held[i].requirements.category, GenEvalScorer.isCorrect(detector.detect(held[(i + 7) % held.count].scene.render(size: 32)), held[i].requirements))
        }
        XCTAssertLessThanOrEqual(GenEvalScorer.summarize(shifted)["overall"]!, 0.45)
    }

    func testRobustToNoiseAndBlur() {
        let detector = Detector()
        var rng = WorldRandom(seed: 5)
        let held = samples(120, seed: 11)
        let results = held.map { s -> (GenEvalCategory, Bool) in
            var img = s.scene.render(size: 32)
            img.pixels = img.pixels.map { UInt8(Swift.max(0, Swift.min(255, Int($0) + rng.int(41) - 20))) }
            // 3x3 box blur.
            var blurred = img.pixels
            for y in 1..<31 { for x in 1..<31 { for c in 0..<3 {
                var sum = 0
                for dy in -1...1 { for dx in -1...1 { sum += Int(img.pixels[((y + dy) * 32 + x + dx) * 3 + c]) } }
                blurred[(y * 32 + x) * 3 + c] = UInt8(sum / 9)
            } } }
            img.pixels = blurred
            return (s.requirements.category, GenEvalScorer.isCorrect(detector.detect(img), s.requirements))
        }
        XCTAssertGreaterThanOrEqual(GenEvalScorer.summarize(results)["overall"]!, 0.9)
    }

    func testUnderstandingScorer() {
        var rng = WorldRandom(seed: 6)
        let qs = (0..<400).map { _ in ShapesWorld.question(about: ShapesWorld.randomScene(rng: &rng), rng: &rng) }
        let exact = UnderstandingScorer.summarize(qs.map { ($0.type, $0.answer, $0.answer + ".") })
        XCTAssertEqual(exact["accuracy"], 1)
        let shuffled = UnderstandingScorer.summarize(qs.indices.map { (qs[$0].type, qs[$0].answer, qs[($0 + 13) % qs.count].answer) })
        XCTAssertLessThan(shuffled["accuracy"]!, 0.4)
        // Hand-computed POPE: 3 TP, 1 FP, 1 FN, 2 TN -> precision 3/4, recall 3/4, F1 3/4, accuracy 5/7, yes ratio 4/7.
        let m = UnderstandingScorer.popeMetrics([(true, true), (true, true), (true, true), (false, true), (true, false), (false, false), (false, false)])
        XCTAssertEqual(m["precision"]!, 0.75, accuracy: 1e-12)
        XCTAssertEqual(m["recall"]!, 0.75, accuracy: 1e-12)
        XCTAssertEqual(m["f1"]!, 0.75, accuracy: 1e-12)
        XCTAssertEqual(m["accuracy"]!, 5.0 / 7, accuracy: 1e-12)
        XCTAssertEqual(m["yes_ratio"]!, 4.0 / 7, accuracy: 1e-12)
        XCTAssertEqual(Set(qs.map(\.type)), ["shape", "color", "count", "position", "pope"])
        let pope = qs.filter { $0.type == "pope" }
        XCTAssertEqual(Double(pope.filter { $0.answer == "yes" }.count) / Double(pope.count), 0.5, accuracy: 0.12)
    }
}
