import Foundation

/// An object found in an image (or, from `Scene.annotations`, known to be there).
public struct DetectedObject: Equatable, Sendable {
    /// The best-matching shape.
    public var kind: ShapeKind
    /// The palette colour most of the object's pixels take.
    public var color: ShapeColor
    /// `large` when the box's longer side is at least 0.58 of a grid cell (large shapes span 0.72 of a cell, small
    /// ones 0.44): 29% of the image side in a 2x2 grid.
    public var size: ShapeSize
    /// The pixels' bounding box.
    public var box: BoundingBox
    /// Pixels in the object.
    public var area: Int
    /// In [0, 1]: how well the pixels match the shape (intersection over union with the ideal shape in the same box)
    /// times the fraction of the pixels that have the object's colour. GenEval's "most confident" objects come first.
    public var confidence: Double

    /// Creates a detection from its parts.
    public init(kind: ShapeKind, color: ShapeColor, size: ShapeSize, box: BoundingBox, area: Int, confidence: Double) {
        self.kind = kind
        self.color = color
        self.size = size
        self.box = box
        self.area = area
        self.confidence = confidence
    }

    /// The centre of the bounding box (GenEval compares box centres).
    public var centerX: Double { box.centerX }
    /// The vertical centre of the bounding box (y grows downwards).
    public var centerY: Double { box.centerY }

    /// The cell of a `gridSize` x `gridSize` grid that contains the box centre.
    public func cell(imageWidth: Int, imageHeight: Int, gridSize: Int = 2) -> Cell {
        func index(_ center: Double, _ side: Int) -> Int { Swift.min(gridSize - 1, Swift.max(0, Int(center / Double(side) * Double(gridSize)))) }
        return Cell(column: index(centerX, imageWidth), row: index(centerY, imageHeight), gridSize: gridSize)
    }
}

/// A deterministic object detector for ShapesWorld images (no learning).
///
/// 1. Each pixel takes the nearest palette colour when that colour is nearer than the background and within
///    `colorTolerance`; otherwise it is background.
/// 2. 4-connected components of non-background pixels are candidate objects; a component's colour is its majority
///    colour. A component with no clear majority (below `minimumPurity`, or a second colour holding a quarter of it)
///    is split into the connected parts of each colour, so touching objects separate and pure noise falls apart.
/// 3. Each candidate is re-grown against its own mean colour instead of the palette colour, so washed-out,
///    darkened or tinted objects keep their extent.
/// 4. The shape is the one whose silhouette, stretched to the candidate's bounding box, has the highest
///    intersection over union with its pixels; each shape is tried rasterised exactly into the box, and sharp and
///    box-blurred (rounded corners, blunted tips) at high resolution, since blur changes those first. Candidates smaller than `minimumArea`, longer than
///    `maximumAspectRatio` or below `minimumConfidence` are dropped.
///
/// On the standard world at 32 pixels it finds every object of clean, noisy (+-40), blurred (3x3 or 5x5 box) and
/// washed-out images. Limits: below about 8 pixels across, circles, squares and diamonds rasterise nearly alike, so
/// at 16 pixels blurred shapes are often misread, and small shapes need 64 pixels to survive blur; a blurred
/// diamond resembles a circle, so worlds with diamonds are robust only to mild blur. The extended world's 3x3 grid
/// reads exactly at its 48 pixels; at 64 its circles about 16 pixels wide are now and then taken for diamonds (94%
/// of noisy, blurred scenes exact), since the pixels' box is up to a pixel wider than the drawn extent.
public struct Detector: Sendable {
    /// Shapes to tell apart.
    public var shapes: [ShapeKind]
    /// Palette colours to look for.
    public var colors: [ShapeColor]
    /// The side of the world's grid (2 or 3): sets where sizes part and which cell a box is in.
    public var gridSize: Int
    /// Minimum object area as a fraction of the image area: by default 40% of the smallest triangle the world
    /// draws (in a 2x2 grid a large triangle covers 6.5% of the image, a small one 2.4%).
    public var minimumArea: Double
    /// Maximum RGB distance from a palette colour.
    public var colorTolerance = 130.0
    /// Minimum share of the majority colour for a component to stay whole.
    public var minimumPurity = 0.6
    /// Minimum `DetectedObject.confidence` (ground-truth objects score above 0.75 even when blurred, noisy and
    /// washed out at once; blobs in pure noise stay below 0.7).
    public var minimumConfidence = 0.5
    /// Maximum ratio of the longer to the shorter side of the bounding box.
    public var maximumAspectRatio = 2.5

