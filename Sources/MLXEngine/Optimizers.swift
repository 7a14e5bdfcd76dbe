import Foundation

/// Learning rate as a function of the (0-based) step.
public protocol LearningRateSchedule: Sendable {
    func callAsFunction(_ step: Int) -> Double
}

public struct ConstantSchedule: LearningRateSchedule {
    public let value: Double
    public init(_ value: Double) { self.value = value }
    public func callAsFunction(_ step: Int) -> Double { value }
}

/// Linear warm-up from 0 to `peak` over `warmupSteps` (step s uses peak*(s+1)/warmup), then constant.
public struct WarmupConstantSchedule: LearningRateSchedule {
    public let peak: Double
    public let warmupSteps: Int
    public init(peak: Double, warmupSteps: Int) {
        self.peak = peak
        self.warmupSteps = warmupSteps
    }
    public func callAsFunction(_ step: Int) -> Double {
        warmupSteps > 0 && step < warmupSteps ? peak * Double(step + 1) / Double(warmupSteps) : peak
    }
}

/// Linear warm-up, then cosine decay from `peak` to `final` at `totalSteps`.
public struct WarmupCosineSchedule: LearningRateSchedule {
    public let peak: Double
    public let final: Double
    public let warmupSteps: Int
    public let totalSteps: Int
    public init(peak: Double, warmupSteps: Int, totalSteps: Int, final: Double = 0) {
        self.peak = peak
        self.final = final
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }
    public func callAsFunction(_ step: Int) -> Double {
        if warmupSteps > 0 && step < warmupSteps { return peak * Double(step + 1) / Double(warmupSteps) }
        let span = Swift.max(totalSteps - warmupSteps, 1)
        let progress = Swift.min(Double(step - warmupSteps) / Double(span), 1)
        return final + (peak - final) * 0.5 * (1 + Foundation.cos(Double.pi * progress))
    }
}

/// Scales gradients so that their global L2 norm is at most `maxNorm`; returns the clipped gradients and the
/// norm before clipping.
public func clipGradNorm(_ grads: [String: Tensor], maxNorm: Double) -> (grads: [String: Tensor], norm: Tensor) {
    // Summed in name order: a dictionary's iteration order varies between runs, float addition order must not.
    let total = grads.keys.sorted().map { grads[$0]!.asType(.float32).square().sum() }.reduce(Tensor(0.0), +).sqrt()
    // factor = min(1, maxNorm / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_ computes it.
    let factor = (Tensor(maxNorm) / (total + 1e-6)).minimum(1.0)
    return (grads.mapValues { ($0 * factor.asType($0.dtype)) }, total)
}

/// Gradient-based optimizer over named parameters. State is exposed for checkpoints.
public protocol Optimizer: AnyObject {
    /// Number of updates applied so far.
    var step: Int { get set }
    /// Returns the updated parameters for the given gradients (names present in both).
    func update(parameters: [String: Tensor], gradients: [String: Tensor]) -> [String: Tensor]
    /// Per-parameter state tensors ("name.m", ...), for saving.
    func stateTensors() -> [String: Tensor]
    func loadState(_ state: [String: Tensor]) throws
}

extension Optimizer {
    /// Computes new parameters, writes them into the module and evaluates them with the optimizer state.
    public func apply(gradients: [String: Tensor], to model: Module) throws {
        let trainable = model.trainableParameters()
        let updated = update(parameters: trainable, gradients: gradients.filter { trainable[$0.key] != nil })
        try model.update(parameters: updated)
        try Tensor.eval(Array(updated.values) + Array(stateTensors().values))
    }
}

/// AdamW (decoupled weight decay, bias-corrected moments), as torch.optim.AdamW.
public final class AdamW: Optimizer {
    public var schedule: LearningRateSchedule
    public let beta1: Double
    public let beta2: Double
    public let eps: Double
    public let weightDecay: Double
    public var step = 0
    private var m: [String: Tensor] = [:]
    private var v: [String: Tensor] = [:]

    public init(schedule: LearningRateSchedule, beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8,
                weightDecay: Double = 0.01) {
        self.schedule = schedule
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
    }

    public convenience init(learningRate: Double, beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8,
                            weightDecay: Double = 0.01) {
        self.init(schedule: ConstantSchedule(learningRate), beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay)
    }

    /// The learning rate the next update will use.
    public var currentLearningRate: Double { schedule(step) }

