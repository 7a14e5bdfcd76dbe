import Foundation
import MLXEngine

/// Classifier-free-guidance inputs built the way DeepSeek's demo builds them.
public struct GuidanceBatch {
    /// Prompt ids of one conditional row (BOS first, ending in the generation tag, whose slot is dropped).
    public let promptIDs: [Int]
    /// The token that replaces every id after BOS in the unconditional rows.
    public let padID: Int

    /// Wraps one conditional row's prompt ids and the tokenizer's pad id.
    public init(promptIDs: [Int], padID: Int) {
        self.promptIDs = promptIDs
        self.padID = padID
    }

    /// The unconditional row: BOS kept, every later id replaced by the pad id.
    public var unconditionalIDs: [Int] { [promptIDs[0]] + Array(repeating: padID, count: promptIDs.count - 1) }

    /// Ids of the 2B rows: B conditional then B unconditional (`gen.cfg_tokens` in the fixture).
    public func tokenRows(images: Int) -> [[Int]] {
        Array(repeating: promptIDs, count: images) + Array(repeating: unconditionalIDs, count: images)
    }

    /// Key mask over (L - 1) + 1 + N positions: the unconditional rows hide positions 1 ... L-2.
    public func keyMask(images: Int, imageTokens: Int) -> Tensor {
        let l = promptIDs.count
        let total = (l - 1) + 1 + imageTokens
        let cond = [Int32](repeating: 1, count: total)
        var uncond = cond
        for p in 1..<max(l - 1, 1) { uncond[p] = 0 }
        let rows = Array(repeating: cond, count: images) + Array(repeating: uncond, count: images)
        return Tensor(rows.flatMap { $0 }, shape: [2 * images, total])
    }
}

/// Progress of a long computation; return false to cancel.
public typealias ProgressHandler = (_ step: Int, _ total: Int) -> Bool

/// Thrown by the samplers when a `ProgressHandler` returns false.
public struct SamplingCancelled: Error, CustomStringConvertible {
    /// Always `sampling cancelled`.
    public var description: String { "sampling cancelled" }
}

/// Euler integration of the rectified flow from noise (t = 0) to data (t = 1), with classifier-free guidance.
public struct RectifiedFlowSampler {
    /// Euler steps from t = 0 to t = 1, each of size 1 / `steps` (default 30).
    public var steps: Int
    /// Classifier-free guidance weight w: the guided velocity is `w * conditional - (w - 1) * unconditional`
    /// (default 2; 1 means no guidance).
    public var cfgWeight: Double
    /// Compute the prompt's keys/values once (one row, shared by every conditional and unconditional row) and
    /// reuse them at every step; false runs the official loop, which recomputes 2B masked prompt rows per step.
    public var reusePromptCache: Bool
    /// With the shared prompt, images whose rows go through the network together. Rows are independent, and on
    /// the CPU a larger batch buys no sgemm efficiency (1154 and 5770 rows run at the same rate), so one image per
    /// pass gives the same result and speed with a fifth of a 5-image batch's activations (peak 6.2 -> 4.9 GB).
    public var imagesPerPass: Int
    /// Where the shared prompt's keys/values are kept between generations (nil: computed for each one).
    public var promptStore: PromptCacheStore?

    /// Creates a sampler; `imagesPerPass` must be at least 1 (a precondition, not an error).
    public init(steps: Int = 30, cfgWeight: Double = 2.0, reusePromptCache: Bool = true, imagesPerPass: Int = 1,
                promptStore: PromptCacheStore? = nil) {
        precondition(imagesPerPass >= 1, "imagesPerPass must be at least 1")
        self.steps = steps
        self.cfgWeight = cfgWeight
        self.reusePromptCache = reusePromptCache
        self.imagesPerPass = imagesPerPass
        self.promptStore = promptStore
    }

    /// Integrates `z0` (NCHW (B, 4, h, w)) for the prompt; returns the final latents (not yet divided by the VAE
    /// scaling factor). `onStep` sees each step's latents.
    public func sample(model: JanusFlowModel, guidance: GuidanceBatch, initialNoise z0: Tensor,
                       progress: ProgressHandler? = nil, onStep: ((Int, Tensor) -> Void)? = nil) throws -> Tensor {
        let b = z0.dim(0)
        let enc = model.config.genEncoder
        let gridH = (z0.dim(2) + 2 * enc.padding - enc.kernelSize) / enc.stride + 1
        let gridW = (z0.dim(3) + 2 * enc.padding - enc.kernelSize) / enc.stride + 1
        let imageTokens = gridH * gridW
        let lm = model.languageModel

        // Prompt embeddings without the last (generation-tag) slot.
        let prefixLength = guidance.promptIDs.count - 1
        precondition(prefixLength >= 1, "a generation prompt has at least BOS and the generation tag")
        var promptCache: [KVCache]? = nil
        var prefixRows: Tensor? = nil
        if reusePromptCache {
            // One conditional row, computed once (or found in the store); the unconditional rows see only its BOS
            // (see SharedPrompt).
            let prefix = Array(guidance.promptIDs.prefix(prefixLength))
            let prefill = { () throws -> [KVCache] in
                let cache = lm.makeCache()
                _ = lm.forward(inputsEmbeds: lm.embed(Tensor(prefix.map(Int32.init), shape: [1, prefixLength])), cache: cache)
                try Tensor.eval(cache.flatMap { [$0.keys!, $0.values!] })
                return cache
            }
            promptCache = try promptStore.map { try $0.caches(for: prefix, compute: prefill) } ?? prefill()
        } else {
            // The official loop: 2B full rows, the unconditional prompt masked, recomputed at every step.
            let distinct = Tensor([guidance.promptIDs, guidance.unconditionalIDs].flatMap { $0.map(Int32.init) },
                                  shape: [2, guidance.promptIDs.count])
            prefixRows = lm.embed(distinct).slice(axis: 1, 0, prefixLength).repeated(b, axis: 0)
        }
        let keyMask = promptCache == nil ? guidance.keyMask(images: b, imageTokens: imageTokens) : nil
        // The official loop runs all 2B rows at once; the shared prompt lets images go in passes.
        let pass = promptCache == nil ? b : Swift.min(b, imagesPerPass)
        let passes = stride(from: 0, to: b, by: pass).map { $0..<Swift.min($0 + pass, b) }
        return try integrate(z0, passes: passes, progress: progress, onStep: onStep) { range, z2, t in
            let shared = promptCache.map { SharedPrompt(caches: $0, conditionalRows: range.count, unconditionalKeys: 1) }
            return model.velocity(latents: z2, t: t, prefix: prefixRows, keyMask: keyMask, sharedPrompt: shared)
        }
    }

