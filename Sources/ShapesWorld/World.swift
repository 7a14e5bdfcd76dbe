import Foundation

// ShapesWorld: a procedurally generated world of flat coloured shapes on a mid-grey background. Scenes place 1 to 4
// objects in the cells of a grid (2x2 in the standard world, 3x3 in the extended one), so every left/right/above/below
// relation is unambiguous; images are rasterised exactly (pixel-centre sampling, no anti-aliasing) at any size.
// Everything is a deterministic function of a seed.

/// The shapes of the world. The default world uses circle, square and triangle; `diamond` is available through
/// `WorldConfig.shapes`.
public enum ShapeKind: String, CaseIterable, Codable, Sendable {
    /// A disc, an axis-aligned square, a triangle pointing up, or a square turned 45 degrees (`diamond`).
    case circle, square, triangle, diamond

    /// The plural noun that counting prompts and questions use.
    /// "circles", "squares", ...
    public var plural: String { rawValue + "s" }

    /// Whether (x, y), in units of the half-extent around the shape's centre (y grows downwards), lies inside.
    /// Every shape spans exactly [-1, 1] x [-1, 1]; the triangle points up.
    func contains(_ x: Double, _ y: Double) -> Bool {
        switch self {
        case .circle: return x * x + y * y <= 1
        case .square: return Swift.abs(x) <= 1 && Swift.abs(y) <= 1
        case .triangle: return y <= 1 && Swift.abs(x) <= (y + 1) / 2
        case .diamond: return Swift.abs(x) + Swift.abs(y) <= 1
        }
    }
}

/// Well-separated, saturated colours (every pair and the background are at least 120 apart in RGB). The default
/// world uses red, green, blue and yellow; the others are available through `WorldConfig.colors`.
public enum ShapeColor: String, CaseIterable, Codable, Sendable {
    /// A palette colour; the raw value is the word captions and answers use.
    case red, green, blue, yellow, purple, cyan, white

    /// The exact fill colour.
    public var rgb: (UInt8, UInt8, UInt8) {
        switch self {
        case .red: return (220, 40, 40)
        case .green: return (30, 190, 50)
        case .blue: return (40, 80, 230)
        case .yellow: return (235, 215, 40)
        case .purple: return (170, 40, 220)
        case .cyan: return (40, 210, 220)
        case .white: return (245, 245, 245)
        }
    }
}

/// Object sizes: the shape spans 72% (large) or 44% (small) of its grid cell. The default world uses only `large`.
public enum ShapeSize: String, CaseIterable, Codable, Sendable {
    /// Small (44% of the cell) or large (72% of the cell); the raw value is the word captions use.
    case small, large

    /// Half of the shape's extent as a fraction of the cell side.
    public var halfExtent: Double { self == .large ? 0.36 : 0.22 }
}

/// A cell of the scene grid, by column and row from the top left: 2x2 in the standard world, 3x3 in the extended
/// one. Captions, answers and relations refer to cells by `name`.
public struct Cell: Hashable, Codable, Sendable {
    /// The column, 0 at the left.
    public let column: Int
    /// The row, 0 at the top.
    public let row: Int
    /// The grid's side: 2 or 3.
    public let gridSize: Int

    /// A cell of a `gridSize` x `gridSize` grid; traps unless the grid is 2x2 or 3x3 and the cell lies in it.
    public init(column: Int, row: Int, gridSize: Int = 2) {
        precondition(gridSize == 2 || gridSize == 3, "Cell: the grid is 2x2 or 3x3 (got \(gridSize))")
        precondition((0..<gridSize).contains(column) && (0..<gridSize).contains(row), "Cell: (\(column), \(row)) is outside a \(gridSize)x\(gridSize) grid")
        self.column = column
        self.row = row
        self.gridSize = gridSize
    }

    /// The cells of a `gridSize` x `gridSize` grid in reading order.
    public static func all(gridSize: Int) -> [Cell] {
        (0..<(gridSize * gridSize)).map { Cell(column: $0 % gridSize, row: $0 / gridSize, gridSize: gridSize) }
    }

