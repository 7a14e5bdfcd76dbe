import CMLXShim

/// The Swift closure a traced C callback runs.
private final class ClosureBox {
    let body: ([Tensor]) -> [Tensor]
    init(_ body: @escaping ([Tensor]) -> [Tensor]) { self.body = body }
}

/// The C side of every traced function: wraps MLX's tracer arrays as Tensors, runs the Swift closure, and hands
/// back new handles (or the first error a Tensor carries).
private let tracedCallback: mlxs_closure_fn = { context, inputs, nInputs, outputs, maxOutputs, nOutputs, errorOut, errorCap in
    let box = Unmanaged<ClosureBox>.fromOpaque(context!).takeUnretainedValue()
    var args: [Tensor] = []
    for i in 0..<Int(nInputs) { args.append(Tensor(checked: mlxs_retain(inputs![i]))) }
    let results = box.body(args)
    func fail(_ message: String) -> Int32 {
        let bytes = Array(message.utf8.prefix(Int(errorCap) - 1))
        for (i, b) in bytes.enumerated() { errorOut![i] = CChar(bitPattern: b) }
        errorOut![bytes.count] = 0
        return 1
    }
    guard results.count <= Int(maxOutputs) else { return fail("traced function returned too many outputs") }
    for (i, r) in results.enumerated() {
        if let e = r.error { return fail(e.message) }
        outputs![i] = mlxs_retain(r.handle!)
    }
    nOutputs!.pointee = Int32(results.count)
    return 0
}

/// Gradients of Swift closures over tensors, through MLX's `value_and_grad` and `vjp` transforms.
public enum Autograd {
    /// Evaluates `f(inputs)` and the gradient of its first output (a scalar) with respect to the inputs listed
    /// in `argnums` (all inputs when nil). Returns every output of `f` and one gradient per argnum.
    public static func valueAndGrad(_ inputs: [Tensor], argnums: [Int]? = nil,
                                    _ f: @escaping ([Tensor]) -> [Tensor]) throws -> (values: [Tensor], grads: [Tensor]) {
        let argnums = argnums ?? Array(0..<inputs.count)
        var handles: [mlxs_array?] = []
        for t in inputs {
            guard let h = t.handle else { throw t.error! }
            handles.append(h)
        }
        let box = ClosureBox(f)
        let ctx = Unmanaged.passRetained(box).toOpaque()
        defer { Unmanaged<ClosureBox>.fromOpaque(ctx).release() }
        let cap = 256
        var values = [mlxs_array?](repeating: nil, count: cap)
        var grads = [mlxs_array?](repeating: nil, count: argnums.count)
        var nValues: Int32 = 0
        let args = argnums.map { Int32($0) }
        let rc = mlxs_value_and_grad(tracedCallback, ctx, handles, Int32(handles.count), args, Int32(args.count),
                                     &values, Int32(cap), &nValues, &grads)
        withExtendedLifetime(inputs) {}
        if rc != 0 { throw MLXError(String(cString: mlxs_last_error())) }
        return (values[0..<Int(nValues)].map { Tensor(checked: $0) }, grads.map { Tensor(checked: $0) })
    }

    /// Gradient of a scalar function of one tensor.
    public static func grad(_ x: Tensor, _ f: @escaping (Tensor) -> Tensor) throws -> Tensor {
        try valueAndGrad([x]) { [f($0[0])] }.grads[0]
    }

    /// Vector-Jacobian product: outputs of f at primals, and the cotangents pulled back to the primals.
    public static func vjp(_ primals: [Tensor], cotangents: [Tensor],
                           _ f: @escaping ([Tensor]) -> [Tensor]) throws -> (outputs: [Tensor], vjps: [Tensor]) {
        var p: [mlxs_array?] = [], c: [mlxs_array?] = []
        for t in primals { guard let h = t.handle else { throw t.error! }; p.append(h) }
        for t in cotangents { guard let h = t.handle else { throw t.error! }; c.append(h) }
        let box = ClosureBox(f)
        let ctx = Unmanaged.passRetained(box).toOpaque()
        defer { Unmanaged<ClosureBox>.fromOpaque(ctx).release() }
        let cap = 256
        var outs = [mlxs_array?](repeating: nil, count: cap)
        var vjps = [mlxs_array?](repeating: nil, count: primals.count)
        var n: Int32 = 0
        let rc = mlxs_vjp(tracedCallback, ctx, p, Int32(p.count), c, Int32(c.count), &outs, Int32(cap), &n, &vjps)
        withExtendedLifetime((primals, cotangents)) {}
        if rc != 0 { throw MLXError(String(cString: mlxs_last_error())) }
        return (outs[0..<Int(n)].map { Tensor(checked: $0) }, vjps.map { Tensor(checked: $0) })
    }
}

extension Autograd {
    /// Value of `loss` and its gradient with respect to the module's trainable parameters (or `names`).
    /// While `loss` runs, the module's parameters are the traced values; the originals are restored afterwards.
    /// `loss` returns the scalar loss first, then any auxiliary outputs to keep.
    public static func valueAndGrad(model: Module, parameters names: [String]? = nil,
                                    _ loss: @escaping () -> [Tensor]) throws -> (values: [Tensor], grads: [String: Tensor]) {
        let slots = Dictionary(model.parameterSlots(), uniquingKeysWith: { a, _ in a })
        let keys = (names ?? model.trainableParameters().keys.sorted()).sorted()
        for k in keys where slots[k] == nil { throw MLXError("valueAndGrad: no parameter named '\(k)'") }
        let originals = keys.map { slots[$0]!.tensor! }
        defer { for (k, t) in zip(keys, originals) { slots[k]!.tensor = t } }
        let (values, grads) = try valueAndGrad(originals) { traced in
            for (k, t) in zip(keys, traced) { slots[k]!.tensor = t }
            return loss()
        }
        return (values, Dictionary(uniqueKeysWithValues: zip(keys, grads)))
    }
}
