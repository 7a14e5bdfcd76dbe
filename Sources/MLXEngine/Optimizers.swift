import CMLXShim
import Foundation

/// Learning rate as a function of the (0-based) step.
public protocol LearningRateSchedule: Sendable {
    /// The learning rate at the 0-based `step`.
    func callAsFunction(_ step: Int) -> Double
}

/// The same learning rate at every step.
public struct ConstantSchedule: LearningRateSchedule {
    /// The learning rate.
    public let value: Double
    /// A schedule that always gives `value`.
    public init(_ value: Double) { self.value = value }
    /// Returns `value` whatever the step.
    public func callAsFunction(_ step: Int) -> Double { value }
}

/// Linear warm-up from 0 to `peak` over `warmupSteps` (step s uses peak*(s+1)/warmup), then constant.
public struct WarmupConstantSchedule: LearningRateSchedule {
    /// The learning rate once warm-up is over.
    public let peak: Double
    /// Steps of linear warm-up; 0 for none.
    public let warmupSteps: Int
    /// A schedule rising linearly to `peak` over `warmupSteps` steps, then flat.
    public init(peak: Double, warmupSteps: Int) {
        self.peak = peak
        self.warmupSteps = warmupSteps
    }
    /// `peak * (step + 1) / warmupSteps` during warm-up, `peak` afterwards.
    public func callAsFunction(_ step: Int) -> Double {
        warmupSteps > 0 && step < warmupSteps ? peak * Double(step + 1) / Double(warmupSteps) : peak
    }
}

/// Linear warm-up, then cosine decay from `peak` to `final` at `totalSteps`.
public struct WarmupCosineSchedule: LearningRateSchedule {
    /// The learning rate at the end of warm-up, where the decay starts.
    public let peak: Double
    /// The learning rate reached at `totalSteps` and kept afterwards.
    public let final: Double
    /// Steps of linear warm-up, as in `WarmupConstantSchedule`; 0 for none.
    public let warmupSteps: Int
    /// The step at which the decay reaches `final`, counted from 0 with the warm-up included.
    public let totalSteps: Int
    /// A warm-up-then-cosine schedule; `final` defaults to 0.
    public init(peak: Double, warmupSteps: Int, totalSteps: Int, final: Double = 0) {
        self.peak = peak
        self.final = final
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }
    /// The warm-up ramp, then `final + (peak - final) * (1 + cos(pi * progress)) / 2` with `progress` going from 0 to 1 and held at 1.
    public func callAsFunction(_ step: Int) -> Double {
        if warmupSteps > 0 && step < warmupSteps { return peak * Double(step + 1) / Double(warmupSteps) }
        let span = Swift.max(totalSteps - warmupSteps, 1)
        let progress = Swift.min(Double(step - warmupSteps) / Double(span), 1)
        return final + (peak - final) * 0.5 * (1 + Foundation.cos(Double.pi * progress))
    }
}

/// The global L2 norm of the gradients and the factor that clips it to `maxNorm`: min(1, maxNorm / (norm + 1e-6)),
/// as torch.nn.utils.clip_grad_norm_ computes it. Multiply the gradients by the factor, or hand it to an optimizer
/// as `gradientScale`.
public func gradientClipping(_ grads: [String: Tensor], maxNorm: Double) -> (scale: Tensor, norm: Tensor) {
    let norm = globalNorm(grads)
    return ((Tensor(maxNorm) / (norm + 1e-6)).minimum(1.0), norm)
}

/// sqrt of the sum of squares of every tensor, in float32. One fused op over float32 tensors (the sum in double,
/// grouped the same way on any thread count); otherwise, or with the fast kernels off, MLX ops summed in name
/// order (a dictionary's iteration order varies between runs, float addition order must not).
public func globalNorm(_ tensors: [String: Tensor]) -> Tensor {
    let ordered = tensors.keys.sorted().map { tensors[$0]! }
    if Kernels.enabled, !ordered.isEmpty, let handles = FusedUpdate.float32Handles(ordered) {
        return Tensor(checked: handles.withUnsafeBufferPointer { mlxs_fused_global_norm($0.baseAddress, Int32(handles.count)) })
    }
    return ordered.map { $0.asType(.float32).square().sum() }.reduce(Tensor(0.0), +).sqrt()
}

/// Scales gradients so that their global L2 norm is at most `maxNorm`; returns the clipped gradients and the
/// norm before clipping.
public func clipGradNorm(_ grads: [String: Tensor], maxNorm: Double) -> (grads: [String: Tensor], norm: Tensor) {
    let (scale, norm) = gradientClipping(grads, maxNorm: maxNorm)
    return (grads.mapValues { ($0 * scale.asType($0.dtype)) }, norm)
}

/// The shim's one-op optimizer steps over many tensors (all float32, evaluated or not).
enum FusedUpdate {
    static func float32Handles(_ tensors: [Tensor]) -> [mlxs_array?]? {
        var handles: [mlxs_array?] = []
        for t in tensors {
            guard let h = t.handle, t.dtype == .float32 else { return nil }
            handles.append(h)
        }
        return handles
    }

