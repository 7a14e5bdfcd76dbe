import Foundation
import JanusFlow
import MLXEngine

/// One image + conversation, tokenized with the chat template (image block expanded).
public struct UnderstandingExample {
    /// Token ids of the whole conversation, the image block expanded to its placeholders.
    public var ids: [Int]
    /// True at response tokens (the assistant's answer and its end-of-sentence token).
    public var labelMask: [Bool]
    /// True at `<begin_of_image>` and the placeholders.
    public var imageSeqMask: [Bool]
    /// The preprocessed image (3, S, S) in [-1, 1].
    public var pixels: Tensor
    /// For samples sharing a prefix (`sharingPrefix`): 0 at the prefix, k at the k-th sample's own tokens.
    public var branches: [Int]?

    /// Creates an example from per-token arrays, each as long as `ids`.
    public init(ids: [Int], labelMask: [Bool], imageSeqMask: [Bool], pixels: Tensor, branches: [Int]? = nil) {
        self.ids = ids
        self.labelMask = labelMask
        self.imageSeqMask = imageSeqMask
        self.pixels = pixels
        self.branches = branches
    }

    /// Several single-turn samples about one image as one example: their common token prefix (system prompt,
    /// image block, ...) once, then each sample's remaining tokens as a branch that attends to the prefix and to
    /// itself only. Training on it gives the same per-token losses as the samples on their own rows, at the cost of
    /// one prefix, and unlike a multi-turn conversation no answer is visible to another question.
    /// The samples must show the same image (the first one's pixels are kept).
    public static func sharingPrefix(_ samples: [UnderstandingExample]) throws -> UnderstandingExample {
        guard let first = samples.first else { throw TrainingError("sharingPrefix: no samples") }
        if samples.count == 1 { return first }
        var common = first.ids.count
        for s in samples.dropFirst() {
            common = Swift.min(common, zip(first.ids, s.ids).prefix { $0 == $1 }.count)
        }
        var example = UnderstandingExample(ids: Array(first.ids.prefix(common)), labelMask: Array(first.labelMask.prefix(common)),
                                           imageSeqMask: Array(first.imageSeqMask.prefix(common)), pixels: first.pixels,
                                           branches: Array(repeating: 0, count: common))
        for (k, s) in samples.enumerated() {
            // A branch's first token follows another branch in the row, so it must not be a target; and every
            // image position must lie in the shared prefix, which the image block fills once.
            guard s.ids.count > common, !s.labelMask[common], !s.labelMask.prefix(common).contains(true),
                  !s.imageSeqMask.dropFirst(common).contains(true) else {
                throw TrainingError("sharingPrefix: sample \(k) differs from the others inside its image block or its answer, or adds nothing after the common prefix")
            }
            example.ids += s.ids.dropFirst(common)
            example.labelMask += s.labelMask.dropFirst(common)
            example.imageSeqMask += s.imageSeqMask.dropFirst(common)
            example.branches! += Array(repeating: k + 1, count: s.ids.count - common)
        }
        return example
    }
}

/// One caption + image, the image already in VAE latent space.
public struct GenerationExample {
    /// BOS, the generation template, the generation tag last (its slot becomes t_emb).
    public var promptIDs: [Int]
    /// (4, h, w), multiplied by the VAE scaling factor.
    public var latent: Tensor
    /// (N, D_und) understanding-encoder features of the clean image, for REPA.
    public var repaTarget: Tensor?

    /// Creates an example from its prompt ids, latent and optional REPA target.
    public init(promptIDs: [Int], latent: Tensor, repaTarget: Tensor?) {
        self.promptIDs = promptIDs
        self.latent = latent
        self.repaTarget = repaTarget
    }
}

/// One plain-text sample, tokenized.
public struct TextExample {
    /// Token ids; `DataPreparation` makes them BOS, the text's tokens, then EOS.
    public var ids: [Int]
    /// Creates an example from token ids.
    public init(ids: [Int]) { self.ids = ids }
}

/// In-memory training data for the three task types.
public struct TrainingData {
    /// Image + conversation examples.
    public var understanding: [UnderstandingExample]
    /// Caption + latent examples.
    public var generation: [GenerationExample]
    /// Plain-text examples.
    public var text: [TextExample]
    /// Token id that pads rows and fills dropped (unconditional) prompts.
    public var padID: Int

