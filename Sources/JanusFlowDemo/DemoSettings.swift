import Foundation
import ShapesWorld

/// A bad demo setting or settings file; the message names the file and the key.
public struct ShapesDemoError: Error, CustomStringConvertible, LocalizedError {
    /// What is wrong, starting with the settings file's path where there is one.
    public let message: String
    /// Creates an error with `message`.
    public init(_ message: String) { self.message = message }
    /// The message.
    public var description: String { message }
    /// The message, for `localizedDescription`.
    public var errorDescription: String? { message }
}

extension ShapesDemo {
    /// The ShapesWorld a demo trains and scores on.
    public enum World: String, Codable, CaseIterable, Sendable {
        /// 3 shapes, 4 colours, large objects, a 2x2 grid (`WorldConfig.standard`).
        case standard
        /// 4 shapes, 7 colours, small and large objects, a 3x3 grid (`WorldConfig.extended`).
        case extended
    }

    /// Everything a run depends on besides the code: the world's size, each phase's steps, the evaluation. Encoded
    /// as `report/config.json`; `overridden(byJSONFile:)` reads a partial file of the same keys.
    public struct Settings: Codable, Sendable {
        /// Seeds everything: the world, the held-out set, initialisation, training and sampling.
        public var seed: UInt64 = 0
        /// Which ShapesWorld: `standard` (3 shapes, 4 colours, one size, 2x2 grid) or `extended` (4 shapes,
        /// 7 colours, two sizes, 3x3 grid; its preset `Settings(world: .extended)` draws it at 48 pixels).
        public var world = World.standard
        /// Side of the images in pixels: a multiple of 8 and of twice the grid side (the understanding encoder sees
        /// 2x2 patches per grid cell).
        public var imageSize = 32
        /// Captioned training images (text-to-image samples), drawn by cycling through `captionMix`.
        public var trainScenes = 12000
        /// Relative number of training captions per GenEval category, in GenEvalCategory order (single_object,
        /// two_object, counting, colors, position, color_attr); held-out prompts stay equal per category.
        /// Counting and position, the hardest, get twice the captions.
        public var captionMix = [1, 1, 2, 1, 2, 1]
        // Without them the relation word was ignored (position 0.22; docs/demo.md, "Position"): 3000 gave 0.52,
        // 6000 0.25 with counting and POPE down (a third of the captions then named cells).
        /// Extra training captions that name each object's cell ("a photo of a red circle at the top left"), on
        /// top of `trainScenes` (0: none; `WorldGenerator.placedSample`).
        public var placedCaptions = 3000
        /// Every position caption also trains with its twin: the opposite relation word and the two objects
        /// trading cells (`WorldGenerator.positionTwin(of:)`), so each pair differs only in the relation.
        public var positionTwins = false
        /// Understanding conversations, one scene each, of `questionsPerImage` question-answer turns.
        public var trainQuestions = 12000
        // Eight (with the scene heads below) measured understanding 0.97 where four without them gave 0.80.
        /// The number of distinct questions drawn about each understanding training image (at least 1).
        public var questionsPerImage = 8
        /// The questions about one training image as independent single-turn samples sharing the prompt and image
        /// block (`UnderstandingExample.sharingPrefix`), not as one multi-turn conversation where later questions
        /// can read the earlier answers instead of the image.
        public var independentQuestions = true
        /// Relative number of training questions per question type ("pope": 3, ...); types left out count 1.
        /// Held-out questions stay uniform over the types. Position questions get three times the share.
        public var questionMix: [String: Int] = ["position": 3]
        /// Lines of the text-only corpus, used for LLM pretraining and the text loss of the stages.
        public var trainTexts = 4000
        /// Scenes in the VAE and SigLIP pretraining bank, half from the captions and half from the questions.
        public var pretrainImages = 4800
        /// VAE pretraining steps (batches of 16 images).
        public var vaeSteps = 400
        /// Steps of pretraining the understanding encoder on patch and scene attributes.
        public var siglipSteps = 800
        /// SigLIP pretraining also learns each patch's colour-and-shape pair and, from the mean of the patch
        /// features, the scene's object counts (false: per-patch colour, shape and position heads only).
        public var siglipSceneHeads = true
        /// Steps of pretraining the language model on the text corpus.
        public var llmSteps = 150
        /// Steps of the three JanusFlow stages: adaptation, unified pretraining, supervised fine-tuning.
        public var stageSteps = [300, 1600, 500]
        /// Batch size of the SigLIP and LLM pretraining and of the stages; must divide by the number of processes.
        public var batchSize = 32
        /// Peak learning rate of the first two stages (the fine-tuning stage uses a fifth of it).
        public var learningRate = 1e-3
        // 60 prompts per category and 600 questions: with 20 and 300 a category's score moved by +-0.1 between
        // rescorings of one model.
        /// Held-out GenEval prompts per category.
        public var evalPromptsPerCategory = 60
        /// Held-out understanding questions, one per scene.
        public var evalQuestions = 600
        /// Sampling steps per generated image in evaluation.
        public var sampleSteps = 20
        /// The official guidance weight (JanusFlow's demo and its MJHQ FID use w = 2).
        public var cfg = 2.0
        /// Logit-normal time distribution of the rectified-flow loss (training config flow_time_logit_mean/std):
        /// -0.5 trains more at high noise, where the layout (counts, positions) is decided.
        public var flowTimeLogitMean = -0.5
        /// Standard deviation of that logit-normal time distribution (must be > 0).
        public var flowTimeLogitStd = 1.0
        /// Whether the stages add the REPA loss, aligning an LLM layer with the understanding encoder's features.
        public var repa = true
        /// BPE merges learned for the tokenizer.
        public var merges = 400