    /// A detector for the shapes and colours of `config`.
    public init(config: WorldConfig = .standard) {
        shapes = config.shapes
        colors = config.colors
        gridSize = config.gridSize
        // A triangle fills half of its box, whose side is 2 x halfExtent of a cell.
        let smallestSide = 2 * config.sizes.map(\.halfExtent).min()! / Double(config.gridSize)
        minimumArea = 0.4 * 0.5 * smallestSide * smallestSide
    }

    /// Box-blur widths, in pixels of a 32-pixel-wide shape, of the silhouettes each shape is compared with: blur
    /// rounds corners and eats thin tips (a triangle's apex) before it changes anything else.
    static let templateBlurs = [1, 5, 9, 13]

    /// Each shape's silhouettes (32 pixels wide, sampled 4x4 per pixel), box-blurred by each of `templateBlurs`,
    /// cut at half coverage as the pixel classifier does, and cropped to their bounding box.
    static let templates: [ShapeKind: [(width: Int, height: Int, mask: [Bool])]] = {
        let side = 32, margin = 10, n = side + 2 * margin
        var result: [ShapeKind: [(width: Int, height: Int, mask: [Bool])]] = [:]
        for kind in ShapeKind.allCases {
            var coverage = [Double](repeating: 0, count: n * n)
            for y in 0..<n {
                for x in 0..<n {
                    var inside = 0
                    for sy in 0..<4 {
                        for sx in 0..<4 {
                            let u = (Double(x - margin) + (Double(sx) + 0.5) / 4) / Double(side) * 2 - 1
                            let v = (Double(y - margin) + (Double(sy) + 0.5) / 4) / Double(side) * 2 - 1
                            if kind.contains(u, v) { inside += 1 }
                        }
                    }
                    coverage[y * n + x] = Double(inside) / 16
                }
            }
            for width in templateBlurs {
                let r = width / 2
                var horizontal = coverage, blurred = coverage
                for y in 0..<n {
                    for x in 0..<n {
                        var sum = 0.0
                        for d in -r...r where x + d >= 0 && x + d < n { sum += coverage[y * n + x + d] }
                        horizontal[y * n + x] = sum / Double(width)
                    }
                }
                for y in 0..<n {
                    for x in 0..<n {
                        var sum = 0.0
                        for d in -r...r where y + d >= 0 && y + d < n { sum += horizontal[(y + d) * n + x] }
                        blurred[y * n + x] = sum / Double(width)
                    }
                }
                let inside = blurred.map { $0 >= 0.5 }
                let xs = (0..<(n * n)).filter { inside[$0] }.map { $0 % n }, ys = (0..<(n * n)).filter { inside[$0] }.map { $0 / n }
                let (x0, x1, y0, y1) = (xs.min()!, xs.max()!, ys.min()!, ys.max()!)
                let mask = (y0...y1).flatMap { y in (x0...x1).map { x in inside[y * n + x] } }
                result[kind, default: []].append((x1 - x0 + 1, y1 - y0 + 1, mask))
            }
        }
        return result
    }()