    /// Creates a data set; any task may be empty.
    public init(understanding: [UnderstandingExample] = [], generation: [GenerationExample] = [], text: [TextExample] = [], padID: Int) {
        self.understanding = understanding
        self.generation = generation
        self.text = text
        self.padID = padID
    }
}

/// Batch assembly. Right padding for AR tasks; left padding for generation so image tokens align at the end.
public enum Collate {
    /// One example per row, right-padded to the longest; shared-prefix examples also get `segments` and `branches`.
    public static func understanding(_ examples: [UnderstandingExample], padID: Int) -> UnderstandingBatch {
        let t = examples.map(\.ids.count).max() ?? 0
        var ids: [Int32] = [], keys: [Int32] = [], labels: [Int32] = [], images: [Bool] = [], branches: [Int32] = []
        for e in examples {
            let pad = t - e.ids.count
            ids += e.ids.map(Int32.init) + Array(repeating: Int32(padID), count: pad)
            keys += Array(repeating: 1, count: e.ids.count) + Array(repeating: 0, count: pad)
            labels += e.labelMask.map { $0 ? 1 : 0 } + Array(repeating: 0, count: pad)
            images += e.imageSeqMask + Array(repeating: false, count: pad)
            branches += (e.branches ?? Array(repeating: 0, count: e.ids.count)).map(Int32.init) + Array(repeating: 0, count: pad)
        }
        let b = examples.count
        let keyMask = Tensor(keys, shape: [b, t])
        // Shared-prefix examples need the segment form of the mask (one segment per row, -1 at padding).
        let branched = examples.contains { $0.branches != nil }
        return UnderstandingBatch(ids: Tensor(ids, shape: [b, t]), keyMask: keyMask,
                                  labelMask: Tensor(labels, shape: [b, t]), pixels: stacked(examples.map(\.pixels)).expandedDims(axis: 1),
                                  imageSeqMask: Tensor(images, shape: [b, t]), segments: branched ? keyMask - 1 : nil,
                                  branches: branched ? Tensor(branches, shape: [b, t]) : nil)
    }

    /// Greedy packing of whole samples into rows of at most `rowLength` tokens (a longer sample gets its own row).
    static func packRows(_ lengths: [Int], rowLength: Int) -> [[Int]] {
        var rows: [[Int]] = [], current: [Int] = [], used = 0
        for (i, n) in lengths.enumerated() {
            if !current.isEmpty && used + n > rowLength {
                rows.append(current)
                current = []
                used = 0
            }
            current.append(i)
            used += n
        }
        if !current.isEmpty { rows.append(current) }
        return rows
    }

    /// Understanding samples packed into rows (the paper packs to 4096 tokens); attention stays inside each sample.
    public static func packedUnderstanding(_ examples: [UnderstandingExample], padID: Int, rowLength: Int) -> UnderstandingBatch {
        let rows = packRows(examples.map(\.ids.count), rowLength: rowLength)
        let t = rows.map { $0.reduce(0) { $0 + examples[$1].ids.count } }.max() ?? 0
        let maxImages = rows.map(\.count).max() ?? 1
        var ids: [Int32] = [], segs: [Int32] = [], labels: [Int32] = [], images: [Bool] = [], pixels: [Tensor] = [], branches: [Int32] = []
        let blank = Tensor.zeros(examples[0].pixels.shape)
        for row in rows {
            var n = 0
            for (s, i) in row.enumerated() {
                let e = examples[i]
                ids += e.ids.map(Int32.init)
                segs += Array(repeating: Int32(s), count: e.ids.count)
                branches += (e.branches ?? Array(repeating: 0, count: e.ids.count)).map(Int32.init)
                labels += e.labelMask.map { $0 ? 1 : 0 }
                images += e.imageSeqMask
                pixels.append(e.pixels)
                n += e.ids.count
            }
            ids += Array(repeating: Int32(padID), count: t - n)
            segs += Array(repeating: -1, count: t - n)
            labels += Array(repeating: 0, count: t - n)
            images += Array(repeating: false, count: t - n)
            branches += Array(repeating: 0, count: t - n)
            pixels += Array(repeating: blank, count: maxImages - row.count)
        }
        let b = rows.count
        let segments = Tensor(segs, shape: [b, t])
        return UnderstandingBatch(ids: Tensor(ids, shape: [b, t]), keyMask: (segments .>= 0).asType(.int32),
                                  labelMask: Tensor(labels, shape: [b, t]),
                                  pixels: stacked(pixels).reshaped([b, maxImages] + examples[0].pixels.shape),
                                  imageSeqMask: Tensor(images, shape: [b, t]), segments: segments,
                                  branches: examples.contains { $0.branches != nil } ? Tensor(branches, shape: [b, t]) : nil)
    }

