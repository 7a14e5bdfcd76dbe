import Foundation

// The grammar of ShapesWorld: GenEval-category prompts with their machine-readable requirements, VQA/POPE-style
// questions with short exact answers, descriptions, and a text corpus. All text is lowercase ASCII; numbers are
// written as words ("zero" ... "four").

/// GenEval's six task categories (the raw values are GenEval's tags).
public enum GenEvalCategory: String, CaseIterable, Codable, Sendable {
    /// A category; the raw value is GenEval's tag (`single_object`, `two_object`, `counting`, `colors`, `position`, `color_attr`).
    case singleObject = "single_object", twoObject = "two_object", counting, colors, position, colorAttr = "color_attr"
}

/// What a prompt asks for, exactly as a line of GenEval's `evaluation_metadata.jsonl` says it: objects to include
/// (class, count, optional colour, optional position relative to an earlier include) and objects to exclude.
public struct Requirements: Equatable, Codable, Sendable {
    /// `{"class": ..., "count": n, "color": ..., "position": [relation, index]}`: at least `count` objects of `shape`
    /// (the most confident ones must have `color` if given, and be `position` the objects matched for `include[index]`).
    public struct Include: Equatable, Codable, Sendable {
        /// The class that must be found.
        public var shape: ShapeKind
        /// How many objects of `shape` must be found (at least).
        public var count: Int
        /// The colour every matched object must have, if any.
        public var color: ShapeColor?
        /// Where the matched objects must be relative to an earlier include, if anywhere.
        public var position: Position?
        /// Creates an include with no colour or position requirement unless given.
        public init(shape: ShapeKind, count: Int, color: ShapeColor? = nil, position: Position? = nil) {
            self.shape = shape
            self.count = count
            self.color = color
            self.position = position
        }
    }

    /// GenEval's `"position": [relation, index]`.
    public struct Position: Equatable, Codable, Sendable {
        /// How the matched objects must lie relative to every object matched for the target.
        public var relation: SpatialRelation
        /// Index into `include` of the reference object.
        public var target: Int
        /// Requires the objects to be `relation` the objects matched for `include[target]`.
        public init(_ relation: SpatialRelation, of target: Int) {
            self.relation = relation
            self.target = target
        }
    }

    /// `{"class": ..., "count": n}`: the image fails when it has `count` or more objects of `shape`.
    public struct Exclude: Equatable, Codable, Sendable {
        /// The class that must not occur `count` or more times.
        public var shape: ShapeKind
        /// The number of objects of `shape` at which the image fails.
        public var count: Int
        /// Creates an exclude: fail at `count` or more objects of `shape`.
        public init(shape: ShapeKind, count: Int) {
            self.shape = shape
            self.count = count
        }
    }

    /// The category the prompt belongs to.
    /// GenEval's "tag".
    public var category: GenEvalCategory
    /// Objects that must be present; a `position` refers to an earlier entry by index.
    public var include: [Include]
    /// Objects that must not be present in the given numbers (counting prompts use one).
    public var exclude: [Exclude]

    /// Creates requirements for a prompt of `category`.
    public init(category: GenEvalCategory, include: [Include], exclude: [Exclude] = []) {
        self.category = category
        self.include = include
        self.exclude = exclude
    }

    /// The GenEval metadata line, e.g. `{"tag": "position", "include": [{"class": "square", "count": 1},
    /// {"class": "circle", "count": 1, "position": ["left of", 0]}], "prompt": "a photo of a red circle left of a blue square"}`.
    public func metadataLine(prompt: String) -> String {
        var fields: [(String, JSONValue)] = [("tag", .string(category.rawValue))]
        fields.append(("include", .array(include.map { i in
            var d: [(String, JSONValue)] = [("class", .string(i.shape.rawValue)), ("count", .int(i.count))]
            if let c = i.color { d.append(("color", .string(c.rawValue))) }
            if let p = i.position { d.append(("position", .array([.string(p.relation.rawValue), .int(p.target)]))) }
            return .object(d)
        })))
        if !exclude.isEmpty {
            fields.append(("exclude", .array(exclude.map { .object([("class", .string($0.shape.rawValue)), ("count", .int($0.count))]) })))
        }
        fields.append(("prompt", .string(prompt)))
        return JSONValue.object(fields).serialized
    }