    /// Intersection over union between a component (`member(i, j)` over its `bw` x `bh` box) and `kind`: the best
    /// over all of its silhouettes stretched to the box, and the one of its exact rasterisation into the box.
    static func shapeScore(_ kind: ShapeKind, width bw: Int, height bh: Int, member: (Int, Int) -> Bool) -> (best: Double, exact: Double) {
        // The shape rasterised exactly into the box, as `Scene.render` draws it: decisive for shapes only a few
        // pixels wide, whose pixel patterns differ from their stretched silhouettes.
        var inter = 0, union = 0
        for j in 0..<bh {
            for i in 0..<bw {
                let a = member(i, j)
                let b = kind.contains((2 * Double(i) + 1) / Double(bw) - 1, (2 * Double(j) + 1) / Double(bh) - 1)
                if a && b { inter += 1 }
                if a || b { union += 1 }
            }
        }
        let exact = Double(inter) / Double(Swift.max(union, 1))
        var best = exact
        for t in templates[kind]! {
            var inter = 0, union = 0
            for j in 0..<bh {
                let ty = Swift.min(t.height - 1, (2 * j + 1) * t.height / (2 * bh))
                for i in 0..<bw {
                    let tx = Swift.min(t.width - 1, (2 * i + 1) * t.width / (2 * bw))
                    let a = member(i, j), b = t.mask[ty * t.width + tx]
                    if a && b { inter += 1 }
                    if a || b { union += 1 }
                }
            }
            best = Swift.max(best, Double(inter) / Double(Swift.max(union, 1)))
        }
        return (best, exact)
    }

