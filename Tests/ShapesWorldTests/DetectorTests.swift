import Foundation
import ShapesWorld
import XCTest

final class DetectorTests: XCTestCase {
    func testFindsExactlyTheGeneratedObjectsIn500Scenes() {
        let (accuracy, failures) = detectorAccuracy(config: .standard, size: 32, count: 500, seed: 3)
        print("detector, 500 scenes at 32 px, clean: \(accuracy)")
        XCTAssertGreaterThanOrEqual(accuracy, 0.98, "\(failures)")
    }

    func testRobustToNoiseBlurAndWashedOutColours() {
        let cases: [(String, (ShapeImage, inout WorldRandom) -> ShapeImage)] = [
            ("noise +-20", { image, rng in addNoise(image, rng: &rng) }),
            ("3x3 blur", { image, _ in boxBlur(image) }),
            ("noise +-20 then 3x3 blur", { image, rng in boxBlur(addNoise(image, rng: &rng)) }),
            ("noise +-40", { image, rng in addNoise(image, amplitude: 40, rng: &rng) }),
            ("5x5 blur", { image, _ in boxBlur(image, radius: 2) }),
            ("35% towards grey, noise +-40, 3x3 blur", { image, rng in
                var faded = image
                faded.pixels = image.pixels.map { UInt8((Double($0) * 0.65 + 128 * 0.35).rounded()) }
                return boxBlur(addNoise(faded, amplitude: 40, rng: &rng))
            }),
        ]
        for (name, degrade) in cases {
            let (accuracy, failures) = detectorAccuracy(config: .standard, size: 32, count: 500, seed: 13, degrade: degrade)
            print("detector, 500 scenes at 32 px, \(name): \(accuracy)")
            XCTAssertGreaterThanOrEqual(accuracy, 0.97, "\(name): \(failures)")
        }
    }

    func testOtherSizesAndWorlds() {
        for size in [16, 64] {
            let (accuracy, failures) = detectorAccuracy(config: .standard, size: size, count: 300, seed: 4)
            print("detector, 300 scenes at \(size) px, clean: \(accuracy)")
            XCTAssertGreaterThanOrEqual(accuracy, 0.98, "\(size): \(failures)")
        }
        let blurred64 = detectorAccuracy(config: .standard, size: 64, count: 300, seed: 4) { image, rng in boxBlur(addNoise(image, rng: &rng)) }
        print("detector, 300 scenes at 64 px, noise +-20 then 3x3 blur: \(blurred64.accuracy)")
        XCTAssertGreaterThanOrEqual(blurred64.accuracy, 0.98, "\(blurred64.failures)")
        // Every shape and colour, large objects, 32 px.
        let all = WorldConfig(shapes: ShapeKind.allCases, colors: ShapeColor.allCases)
        for (name, degrade) in [("clean", { (image: ShapeImage, _: inout WorldRandom) in image }),
                                ("noise +-20 then 3x3 blur", { (image: ShapeImage, rng: inout WorldRandom) in boxBlur(addNoise(image, rng: &rng)) })] {
            let (accuracy, failures) = detectorAccuracy(config: all, size: 32, count: 300, seed: 6, degrade: degrade)
            print("detector, 4 shapes x 7 colours, 300 scenes at 32 px, \(name): \(accuracy)")
            XCTAssertGreaterThanOrEqual(accuracy, 0.98, "\(name): \(failures)")
        }
        // The extended world (small and large objects in a 3x3 grid, read back with their sizes and cells) at its
        // 48 px, clean and with noise and blur (at 64 px see Detector's limits).
        for (size, blur) in [(48, true), (48, false)] {
            var config = WorldConfig.extended
            config.imageSize = size
            let (accuracy, failures) = detectorAccuracy(config: config, size: size, count: 300, seed: 7) { image, rng in
                blur ? boxBlur(addNoise(image, rng: &rng)) : image
            }
            print("detector, extended world with sizes, 300 scenes at \(size) px\(blur ? ", noise +-20 then 3x3 blur" : ", clean"): \(accuracy)")
            XCTAssertGreaterThanOrEqual(accuracy, 0.98, "\(failures)")
        }
    }

