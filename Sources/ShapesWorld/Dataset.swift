import Foundation

/// How much `ShapesWorld.writeDataset` writes.
public struct DatasetCounts: Equatable, Codable, Sendable {
    /// Training images with questions (understanding.jsonl).
    public var understandingImages: Int
    /// Distinct questions per understanding image, one manifest line each.
    public var questionsPerImage: Int
    /// Training images with captions (generation.jsonl), cycling through the six GenEval categories.
    public var generationImages: Int
    /// Lines of text.jsonl.
    public var textLines: Int
    /// Held-out GenEval prompts per category (eval/evaluation_metadata.jsonl).
    public var evalPromptsPerCategory: Int
    /// Held-out images for understanding (eval/understanding.jsonl): one question of each type per image plus
    /// balanced POPE questions in each of the three settings.
    public var evalUnderstandingImages: Int

    /// Creates counts; the defaults write 2,000 understanding and 2,400 generation images, 4,000 text lines,
    /// 300 held-out prompts and 200 held-out images.
    public init(understandingImages: Int = 2000, questionsPerImage: Int = 3, generationImages: Int = 2400, textLines: Int = 4000,
                evalPromptsPerCategory: Int = 50, evalUnderstandingImages: Int = 200) {
        self.understandingImages = understandingImages
        self.questionsPerImage = questionsPerImage
        self.generationImages = generationImages
        self.textLines = textLines
        self.evalPromptsPerCategory = evalPromptsPerCategory
        self.evalUnderstandingImages = evalUnderstandingImages
    }
}

