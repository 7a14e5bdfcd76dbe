import Foundation

/// GenEval's rules applied to ShapesWorld detections (geneval/evaluation/evaluate_images.py, `evaluate`).
public enum GenEvalScorer {
    /// GenEval's POSITION_THRESHOLD: box centres must differ by more than this fraction of the two boxes' sizes.
    public static let positionThreshold = 0.1

    /// GenEval's `relative_position(a, b)`: the relations of box `a` to box `b` ("left of", "above", ...; a diagonal
    /// offset gives two, boxes nearly on top of each other none). Image y grows downwards.
    public static func relations(of a: BoundingBox, to b: BoundingBox) -> Set<SpatialRelation> {
        let offset = (a.centerX - b.centerX, a.centerY - b.centerY)
        let revised = (Swift.max(Swift.abs(offset.0) - positionThreshold * (a.width + b.width), 0) * sign(offset.0),
                       Swift.max(Swift.abs(offset.1) - positionThreshold * (a.height + b.height), 0) * sign(offset.1))
        if Swift.abs(revised.0) < 1e-3 && Swift.abs(revised.1) < 1e-3 { return [] }
        let norm = (offset.0 * offset.0 + offset.1 * offset.1).squareRoot()
        let (dx, dy) = (revised.0 / norm, revised.1 / norm)
        var result: Set<SpatialRelation> = []
        if dx < -0.5 { result.insert(.leftOf) }
        if dx > 0.5 { result.insert(.rightOf) }
        if dy < -0.5 { result.insert(.above) }
        if dy > 0.5 { result.insert(.below) }
        return result
    }

    static func sign(_ x: Double) -> Double { x > 0 ? 1 : (x < 0 ? -1 : 0) }

    /// Whether the detections satisfy the requirements, with GenEval's reasons when they do not:
    /// for each include, the `count` most confident objects of the class must exist, have the colour if one is
    /// required, and stand in the required relation to every object matched for the target include; for each
    /// exclude, fewer than `count` objects of the class may exist.
    public static func evaluate(_ objects: [DetectedObject], _ requirements: Requirements) -> (correct: Bool, reasons: [String]) {
        var byClass: [ShapeKind: [DetectedObject]] = [:]
        for o in objects { byClass[o.kind, default: []].append(o) }
        for k in byClass.keys {
            byClass[k]!.sort { a, b in
                if a.confidence != b.confidence { return a.confidence > b.confidence }
                if a.area != b.area { return a.area > b.area }
                return (a.centerY, a.centerX) < (b.centerY, b.centerX)
            }
        }
        var correct = true
        var reasons: [String] = []
        var matchedGroups: [[DetectedObject]?] = []
        for req in requirements.include {
            var matched = true
            let found = Array(byClass[req.shape, default: []].prefix(req.count))
            if found.count < req.count {
                correct = false
                matched = false
                reasons.append("expected \(req.shape.rawValue)>=\(req.count), found \(found.count)")
            } else {
                if let color = req.color, found.filter({ $0.color == color }).count < req.count {
                    correct = false
                    matched = false
                    reasons.append("expected \(color.rawValue) \(req.shape.rawValue)>=\(req.count), found "
                                   + "\(found.filter { $0.color == color }.count) \(color.rawValue); and "
                                   + found.filter { $0.color != color }.map(\.color.rawValue).joined(separator: ", "))
                }
                if let position = req.position, matched {
                    if position.target >= matchedGroups.count || matchedGroups[position.target] == nil {
                        correct = false
                        matched = false
                        reasons.append("no target for \(req.shape.rawValue) to be \(position.relation.rawValue)")
                    } else {
                        outer: for o in found {
                            for target in matchedGroups[position.target]! where !relations(of: o.box, to: target.box).contains(position.relation) {
                                correct = false
                                matched = false
                                let actual = relations(of: o.box, to: target.box).map(\.rawValue).sorted().joined(separator: ", ")
                                reasons.append("expected \(req.shape.rawValue) \(position.relation.rawValue) target, found [\(actual)] target")
                                break outer
                            }
                        }
                    }
                }
            }
            matchedGroups.append(matched ? found : nil)
        }
        for ex in requirements.exclude {
            let n = byClass[ex.shape, default: []].count
            if n >= ex.count {
                correct = false
                reasons.append("expected \(ex.shape.rawValue)<\(ex.count), found \(n)")
            }
        }
        return (correct, reasons)
    }

    /// Whether the detections satisfy the requirements (GenEval's rules; see `evaluate`).
    public static func isCorrect(_ objects: [DetectedObject], _ requirements: Requirements) -> Bool {
        evaluate(objects, requirements).correct
    }

    /// Detects the objects of `image` and checks them against `requirements`.
    public static func score(image: ShapeImage, requirements: Requirements, detector: Detector = Detector()) -> Bool {
        isCorrect(detector.detect(image), requirements)
    }

