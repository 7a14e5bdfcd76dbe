import Foundation

/// An object found in an image.
public struct DetectedObject: Equatable, Sendable {
    public var kind: ShapeKind
    public var color: ShapeColor
    public var centerX: Double
    public var centerY: Double
    public var area: Int
}

/// A deterministic analyser: pixels are assigned to the nearest palette colour (or background), 4-connected
/// components of one colour are objects, and their shape comes from how they fill their bounding box and how
/// their width changes from top to bottom.
public struct Detector: Sendable {
    /// Minimum object area as a fraction of the image.
    public var minimumArea = 0.02
    /// Maximum RGB distance from a palette colour (farther pixels are background).
    public var colorTolerance = 110.0

    public init() {}

    public func detect(_ image: ShapeImage) -> [DetectedObject] {
        let (w, h) = (image.width, image.height)
        var label = [Int](repeating: -1, count: w * h)
        let bg = Scene.background
        for i in 0..<(w * h) {
            let r = Double(image.pixels[3 * i]), g = Double(image.pixels[3 * i + 1]), b = Double(image.pixels[3 * i + 2])
            var best = -1, bestDistance = Swift.min(colorTolerance, distance((r, g, b), bg) - 1)
            for (k, c) in ShapeColor.allCases.enumerated() {
                let d = distance((r, g, b), c.rgb)
                if d < bestDistance { bestDistance = d; best = k }
            }
            label[i] = best
        }
        var seen = [Bool](repeating: false, count: w * h)
        var objects: [DetectedObject] = []
        for start in 0..<(w * h) where label[start] >= 0 && !seen[start] {
            var stack = [start], members: [Int] = []
            seen[start] = true
            while let p = stack.popLast() {
                members.append(p)
                let (x, y) = (p % w, p / w)
                for (dx, dy) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
                    let nx = x + dx, ny = y + dy
                    guard nx >= 0, nx < w, ny >= 0, ny < h else { continue }
                    let q = ny * w + nx
                    if !seen[q] && label[q] == label[start] { seen[q] = true; stack.append(q) }
                }
            }
            guard Double(members.count) >= minimumArea * Double(w * h) else { continue }
            objects.append(DetectedObject(kind: classify(members, width: w), color: ShapeColor.allCases[label[start]],
                                          centerX: members.map { Double($0 % w) }.reduce(0, +) / Double(members.count) + 0.5,
                                          centerY: members.map { Double($0 / w) }.reduce(0, +) / Double(members.count) + 0.5,
                                          area: members.count))
        }
        return objects
    }

    func distance(_ a: (Double, Double, Double), _ b: (UInt8, UInt8, UInt8)) -> Double {
        let dr = a.0 - Double(b.0), dg = a.1 - Double(b.1), db = a.2 - Double(b.2)
        return (dr * dr + dg * dg + db * db).squareRoot()
    }

    func classify(_ members: [Int], width w: Int) -> ShapeKind {
        let xs = members.map { $0 % w }, ys = members.map { $0 / w }
        let (x0, x1, y0, y1) = (xs.min()!, xs.max()!, ys.min()!, ys.max()!)
        let boxW = x1 - x0 + 1, boxH = y1 - y0 + 1
        let fill = Double(members.count) / Double(boxW * boxH)
        // Row widths in the top and bottom thirds: a triangle is narrow on top, a circle and a square are not.
        var rowWidth = [Int](repeating: 0, count: boxH)
        for y in ys { rowWidth[y - y0] += 1 }
        let third = Swift.max(boxH / 3, 1)
        let top = Double(rowWidth.prefix(third).reduce(0, +)), bottom = Double(rowWidth.suffix(third).reduce(0, +))
        let taper = top / Swift.max(bottom, 1)
        if taper < 0.6 { return .triangle }
        return fill > 0.86 ? .square : .circle
    }
}