extension ShapesWorld {
    /// Writes a training and evaluation dataset; the same seed, counts and config give byte-identical manifests and
    /// (with a deterministic `writePNG`) images. Each part draws from its own random stream, so changing one count
    /// does not change the other parts. Image paths in a manifest are relative to the manifest's folder.
    ///
    /// ```
    /// images/000000.png ...          understanding images first, then generation images
    /// understanding.jsonl            {"image": "images/000000.png", "conversation": [{"role": "User", "content":
    ///                                  "<image_placeholder>\nwhat color is the circle?"}, {"role": "Assistant", "content": "red"}]}
    /// generation.jsonl               {"image": "images/002000.png", "caption": "a photo of a red circle"}
    /// text.jsonl                     {"text": "a triangle has three corners."}
    /// vocabulary.txt                 every word of the grammar, one per line
    /// eval/evaluation_metadata.jsonl GenEval metadata lines: {"tag": "counting", "include": [{"class": "circle", "count": 3}],
    ///                                  "exclude": [{"class": "circle", "count": 4}], "prompt": "a photo of three red circles"}
    /// eval/images/000000.png ...
    /// eval/understanding.jsonl       {"image": "images/000000.png", "question": "...", "answer": "...", "type": "pope",
    ///                                  "setting": "adversarial"}  ("setting" only on POPE lines)
    /// ```
    ///
    /// - Parameters:
    ///   - directory: the folder to write into (created if missing).
    ///   - seed: the seed of the world's random draws; the same seed writes the same files.
    ///   - counts: how many training and held-out examples of each kind to write.
    ///   - config: the shapes, colours and most objects per scene.
    ///   - writePNG: encodes an image to a file (the PNG codec lives outside this module).
    public static func writeDataset(to directory: URL, seed: UInt64, counts: DatasetCounts = DatasetCounts(),
                                    config: WorldConfig = .standard, writePNG: (ShapeImage, URL) throws -> Void) throws {
        let fm = FileManager.default
        let evalDirectory = directory.appendingPathComponent("eval")
        try fm.createDirectory(at: directory.appendingPathComponent("images"), withIntermediateDirectories: true)
        try fm.createDirectory(at: evalDirectory.appendingPathComponent("images"), withIntermediateDirectories: true)
        func imagePath(_ i: Int) -> String { "images/" + String(format: "%06d", i) + ".png" }
        func write(_ lines: [String], _ url: URL) throws {
            try Data(lines.map { $0 + "\n" }.joined().utf8).write(to: url, options: .atomic)
        }

        // Understanding.
        var world = WorldGenerator(random: .derived(seed: seed, stream: 1), config: config)
        var lines: [String] = []
        for i in 0..<counts.understandingImages {
            let scene = world.scene()
            try writePNG(scene.render(size: config.imageSize), directory.appendingPathComponent(imagePath(i)))
            var asked = Set<String>()
            for _ in 0..<(4 * counts.questionsPerImage) where asked.count < counts.questionsPerImage {
                let q = world.question(about: scene)
                guard asked.insert(q.question).inserted else { continue }
                lines.append(JSONValue.object([
                    ("image", .string(imagePath(i))),
                    ("conversation", .array([
                        .object([("role", .string("User")), ("content", .string("<image_placeholder>\n" + q.question))]),
                        .object([("role", .string("Assistant")), ("content", .string(q.answer))]),
                    ])),
                ]).serialized)
            }
        }
        try write(lines, directory.appendingPathComponent("understanding.jsonl"))

        // Generation.
        world = WorldGenerator(random: .derived(seed: seed, stream: 2), config: config)
        lines = []
        for j in 0..<counts.generationImages {
            let sample = world.generationSample(category: GenEvalCategory.allCases[j % GenEvalCategory.allCases.count])
            let path = imagePath(counts.understandingImages + j)
            try writePNG(sample.scene.render(size: config.imageSize), directory.appendingPathComponent(path))
            lines.append(JSONValue.object([("image", .string(path)), ("caption", .string(sample.prompt))]).serialized)
        }
        try write(lines, directory.appendingPathComponent("generation.jsonl"))

        // Text.
        world = WorldGenerator(random: .derived(seed: seed, stream: 3), config: config)
        try write((0..<counts.textLines).map { _ in JSONValue.object([("text", .string(world.text()))]).serialized },
                  directory.appendingPathComponent("text.jsonl"))
        try write(world.vocabulary, directory.appendingPathComponent("vocabulary.txt"))

        // Held-out GenEval prompts.
        world = WorldGenerator(random: .derived(seed: seed, stream: 4), config: config)
        lines = []
        for category in GenEvalCategory.allCases {
            for _ in 0..<counts.evalPromptsPerCategory {
                let sample = world.generationSample(category: category)
                lines.append(sample.requirements.metadataLine(prompt: sample.prompt))
            }
        }
        try write(lines, evalDirectory.appendingPathComponent("evaluation_metadata.jsonl"))

        // Held-out understanding: scenes first, so that POPE's popular setting ranks by all of them.
        world = WorldGenerator(random: .derived(seed: seed, stream: 5), config: config)
        let scenes = (0..<counts.evalUnderstandingImages).map { _ in world.scene() }
        lines = []
        for (i, scene) in scenes.enumerated() {
            try writePNG(scene.render(size: config.imageSize), evalDirectory.appendingPathComponent(imagePath(i)))
            var questions = world.questionTypes.filter { $0 != .pope }.map { world.question(about: scene, type: $0) }
            for setting in POPESetting.allCases { questions += world.popeQuestions(about: scene, setting: setting) }
            for q in questions {
                var fields: [(String, JSONValue)] = [("image", .string(imagePath(i))), ("question", .string(q.question)),
                                                     ("answer", .string(q.answer)), ("type", .string(q.type))]
                if q.type == QuestionType.pope.rawValue, let s = q.popeSetting { fields.append(("setting", .string(s.rawValue))) }
                lines.append(JSONValue.object(fields).serialized)
            }
        }
        try write(lines, evalDirectory.appendingPathComponent("understanding.jsonl"))
    }
}

/// A JSON value with ordered object keys, serialised like Python's `json.dumps` (", " and ": " separators,
/// non-ASCII escaped), so manifests are byte-stable.
enum JSONValue {
    case string(String), int(Int), bool(Bool), array([JSONValue]), object([(String, JSONValue)])

    var serialized: String {
        switch self {
        case .string(let s): return Self.quote(s)
        case .int(let i): return String(i)
        case .bool(let b): return b ? "true" : "false"
        case .array(let items): return "[" + items.map(\.serialized).joined(separator: ", ") + "]"
        case .object(let fields): return "{" + fields.map { Self.quote($0.0) + ": " + $0.1.serialized }.joined(separator: ", ") + "}"
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for unit in s.utf16 {
            switch unit {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(unit)!)
            default: out += String(format: "\\u%04x", unit)
            }
        }
        return out + "\""
    }
}