    /// The objects in `image`, in reading order of their box centres.
    public func detect(_ image: ShapeImage) -> [DetectedObject] {
        let (w, h) = (image.width, image.height)
        guard w > 0, h > 0, image.pixels.count == w * h * 3 else { return [] }
        let palette = colors.map { c in (Double(c.rgb.0), Double(c.rgb.1), Double(c.rgb.2)) }
        let bg: (Double, Double, Double) = (Double(Scene.background.0), Double(Scene.background.1), Double(Scene.background.2))
        let tolerance2 = colorTolerance * colorTolerance

        // 1. Pixel colours.
        var label = [Int](repeating: -1, count: w * h)
        for i in 0..<(w * h) {
            let r = Double(image.pixels[3 * i]), g = Double(image.pixels[3 * i + 1]), b = Double(image.pixels[3 * i + 2])
            func d2(_ c: (Double, Double, Double)) -> Double { (r - c.0) * (r - c.0) + (g - c.1) * (g - c.1) + (b - c.2) * (b - c.2) }
            var best = -1, bestDistance = Swift.min(tolerance2, d2(bg))
            for (k, c) in palette.enumerated() {
                let d = d2(c)
                if d < bestDistance { bestDistance = d; best = k }
            }
            label[i] = best
        }

        let minPixels = Swift.max(3, Int((minimumArea * Double(w * h)).rounded(.up)))
        // 4-connected components of pixels accepted by `accept`, starting from `seeds`.
        func components(of seeds: [Int], _ accept: (Int) -> Bool) -> [[Int]] {
            var seen = Set<Int>()
            var result: [[Int]] = []
            for start in seeds where accept(start) && !seen.contains(start) {
                var stack = [start], members: [Int] = []
                seen.insert(start)
                while let p = stack.popLast() {
                    members.append(p)
                    let (x, y) = (p % w, p / w)
                    for (nx, ny) in [(x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)] where nx >= 0 && nx < w && ny >= 0 && ny < h {
                        let q = ny * w + nx
                        if accept(q) && !seen.contains(q) { seen.insert(q); stack.append(q) }
                    }
                }
                result.append(members.sorted())
            }
            return result
        }

        // 2. Components, their colours, and splits.
        var candidates: [(pixels: [Int], color: Int, purity: Double)] = []
        for component in components(of: Array(0..<(w * h)), { label[$0] >= 0 }) where component.count >= minPixels {
            var histogram = [Int](repeating: 0, count: palette.count)
            for p in component { histogram[label[p]] += 1 }
            let order = histogram.indices.sorted { histogram[$0] != histogram[$1] ? histogram[$0] > histogram[$1] : $0 < $1 }
            let purity = Double(histogram[order[0]]) / Double(component.count)
            let second = order.count > 1 ? histogram[order[1]] : 0
            if purity >= minimumPurity && (second < minPixels || Double(second) < 0.25 * Double(component.count)) {
                candidates.append((component, order[0], purity))
                continue
            }
            let members = Set(component)
            for color in order where histogram[color] >= minPixels {
                for part in components(of: component, { members.contains($0) && label[$0] == color }) where part.count >= minPixels {
                    candidates.append((part, color, 1))
                }
            }
        }

        // 3. Each object's own colour (the mean of its more saturated half) replaces the palette colour as the
        // reference: neighbouring pixels nearer to it than to the background join, so washed-out, darkened or
        // tinted objects keep their full extent.
        func rgb(_ p: Int) -> (Double, Double, Double) {
            (Double(image.pixels[3 * p]), Double(image.pixels[3 * p + 1]), Double(image.pixels[3 * p + 2]))
        }
        func d2(_ a: (Double, Double, Double), _ b: (Double, Double, Double)) -> Double {
            (a.0 - b.0) * (a.0 - b.0) + (a.1 - b.1) * (a.1 - b.1) + (a.2 - b.2) * (a.2 - b.2)
        }
        func refined(_ pixels: [Int], color: Int) -> [Int] {
            let cut = pixels.map { d2(rgb($0), bg) }.sorted()[pixels.count / 2]
            var mean = (0.0, 0.0, 0.0), n = 0.0
            for p in pixels where d2(rgb(p), bg) >= cut {
                let c = rgb(p)
                mean = (mean.0 + c.0, mean.1 + c.1, mean.2 + c.2)
                n += 1
            }
            mean = (mean.0 / n, mean.1 / n, mean.2 / n)
            let xs = pixels.map { $0 % w }, ys = pixels.map { $0 / w }
            let (rx0, rx1, ry0, ry1) = (xs.min()! - 2, xs.max()! + 2, ys.min()! - 2, ys.max()! + 2)
            let original = Set(pixels)
            return components(of: pixels) { q in
                if original.contains(q) { return true }
                let (x, y) = (q % w, q / w)
                guard x >= rx0, x <= rx1, y >= ry0, y <= ry1, label[q] == -1 || label[q] == color else { return false }
                return d2(rgb(q), mean) < d2(rgb(q), bg)
            }.flatMap { $0 }
        }

        // 4. Geometry.
        var objects: [DetectedObject] = []
        for candidate in candidates {
            let c = (pixels: refined(candidate.pixels, color: candidate.color), color: candidate.color, purity: candidate.purity)
            var x0 = w, x1 = -1, y0 = h, y1 = -1
            for p in c.pixels {
                x0 = Swift.min(x0, p % w); x1 = Swift.max(x1, p % w)
                y0 = Swift.min(y0, p / w); y1 = Swift.max(y1, p / w)
            }
            let bw = x1 - x0 + 1, bh = y1 - y0 + 1
            guard Double(Swift.max(bw, bh)) <= maximumAspectRatio * Double(Swift.min(bw, bh)) else { continue }
            let members = Set(c.pixels)
            // Ties (tiny shapes can match a blurred silhouette of another shape exactly) go to the exact rasterisation.
            var bestKind = shapes[0], bestScore = -1.0, bestExact = -1.0
            for kind in shapes {
                let score = Self.shapeScore(kind, width: bw, height: bh) { i, j in members.contains((y0 + j) * w + x0 + i) }
                if (score.best, score.exact) > (bestScore, bestExact) { (bestKind, bestScore, bestExact) = (kind, score.best, score.exact) }
            }
            guard bestScore * c.purity >= minimumConfidence else { continue }
            let side = Double(Swift.max(bw, bh)) / Double(Swift.min(w, h))
            objects.append(DetectedObject(kind: bestKind, color: colors[c.color], size: side * Double(gridSize) >= 0.58 ? .large : .small,
                                          box: BoundingBox(x0: Double(x0), y0: Double(y0), x1: Double(x1 + 1), y1: Double(y1 + 1)),
                                          area: c.pixels.count, confidence: bestScore * c.purity))
        }
        return objects.sorted { ($0.centerY, $0.centerX) < ($1.centerY, $1.centerX) }
    }
}