    /// The outputs of a multi-output shim call writing `count` handles, or `count` copies of its error.
    static func outputs(_ count: Int, _ call: (UnsafeMutablePointer<mlxs_array?>) -> Int32) -> [Tensor] {
        var out = [mlxs_array?](repeating: nil, count: count)
        if call(&out) != 0 {
            let error = MLXError(String(cString: mlxs_last_error()))
            return (0..<count).map { _ in Tensor(error: error) }
        }
        return out.map { Tensor(checked: $0) }
    }
}

/// Gradient-based optimizer over named parameters. State is exposed for checkpoints.
public protocol Optimizer: AnyObject {
    /// Number of updates applied so far.
    var step: Int { get set }
    /// Returns the updated parameters for the given gradients (names present in both), each gradient multiplied
    /// by `gradientScale` (a scalar, e.g. the clipping factor) when given.
    func update(parameters: [String: Tensor], gradients: [String: Tensor], gradientScale: Tensor?) -> [String: Tensor]
    /// Per-parameter state tensors named `<parameter>.<state>` (AdamW: `exp_avg`, `exp_avg_sq`), for saving.
    func stateTensors() -> [String: Tensor]
    /// Replaces the state by tensors named as `stateTensors()` names them; throws `MLXError` on a name it does not know.
    func loadState(_ state: [String: Tensor]) throws
}

extension Optimizer {
    /// `update(parameters:gradients:gradientScale:)` without a gradient scale.
    public func update(parameters: [String: Tensor], gradients: [String: Tensor]) -> [String: Tensor] {
        update(parameters: parameters, gradients: gradients, gradientScale: nil)
    }

    /// Computes new parameters, writes them into the module and evaluates them with the optimizer state.
    public func apply(gradients: [String: Tensor], gradientScale: Tensor? = nil, to model: Module) throws {
        let trainable = model.trainableParameters()
        let updated = update(parameters: trainable, gradients: gradients.filter { trainable[$0.key] != nil }, gradientScale: gradientScale)
        try model.update(parameters: updated)
        try Tensor.eval(Array(updated.values) + Array(stateTensors().values))
    }
}

/// AdamW (decoupled weight decay, bias-corrected moments), as torch.optim.AdamW.
public final class AdamW: Optimizer {
    /// The learning rate per step; read at `step` before each update.
    public var schedule: LearningRateSchedule
    /// Decay rate of the running mean of the gradients (first moment).
    public let beta1: Double
    /// Decay rate of the running mean of the squared gradients (second moment).
    public let beta2: Double
    /// Added to the square root of the bias-corrected second moment.
    public let eps: Double
    /// Decoupled weight decay: each update first multiplies the parameters by 1 - lr * weightDecay.
    public let weightDecay: Double
    /// Number of updates applied so far; it also sets the bias corrections.
    public var step = 0
    private var m: [String: Tensor] = [:]
    private var v: [String: Tensor] = [:]

    /// An AdamW optimizer with PyTorch's defaults (betas 0.9 and 0.999, eps 1e-8, weight decay 0.01).
    public init(schedule: LearningRateSchedule, beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8,
                weightDecay: Double = 0.01) {
        self.schedule = schedule
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
    }

    /// An AdamW optimizer with a constant learning rate.
    public convenience init(learningRate: Double, beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8,
                            weightDecay: Double = 0.01) {
        self.init(schedule: ConstantSchedule(learningRate), beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay)
    }

    /// The learning rate the next update will use.
    public var currentLearningRate: Double { schedule(step) }

