import Foundation
import MLXEngine

/// How to pick each next token.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 means greedy (argmax).
    public var temperature: Double = 0
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches top-p (1 keeps all).
    public var topP: Double = 1
    /// Keep only the k most likely tokens (0 keeps all).
    public var topK: Int = 0
    /// > 1 discourages tokens already generated (as transformers' RepetitionPenaltyLogitsProcessor).
    public var repetitionPenalty: Double = 1
    public var maxNewTokens: Int = 512
    public var seed: UInt64 = 42

    public init(temperature: Double = 0, topP: Double = 1, topK: Int = 0, repetitionPenalty: Double = 1,
                maxNewTokens: Int = 512, seed: UInt64 = 42) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.repetitionPenalty = repetitionPenalty
        self.maxNewTokens = maxNewTokens
        self.seed = seed
    }

    public static let greedy = SamplingParameters()
}

/// A small seeded generator (SplitMix64) for token sampling; deterministic across platforms.
public struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
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
    public let parameters: SamplingParameters
    var rng: SplitMix64

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        rng = SplitMix64(seed: parameters.seed)
    }

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
    public struct Result {
        public var tokens: [Int]
        /// Logits of the last position at each step (the ones each token was picked from).
        public var stepLogits: [Tensor]
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
