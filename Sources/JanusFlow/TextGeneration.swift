import Foundation
import MLXEngine

/// How to pick each next token.
public struct SamplingParameters: Sendable, Equatable {
    /// Softmax temperature;
    /// 0 means greedy (argmax).
    public var temperature: Double = 0
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches top-p (1 keeps all).
    public var topP: Double = 1
    /// Keep only the k most likely tokens (0 keeps all).
    public var topK: Int = 0
    /// Penalty for tokens already in the answer: positive logits are divided by it, negative ones multiplied; 1 (the
    /// default) turns it off.
    ///
    /// Values above 1 discourage tokens already generated (as transformers' RepetitionPenaltyLogitsProcessor).
    public var repetitionPenalty: Double = 1
    /// Most tokens to produce, a stop token included (default 512).
    public var maxNewTokens: Int = 512
    /// Seed of the `SplitMix64` stream used when sampling; unused when greedy.
    public var seed: UInt64 = 42

    /// Sets every field; the defaults are greedy decoding of up to 512 new tokens.
    public init(temperature: Double = 0, topP: Double = 1, topK: Int = 0, repetitionPenalty: Double = 1,
                maxNewTokens: Int = 512, seed: UInt64 = 42) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.repetitionPenalty = repetitionPenalty
        self.maxNewTokens = maxNewTokens
        self.seed = seed
    }

    /// Greedy decoding with every other field at its default (up to 512 new tokens).
    public static let greedy = SamplingParameters()
}

/// A small seeded generator (SplitMix64) for token sampling; deterministic across platforms.
public struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    /// Starts the stream at `seed`.
    public init(seed: UInt64) { state = seed }
    /// The next 64 bits of the stream.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Picks tokens from logits on the CPU (one row of vocabulary size per step).
public struct TokenSampler {
    /// The settings tokens are picked with.
    public let parameters: SamplingParameters
    var rng: SplitMix64

    /// A sampler whose random stream starts at `parameters.seed`.
    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        rng = SplitMix64(seed: parameters.seed)
    }

    /// The next token: after the repetition penalty over `history`, the argmax when the temperature is 0, else a draw
    /// from the temperature-scaled softmax cut to the top-k, then top-p, tokens. Only a draw advances the stream.
    public mutating func pick(logits input: [Float], history: [Int]) -> Int {
        var logits = input
        if parameters.repetitionPenalty != 1 {
            let p = Float(parameters.repetitionPenalty)
            for id in Set(history) where id < logits.count {
                logits[id] = logits[id] < 0 ? logits[id] * p : logits[id] / p
            }
        }
        if parameters.temperature <= 0 {
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            return best
        }
        let t = Float(parameters.temperature)
        var order = Array(logits.indices).sorted { logits[$0] > logits[$1] }
        if parameters.topK > 0 { order = Array(order.prefix(parameters.topK)) }
        let maxLogit = logits[order[0]]
        var probs = order.map { Foundation.exp(Double((logits[$0] - maxLogit) / t)) }
        let total = probs.reduce(0, +)
        probs = probs.map { $0 / total }
        if parameters.topP < 1 {
            // Keep tokens while the mass before them is below top-p (the first token always stays).
            var cumulative = 0.0, keep = 0
            for p in probs {
                if cumulative >= parameters.topP && keep > 0 { break }
                cumulative += p
                keep += 1
            }
            order = Array(order.prefix(keep))
            probs = Array(probs.prefix(keep))
            let s = probs.reduce(0, +)
            probs = probs.map { $0 / s }
        }
        let u = Double(rng.next() >> 11) / Double(1 << 53)
        var acc = 0.0
        for (i, p) in probs.enumerated() {
            acc += p
            if u < acc { return order[i] }
        }
        return order[order.count - 1]
    }
}

/// Autoregressive decoding with a KV cache.
public enum TextDecoder {
    /// What one decoding run produced.
    public struct Result {
        /// The new tokens, the stop token included when one ended the run.
        public var tokens: [Int]
        /// Logits of the last position at each step (the ones each token was picked from).
        public var stepLogits: [Tensor]
        /// True when a token of `stopTokens` ended the run (not `maxNewTokens` or `onToken`).
        public var stoppedAtEOS: Bool
    }

    /// Decodes from prompt embeddings (1, T, H). `onToken` sees each new token; return false to stop.
    public static func generate(model: JanusFlowModel, inputsEmbeds: Tensor, keyMask: Tensor? = nil,
                                parameters: SamplingParameters, stopTokens: Set<Int>,
                                keepStepLogits: Bool = false, onToken: ((Int) -> Bool)? = nil) throws -> Result {
        let lm = model.languageModel
        let cache = lm.makeCache(dtype: lm.decodingCacheDType)
        var mask = keyMask
        var out = lm.forward(inputsEmbeds: inputsEmbeds, keyMask: mask, cache: cache)
        var sampler = TokenSampler(parameters)
        var result = Result(tokens: [], stepLogits: [], stoppedAtEOS: false)
        for _ in 0..<parameters.maxNewTokens {
            let logits = lm.logits(out.lastHiddenState.slice(axis: 1, -1)).reshaped([-1]).asType(.float32)
            try logits.eval()
            if keepStepLogits { result.stepLogits.append(logits) }
            let token = sampler.pick(logits: try logits.values(Float.self), history: result.tokens)
            result.tokens.append(token)
            if stopTokens.contains(token) {
                result.stoppedAtEOS = true
                break
            }
            if let onToken, !onToken(token) { break }
            if let m = mask { mask = concatenated([m, Tensor.ones([m.dim(0), 1], dtype: m.dtype)], axis: 1) }
            let next = lm.embed(Tensor([Int32(token)], shape: [1, 1]))
            out = lm.forward(inputsEmbeds: next.asType(inputsEmbeds.dtype), keyMask: mask, cache: cache)
        }
        return result
    }

    /// Greedy tokens and the logits behind each (for parity with transformers' generate).
    public static func greedyTokens(model: JanusFlowModel, inputsEmbeds: Tensor, count: Int, stopTokens: Set<Int>) throws -> Result {
        try generate(model: model, inputsEmbeds: inputsEmbeds, parameters: SamplingParameters(maxNewTokens: count),
                     stopTokens: stopTokens, keepStepLogits: true)
    }
}