/// GenEval-style scoring of generated images against prompt requirements.
public enum GenEvalScorer {
    /// Whether `objects` satisfy the requirements: every included shape (with its colour when given) is present
    /// at least `count` times (exactly, for counting), and a position relation holds between object centres.
    public static func isCorrect(_ objects: [DetectedObject], _ r: Requirements) -> Bool {
        var found: [[DetectedObject]] = []
        for inc in r.include {
            let matches = objects.filter { $0.kind == inc.shape && (inc.color == nil || $0.color == inc.color) }
            if r.category == .counting ? matches.count != inc.count : matches.count < inc.count { return false }
            found.append(matches)
        }
        if let relation = r.position, found.count == 2, let a = found[0].first, let b = found[1].first {
            let dx = a.centerX - b.centerX, dy = a.centerY - b.centerY
            switch relation {
            case "left of": return dx < 0 && Swift.abs(dx) > Swift.abs(dy)
            case "right of": return dx > 0 && Swift.abs(dx) > Swift.abs(dy)
            case "above": return dy < 0 && Swift.abs(dy) > Swift.abs(dx)
            case "below": return dy > 0 && Swift.abs(dy) > Swift.abs(dx)
            default: return false
            }
        }
        return true
    }

    /// Per-category accuracy and "overall", the mean over the categories present (GenEval's definition).
    public static func summarize(_ results: [(GenEvalCategory, Bool)]) -> [String: Double] {
        var out: [String: Double] = [:]
        var means: [Double] = []
        for c in GenEvalCategory.allCases {
            let rows = results.filter { $0.0 == c }
            guard !rows.isEmpty else { continue }
            let score = Double(rows.filter { $0.1 }.count) / Double(rows.count)
            out[c.rawValue] = score
            means.append(score)
        }
        out["overall"] = means.isEmpty ? 0 : means.reduce(0, +) / Double(means.count)
        return out
    }
}

/// Understanding scores: exact match per question type and POPE's yes/no metrics.
public enum UnderstandingScorer {
    /// Lower-cased, trimmed, trailing punctuation removed.
    public static func normalize(_ s: String) -> String {
        var t = s.lowercased().trimmingCharacters(in: .whitespacesAndNewlines)
        while let last = t.last, ".!?,;:".contains(last) { t.removeLast() }
        return t.trimmingCharacters(in: .whitespaces)
    }

    /// (type, expected, predicted) rows -> accuracy per type, "accuracy" over all, and POPE metrics.
    public static func summarize(_ rows: [(type: String, expected: String, predicted: String)]) -> [String: Double] {
        var out: [String: Double] = [:]
        let correct = rows.map { normalize($0.expected) == normalize($0.predicted) }
        out["accuracy"] = rows.isEmpty ? 0 : Double(correct.filter { $0 }.count) / Double(rows.count)
        for type in Set(rows.map(\.type)).sorted() {
            let idx = rows.indices.filter { rows[$0].type == type }
            out[type] = Double(idx.filter { correct[$0] }.count) / Double(idx.count)
        }
        let pope = rows.filter { $0.type == "pope" }
        if !pope.isEmpty {
            let m = popeMetrics(pope.map { (normalize($0.expected) == "yes", normalize($0.predicted).hasPrefix("yes")) })
            for (k, v) in m { out["pope_\(k)"] = v }
        }
        return out
    }

    /// (truth, predicted yes) -> accuracy, precision, recall, f1, yes_ratio.
    public static func popeMetrics(_ pairs: [(truth: Bool, predicted: Bool)]) -> [String: Double] {
        let tp = Double(pairs.filter { $0.truth && $0.predicted }.count)
        let fp = Double(pairs.filter { !$0.truth && $0.predicted }.count)
        let fn = Double(pairs.filter { $0.truth && !$0.predicted }.count)
        let tn = Double(pairs.filter { !$0.truth && !$0.predicted }.count)
        let precision = tp + fp > 0 ? tp / (tp + fp) : 0
        let recall = tp + fn > 0 ? tp / (tp + fn) : 0
        return ["accuracy": (tp + tn) / Swift.max(Double(pairs.count), 1), "precision": precision, "recall": recall,
                "f1": precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0,
                "yes_ratio": (tp + fp) / Swift.max(Double(pairs.count), 1)]
    }
}