    /// The corners of the 2x2 grid.
    public static let topLeft = Cell(column: 0, row: 0), topRight = Cell(column: 1, row: 0)
    /// The bottom corners of the 2x2 grid.
    public static let bottomLeft = Cell(column: 0, row: 1), bottomRight = Cell(column: 1, row: 1)

    /// The position in reading order, 0 at the top left.
    public var index: Int { row * gridSize + column }
    /// The phrase captions, questions and answers use for the cell: "top left" ... "bottom right", and in a 3x3
    /// grid also "top center", "middle left", "center" and so on.
    public var name: String { gridSize == 3 && row == 1 && column == 1 ? "center" : "\(vertical) \(horizontal)" }
    /// "left" or "right" (and "center" in a 3x3 grid).
    public var horizontal: String { (gridSize == 3 ? ["left", "center", "right"] : ["left", "right"])[column] }
    /// "top" or "bottom" (and "middle" in a 3x3 grid).
    public var vertical: String { (gridSize == 3 ? ["top", "middle", "bottom"] : ["top", "bottom"])[row] }
}

/// The spatial relations of GenEval's position category ("A left of B" and so on).
public enum SpatialRelation: String, CaseIterable, Codable, Sendable {
    /// A relation of one object to another; the raw value is the phrase prompts use ("left of", "right of", "above", "below").
    case leftOf = "left of", rightOf = "right of", above, below
}

/// An axis-aligned box in pixels: x0 <= x < x1, y0 <= y < y1.
public struct BoundingBox: Equatable, Codable, Sendable {
    /// The left, top, right and bottom edges in pixels (right and bottom exclusive).
    public var x0: Double, y0: Double, x1: Double, y1: Double
    /// Creates a box from its edges, in pixels.
    public init(x0: Double, y0: Double, x1: Double, y1: Double) {
        self.x0 = x0
        self.y0 = y0
        self.x1 = x1
        self.y1 = y1
    }
    /// The box width in pixels, `x1 - x0`.
    public var width: Double { x1 - x0 }
    /// The box height in pixels, `y1 - y0`.
    public var height: Double { y1 - y0 }
    /// The horizontal centre, `(x0 + x1) / 2`.
    public var centerX: Double { (x0 + x1) / 2 }
    /// The vertical centre, `(y0 + y1) / 2` (y grows downwards).
    public var centerY: Double { (y0 + y1) / 2 }
}

/// One object of a scene.
public struct ShapeObject: Equatable, Codable, Sendable {
    /// The object's shape.
    public var kind: ShapeKind
    /// The object's fill colour.
    public var color: ShapeColor
    /// The grid cell the object is centred in.
    public var cell: Cell
    /// How large the object is within its cell.
    public var size: ShapeSize

    /// Creates an object; it is large unless `size` says otherwise.
    public init(kind: ShapeKind, color: ShapeColor, cell: Cell, size: ShapeSize = .large) {
        self.kind = kind
        self.color = color
        self.cell = cell
        self.size = size
    }

    /// The shape's exact extent in an image of `imageSize` pixels (every shape fills its box's width and height).
    public func boundingBox(imageSize: Int) -> BoundingBox {
        let cellSide = Double(imageSize) / Double(cell.gridSize)
        let cx = (Double(cell.column) + 0.5) * cellSide, cy = (Double(cell.row) + 0.5) * cellSide
        let h = size.halfExtent * cellSide
        return BoundingBox(x0: cx - h, y0: cy - h, x1: cx + h, y1: cy + h)
    }

    /// Whether this object is `relation` `other`: by grid column for left/right and by grid row for above/below.
    /// (Diagonal neighbours are in two relations at once, as under GenEval's rule.)
    public func isIn(_ relation: SpatialRelation, of other: ShapeObject) -> Bool {
        switch relation {
        case .leftOf: return cell.column < other.cell.column
        case .rightOf: return cell.column > other.cell.column
        case .above: return cell.row < other.cell.row
        case .below: return cell.row > other.cell.row
        }
    }
}