    /// GenEval's summary: the accuracy of each category present (keyed by its tag, e.g. "two_object") and
    /// "overall", the mean of those category accuracies (GenEval's overall score over its six categories).
    public static func geneval(results: [(GenEvalCategory, Bool)]) -> [String: Double] {
        var out: [String: Double] = [:]
        var scores: [Double] = []
        for c in GenEvalCategory.allCases {
            let rows = results.filter { $0.0 == c }
            guard !rows.isEmpty else { continue }
            let score = Double(rows.filter { $0.1 }.count) / Double(rows.count)
            out[c.rawValue] = score
            scores.append(score)
        }
        out["overall"] = scores.isEmpty ? 0 : scores.reduce(0, +) / Double(scores.count)
        return out
    }

    /// The same as `geneval(results:)`.
    public static func summarize(_ results: [(GenEvalCategory, Bool)]) -> [String: Double] { geneval(results: results) }
}

/// Understanding scores: exact match per question type (after VQA-style normalisation) and POPE's yes/no metrics.
public enum UnderstandingScorer {
    static let numerals = ["0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
                           "7": "seven", "8": "eight", "9": "nine", "10": "ten"]

    /// Lower-cases, turns punctuation into spaces, collapses whitespace, writes numerals as words ("2" -> "two")
    /// and drops the articles "a", "an", "the" (as VQA's evaluation does), so "A red circle." matches "red circle".
    public static func normalize(_ s: String) -> String {
        let cleaned = String(s.lowercased().unicodeScalars.map { scalar -> Character in
            CharacterSet.alphanumerics.contains(scalar) ? Character(scalar) : " "
        })
        return cleaned.split(separator: " ").compactMap { word -> String? in
            let w = String(word)
            if w == "a" || w == "an" || w == "the" { return nil }
            return numerals[w] ?? w
        }.joined(separator: " ")
    }

    /// Exact match after `normalize`.
    public static func isCorrect(expected: String, predicted: String) -> Bool { normalize(expected) == normalize(predicted) }

    /// POPE's reading of a free-form answer: "no" when its first sentence contains the word "no" or "not",
    /// otherwise "yes" (so an answer that is not a yes/no counts as yes, as in POPE).
    public static func popeSaysYes(_ answer: String) -> Bool {
        let first = answer.lowercased().split(separator: ".", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let words = first.replacingOccurrences(of: ",", with: "").split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init)
        return !(words.contains("no") || words.contains("not"))
    }

    /// (type, expected, predicted) rows ->
    /// - "accuracy": exact-match accuracy over all rows, and one entry per type with that type's accuracy;
    /// - for every type that starts with "pope" (e.g. "pope", or "pope_adversarial" to separate settings):
    ///   "<type>_accuracy", "<type>_precision", "<type>_recall", "<type>_f1", "<type>_yes_ratio" from POPE's
    ///   reading of the answers (`popeSaysYes`) against the expected "yes"/"no".
    public static func summarize(_ rows: [(type: String, expected: String, predicted: String)]) -> [String: Double] {
        var out: [String: Double] = [:]
        let correct = rows.map { isCorrect(expected: $0.expected, predicted: $0.predicted) }
        out["accuracy"] = rows.isEmpty ? 0 : Double(correct.filter { $0 }.count) / Double(rows.count)
        for type in Set(rows.map(\.type)).sorted() {
            let idx = rows.indices.filter { rows[$0].type == type }
            out[type] = Double(idx.filter { correct[$0] }.count) / Double(idx.count)
            if type.hasPrefix("pope") {
                let pairs = idx.map { (truth: normalize(rows[$0].expected) == "yes", predicted: popeSaysYes(rows[$0].predicted)) }
                for (key, value) in popeMetrics(pairs) { out["\(type)_\(key)"] = value }
            }
        }
        return out
    }

    /// POPE's metrics from (truth is yes, prediction is yes) pairs: "accuracy", "precision", "recall", "f1" (of the
    /// "yes" class) and "yes_ratio" (share of "yes" predictions). Undefined ratios (no positives) are 0.
    public static func popeMetrics(_ pairs: [(truth: Bool, predicted: Bool)]) -> [String: Double] {
        let tp = Double(pairs.filter { $0.truth && $0.predicted }.count)
        let fp = Double(pairs.filter { !$0.truth && $0.predicted }.count)
        let fn = Double(pairs.filter { $0.truth && !$0.predicted }.count)
        let tn = Double(pairs.filter { !$0.truth && !$0.predicted }.count)
        let n = Swift.max(Double(pairs.count), 1)
        let precision = tp + fp > 0 ? tp / (tp + fp) : 0
        let recall = tp + fn > 0 ? tp / (tp + fn) : 0
        return ["accuracy": (tp + tn) / n, "precision": precision, "recall": recall,
                "f1": precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0,
                "yes_ratio": (tp + fp) / n]
    }
}
