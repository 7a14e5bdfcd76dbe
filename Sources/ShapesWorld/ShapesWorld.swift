import Foundation

// ShapesWorld: a procedurally generated world of coloured shapes on a grey background, with captions in
// GenEval's categories, questions in POPE/VQA style, a text corpus from the same grammar, and a
// deterministic detector that scores images against prompts.

public enum ShapeKind: String, CaseIterable, Codable, Sendable {
    case circle, square, triangle
    var plural: String { rawValue + "s" }
}

public enum ShapeColor: String, CaseIterable, Codable, Sendable {
    case red, green, blue, yellow
    public var rgb: (UInt8, UInt8, UInt8) {
        switch self {
        case .red: return (220, 40, 40)
        case .green: return (40, 190, 60)
        case .blue: return (40, 70, 220)
        case .yellow: return (230, 210, 40)
        }
    }
}

/// The four cells of a 2x2 layout; positions in captions and answers refer to them.
public enum Cell: Int, CaseIterable, Codable, Sendable {
    case topLeft, topRight, bottomLeft, bottomRight
    var column: Int { rawValue % 2 }
    var row: Int { rawValue / 2 }
    public var name: String { ["top left", "top right", "bottom left", "bottom right"][rawValue] }
}

public struct ShapeObject: Equatable, Codable, Sendable {
    public var kind: ShapeKind
    public var color: ShapeColor
    public var cell: Cell
}

