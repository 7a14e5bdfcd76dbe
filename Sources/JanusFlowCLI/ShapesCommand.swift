import ArgumentParser
import Foundation
import JanusFlowImageIO
import ShapesWorld

/// Writes a ShapesWorld dataset in the manifest formats `janusflow prepare` / `train` read, plus GenEval-style
/// evaluation metadata and held-out understanding questions.
struct ShapesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shapes",
        abstract: "Write a ShapesWorld dataset: understanding/generation/text manifests with PNG images and held-out eval files.")

    @Option(help: "Output folder (created; existing files of the same names are replaced).")
    var out: String

    @Option(help: "Seed: the same seed and counts give byte-identical files.")
    var seed: UInt64 = 0

    @Option(help: "Training images with questions.")
    var understandingImages = 2000

    @Option(help: "Questions per understanding image.")
    var questionsPerImage = 3

    @Option(help: "Training images with captions (cycling through GenEval's six categories).")
    var generationImages = 2400

    @Option(help: "Lines of text.")
    var textLines = 4000

    @Option(help: "Held-out GenEval prompts per category.")
    var evalPrompts = 50

    @Option(help: "Held-out understanding images.")
    var evalImages = 200

    @Option(help: "Image side in pixels (default: 32, or 48 with --extended).")
    var imageSize: Int?

    @Flag(help: "The extended world: every shape, colour and size (4 shapes, 7 colours, small and large) in a 3x3 grid, instead of the demo's world.")
    var extended = false

    func validate() throws {
        for (name, value) in [("--understanding-images", understandingImages), ("--questions-per-image", questionsPerImage),
                              ("--generation-images", generationImages), ("--text-lines", textLines),
                              ("--eval-prompts", evalPrompts), ("--eval-images", evalImages)] where value < 0 {
            throw ValidationError("\(name) must not be negative (got \(value))")
        }
        if let imageSize, !(8...1024).contains(imageSize) { throw ValidationError("--image-size must be 8...1024 (got \(imageSize))") }
    }

    func run() throws {
        var config = extended ? WorldConfig.extended : WorldConfig.standard
        if let imageSize { config.imageSize = imageSize }
        let counts = DatasetCounts(understandingImages: understandingImages, questionsPerImage: questionsPerImage,
                                   generationImages: generationImages, textLines: textLines,
                                   evalPromptsPerCategory: evalPrompts, evalUnderstandingImages: evalImages)
        let root = URL(fileURLWithPath: out)
        try ShapesWorld.writeDataset(to: root, seed: seed, counts: counts, config: config) { image, url in
            try RGBImage(width: image.width, height: image.height, pixels: image.pixels).writePNG(to: url)
        }
        note("wrote \(root.path): understanding.jsonl, generation.jsonl, text.jsonl, eval/evaluation_metadata.jsonl, eval/understanding.jsonl")
    }
}
