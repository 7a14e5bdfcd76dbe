import Foundation
import JanusFlow
import MLXEngine

/// One image + conversation, tokenized with the chat template (image block expanded).
public struct UnderstandingExample {
    public var ids: [Int]
    /// True at response tokens (the assistant's answer and its end-of-sentence token).
    public var labelMask: [Bool]
    /// True at `<begin_of_image>` and the placeholders.
    public var imageSeqMask: [Bool]
    /// The preprocessed image (3, S, S) in [-1, 1].
    public var pixels: Tensor

    public init(ids: [Int], labelMask: [Bool], imageSeqMask: [Bool], pixels: Tensor) {
        self.ids = ids
        self.labelMask = labelMask
        self.imageSeqMask = imageSeqMask
        self.pixels = pixels
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

    public init(promptIDs: [Int], latent: Tensor, repaTarget: Tensor?) {
        self.promptIDs = promptIDs
        self.latent = latent
        self.repaTarget = repaTarget
    }
}

public struct TextExample {
    public var ids: [Int]
    public init(ids: [Int]) { self.ids = ids }
}

/// In-memory training data for the three task types.
public struct TrainingData {
    public var understanding: [UnderstandingExample]
    public var generation: [GenerationExample]
    public var text: [TextExample]
    public var padID: Int

    public init(understanding: [UnderstandingExample] = [], generation: [GenerationExample] = [], text: [TextExample] = [], padID: Int) {
        self.understanding = understanding
        self.generation = generation
        self.text = text
        self.padID = padID
    }
}

/// Batch assembly. Right padding for AR tasks; left padding for generation so image tokens align at the end.
public enum Collate {
    public static func understanding(_ examples: [UnderstandingExample], padID: Int) -> UnderstandingBatch {
        let t = examples.map(\.ids.count).max() ?? 0
        var ids: [Int32] = [], keys: [Int32] = [], labels: [Int32] = [], images: [Bool] = []
        for e in examples {
            let pad = t - e.ids.count
            ids += e.ids.map(Int32.init) + Array(repeating: Int32(padID), count: pad)
            keys += Array(repeating: 1, count: e.ids.count) + Array(repeating: 0, count: pad)
            labels += e.labelMask.map { $0 ? 1 : 0 } + Array(repeating: 0, count: pad)
            images += e.imageSeqMask + Array(repeating: false, count: pad)
        }
        let b = examples.count
        return UnderstandingBatch(ids: Tensor(ids, shape: [b, t]), keyMask: Tensor(keys, shape: [b, t]),
                                  labelMask: Tensor(labels, shape: [b, t]), pixels: stacked(examples.map(\.pixels)).expandedDims(axis: 1),
                                  imageSeqMask: Tensor(images, shape: [b, t]))
    }

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