    /// One AdamW step for every parameter that has a gradient; parameters without one are left out of the result.
    ///
    /// Moments and arithmetic are float32 and each result is cast back to its parameter's dtype. With the kernels on and
    /// every tensor float32, the step runs as one fused op with the same rounding.
    public func update(parameters: [String: Tensor], gradients: [String: Tensor], gradientScale: Tensor?) -> [String: Tensor] {
        let lr = schedule(step)
        step += 1
        let t = Double(step)
        let c1 = 1 - Foundation.pow(beta1, t)
        let c2 = 1 - Foundation.pow(beta2, t)
        let names = gradients.keys.filter { parameters[$0] != nil }.sorted()
        if Kernels.enabled, let fused = fusedUpdate(names, parameters, gradients, gradientScale, lr: lr, c1: c1, c2: c2) { return fused }
        var out: [String: Tensor] = [:]
        for name in names {
            let p = parameters[name]!
            var g32 = gradients[name]!.asType(.float32)
            if let gradientScale { g32 = g32 * gradientScale.asType(.float32) }
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

    /// The same update as one op over every tensor when all are float32 and the moments all exist or are all
    /// still zero (nil otherwise). It rounds each value exactly as the op-by-op expression above.
    private func fusedUpdate(_ names: [String], _ parameters: [String: Tensor], _ gradients: [String: Tensor], _ scale: Tensor?,
                             lr: Double, c1: Double, c2: Double) -> [String: Tensor]? {
        guard !names.isEmpty, let p = FusedUpdate.float32Handles(names.map { parameters[$0]! }),
              let g = FusedUpdate.float32Handles(names.map { gradients[$0]! }) else { return nil }
        let stateCount = names.filter { m[$0] != nil && v[$0] != nil }.count
        guard stateCount == 0 || stateCount == names.count else { return nil }
        var mv: (m: [mlxs_array?], v: [mlxs_array?])? = nil
        if stateCount > 0 {
            guard let mh = FusedUpdate.float32Handles(names.map { m[$0]! }), let vh = FusedUpdate.float32Handles(names.map { v[$0]! }) else { return nil }
            mv = (mh, vh)
        }
        let scale32 = scale.map { $0.asType(.float32) }
        if let scale32, scale32.handle == nil { return nil }
        // As Tensor * Double rounds its scalar: each constant computed in Double, then rounded to float32.
        let constants: [Float] = [Float(beta1), Float(1 - beta1), Float(beta2), Float(1 - beta2), Float(1 - lr * weightDecay),
                                  Float(c2), Float(eps), Float(lr / c1)]
        let n = names.count
        let outs = FusedUpdate.outputs(3 * n) { out in
            constants.withUnsafeBufferPointer { c in
                mlxs_fused_adamw(p, g, mv?.m, mv?.v, Int32(n), scale32?.handle, c.baseAddress, out)
            }
        }
        withExtendedLifetime(scale32) {}
        var updated: [String: Tensor] = [:]
        for (i, name) in names.enumerated() {
            updated[name] = outs[i]
            m[name] = outs[n + i]
            v[name] = outs[2 * n + i]
        }
        return updated
    }

    /// The moments, named `<parameter>.exp_avg` and `<parameter>.exp_avg_sq` as in PyTorch's AdamW state.
    public func stateTensors() -> [String: Tensor] {
        var s: [String: Tensor] = [:]
        for (k, t) in m { s["\(k).exp_avg"] = t }
        for (k, t) in v { s["\(k).exp_avg_sq"] = t }
        return s
    }

    /// Replaces the moments by saved ones; throws `MLXError` on a name without either suffix.
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
    /// The learning rate per step: constant as `init` sets it, but it may be replaced.
    public var schedule: LearningRateSchedule
    /// Momentum factor; 0 for plain SGD.
    public let momentum: Double
    /// L2 penalty added to each gradient as `weightDecay * parameter` (coupled, as in torch.optim.SGD).
    public let weightDecay: Double
    /// Number of updates applied so far.
    public var step = 0
    private var velocity: [String: Tensor] = [:]

    /// An SGD optimizer with a constant learning rate.
    public init(learningRate: Double, momentum: Double = 0, weightDecay: Double = 0) {
        self.schedule = ConstantSchedule(learningRate)
        self.momentum = momentum
        self.weightDecay = weightDecay
    }

    /// One SGD step for every parameter that has a gradient, computed in float32 and cast back to each parameter's dtype.
    public func update(parameters: [String: Tensor], gradients: [String: Tensor], gradientScale: Tensor?) -> [String: Tensor] {
        let lr = schedule(step)
        step += 1
        var out: [String: Tensor] = [:]
        for (name, g) in gradients {
            guard let p = parameters[name] else { continue }
            var d = g.asType(.float32)
            if let gradientScale { d = d * gradientScale.asType(.float32) }
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

    /// The momentum buffers, named `<parameter>.momentum_buffer` as in PyTorch's SGD state.
    public func stateTensors() -> [String: Tensor] { velocity.mapKeys { "\($0).momentum_buffer" } }

    /// Replaces the momentum buffers; throws `MLXError` on a name without the `.momentum_buffer` suffix.
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
    /// Weight of the old average in each update (close to 1, such as 0.999).
    public let decay: Double
    /// The averaged parameters by name, in float32.
    public private(set) var shadow: [String: Tensor]

    /// Starts the averages at `parameters`, converted to float32.
    public init(decay: Double, parameters: [String: Tensor]) {
        self.decay = decay
        self.shadow = parameters.mapValues { $0.asType(.float32) }
    }

    /// Moves every tracked average toward `parameters`; a name not tracked yet starts at its current value.
    public func update(with parameters: [String: Tensor]) {
        let names = parameters.keys.filter { shadow[$0] != nil }.sorted()
        for (k, p) in parameters where shadow[k] == nil { shadow[k] = p.asType(.float32) }
        // One fused op when every tensor is float32 (the same rounding as the expression below).
        if Kernels.enabled, !names.isEmpty, let s = FusedUpdate.float32Handles(names.map { shadow[$0]! }),
           let p = FusedUpdate.float32Handles(names.map { parameters[$0]! }) {
            let outs = FusedUpdate.outputs(names.count) { mlxs_fused_ema(s, p, Int32(names.count), Float(decay), Float(1 - decay), $0) }
            for (name, t) in zip(names, outs) { shadow[name] = t }
            return
        }
        for k in names {
            shadow[k] = shadow[k]! * decay + parameters[k]!.asType(.float32) * (1 - decay)
        }
    }

    /// Replaces the averages by `values` as given (from a checkpoint, say), without converting them.
    public func load(_ values: [String: Tensor]) { shadow = values }
}