/// An 8-bit RGB image, HWC.
public struct ShapeImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]
    public init(width: Int, height: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

public struct Scene: Equatable, Codable, Sendable {
    public var objects: [ShapeObject]
    public init(objects: [ShapeObject]) { self.objects = objects }
    public static let background: (UInt8, UInt8, UInt8) = (128, 128, 128)

    /// Draws each object centred in its cell; the shape spans about 70% of the cell.
    public func render(size: Int) -> ShapeImage {
        var pixels = [UInt8](repeating: 128, count: size * size * 3)
        let cellSize = Double(size) / 2
        let half = cellSize * 0.36
        for o in objects {
            let cx = (Double(o.cell.column) + 0.5) * cellSize, cy = (Double(o.cell.row) + 0.5) * cellSize
            let c = o.color.rgb
            for y in 0..<size {
                for x in 0..<size {
                    let px = Double(x) + 0.5 - cx, py = Double(y) + 0.5 - cy
                    let inside: Bool
                    switch o.kind {
                    case .square: inside = Swift.abs(px) <= half && Swift.abs(py) <= half
                    case .circle: inside = px * px + py * py <= half * half * 1.1
                    case .triangle:
                        // Apex up: width grows linearly from the top edge to the base.
                        let t = (py + half) / (2 * half)
                        inside = t >= 0 && t <= 1 && Swift.abs(px) <= t * half * 1.05
                    }
                    if inside {
                        let i = (y * size + x) * 3
                        pixels[i] = c.0
                        pixels[i + 1] = c.1
                        pixels[i + 2] = c.2
                    }
                }
            }
        }
        return ShapeImage(width: size, height: size, pixels: pixels)
    }
}

/// GenEval's task categories.
public enum GenEvalCategory: String, CaseIterable, Codable, Sendable {
    case singleObject = "single_object", twoObject = "two_object", counting, colors, position, colorAttr = "color_attr"
}

/// What a prompt asks for, in GenEval's metadata terms.
public struct Requirements: Equatable, Codable, Sendable {
    public struct Include: Equatable, Codable, Sendable {
        public var shape: ShapeKind
        public var count: Int
        public var color: ShapeColor?
    }
    public var category: GenEvalCategory
    public var include: [Include]
    /// (relation, index of the reference object in `include`): "left of", "right of", "above", "below".
    public var position: String?

    /// GenEval's metadata line (class names are the shape names).
    public var metadataJSON: [String: Any] {
        var object: [String: Any] = ["tag": category.rawValue, "include": include.map { i -> [String: Any] in
            var d: [String: Any] = ["class": i.shape.rawValue, "count": i.count]
            if let c = i.color { d["color"] = c.rawValue }
            return d
        }]
        if let position { object["position"] = [position, 0] }
        return object
    }
}

public struct GenerationSample: Sendable {
    public var prompt: String
    public var requirements: Requirements
    public var scene: Scene
}

public struct QuestionSample: Sendable {
    public var scene: Scene
    public var question: String
    public var answer: String
    /// "shape", "color", "count", "position", "pope", "describe".
    public var type: String
}

/// SplitMix64: small, fast, identical everywhere.
public struct WorldRandom {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    public mutating func pick<T>(_ items: [T]) -> T { items[int(items.count)] }
    public mutating func bool() -> Bool { next() & 1 == 1 }
    public mutating func shuffled<T>(_ items: [T]) -> [T] {
        var a = items
        for i in stride(from: a.count - 1, to: 0, by: -1) { a.swapAt(i, int(i + 1)) }
        return a
    }
}

public enum ShapesWorld {
    static let numberWords = ["zero", "one", "two", "three", "four"]

    static func describe(_ o: ShapeObject) -> String { "\(o.color.rawValue) \(o.kind.rawValue)" }

    /// A prompt of `category` and a scene that satisfies it.
    public static func generationSample(_ category: GenEvalCategory, rng: inout WorldRandom) -> GenerationSample {
        var cells = rng.shuffled(Cell.allCases)
        func object(_ kind: ShapeKind? = nil, _ color: ShapeColor? = nil) -> ShapeObject {
            ShapeObject(kind: kind ?? rng.pick(ShapeKind.allCases), color: color ?? rng.pick(ShapeColor.allCases), cell: cells.removeFirst())
        }
        switch category {
        case .singleObject:
            let o = object()
            return .init(prompt: "a photo of a \(o.kind.rawValue)", requirements: .init(category: category, include: [.init(shape: o.kind, count: 1)]),
                         scene: Scene(objects: [o]))
        case .twoObject:
            let kinds = rng.shuffled(ShapeKind.allCases)
            let a = object(kinds[0]), b = object(kinds[1])
            return .init(prompt: "a photo of a \(a.kind.rawValue) and a \(b.kind.rawValue)",
                         requirements: .init(category: category, include: [.init(shape: a.kind, count: 1), .init(shape: b.kind, count: 1)]),
                         scene: Scene(objects: [a, b]))
        case .counting:
            let kind = rng.pick(ShapeKind.allCases)
            let n = 2 + rng.int(2)
            let objects = (0..<n).map { _ in object(kind) }
            return .init(prompt: "a photo of \(numberWords[n]) \(kind.plural)",
                         requirements: .init(category: category, include: [.init(shape: kind, count: n)]), scene: Scene(objects: objects))
        case .colors:
            let o = object()
            return .init(prompt: "a photo of a \(describe(o))",
                         requirements: .init(category: category, include: [.init(shape: o.kind, count: 1, color: o.color)]),
                         scene: Scene(objects: [o]))
        case .position:
            let kinds = rng.shuffled(ShapeKind.allCases)
            let horizontal = rng.bool()
            // Two cells in one row (left/right) or one column (above/below).
            let first: Cell = horizontal ? rng.pick([.topLeft, .bottomLeft]) : rng.pick([.topLeft, .topRight])
            let second = Cell(rawValue: first.rawValue + (horizontal ? 1 : 2))!
            let swap = rng.bool()
            let a = ShapeObject(kind: kinds[0], color: rng.pick(ShapeColor.allCases), cell: swap ? second : first)
            let b = ShapeObject(kind: kinds[1], color: rng.pick(ShapeColor.allCases), cell: swap ? first : second)
            let relation = horizontal ? (swap ? "right of" : "left of") : (swap ? "below" : "above")
            return .init(prompt: "a photo of a \(a.kind.rawValue) \(relation) a \(b.kind.rawValue)",
                         requirements: .init(category: category, include: [.init(shape: a.kind, count: 1), .init(shape: b.kind, count: 1)],
                                             position: relation),
                         scene: Scene(objects: [a, b]))
        case .colorAttr:
            let kinds = rng.shuffled(ShapeKind.allCases), colors = rng.shuffled(ShapeColor.allCases)
            let a = object(kinds[0], colors[0]), b = object(kinds[1], colors[1])
            return .init(prompt: "a photo of a \(describe(a)) and a \(describe(b))",
                         requirements: .init(category: category, include: [.init(shape: a.kind, count: 1, color: a.color),
                                                                           .init(shape: b.kind, count: 1, color: b.color)]),
                         scene: Scene(objects: [a, b]))
        }
    }

    /// A random scene of 1 to 3 objects in distinct cells.
    public static func randomScene(rng: inout WorldRandom) -> Scene {
        let cells = rng.shuffled(Cell.allCases)
        let n = 1 + rng.int(3)
        return Scene(objects: (0..<n).map { ShapeObject(kind: rng.pick(ShapeKind.allCases), color: rng.pick(ShapeColor.allCases), cell: cells[$0]) })
    }

    /// A question about `scene` with its short answer.
    public static func question(about scene: Scene, rng: inout WorldRandom) -> QuestionSample {
        let o = rng.pick(scene.objects)
        switch rng.int(5) {
        case 0:
            let unique = scene.objects.filter { $0.color == o.color }.count == 1
            if unique { return .init(scene: scene, question: "what shape is the \(o.color.rawValue) object?", answer: o.kind.rawValue, type: "shape") }
            return .init(scene: scene, question: "what shape is in the \(o.cell.name)?", answer: o.kind.rawValue, type: "shape")
        case 1:
            return .init(scene: scene, question: "what color is the shape in the \(o.cell.name)?", answer: o.color.rawValue, type: "color")
        case 2:
            return .init(scene: scene, question: "how many shapes are there?", answer: numberWords[scene.objects.count], type: "count")
        case 3:
            let unique = scene.objects.filter { $0.kind == o.kind && $0.color == o.color }.count == 1
            if unique { return .init(scene: scene, question: "where is the \(describe(o))?", answer: o.cell.name, type: "position") }
            return .init(scene: scene, question: "how many shapes are there?", answer: numberWords[scene.objects.count], type: "count")
        default:
            // POPE: balanced yes/no; negatives share the colour or the shape of a present object (adversarial).
            if rng.bool() { return .init(scene: scene, question: "is there a \(describe(o)) in the image?", answer: "yes", type: "pope") }
            for _ in 0..<20 {
                let fake = rng.bool() ? ShapeObject(kind: rng.pick(ShapeKind.allCases), color: o.color, cell: o.cell)
                    : ShapeObject(kind: o.kind, color: rng.pick(ShapeColor.allCases), cell: o.cell)
                if !scene.objects.contains(where: { $0.kind == fake.kind && $0.color == fake.color }) {
                    return .init(scene: scene, question: "is there a \(describe(fake)) in the image?", answer: "no", type: "pope")
                }
            }
            return .init(scene: scene, question: "is there a \(describe(o)) in the image?", answer: "yes", type: "pope")
        }
    }

    /// A sentence about the scene for the text corpus, or a general fact.
    public static func textSample(rng: inout WorldRandom) -> String {
        let scene = randomScene(rng: &rng)
        switch rng.int(4) {
        case 0:
            return "the picture shows " + scene.objects.map { "a \(describe($0)) in the \($0.cell.name)" }.joined(separator: " and ") + "."
        case 1:
            let q = question(about: scene, rng: &rng)
            return "question: \(q.question) answer: \(q.answer)."
        case 2:
            return rng.pick(["a triangle has three corners.", "a square has four equal sides.", "a circle has no corners.",
                             "red, green, blue and yellow are colors.", "left is the opposite of right.", "above is the opposite of below."])
        default:
            let n = scene.objects.count
            return "there \(n == 1 ? "is" : "are") \(numberWords[n]) \(n == 1 ? "shape" : "shapes") in the picture."
        }
    }
}