        /// The default run (`janusflow demo`).
        public init() {}

        /// The default run on `world`: for the extended world 48-pixel images (its cells as wide as the standard
        /// world's at 32), everything else the same budget.
        public init(world: World) {
            self.world = world
            if world == .extended { imageSize = WorldConfig.extended.imageSize }
        }

        /// The world these settings describe, drawn at `imageSize`.
        public var worldConfig: WorldConfig {
            var config = world == .extended ? WorldConfig.extended : WorldConfig.standard
            config.imageSize = imageSize
            return config
        }

        /// These settings with the fields present in a JSON object file replaced (unknown keys are an error).
        public func overridden(byJSONFile url: URL) throws -> Settings {
            let data: Data
            do { data = try Data(contentsOf: url) } catch { throw ShapesDemoError("\(url.path): cannot read the settings file") }
            return try overridden(byJSON: data, name: url.path)
        }

        /// `overridden(byJSONFile:)` for the file's bytes; `name` is what errors call it.
        public func overridden(byJSON data: Data, name: String) throws -> Settings {
            guard let patch = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ShapesDemoError("\(name): the settings file is not a JSON object")
            }
            var merged = try JSONSerialization.jsonObject(with: JSONEncoder().encode(self)) as! [String: Any]
            for key in patch.keys.sorted() where merged[key] == nil {
                throw ShapesDemoError("\(name): unknown setting '\(key)' (known: \(merged.keys.sorted().joined(separator: ", ")))")
            }
            if let world = patch["world"], !World.allCases.contains(where: { $0.rawValue == world as? String }) {
                throw ShapesDemoError("\(name): setting 'world' must be one of \(World.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")) (got \(world))")
            }
            let base = merged
            merged.merge(patch) { _, new in new }
            func decoded(_ object: [String: Any]) throws -> Settings {
                try JSONDecoder().decode(Settings.self, from: JSONSerialization.data(withJSONObject: object))
            }
            let settings: Settings
            do {
                settings = try decoded(merged)
            } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
                throw ShapesDemoError("\(name): setting '\(context.codingPath.first?.stringValue ?? "?")' has the wrong type")
            } catch {
                // A number that does not fit the setting's type (an integer past Int's range, say) fails the whole
                // document, without a path: the setting is the first that fails alone.
                let culprit = patch.keys.sorted().first { key in (try? decoded(base.merging([key: patch[key]!]) { _, new in new })) == nil }
                throw ShapesDemoError("\(name): setting '\(culprit ?? "?")' is out of range for its type")
            }
            try settings.validate(source: name)
            return settings
        }

        /// Checks every setting's range; errors start with `source` (a file's path, or what the caller calls these
        /// settings) and name the setting. `overridden(byJSON:)` and `ShapesDemo.run()` call it.
        public func validate(source: String = "settings") throws {
            guard questionsPerImage >= 1 else {
                throw ShapesDemoError("\(source): setting 'questionsPerImage' must be at least 1 (\(questionsPerImage))")
            }
            let counts: [(String, Int, Int)] = [
                ("trainScenes", trainScenes, 1), ("trainQuestions", trainQuestions, questionsPerImage), ("trainTexts", trainTexts, 1),
                ("pretrainImages", pretrainImages, 1), ("vaeSteps", vaeSteps, 1), ("siglipSteps", siglipSteps, 1),
                ("llmSteps", llmSteps, 1), ("batchSize", batchSize, 1), ("evalPromptsPerCategory", evalPromptsPerCategory, 1),
                ("evalQuestions", evalQuestions, 1), ("sampleSteps", sampleSteps, 1), ("merges", merges, 0),
            ]
            if let (key, value, least) = counts.first(where: { $0.1 < $0.2 }) {
                let what = key == "trainQuestions" ? "at least questionsPerImage (\(least))" : "at least \(least)"
                throw ShapesDemoError("\(source): setting '\(key)' must be \(what) (\(value))")
            }
            guard stageSteps.count == 3, stageSteps.allSatisfy({ $0 >= 1 }) else {
                throw ShapesDemoError("\(source): setting 'stageSteps' must be 3 step counts >= 1, one per stage (\(stageSteps))")
            }
            for (key, value) in [("learningRate", learningRate), ("cfg", cfg), ("flowTimeLogitMean", flowTimeLogitMean)] where !value.isFinite {
                throw ShapesDemoError("\(source): setting '\(key)' must be a finite number (\(value))")
            }
            guard learningRate > 0 else { throw ShapesDemoError("\(source): setting 'learningRate' must be > 0 (\(learningRate))") }
            guard cfg >= 0 else { throw ShapesDemoError("\(source): setting 'cfg' must be >= 0 (\(cfg))") }
            guard captionMix.count == GenEvalCategory.allCases.count, captionMix.allSatisfy({ $0 >= 0 }),
                  captionMix.contains(where: { $0 > 0 }) else {
                throw ShapesDemoError("\(source): setting 'captionMix' must be \(GenEvalCategory.allCases.count) counts >= 0, not all 0 (\(captionMix))")
            }
            let types = Set(QuestionType.allCases.map(\.rawValue))
            if let bad = questionMix.keys.sorted().first(where: { !types.contains($0) }) {
                throw ShapesDemoError("\(source): setting 'questionMix' has an unknown question type '\(bad)' (known: \(types.sorted().joined(separator: ", ")))")
            }
            let standardTypes = QuestionType.allCases.filter { $0 != .size }
            if questionMix.values.contains(where: { $0 < 0 }) || !standardTypes.contains(where: { (questionMix[$0.rawValue] ?? 1) > 0 }) {
                throw ShapesDemoError("\(source): setting 'questionMix' must have counts >= 0, not 0 for every type")
            }
            guard flowTimeLogitStd > 0 else {
                throw ShapesDemoError("\(source): setting 'flowTimeLogitStd' must be > 0 (\(flowTimeLogitStd))")
            }
            guard placedCaptions >= 0 else {
                throw ShapesDemoError("\(source): setting 'placedCaptions' must be >= 0 (\(placedCaptions))")
            }
            let cellPatches = 2 * worldConfig.gridSize
            guard imageSize >= 16, imageSize % 8 == 0, imageSize % cellPatches == 0 else {
                throw ShapesDemoError("\(source): setting 'imageSize' must be at least 16 and a multiple of 8 and of \(cellPatches) in the \(world.rawValue) world (\(imageSize))")
            }
        }

        // Two questions per image in the short run: its 300 stage-2 steps learn less from four (held-out accuracy
        // 0.37 with four, 0.52 with two, 0.50 with one).
        /// The short run (`janusflow demo --quick`): a twentieth of the scenes, far fewer steps and a small held-out set.
        public static let quick: Settings = quick(world: .standard)

        /// The short run on `world` (`janusflow demo --quick --world extended`).
        public static func quick(world: World) -> Settings {
            var q = Settings(world: world)
            (q.trainScenes, q.trainQuestions, q.questionsPerImage, q.trainTexts, q.pretrainImages) = (600, 600, 2, 600, 1200)
            q.placedCaptions = 150
            (q.vaeSteps, q.siglipSteps, q.llmSteps, q.stageSteps) = (250, 100, 120, [60, 300, 120])
            (q.evalPromptsPerCategory, q.evalQuestions, q.sampleSteps) = (5, 60, 10)
            return q
        }
    }
}