/// An 8-bit RGB image, row-major, HWC (`pixels.count == width * height * 3`).
public struct ShapeImage: Equatable, Sendable {
    /// The width in pixels.
    public var width: Int
    /// The height in pixels.
    public var height: Int
    /// The RGB bytes, three per pixel, rows top to bottom.
    public var pixels: [UInt8]

    /// Wraps existing bytes; traps unless `pixels.count == width * height * 3`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "ShapeImage: expected \(width * height * 3) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A uniform image.
    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8)) {
        self.init(width: width, height: height, pixels: (0..<(width * height)).flatMap { _ in [fill.0, fill.1, fill.2] })
    }
}

/// Attribute targets of a scene for pretraining an understanding encoder on a patch grid twice the scene grid's
/// side (4x4 patches for 2x2 cells, 6x6 for 3x3: each cell covers 2x2 patches). Per patch: the colour, shape and
/// colour-and-shape pair of the object in the patch's cell, or "none" (the last class). Per image, meant to be read
/// from the mean of the patch features: how many objects of each pair, of each colour, of each shape, and in all.
/// With the pair classes, "is there a red circle" and "how many red shapes" become linear in the average patch
/// feature, where colour and shape features that merely add up cannot tell a red square and a blue circle from a
/// red circle and a blue square.
public struct EncoderLabels: Equatable, Sendable {
    /// `patches(world)` patches each, row-major: colour index (colors.count = none), shape index (shapes.count =
    /// none), pair index colour * shapes.count + shape (colors.count * shapes.count = none).
    public var color: [Int32], shape: [Int32], pair: [Int32]
    /// Objects per pair (same index as `pair`), then per colour, per shape, then in all (`countTargets` values).
    public var counts: [Int32]

    /// The length of `counts` for `world`: one entry per colour-and-shape pair, per colour and per shape, plus the total.
    public static func countTargets(_ world: WorldConfig) -> Int {
        world.colors.count * world.shapes.count + world.colors.count + world.shapes.count + 1
    }

    /// The patches the labels cover in `world`: (2 x grid side) squared, 16 in the standard world.
    public static func patches(_ world: WorldConfig) -> Int { 4 * world.gridSize * world.gridSize }

    /// Computes the targets of `scene`; traps if an object's colour or shape is not in `world`.
    public init(scene: Scene, world: WorldConfig) {
        let colors = world.colors.count, shapes = world.shapes.count
        let side = 2 * world.gridSize, patches = side * side
        color = Array(repeating: Int32(colors), count: patches)
        shape = Array(repeating: Int32(shapes), count: patches)
        pair = Array(repeating: Int32(colors * shapes), count: patches)
        counts = Array(repeating: 0, count: Self.countTargets(world))
        for o in scene.objects {
            let c = world.colors.firstIndex(of: o.color)!, k = world.shapes.firstIndex(of: o.kind)!
            for py in 0..<2 {
                for px in 0..<2 {
                    let p = (o.cell.row * 2 + py) * side + o.cell.column * 2 + px
                    color[p] = Int32(c)
                    shape[p] = Int32(k)
                    pair[p] = Int32(c * shapes + k)
                }
            }
            for target in [c * shapes + k, colors * shapes + c, colors * shapes + colors + k, counts.count - 1] { counts[target] += 1 }
        }
    }
}

/// A scene: up to four objects, each in its own cell of the grid.
public struct Scene: Equatable, Codable, Sendable {
    /// The objects, in the order their caption mentions them (generation samples) or drawn (random scenes).
    public var objects: [ShapeObject]

    /// Creates a scene; the objects are expected to occupy distinct cells (this is not checked).
    public init(objects: [ShapeObject]) { self.objects = objects }