    public func update(parameters: [String: Tensor], gradients: [String: Tensor]) -> [String: Tensor] {
        let lr = schedule(step)
        step += 1
        let t = Double(step)
        let c1 = 1 - Foundation.pow(beta1, t)
        let c2 = 1 - Foundation.pow(beta2, t)
        var out: [String: Tensor] = [:]
        for (name, g) in gradients {
            guard let p = parameters[name] else { continue }
            let g32 = g.asType(.float32)
            let mPrev = m[name] ?? Tensor.zeros(p.shape)
            let vPrev = v[name] ?? Tensor.zeros(p.shape)
            let mNew = mPrev * beta1 + g32 * (1 - beta1)
            let vNew = vPrev * beta2 + g32.square() * (1 - beta2)
            m[name] = mNew
            v[name] = vNew
            let p32 = p.asType(.float32)
            let decayed = p32 * (1 - lr * weightDecay)
            let stepSize = lr / c1
            let denom = (vNew / c2).sqrt() + eps
            out[name] = (decayed - (mNew / denom) * stepSize).asType(p.dtype)
        }
        return out
    }

    public func stateTensors() -> [String: Tensor] {
        var s: [String: Tensor] = [:]
        for (k, t) in m { s["\(k).exp_avg"] = t }
        for (k, t) in v { s["\(k).exp_avg_sq"] = t }
        return s
    }

    public func loadState(_ state: [String: Tensor]) throws {
        m = [:]
        v = [:]
        for (k, t) in state {
            if k.hasSuffix(".exp_avg") { m[String(k.dropLast(".exp_avg".count))] = t }
            else if k.hasSuffix(".exp_avg_sq") { v[String(k.dropLast(".exp_avg_sq".count))] = t }
            else { throw MLXError("optimizer state: unexpected entry '\(k)'") }
        }
    }
}

/// Stochastic gradient descent with optional momentum and (coupled) weight decay, as torch.optim.SGD.
public final class SGD: Optimizer {
    public var schedule: LearningRateSchedule
    public let momentum: Double
    public let weightDecay: Double
    public var step = 0
    private var velocity: [String: Tensor] = [:]

    public init(learningRate: Double, momentum: Double = 0, weightDecay: Double = 0) {
        self.schedule = ConstantSchedule(learningRate)
        self.momentum = momentum
        self.weightDecay = weightDecay
    }

    public func update(parameters: [String: Tensor], gradients: [String: Tensor]) -> [String: Tensor] {
        let lr = schedule(step)
        step += 1
        var out: [String: Tensor] = [:]
        for (name, g) in gradients {
            guard let p = parameters[name] else { continue }
            var d = g.asType(.float32)
            if weightDecay != 0 { d = d + p.asType(.float32) * weightDecay }
            if momentum != 0 {
                let buf = velocity[name].map { $0 * momentum + d } ?? d
                velocity[name] = buf
                d = buf
            }
            out[name] = (p.asType(.float32) - d * lr).asType(p.dtype)
        }
        return out
    }

    public func stateTensors() -> [String: Tensor] { velocity.mapKeys { "\($0).momentum_buffer" } }

    public func loadState(_ state: [String: Tensor]) throws {
        velocity = [:]
        for (k, t) in state {
            guard k.hasSuffix(".momentum_buffer") else { throw MLXError("optimizer state: unexpected entry '\(k)'") }
            velocity[String(k.dropLast(".momentum_buffer".count))] = t
        }
    }
}

extension Dictionary {
    func mapKeys<K: Hashable>(_ f: (Key) -> K) -> [K: Value] {
        Dictionary<K, Value>(uniqueKeysWithValues: map { (f($0.key), $0.value) })
    }
}

/// Exponential moving average of parameters: ema = decay*ema + (1-decay)*param.
public final class EMA {
    public let decay: Double
    public private(set) var shadow: [String: Tensor]

    public init(decay: Double, parameters: [String: Tensor]) {
        self.decay = decay
        self.shadow = parameters.mapValues { $0.asType(.float32) }
    }

    public func update(with parameters: [String: Tensor]) {
        for (k, p) in parameters {
            guard let s = shadow[k] else { shadow[k] = p.asType(.float32); continue }
            shadow[k] = s * decay + p.asType(.float32) * (1 - decay)
        }
    }

    public func load(_ values: [String: Tensor]) { shadow = values }
}