    /// One prompt per image: image i of `z0` (B, 4, h, w) follows `guidances[i]`, exactly as if it were sampled on
    /// its own with that prompt. Images go in passes of `imagesPerPass`, each pass integrated to the end before the
    /// next (passes are independent), so only one pass's prompts are held: they are right-padded into one batch
    /// whose keys/values are computed once, and each row sees its own prompt and keeps its official positions.
    /// (Always the shared-prompt form: `reusePromptCache` does not apply.) `progress` counts steps over all passes.
    public func sample(model: JanusFlowModel, guidances: [GuidanceBatch], initialNoise z0: Tensor,
                       progress: ProgressHandler? = nil) throws -> Tensor {
        let b = z0.dim(0)
        precondition(guidances.count == b, "one guidance per image (\(guidances.count) for \(b) images)")
        precondition(guidances.allSatisfy { $0.promptIDs.count >= 2 }, "a generation prompt has at least BOS and the generation tag")
        let lm = model.languageModel
        let passes = stride(from: 0, to: b, by: imagesPerPass).map { $0..<Swift.min($0 + imagesPerPass, b) }
        var finals: [Tensor] = []
        for (index, range) in passes.enumerated() {
            // Each prompt without its generation-tag slot, padded on the right: causal attention keeps the padding
            // out of every real position, so the real keys/values are those of the prompt alone.
            let prefixes = guidances[range].map { Array($0.promptIDs.dropLast()) }
            let longest = prefixes.map(\.count).max()!
            let ids = prefixes.enumerated().flatMap { i, row in
                (row + Array(repeating: guidances[range.lowerBound + i].padID, count: longest - row.count)).map(Int32.init)
            }
            let cache = lm.makeCache()
            _ = lm.forward(inputsEmbeds: lm.embed(Tensor(ids, shape: [range.count, longest])), cache: cache)
            try Tensor.eval(cache.flatMap { [$0.keys!, $0.values!] })
            let prompts = SharedPrompt(caches: cache, promptLengths: prefixes.map(\.count), unconditionalKeys: 1)
            // A pass's end is the next pass's start: reported once, by the next pass.
            let passProgress: ProgressHandler? = progress.map { report in
                { step, _ in step == steps && index < passes.count - 1 ? true : report(index * steps + step, passes.count * steps) }
            }
            let zi = passes.count == 1 ? z0 : z0.slice(axis: 0, range.lowerBound, range.upperBound)
            finals.append(try integrate(zi, passes: [0..<range.count], progress: passProgress, onStep: nil) { _, z2, t in
                model.velocity(latents: z2, t: t, prefix: nil, keyMask: nil, sharedPrompt: prompts)
            })
        }
        return finals.count == 1 ? finals[0] : concatenated(finals, axis: 0)
    }

    /// The Euler loop: at each step, the guided velocity of every pass of images (`velocity` gets the pass, its
    /// latents twice (conditional then unconditional rows) and the times), then one update of all latents.
    private func integrate(_ z0: Tensor, passes: [Range<Int>], progress: ProgressHandler?, onStep: ((Int, Tensor) -> Void)?,
                           velocity: (Range<Int>, Tensor, Tensor) -> Tensor) throws -> Tensor {
        let b = z0.dim(0)
        var z = z0.asType(.float32)
        for k in 0..<steps {
            if let progress, !progress(k, steps) { throw SamplingCancelled() }
            var guided: [Tensor] = []
            for range in passes {
                let n = range.count
                let zi = n == b ? z : z.slice(axis: 0, range.lowerBound, range.upperBound)
                let t = Tensor.full([2 * n], value: Double(k) / Double(steps) * 1000)
                let v = velocity(range, concatenated([zi, zi], axis: 0), t)
                let vc = v.slice(axis: 0, 0, n), vu = v.slice(axis: 0, n, 2 * n)
                let g = vc * cfgWeight - vu * (cfgWeight - 1)
                if passes.count > 1 { try g.eval() }  // one pass's activations at a time
                guided.append(g)
            }
            z = z + (guided.count == 1 ? guided[0] : concatenated(guided, axis: 0)) * (1 / Double(steps))
            try z.eval()
            onStep?(k, z)
        }
        _ = progress?(steps, steps)
        return z
    }
}