    /// Reads a GenEval metadata line whose classes, colours and relations belong to ShapesWorld.
    public static func parseMetadataLine(_ line: String) throws -> (prompt: String, requirements: Requirements) {
        func fail(_ why: String) -> Error { ShapesWorldError.badMetadata("\(why) in \(line)") }
        guard let data = line.data(using: .utf8),
              let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw fail("not a JSON object") }
        guard let tag = object["tag"] as? String, let category = GenEvalCategory(rawValue: tag) else { throw fail("unknown tag") }
        guard let prompt = object["prompt"] as? String else { throw fail("no prompt") }
        func shape(_ d: [String: Any]) throws -> (ShapeKind, Int) {
            guard let name = d["class"] as? String, let kind = ShapeKind(rawValue: name) else { throw fail("unknown class") }
            guard let count = (d["count"] as? NSNumber)?.intValue, count >= 0 else { throw fail("bad count") }
            return (kind, count)
        }
        var include: [Include] = []
        for d in (object["include"] as? [[String: Any]]) ?? [] {
            let (kind, count) = try shape(d)
            var item = Include(shape: kind, count: count)
            if let c = d["color"] {
                guard let name = c as? String, let color = ShapeColor(rawValue: name) else { throw fail("unknown color") }
                item.color = color
            }
            if let p = d["position"] {
                guard let pair = p as? [Any], pair.count == 2, let name = pair[0] as? String,
                      let relation = SpatialRelation(rawValue: name), let index = (pair[1] as? NSNumber)?.intValue,
                      index >= 0, index < include.count else { throw fail("bad position") }
                item.position = Position(relation, of: index)
            }
            include.append(item)
        }
        let exclude = try ((object["exclude"] as? [[String: Any]]) ?? []).map { d -> Exclude in
            let (kind, count) = try shape(d)
            return Exclude(shape: kind, count: count)
        }
        return (prompt, Requirements(category: category, include: include, exclude: exclude))
    }
}

/// Errors from reading ShapesWorld files.
public enum ShapesWorldError: Error, CustomStringConvertible {
    /// A metadata line that cannot be read; the text says what is wrong and quotes the line.
    case badMetadata(String)
    /// The message, prefixed with "bad GenEval metadata".
    public var description: String {
        switch self {
        case .badMetadata(let s): return "bad GenEval metadata: \(s)"
        }
    }
}

/// A text-to-image training or evaluation item: the prompt, what it requires, and a scene satisfying it.
public struct GenerationSample: Equatable, Sendable {
    /// The caption, such as "a photo of two red circles".
    public var prompt: String
    /// What GenEval checks in an image made for the prompt.
    public var requirements: Requirements
    /// A scene that satisfies the requirements (the training image).
    public var scene: Scene
}

/// Kinds of understanding questions.
public enum QuestionType: String, CaseIterable, Codable, Sendable {
    /// "what shape is at the top left?" -> "circle"
    case shape
    /// "what color is the square?" -> "red"
    case color
    /// "how many circles are there?" -> "two"
    case count
    /// "where is the red circle?" -> "top left"; "is the red circle left of the blue square?" -> "yes"
    case position
    /// "how big is the shape at the top left?" -> "small" (only in worlds with two sizes)
    case size
    /// POPE: "is there a red circle in the image?" -> "yes" / "no"
    case pope
    /// "describe the image." -> "two objects: a red circle at the top left and a blue square at the bottom right"
    case describe
}

/// How POPE chooses the absent objects of its "no" questions.
public enum POPESetting: String, CaseIterable, Codable, Sendable {
    /// Uniformly among absent objects.
    case random
    /// The absent objects that are most frequent in the scenes drawn so far (`WorldGenerator.objectFrequencies`).
    case popular
    /// The absent objects most confusable with present ones: the same colour and the same shape as present objects
    /// (attribute-binding swaps) first, then those sharing one attribute.
    case adversarial
}

/// An understanding question about a scene with its exact short answer.
public struct QuestionSample: Equatable, Sendable {
    /// The scene the question is about.
    public var scene: Scene
    /// The question text, lowercase ASCII.
    public var question: String
    /// The exact expected answer, lowercase ASCII (numbers as words).
    public var answer: String
    /// A `QuestionType` raw value: "shape", "color", "count", "position", "size", "pope" or "describe".
    public var type: String
    /// For POPE questions, how the object asked about was chosen ("yes" questions are `.random`).
    public var popeSetting: POPESetting?
}