    /// Text samples packed greedily into rows of at most `rowLength` tokens; each sample's BOS is not a target.
    public static func packedText(_ examples: [TextExample], padID: Int, rowLength: Int) -> TextBatch {
        let rows = packRows(examples.map(\.ids.count), rowLength: rowLength)
        let t = rows.map { $0.reduce(0) { $0 + examples[$1].ids.count } }.max() ?? 0
        var ids: [Int32] = [], segs: [Int32] = [], labels: [Int32] = []
        for row in rows {
            var n = 0
            for (s, i) in row.enumerated() {
                let e = examples[i]
                ids += e.ids.map(Int32.init)
                segs += Array(repeating: Int32(s), count: e.ids.count)
                labels += [0] + Array(repeating: 1, count: e.ids.count - 1)  // each sample's BOS is not a target
                n += e.ids.count
            }
            ids += Array(repeating: Int32(padID), count: t - n)
            segs += Array(repeating: -1, count: t - n)
            labels += Array(repeating: 0, count: t - n)
        }
        let b = rows.count
        let segments = Tensor(segs, shape: [b, t])
        return TextBatch(ids: Tensor(ids, shape: [b, t]), keyMask: (segments .>= 0).asType(.int32), segments: segments,
                         labelMask: Tensor(labels, shape: [b, t]))
    }

    /// One example per row, right-padded to the longest.
    public static func text(_ examples: [TextExample], padID: Int) -> TextBatch {
        let t = examples.map(\.ids.count).max() ?? 0
        var ids: [Int32] = [], keys: [Int32] = []
        for e in examples {
            let pad = t - e.ids.count
            ids += e.ids.map(Int32.init) + Array(repeating: Int32(padID), count: pad)
            keys += Array(repeating: 1, count: e.ids.count) + Array(repeating: 0, count: pad)
        }
        return TextBatch(ids: Tensor(ids, shape: [examples.count, t]), keyMask: Tensor(keys, shape: [examples.count, t]))
    }

    /// `dropped[i]` replaces example i's prompt by the unconditional one (BOS, then masked pads), as CFG
    /// inference builds it.
    public static func generation(_ examples: [GenerationExample], dropped: [Bool], padID: Int, imageTokens: Int) -> GenerationBatch {
        let l = examples.map(\.promptIDs.count).max() ?? 0
        var ids: [Int32] = [], keys: [Int32] = []
        for (e, drop) in zip(examples, dropped) {
            let pad = l - e.promptIDs.count
            let row = drop ? [e.promptIDs[0]] + Array(repeating: padID, count: e.promptIDs.count - 1) : e.promptIDs
            ids += Array(repeating: Int32(padID), count: pad) + row.map(Int32.init)
            // Keys: the prompt without its last slot, then t_emb and the image tokens.
            var mask = Array(repeating: Int32(0), count: pad) + Array(repeating: Int32(1), count: e.promptIDs.count - 1)
            if drop { for p in (pad + 1)..<(l - 1) where p < mask.count { mask[p] = 0 } }
            keys += mask + Array(repeating: 1, count: 1 + imageTokens)
        }
        let b = examples.count
        let targets = examples.compactMap(\.repaTarget)
        return GenerationBatch(promptIDs: Tensor(ids, shape: [b, l]), keyMask: Tensor(keys, shape: [b, l - 1 + 1 + imageTokens]),
                               latents: stacked(examples.map(\.latent)),
                               repaTarget: targets.count == b ? stacked(targets) : nil)
    }
}
