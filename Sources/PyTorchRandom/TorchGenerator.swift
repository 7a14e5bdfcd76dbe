import Foundation

/// The 32-bit Mersenne Twister (MT19937) as PyTorch's CPU generator runs it.
public struct MT19937 {
    var state = [UInt32](repeating: 0, count: 624)
    var index = 624

    public init(seed: UInt32 = 5489) {
        state[0] = seed
        for i in 1..<624 { state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i) }
        index = 624
    }

    mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            var next = state[(i + 397) % 624] ^ (y >> 1)
            if y & 1 != 0 { next ^= 0x9908_B0DF }
            state[i] = next
        }
        index = 0
    }

    public mutating func next() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }
}

/// Draws identical to `torch.manual_seed(seed)` followed by `torch.randn(...)` on CPU.
///
/// PyTorch fills tensors of 16 or more elements by first drawing every uniform (24 random bits), then Box-Muller on blocks of 16 (u1 from the first 8, u2 from the next 8; a size that is
/// not a multiple of 16 redraws and recomputes the last 16). Smaller tensors take the scalar path: double
/// Box-Muller from 53-bit uniforms, caching the second value for the next draw.
public struct TorchGenerator {
    var engine: MT19937
    var cachedNormal: Double?

    public init(seed: UInt64) {
        engine = MT19937(seed: UInt32(truncatingIfNeeded: seed))
    }

    mutating func random64() -> UInt64 {
        let hi = UInt64(engine.next()), lo = UInt64(engine.next())
        return hi << 32 | lo
    }

    mutating func uniformFloat() -> Float { Float(engine.next() & 0xFF_FFFF) * Float(1.0 / 16_777_216.0) }
    mutating func uniformDouble() -> Double { Double(random64() & ((1 << 53) - 1)) * (1.0 / 9_007_199_254_740_992.0) }

    /// The scalar path (at::normal_distribution<double>).
    mutating func scalarNormal() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let u1 = uniformDouble(), u2 = uniformDouble()
        let r = (-2.0 * Foundation.log1p(-u2)).squareRoot()
        let theta = 2.0 * Double.pi * u1
        cachedNormal = r * Foundation.sin(theta)
        return r * Foundation.cos(theta)
    }

    /// `torch.randn(count)` in float32.
    public mutating func randn(count: Int) -> [Float] {
        guard count >= 16 else { return (0..<count).map { _ in Float(scalarNormal()) } }
        var data = (0..<count).map { _ in uniformFloat() }
        func fill16(_ base: Int) {
            for j in 0..<8 {
                let u1 = 1 - data[base + j]
                let u2 = data[base + j + 8]
                // As normal_fill_16: the radius in float, the angle and the products in double.
                let radius = (-2 * logf(u1)).squareRoot()
                let theta = 2.0 * Double.pi * Double(u2)
                data[base + j] = Float(Double(radius) * Foundation.cos(theta))
                data[base + j + 8] = Float(Double(radius) * Foundation.sin(theta))
            }
        }
        for base in stride(from: 0, to: count - 15, by: 16) { fill16(base) }
        if count % 16 != 0 {
            let base = count - 16
            for i in 0..<16 { data[base + i] = uniformFloat() }
            fill16(base)
        }
        return data
    }

    /// `torch.randn(count, dtype=torch.bfloat16)`, returned as the float values of the bfloat16 results:
    /// PyTorch samples reduced-precision normals in float32 and rounds them (checked against torch 2.15).
    public mutating func randnBFloat16(count: Int) -> [Float] { randn(count: count).map(bf16) }
}

/// Rounds a float to the nearest bfloat16 (ties to even), as c10::BFloat16 does.
public func bf16(_ x: Float) -> Float {
    if x.isNaN { return x }
    let bits = x.bitPattern
    let rounded = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000
    return Float(bitPattern: rounded)
}