    /// The background colour (mid-grey: far from every palette colour, and what a blurry model output fades to).
    public static let background: (UInt8, UInt8, UInt8) = (128, 128, 128)

    /// Rasterises the scene: a pixel takes an object's colour when the pixel's centre lies inside the shape.
    /// Works at any size; 16, 32 and 64 are tested.
    public func render(size: Int = 32) -> ShapeImage {
        precondition(size >= 8, "Scene.render: size \(size) is too small")
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        for i in 0..<(size * size) {
            pixels[3 * i] = Scene.background.0
            pixels[3 * i + 1] = Scene.background.1
            pixels[3 * i + 2] = Scene.background.2
        }
        for o in objects {
            let box = o.boundingBox(imageSize: size)
            let h = box.width / 2
            let c = o.color.rgb
            let xs = Swift.max(0, Int(box.x0.rounded(.down)))...Swift.min(size - 1, Int(box.x1.rounded(.up)))
            let ys = Swift.max(0, Int(box.y0.rounded(.down)))...Swift.min(size - 1, Int(box.y1.rounded(.up)))
            for y in ys {
                for x in xs where o.kind.contains((Double(x) + 0.5 - box.centerX) / h, (Double(y) + 0.5 - box.centerY) / h) {
                    let i = (y * size + x) * 3
                    pixels[i] = c.0
                    pixels[i + 1] = c.1
                    pixels[i + 2] = c.2
                }
            }
        }
        return ShapeImage(width: size, height: size, pixels: pixels)
    }

    /// The objects as a perfect detector would report them (exact boxes, confidence 1): for checking
    /// requirements against a scene without rendering.
    public func annotations(imageSize: Int = 32) -> [DetectedObject] {
        objects.map { o in
            let box = o.boundingBox(imageSize: imageSize)
            let fill = o.kind == .square ? 1 : (o.kind == .circle ? Double.pi / 4 : 0.5)
            return DetectedObject(kind: o.kind, color: o.color, size: o.size, box: box,
                                  area: Int((box.width * box.height * fill).rounded()), confidence: 1)
        }
    }
}

/// What the world contains. The default (`.standard`) is small enough for a tiny model to learn in minutes:
/// 3 shapes x 4 colours, large objects only, 1 to 4 objects per scene in a 2x2 grid, 32x32 images.
public struct WorldConfig: Equatable, Codable, Sendable {
    /// Side of the rendered images in pixels (tested at 16, 32, 48 and 64).
    public var imageSize: Int
    /// Shapes that occur (at least two).
    public var shapes: [ShapeKind]
    /// Colours that occur (at least two).
    public var colors: [ShapeColor]
    /// Sizes that occur. With both, object phrases name the size ("a small red circle") and "size" questions appear.
    public var sizes: [ShapeSize]
    /// The most objects in a random scene (1 to 4).
    public var maxObjects: Int
    /// The side of the grid the objects stand in: 2 (2x2) or 3 (3x3).
    public var gridSize: Int

    /// Creates a world; traps unless there are at least two distinct shapes and colours, at least one size without repeats,
    /// `maxObjects` is 2 to 4 and the grid is 2x2 or 3x3.
    public init(imageSize: Int = 32, shapes: [ShapeKind] = [.circle, .square, .triangle],
                colors: [ShapeColor] = [.red, .green, .blue, .yellow], sizes: [ShapeSize] = [.large], maxObjects: Int = 4,
                gridSize: Int = 2) {
        precondition(shapes.count >= 2 && Set(shapes).count == shapes.count, "WorldConfig: need at least two distinct shapes")
        precondition(colors.count >= 2 && Set(colors).count == colors.count, "WorldConfig: need at least two distinct colours")
        precondition(!sizes.isEmpty && Set(sizes).count == sizes.count, "WorldConfig: need at least one size")
        precondition((2...4).contains(maxObjects), "WorldConfig: maxObjects must be 2...4")
        precondition(gridSize == 2 || gridSize == 3, "WorldConfig: gridSize must be 2 or 3")
        self.imageSize = imageSize
        self.shapes = shapes
        self.colors = colors
        self.sizes = sizes
        self.maxObjects = maxObjects
        self.gridSize = gridSize
    }