/// The deterministic generator of scenes, prompts, questions and text. Same seed and config, same sequence of calls:
/// same output, on every platform.
public struct WorldGenerator: Sendable {
    /// The world the generator draws from.
    public let config: WorldConfig
    /// The random stream; every draw advances it.
    public var random: WorldRandom
    /// How often each object phrase ("red circle") occurred in the scenes drawn by `scene(objectCount:)`; POPE's
    /// popular setting ranks absent objects by it.
    public var objectFrequencies: [String: Int] = [:]

    /// A generator whose stream starts from `seed`.
    public init(seed: UInt64, config: WorldConfig = .standard) {
        self.init(random: WorldRandom(seed: seed), config: config)
    }

    /// A generator that continues an existing stream.
    public init(random: WorldRandom, config: WorldConfig = .standard) {
        self.config = config
        self.random = random
    }

    static let numberWords = ["zero", "one", "two", "three", "four"]

    /// The English word for `n` from zero to four; other numbers as digits.
    /// "zero" ... "four".
    public static func numberWord(_ n: Int) -> String { n >= 0 && n < numberWords.count ? numberWords[n] : String(n) }

    // MARK: Scenes

    /// A random scene of `objectCount` (default: uniform in 1...maxObjects) objects in distinct cells, with
    /// independent random shapes, colours and sizes (so repeats such as two red circles occur).
    public mutating func scene(objectCount: Int? = nil) -> Scene {
        let s = drawScene(objectCount: objectCount)
        for o in s.objects { objectFrequencies[phrase(o), default: 0] += 1 }
        return s
    }

    mutating func drawScene(objectCount: Int? = nil) -> Scene {
        let n = Swift.min(Swift.max(objectCount ?? (1 + random.int(config.maxObjects)), 0), 4)
        let cells = random.shuffled(config.cells)
        return Scene(objects: (0..<n).map { i in
            ShapeObject(kind: random.pick(config.shapes), color: random.pick(config.colors), cell: cells[i], size: random.pick(config.sizes))
        })
    }

    /// The words naming an object: "red circle", or "small red circle" in worlds with two sizes.
    public func phrase(_ o: ShapeObject) -> String {
        (config.namesSizes ? o.size.rawValue + " " : "") + "\(o.color.rawValue) \(o.kind.rawValue)"
    }

    /// The canonical description, objects in reading order: "two objects: a red circle at the top left and a blue
    /// square at the bottom right" ("no objects" for an empty scene).
    public func describe(_ scene: Scene) -> String {
        let objects = scene.objects.sorted { $0.cell.index < $1.cell.index }
        guard !objects.isEmpty else { return "no objects" }
        let parts = objects.map { "a \(phrase($0)) at the \($0.cell.name)" }
        let list = parts.count == 1 ? parts[0] : parts.dropLast().joined(separator: ", ") + " and " + parts.last!
        return "\(Self.numberWord(objects.count)) \(objects.count == 1 ? "object" : "objects"): " + list
    }

    // MARK: Generation prompts

    /// The position sample with the opposite relation word and its scene to match ("a red circle left of a blue
    /// square" -> "a red circle right of a blue square", the two objects trading cells); nil for other categories.
    /// Together the two are a pair of prompts that differ only in the relation.
    public static func positionTwin(of sample: GenerationSample) -> GenerationSample? {
        guard sample.requirements.category == .position, sample.requirements.include.count == 2,
              let position = sample.requirements.include[1].position, sample.scene.objects.count == 2 else { return nil }
        let opposite: [SpatialRelation: SpatialRelation] = [.leftOf: .rightOf, .rightOf: .leftOf, .above: .below, .below: .above]
        let flipped = opposite[position.relation]!
        var twin = sample
        twin.prompt = sample.prompt.replacingOccurrences(of: " \(position.relation.rawValue) ", with: " \(flipped.rawValue) ")
        twin.requirements.include[1].position = .init(flipped, of: position.target)
        (twin.scene.objects[0].cell, twin.scene.objects[1].cell) = (sample.scene.objects[1].cell, sample.scene.objects[0].cell)
        return twin.prompt == sample.prompt ? nil : twin
    }

