import Foundation
import ShapesWorld
import XCTest

/// Adds independent uniform noise in [-amplitude, amplitude] to every channel.
func addNoise(_ image: ShapeImage, amplitude: Int = 20, rng: inout WorldRandom) -> ShapeImage {
    var out = image
    out.pixels = image.pixels.map { UInt8(Swift.max(0, Swift.min(255, Int($0) + rng.int(2 * amplitude + 1) - amplitude))) }
    return out
}

/// A (2r+1)x(2r+1) box blur; at the borders, the mean of the neighbours inside the image.
func boxBlur(_ image: ShapeImage, radius r: Int = 1) -> ShapeImage {
    var out = image
    let (w, h) = (image.width, image.height)
    for y in 0..<h {
        for x in 0..<w {
            for c in 0..<3 {
                var sum = 0, n = 0
                for dy in -r...r {
                    for dx in -r...r where x + dx >= 0 && x + dx < w && y + dy >= 0 && y + dy < h {
                        sum += Int(image.pixels[((y + dy) * w + x + dx) * 3 + c])
                        n += 1
                    }
                }
                out.pixels[(y * w + x) * 3 + c] = UInt8((sum + n / 2) / n)
            }
        }
    }
    return out
}

/// Uniformly random pixels.
func uniformNoiseImage(size: Int, rng: inout WorldRandom) -> ShapeImage {
    ShapeImage(width: size, height: size, pixels: (0..<(size * size * 3)).map { _ in UInt8(rng.int(256)) })
}

/// What the detector must recover of a scene: colour, shape, cell (and size when the world has two).
func sceneKey(_ scene: Scene, sizes: Bool = false) -> [String] {
    scene.objects.map { "\($0.color.rawValue) \($0.kind.rawValue) \($0.cell.name)" + (sizes ? " \($0.size.rawValue)" : "") }.sorted()
}

func detectionKey(_ objects: [DetectedObject], imageSize: Int, sizes: Bool = false, gridSize: Int = 2) -> [String] {
    objects.map { "\($0.color.rawValue) \($0.kind.rawValue) \($0.cell(imageWidth: imageSize, imageHeight: imageSize, gridSize: gridSize).name)"
        + (sizes ? " \($0.size.rawValue)" : "") }.sorted()
}

/// The share of `count` random scenes of `config` whose (degraded) rendering the detector reads exactly.
func detectorAccuracy(config: WorldConfig, size: Int, count: Int, seed: UInt64,
                      degrade: (ShapeImage, inout WorldRandom) -> ShapeImage = { image, _ in image }) -> (accuracy: Double, failures: [String]) {
    var world = WorldGenerator(seed: seed, config: config)
    var rng = WorldRandom(seed: seed &+ 1)
    let detector = Detector(config: config)
    let sizes = config.sizes.count > 1
    var exact = 0
    var failures: [String] = []
    for _ in 0..<count {
        let scene = world.scene()
        let found = detector.detect(degrade(scene.render(size: size), &rng))
        if detectionKey(found, imageSize: size, sizes: sizes, gridSize: config.gridSize) == sceneKey(scene, sizes: sizes) {
            exact += 1
        } else if failures.count < 5 {
            failures.append("\(sceneKey(scene, sizes: sizes)) -> \(detectionKey(found, imageSize: size, sizes: sizes, gridSize: config.gridSize))")
        }
    }
    return (Double(exact) / Double(count), failures)
}

/// Held-out prompts: `perCategory` of each GenEval category from their own seed.
func heldOutPrompts(perCategory: Int, seed: UInt64, config: WorldConfig = .standard) -> [GenerationSample] {
    var world = WorldGenerator(seed: seed, config: config)
    return GenEvalCategory.allCases.flatMap { c in (0..<perCategory).map { _ in world.generationSample(category: c) } }
}

func format(_ scores: [String: Double]) -> String {
    scores.sorted { $0.key < $1.key }.map { String(format: "%@ %.3f", $0.key, $0.value) }.joined(separator: ", ")
}