    enum CodingKeys: String, CodingKey { case imageSize, shapes, colors, sizes, maxObjects, gridSize }

    /// Decodes a world; one written before the grid size existed means the 2x2 grid. Values `init` would refuse
    /// are a decoding error naming the field.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let shapes = try c.decode([ShapeKind].self, forKey: .shapes), colors = try c.decode([ShapeColor].self, forKey: .colors)
        let sizes = try c.decode([ShapeSize].self, forKey: .sizes), maxObjects = try c.decode(Int.self, forKey: .maxObjects)
        let gridSize = try c.decodeIfPresent(Int.self, forKey: .gridSize) ?? 2
        for (ok, key, rule) in [(shapes.count >= 2 && Set(shapes).count == shapes.count, CodingKeys.shapes, "at least two distinct shapes"),
                                (colors.count >= 2 && Set(colors).count == colors.count, .colors, "at least two distinct colours"),
                                (!sizes.isEmpty && Set(sizes).count == sizes.count, .sizes, "at least one size, none repeated"),
                                ((2...4).contains(maxObjects), .maxObjects, "2 to 4"), (gridSize == 2 || gridSize == 3, .gridSize, "2 or 3")] where !ok {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "WorldConfig: \(key.rawValue) must be \(rule)")
        }
        self.init(imageSize: try c.decode(Int.self, forKey: .imageSize), shapes: shapes, colors: colors, sizes: sizes,
                  maxObjects: maxObjects, gridSize: gridSize)
    }

    /// 3 shapes, 4 colours, large objects, a 2x2 grid, 32x32.
    public static let standard = WorldConfig()
    /// Every shape, colour and size in a 3x3 grid, 48x48 (a cell is 16 pixels, as wide as the standard world's at
    /// 32). The detector reads it exactly from clean, noisy and mildly blurred (3x3) images; heavier blur makes
    /// small shapes and diamonds look like circles.
    public static let extended = WorldConfig(imageSize: 48, shapes: ShapeKind.allCases, colors: ShapeColor.allCases,
                                             sizes: ShapeSize.allCases, gridSize: 3)

    /// The grid's cells in reading order.
    public var cells: [Cell] { Cell.all(gridSize: gridSize) }

    /// Whether object phrases name the size.
    var namesSizes: Bool { sizes.count > 1 }
}

/// SplitMix64: a small, fast generator with identical output on every platform. All randomness in ShapesWorld
/// comes from it (never from the system generator).
public struct WorldRandom: Sendable {
    var state: UInt64

    /// Starts the stream at `seed`; equal seeds give equal streams.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<n (n > 0).
    public mutating func int(_ n: Int) -> Int {
        precondition(n > 0, "WorldRandom.int: n must be positive")
        return Int(next() % UInt64(n))
    }

    /// Uniform in [0, 1).
    public mutating func double() -> Double { Double(next() >> 11) / Double(UInt64(1) << 53) }

    /// A fair coin flip (the lowest bit of the next draw).
    public mutating func bool() -> Bool { next() & 1 == 1 }

    /// A uniformly chosen element of `items`; traps when it is empty.
    public mutating func pick<T>(_ items: [T]) -> T { items[int(items.count)] }

    /// A uniformly shuffled copy of `items`.
    /// Fisher-Yates.
    public mutating func shuffled<T>(_ items: [T]) -> [T] {
        var a = items
        for i in stride(from: a.count - 1, to: 0, by: -1) { a.swapAt(i, int(i + 1)) }
        return a
    }

    /// An independent stream for `seed` and `stream` (so that one part of a dataset does not shift another).
    public static func derived(seed: UInt64, stream: UInt64) -> WorldRandom {
        var r = WorldRandom(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03))
        return WorldRandom(seed: r.next())
    }
}