    /// A training caption that names where each object stands: "a photo of a red circle at the top left and a blue
    /// square at the bottom right" (one or two objects, reading order). Not a GenEval category: it teaches the
    /// image tokens the cells' absolute positions, which the relations of `position` prompts are built on. Its
    /// requirements name only the classes (under `two_object`'s tag); the cells are checked by the scene itself.
    public mutating func placedSample() -> GenerationSample {
        let cells = random.shuffled(config.cells)
        let size = random.pick(config.sizes)
        let kinds = random.shuffled(config.shapes)
        let objects = (0..<(1 + random.int(2))).map { i in
            ShapeObject(kind: kinds[i], color: random.pick(config.colors), cell: cells[i], size: config.namesSizes ? random.pick(config.sizes) : size)
        }.sorted { $0.cell.index < $1.cell.index }
        let prompt = "a photo of " + objects.map { "a \(phrase($0)) at the \($0.cell.name)" }.joined(separator: " and ")
        return GenerationSample(prompt: prompt,
                                requirements: Requirements(category: .twoObject, include: objects.map { .init(shape: $0.kind, count: 1) }),
                                scene: Scene(objects: objects))
    }

    /// A prompt of `category`, its GenEval requirements and a scene that satisfies them (the training image).
    ///
    /// Prompts always name colours ("a photo of a red circle"), so every training caption fully specifies its
    /// image; the requirements check what GenEval checks for the category: the classes (single_object,
    /// two_object), the exact count (counting: include n, exclude n + 1), class and colour (colors, color_attr),
    /// and the relation between two different classes placed in one row or column (position).
    public mutating func generationSample(category: GenEvalCategory) -> GenerationSample {
        var cells = random.shuffled(config.cells)
        let size = random.pick(config.sizes)
        func object(_ kind: ShapeKind? = nil, _ color: ShapeColor? = nil) -> ShapeObject {
            ShapeObject(kind: kind ?? random.pick(config.shapes), color: color ?? random.pick(config.colors),
                        cell: cells.removeFirst(), size: config.namesSizes ? random.pick(config.sizes) : size)
        }
        let sizeWord = config.namesSizes ? size.rawValue + " " : ""
        switch category {
        case .singleObject, .colors:
            let o = object()
            return GenerationSample(prompt: "a photo of a \(phrase(o))",
                                    requirements: Requirements(category: category, include: [
                                        .init(shape: o.kind, count: 1, color: category == .colors ? o.color : nil)]),
                                    scene: Scene(objects: [o]))
        case .twoObject, .colorAttr:
            let kinds = random.shuffled(config.shapes)
            let a: ShapeObject, b: ShapeObject
            if category == .colorAttr {
                let colors = random.shuffled(config.colors)
                a = object(kinds[0], colors[0])
                b = object(kinds[1], colors[1])
            } else {
                a = object(kinds[0])
                b = object(kinds[1])
            }
            let bind = category == .colorAttr
            return GenerationSample(prompt: "a photo of a \(phrase(a)) and a \(phrase(b))",
                                    requirements: Requirements(category: category, include: [
                                        .init(shape: a.kind, count: 1, color: bind ? a.color : nil),
                                        .init(shape: b.kind, count: 1, color: bind ? b.color : nil)]),
                                    scene: Scene(objects: [a, b]))
        case .counting:
            let kind = random.pick(config.shapes), color = random.pick(config.colors)
            let n = 2 + random.int(config.maxObjects - 1)
            let objects = (0..<n).map { _ in ShapeObject(kind: kind, color: color, cell: cells.removeFirst(), size: size) }
            return GenerationSample(prompt: "a photo of \(Self.numberWord(n)) \(sizeWord)\(color.rawValue) \(kind.plural)",
                                    requirements: Requirements(category: category, include: [.init(shape: kind, count: n)],
                                                               exclude: [.init(shape: kind, count: n + 1)]),
                                    scene: Scene(objects: objects))
        case .position:
            let kinds = random.shuffled(config.shapes)
            let relation = random.pick(SpatialRelation.allCases)
            // The subject and the reference share a row (left/right) or a column (above/below); in a 3x3 grid any
            // two of its three places.
            let g = config.gridSize
            let line = random.int(g)
            let places = g == 2 ? [0, 1] : Array(random.shuffled(Array(0..<g)).prefix(2)).sorted()
            let first: Cell, second: Cell
            switch relation {
            case .leftOf, .rightOf: (first, second) = (Cell(column: places[0], row: line, gridSize: g), Cell(column: places[1], row: line, gridSize: g))
            case .above, .below: (first, second) = (Cell(column: line, row: places[0], gridSize: g), Cell(column: line, row: places[1], gridSize: g))
            }
            let subjectFirst = relation == .leftOf || relation == .above
            let subject = ShapeObject(kind: kinds[0], color: random.pick(config.colors), cell: subjectFirst ? first : second,
                                      size: config.namesSizes ? random.pick(config.sizes) : size)
            let reference = ShapeObject(kind: kinds[1], color: random.pick(config.colors), cell: subjectFirst ? second : first,
                                        size: config.namesSizes ? random.pick(config.sizes) : size)
            return GenerationSample(prompt: "a photo of a \(phrase(subject)) \(relation.rawValue) a \(phrase(reference))",
                                    requirements: Requirements(category: category, include: [
                                        .init(shape: reference.kind, count: 1),
                                        .init(shape: subject.kind, count: 1, position: .init(relation, of: 0))]),
                                    scene: Scene(objects: [subject, reference]))
        }
    }

