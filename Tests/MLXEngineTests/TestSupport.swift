import MLXEngine
import XCTest

/// |actual - expected| <= atol + rtol*|expected| elementwise; reports the worst element.
func assertClose(_ actual: Tensor, _ expected: [Float], atol: Float = 1e-5, rtol: Float = 1e-5,
                 _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    do {
        let a: [Float] = try actual.values()
        XCTAssertEqual(a.count, expected.count, "element count \(message)", file: file, line: line)
        var worst: (Int, Float) = (-1, 0)
        for (i, (x, y)) in zip(a, expected).enumerated() {
            let excess = Swift.abs(x - y) - (atol + rtol * Swift.abs(y))
            if excess > worst.1 || x.isNaN { worst = (i, x.isNaN ? .infinity : excess) }
        }
        if worst.0 >= 0 {
            XCTFail("\(message) element \(worst.0): got \(a[worst.0]), expected \(expected[worst.0])", file: file, line: line)
        }
    } catch {
        XCTFail("\(message) evaluation failed: \(error)", file: file, line: line)
    }
}

func values(_ t: Tensor) -> [Float] { (try? t.values(Float.self)) ?? [] }

/// Deterministic pseudo-random values in [-1, 1) (no engine involvement).
func pseudoRandom(_ count: Int, seed: UInt64) -> [Float] {
    var state = seed &* 6364136223846793005 &+ 1442695040888963407
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: state >> 11) % 2_000_000) / 1_000_000 - 1
    }
}

func tensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    Tensor(pseudoRandom(shape.reduce(1, *), seed: seed).map { $0 * scale }, shape: shape)
}

/// Checks autograd of `loss` against central finite differences along random directions, for every input.
func checkGradients(_ inputs: [Tensor], eps: Float = 1e-2, tolerance: Float = 2e-2, _ name: String,
                    file: StaticString = #filePath, line: UInt = #line, _ loss: @escaping ([Tensor]) -> Tensor) {
    do {
        let (_, grads) = try Autograd.valueAndGrad(inputs) { [loss($0)] }
        for i in inputs.indices {
            let direction = tensor(inputs[i].shape, seed: UInt64(977 + i))
            let analytic = try (grads[i] * direction).sum().item(Float.self)
            var plus = inputs, minus = inputs
            plus[i] = inputs[i] + direction * Double(eps)
            minus[i] = inputs[i] - direction * Double(eps)
            let numeric = (try loss(plus).item(Float.self) - loss(minus).item(Float.self)) / (2 * eps)
            let scale = Swift.max(Swift.abs(numeric), Swift.abs(analytic), 1e-3)
            XCTAssertLessThanOrEqual(Swift.abs(analytic - numeric) / scale, tolerance,
                                     "\(name) input \(i): autograd \(analytic) vs finite differences \(numeric)",
                                     file: file, line: line)
        }
    } catch {
        XCTFail("\(name): \(error)", file: file, line: line)
    }
}

/// Same check for a module's parameters (and its input): loss = sum(module(x) * r).
func checkModuleGradients(_ module: Module, input: Tensor, _ name: String, eps: Float = 1e-2, tolerance: Float = 2e-2,
                          file: StaticString = #filePath, line: UInt = #line, forward: @escaping (Tensor) -> Tensor) {
    let names = module.parameters().keys.sorted()
    let slots = Dictionary(module.parameterSlots(), uniquingKeysWith: { a, _ in a })
    let originals = names.map { slots[$0]!.tensor! }
    let probe = tensor(forward(input).shape, seed: 4242)
    checkGradients([input] + originals, eps: eps, tolerance: tolerance, name, file: file, line: line) { args in
        for (k, t) in zip(names, args.dropFirst()) { slots[k]!.tensor = t }
        defer { for (k, t) in zip(names, originals) { slots[k]!.tensor = t } }
        return (forward(args[0]) * probe).sum()
    }
}