    func testFindsNothingInBlankOrNoiseImages() {
        let detector = Detector()
        XCTAssertEqual(detector.detect(Scene(objects: []).render(size: 32)), [])
        XCTAssertEqual(detector.detect(ShapeImage(width: 32, height: 32, fill: (0, 0, 0))), [])
        XCTAssertEqual(detector.detect(ShapeImage(width: 32, height: 32, fill: (255, 255, 255))), [])
        var rng = WorldRandom(seed: 1)
        var found = 0
        for _ in 0..<200 { found += detector.detect(uniformNoiseImage(size: 32, rng: &rng)).count }
        XCTAssertLessThanOrEqual(found, 2, "objects found in 200 noise images")
        // Grey noise around the background is background.
        let greyNoise = addNoise(Scene(objects: []).render(size: 32), amplitude: 40, rng: &rng)
        XCTAssertEqual(detector.detect(greyNoise), [])
    }

    func testReportsBoxesSizesAndConfidence() {
        let scene = Scene(objects: [ShapeObject(kind: .square, color: .red, cell: .topLeft),
                                    ShapeObject(kind: .triangle, color: .green, cell: .bottomRight, size: .small)])
        let found = Detector(config: WorldConfig(shapes: ShapeKind.allCases, colors: ShapeColor.allCases, sizes: ShapeSize.allCases)).detect(scene.render(size: 64))
        XCTAssertEqual(found.count, 2)
        XCTAssertEqual(found[0].kind, .square)
        XCTAssertEqual(found[0].size, .large)
        XCTAssertEqual(found[1].size, .small)
        let truth = scene.objects[0].boundingBox(imageSize: 64)
        XCTAssertEqual(found[0].box.centerX, truth.centerX, accuracy: 0.5)
        XCTAssertEqual(found[0].box.width, truth.width, accuracy: 1)
        XCTAssertEqual(found[0].area, Int(found[0].box.width * found[0].box.height))
        XCTAssertGreaterThan(found[0].confidence, 0.95)
        XCTAssertEqual(found[1].cell(imageWidth: 64, imageHeight: 64), .bottomRight)
        // In a 3x3 grid at 48 px: a large object is 11.5 pixels wide and a small one 7, each in its own cell.
        let grid = Scene(objects: [ShapeObject(kind: .circle, color: .cyan, cell: Cell(column: 1, row: 1, gridSize: 3)),
                                   ShapeObject(kind: .square, color: .white, cell: Cell(column: 2, row: 0, gridSize: 3), size: .small)])
        let inGrid = Detector(config: .extended).detect(grid.render(size: 48))
        XCTAssertEqual(inGrid.map(\.kind), [.square, .circle])  // reading order
        XCTAssertEqual(inGrid.map(\.size), [.small, .large])
        XCTAssertEqual(inGrid.map { $0.cell(imageWidth: 48, imageHeight: 48, gridSize: 3).name }, ["top right", "center"])
        XCTAssertEqual(grid.objects[0].boundingBox(imageSize: 48), BoundingBox(x0: 16 + 16 * 0.14, y0: 16 + 16 * 0.14, x1: 32 - 16 * 0.14, y1: 32 - 16 * 0.14))
    }

    func testTouchingObjectsOfDifferentColoursAreSeparated() {
        // A red and a blue rectangle sharing an edge, each 8x10 pixels.
        var image = Scene(objects: []).render(size: 32)
        for y in 10..<20 {
            for x in 6..<22 {
                let c: [UInt8] = x < 14 ? [220, 40, 40] : [40, 80, 230]
                image.pixels.replaceSubrange(((y * 32 + x) * 3)..<((y * 32 + x) * 3 + 3), with: c)
            }
        }
        let found = Detector().detect(image)
        XCTAssertEqual(found.map(\.color), [.red, .blue])
        XCTAssertEqual(found.map(\.kind), [.square, .square])
        XCTAssertEqual(GenEvalScorer.relations(of: found[0].box, to: found[1].box), [.leftOf])
    }
}