    // MARK: Questions

    /// The question types of this world (`size` only when it has two sizes).
    public var questionTypes: [QuestionType] {
        QuestionType.allCases.filter { $0 != .size || config.namesSizes }
    }

    /// A question of `type` (default: uniform over `questionTypes`) about a non-empty scene, with its answer.
    /// Questions always identify their object unambiguously (by a unique colour, shape or phrase, or by its cell).
    public mutating func question(about scene: Scene, type: QuestionType? = nil) -> QuestionSample {
        precondition(!scene.objects.isEmpty, "WorldGenerator.question: the scene is empty")
        let type = type ?? random.pick(questionTypes)
        let o = random.pick(scene.objects)
        func q(_ text: String, _ answer: String, _ setting: POPESetting? = nil) -> QuestionSample {
            QuestionSample(scene: scene, question: text, answer: answer, type: type.rawValue, popeSetting: setting)
        }
        let unique = scene.objects.filter { phrase($0) == phrase(o) }.count == 1
        switch type {
        case .shape:
            if scene.objects.filter({ $0.color == o.color }).count == 1 && random.bool() {
                return q("what shape is the \(o.color.rawValue) object?", o.kind.rawValue)
            }
            return q("what shape is at the \(o.cell.name)?", o.kind.rawValue)
        case .color:
            if scene.objects.filter({ $0.kind == o.kind }).count == 1 && random.bool() {
                return q("what color is the \(o.kind.rawValue)?", o.color.rawValue)
            }
            return q("what color is the shape at the \(o.cell.name)?", o.color.rawValue)
        case .count:
            switch random.int(3) {
            case 0:
                return q("how many shapes are there?", Self.numberWord(scene.objects.count))
            case 1:
                let k = random.pick(config.shapes)
                return q("how many \(k.plural) are there?", Self.numberWord(scene.objects.filter { $0.kind == k }.count))
            default:
                let c = random.pick(config.colors)
                return q("how many \(c.rawValue) shapes are there?", Self.numberWord(scene.objects.filter { $0.color == c }.count))
            }
        case .position:
            let uniques = scene.objects.filter { p in scene.objects.filter { phrase($0) == phrase(p) }.count == 1 }
            let variant = random.int(5)
            if variant == 4 && uniques.count >= 2 {
                let pair = random.shuffled(uniques)
                let (a, b) = (pair[0], pair[1])
                let holding = SpatialRelation.allCases.filter { a.isIn($0, of: b) }
                let relation = random.bool() ? random.pick(holding) : random.pick(SpatialRelation.allCases)
                return q("is the \(phrase(a)) \(relation.rawValue) the \(phrase(b))?", a.isIn(relation, of: b) ? "yes" : "no")
            }
            if unique && variant < 3 {
                switch variant {
                case 0: return q("where is the \(phrase(o))?", o.cell.name)
                case 1:
                    let sides = config.gridSize == 3 ? "on the left, in the center or on the right" : "on the left or on the right"
                    return q("is the \(phrase(o)) \(sides)?", o.cell.horizontal)
                default:
                    let sides = config.gridSize == 3 ? "at the top, in the middle or at the bottom" : "at the top or at the bottom"
                    return q("is the \(phrase(o)) \(sides)?", o.cell.vertical)
                }
            }
            let cell = random.pick(config.cells)
            return q("what is at the \(cell.name)?", scene.objects.first { $0.cell == cell }.map(phrase) ?? "nothing")
        case .size:
            return q("how big is the shape at the \(o.cell.name)?", o.size.rawValue)
        case .pope:
            if random.bool() { return q("is there a \(phrase(o)) in the image?", "yes", .random) }
            let setting: POPESetting = random.bool() ? .random : .adversarial
            let absent = negatives(for: scene, setting: setting, count: 1)[0]
            return q("is there a \(absent) in the image?", "no", setting)
        case .describe:
            return q("describe the image.", describe(scene))
        }
    }

    /// POPE's balanced yes/no probe of one image: up to `maxPositives` present objects ("yes") and as many absent
    /// ones chosen by `setting` ("no"), in a random order. Every question has type "pope".
    public mutating func popeQuestions(about scene: Scene, setting: POPESetting, maxPositives: Int = 3) -> [QuestionSample] {
        var present: [String] = []
        for o in scene.objects where !present.contains(phrase(o)) { present.append(phrase(o)) }
        let yes = Array(random.shuffled(present).prefix(maxPositives))
        let no = negatives(for: scene, setting: setting, count: yes.count)
        let items = random.shuffled(yes.map { ($0, "yes") } + no.map { ($0, "no") })
        return items.map { QuestionSample(scene: scene, question: "is there a \($0.0) in the image?", answer: $0.1,
                                          type: QuestionType.pope.rawValue, popeSetting: setting) }
    }

    /// Every object phrase of this world.
    var allPhrases: [(phrase: String, object: ShapeObject)] {
        config.sizes.flatMap { size in config.colors.flatMap { color in config.shapes.map { kind in
            let o = ShapeObject(kind: kind, color: color, cell: .topLeft, size: size)
            return (phrase(o), o)
        } } }
    }

    /// `count` distinct phrases of objects absent from `scene`, chosen as POPE's `setting` says.
    mutating func negatives(for scene: Scene, setting: POPESetting, count: Int) -> [String] {
        let present = Set(scene.objects.map(phrase))
        // Shuffle first so that ties are broken at random.
        let candidates = random.shuffled(allPhrases.filter { !present.contains($0.phrase) })
        let ranked: [(phrase: String, object: ShapeObject)]
        switch setting {
        case .random:
            ranked = candidates
        case .popular:
            ranked = candidates.enumerated().sorted { a, b in
                let fa = objectFrequencies[a.element.phrase, default: 0], fb = objectFrequencies[b.element.phrase, default: 0]
                return fa != fb ? fa > fb : a.offset < b.offset
            }.map(\.element)
        case .adversarial:
            func confusion(_ c: ShapeObject) -> Int {
                (scene.objects.contains { $0.color == c.color } ? 1 : 0) + (scene.objects.contains { $0.kind == c.kind } ? 1 : 0)
                    + (config.namesSizes && scene.objects.contains { $0.size == c.size } ? 1 : 0)
            }
            ranked = candidates.enumerated().sorted { a, b in
                let ca = confusion(a.element.object), cb = confusion(b.element.object)
                return ca != cb ? ca > cb : a.offset < b.offset
            }.map(\.element)
        }
        return ranked.prefix(count).map(\.phrase)
    }

    // MARK: Text

    /// One line of the text-only corpus: a description, a caption, a question-answer transcript, a count, a relation
    /// or a general fact ("a triangle has three corners.").
    public mutating func text() -> String {
        switch random.int(7) {
        case 0:
            let s = drawScene()
            return "the picture shows " + String(describe(s).split(separator: ":", maxSplits: 1)[1].dropFirst()) + "."
        case 1:
            let s = drawScene()
            let q = question(about: s)
            return "question: \(q.question) answer: \(q.answer)."
        case 2:
            return random.pick(facts)
        case 3:
            return generationSample(category: random.pick(GenEvalCategory.allCases)).prompt + "."
        case 4:
            let n = drawScene().objects.count
            return n == 1 ? "there is one shape in the picture." : "there are \(Self.numberWord(n)) shapes in the picture."
        case 5:
            let pair = random.shuffled(drawScene(objectCount: 2).objects)
            if phrase(pair[0]) != phrase(pair[1]) {
                let relation = random.pick(SpatialRelation.allCases.filter { pair[0].isIn($0, of: pair[1]) })
                return "the \(phrase(pair[0])) is \(relation.rawValue) the \(phrase(pair[1]))."
            }
            return "the \(phrase(pair[0])) is at the \(pair[0].cell.name)."
        default:
            let o = drawScene(objectCount: 1).objects[0]
            return "the \(phrase(o)) is at the \(o.cell.name)."
        }
    }

    /// General facts about this world's shapes, colours, directions and small numbers.
    public var facts: [String] {
        var f: [String] = []
        for k in config.shapes {
            switch k {
            case .circle: f += ["a circle has no corners.", "a circle is round."]
            case .square: f += ["a square has four corners.", "a square has four equal sides."]
            case .triangle: f += ["a triangle has three corners.", "a triangle has three sides."]
            case .diamond: f += ["a diamond has four corners.", "a diamond is a square turned on its corner."]
            }
        }
        f += config.colors.map { "\($0.rawValue) is a color." }
        f += ["left is the opposite of right.", "right is the opposite of left.", "above is the opposite of below.",
              "below is the opposite of above.", "top is the opposite of bottom.", "bottom is the opposite of top.",
              "one and one make two.", "two and one make three.", "one and two make three.", "two and two make four.",
              "three and one make four.", "one and three make four.", "the background is gray."]
        if config.namesSizes { f += ["small is the opposite of large.", "large is the opposite of small."] }
        return f
    }

    /// Every word the grammar can produce for this world (sorted; punctuation such as "." "?" ":" "," excluded).
    public var vocabulary: [String] {
        var words: Set<String> = [
            "a", "photo", "of", "and", "left", "right", "above", "below", "is", "there", "in", "the", "image", "yes", "no",
            "what", "shape", "shapes", "color", "object", "objects", "at", "top", "bottom", "how", "many", "are", "where",
            "on", "or", "nothing", "describe", "picture", "shows", "question", "answer", "opposite", "make", "background", "gray",
        ]
        words.formUnion(Self.numberWords)
        for k in config.shapes {
            words.formUnion([k.rawValue, k.plural, "has"])
            switch k {
            case .circle: words.formUnion(["corners", "round"])
            case .square: words.formUnion(["corners", "equal", "sides"])
            case .triangle: words.formUnion(["corners", "sides"])
            case .diamond: words.formUnion(["corners", "square", "turned", "its", "corner"])
            }
        }
        words.formUnion(config.colors.map(\.rawValue))
        if config.namesSizes { words.formUnion(["small", "large", "big"]) }
        words.formUnion(config.cells.flatMap { $0.name.split(separator: " ").map(String.init) })
        return words.sorted()
    }
}

/// Convenience entry points with the standard world and an explicit random stream.
public enum ShapesWorld {
    /// A prompt of `category` with its requirements and a satisfying scene (standard world).
    public static func generationSample(_ category: GenEvalCategory, rng: inout WorldRandom) -> GenerationSample {
        var g = WorldGenerator(random: rng)
        defer { rng = g.random }
        return g.generationSample(category: category)
    }

    /// A random scene of 1 to 4 objects (standard world).
    public static func randomScene(rng: inout WorldRandom) -> Scene {
        var g = WorldGenerator(random: rng)
        defer { rng = g.random }
        return g.scene()
    }

    /// A question of a random type about `scene` (standard world).
    public static func question(about scene: Scene, rng: inout WorldRandom) -> QuestionSample {
        var g = WorldGenerator(random: rng)
        defer { rng = g.random }
        return g.question(about: scene)
    }

    /// A line of the text corpus (standard world).
    public static func textSample(rng: inout WorldRandom) -> String {
        var g = WorldGenerator(random: rng)
        defer { rng = g.random }
        return g.text()
    }

    /// Every word the grammar can produce for `config`.
    public static func vocabulary(config: WorldConfig = .standard) -> [String] {
        WorldGenerator(seed: 0, config: config).vocabulary
    }
}
