import Foundation

/// The 32-bit Mersenne Twister (MT19937) as PyTorch's CPU generator runs it: the standard `init_genrand`
/// seeding and tempering, so `MT19937(seed: 5489).next()` is 3499211612.
public struct MT19937: Sendable {
    static let n = 624
    static let m = 397
    var state: [UInt32]
    var index: Int

    /// Seeds the state with `init_genrand(seed)`; 5489 is the reference implementation's default.
    public init(seed: UInt32 = 5489) {
        var s = [UInt32](repeating: 0, count: MT19937.n)
        s[0] = seed
        for i in 1..<MT19937.n { s[i] = 1_812_433_253 &* (s[i - 1] ^ (s[i - 1] >> 30)) &+ UInt32(i) }
        state = s
        index = MT19937.n
    }

    mutating func twist() {
        let n = MT19937.n, m = MT19937.m
        state.withUnsafeMutableBufferPointer { s in
            for i in 0..<n {
                let y = (s[i] & 0x8000_0000) | (s[i + 1 < n ? i + 1 : 0] & 0x7FFF_FFFF)
                let j = i + m < n ? i + m : i + m - n
                s[i] = s[j] ^ (y >> 1) ^ (y & 1 == 0 ? 0 : 0x9908_B0DF)
            }
        }
        index = 0
    }

    /// The next 32-bit output.
    public mutating func next() -> UInt32 {
        if index >= MT19937.n { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }
}

/// Draws identical, bit for bit, to `torch.manual_seed(seed)` followed by `torch.randn(...)` on CPU
/// (checked against torch 2.15 on an AVX2 machine, the path every x86-64 build of PyTorch takes there).
///
/// PyTorch's CPU normal kernel has two paths:
/// - 16 or more elements (contiguous): uniforms in [0, 1) from 24 random bits of one 32-bit draw, then Box-Muller on
///   blocks of 16 (u1 from elements 0..<8, u2 from 8..<16; cos into the first half, sin into the second), computed in
///   float32 with the Cephes-style `log256_ps` / `sincos256_ps` of `avx_mathfun.h`. float32 draws all uniforms first and,
///   when the size is not a multiple of 16, draws 16 more and recomputes the last 16 elements; bfloat16 (and half)
///   draws 16 uniforms per block into a float buffer and rounds each block to the narrow type, so a partial tail block
///   consumes 16 fresh uniforms without the discarded partial ones.
/// - fewer than 16 elements: `at::normal_distribution<double>`: u1, u2 from 53 bits of a 64-bit draw (two 32-bit outputs,
///   first one high), r = sqrt(-2 log1p(-u2)), theta = 2 pi u1, returns r cos(theta) and caches r sin(theta) for the
///   generator's next scalar draw (the cache survives vectorised draws in between, as in PyTorch).
///
/// Successive calls continue the stream as successive `torch.randn` calls do after one `torch.manual_seed`.
public struct TorchGenerator: Sendable {
    var engine: MT19937
    var cachedNormal: Double?
    /// The seed given to `init(seed:)` or the last `manualSeed(_:)` (`torch.initial_seed()`).
    public private(set) var initialSeed: UInt64

    /// `torch.manual_seed(seed)`: MT19937 seeded with the low 32 bits of the seed.
    public init(seed: UInt64) {
        engine = MT19937(seed: UInt32(truncatingIfNeeded: seed))
        initialSeed = seed
    }

    /// Reseeds as `torch.manual_seed(seed)` does (also forgetting a cached normal value).
    public mutating func manualSeed(_ seed: UInt64) {
        self = TorchGenerator(seed: seed)
    }

    /// One 32-bit draw (`CPUGeneratorImpl::random`).
    public mutating func random() -> UInt32 { engine.next() }

    /// One 64-bit draw (`CPUGeneratorImpl::random64`): two 32-bit draws, the first in the high half.
    public mutating func random64() -> UInt64 {
        let hi = UInt64(engine.next())
        let lo = UInt64(engine.next())
        return hi << 32 | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits scaled by 2^-24.
    @inline(__always)
    mutating func uniformFloat() -> Float { Float(engine.next() & 0xFF_FFFF) * 0x1p-24 }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits scaled by 2^-53.
    @inline(__always)
    mutating func uniformDouble() -> Double { Double(random64() & (1 << 53 - 1)) * 0x1p-53 }

    /// The scalar path, `at::normal_distribution<double>(0, 1)`.
    mutating func scalarNormal() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let u1 = uniformDouble()
        let u2 = uniformDouble()
        let r = (-2.0 * Foundation.log1p(-u2)).squareRoot()
        let theta = 2.0 * Double.pi * u1
        cachedNormal = r * Foundation.sin(theta)
        return r * Foundation.cos(theta)
    }

    /// `torch.randn(count)` in float32 (any shape with `count` elements: the draws fill it in row-major order).
    public mutating func randn(count: Int) -> [Float] {
        precondition(count >= 0, "randn: negative count \(count)")
        guard count >= 16 else { return (0..<count).map { _ in Float(scalarNormal()) } }
        var data = [Float](repeating: 0, count: count)
        data.withUnsafeMutableBufferPointer { d in
            for i in 0..<count { d[i] = uniformFloat() }
            var base = 0
            while base + 16 <= count {
                AVXBoxMuller.fill16(d.baseAddress! + base)
                base += 16
            }
            if count % 16 != 0 {
                let tail = d.baseAddress! + (count - 16)
                for i in 0..<16 { tail[i] = uniformFloat() }
                AVXBoxMuller.fill16(tail)
            }
        }
        return data
    }

    /// `torch.randn(count, dtype=torch.bfloat16)`, returned as the float values of the bfloat16 results (each exactly
    /// representable in bfloat16).
    public mutating func randnBFloat16(count: Int) -> [Float] {
        precondition(count >= 0, "randnBFloat16: negative count \(count)")
        guard count >= 16 else { return (0..<count).map { _ in bf16(Float(scalarNormal())) } }
        var data = [Float](repeating: 0, count: count)
        var buffer = [Float](repeating: 0, count: 16)
        data.withUnsafeMutableBufferPointer { d in
            buffer.withUnsafeMutableBufferPointer { b in
                func block(at offset: Int) {
                    for j in 0..<16 { b[j] = uniformFloat() }
                    AVXBoxMuller.fill16(b.baseAddress!)
                    for j in 0..<16 { d[offset + j] = bf16(b[j]) }
                }
                var base = 0
                while base + 16 <= count {
                    block(at: base)
                    base += 16
                }
                if count % 16 != 0 { block(at: count - 16) }
            }
        }
        return data
    }
}

/// Rounds a float to the nearest bfloat16 (ties to even), as `c10::BFloat16(float)` does; NaN stays NaN.
public func bf16(_ x: Float) -> Float {
    if x.isNaN { return .nan }
    let bits = x.bitPattern
    return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
}

/// PyTorch's AVX2 Box-Muller block (`normal_fill_16_AVX2` with `log256_ps` and `sincos256_ps` from avx_mathfun.h), one
/// lane at a time in float32. The multiply-adds fused below are the ones the compiler fuses in PyTorch's build (GCC
/// contracts an intrinsic multiply whose only use is an add into an FMA); with them every draw is bit-identical.
enum AVXBoxMuller {
    @inline(__always)
    static func fma(_ a: Float, _ b: Float, _ c: Float) -> Float { c.addingProduct(a, b) }

    /// Cephes logf (log256_ps); the argument is in (0, 1] here.
    @inline(__always)
    static func log(_ input: Float) -> Float {
        let x0 = Swift.max(input, Float(bitPattern: 0x0080_0000))  // smallest normal
        let exponent = Int32(bitPattern: x0.bitPattern >> 23) - 0x7F
        var x = Float(bitPattern: (x0.bitPattern & ~0x7F80_0000) | Float(0.5).bitPattern)  // mantissa in [0.5, 1)
        var e = Float(exponent) + 1
        if x < 0.707106781186547524 {
            e -= 1
            x = (x - 1) + x
        } else {
            x -= 1
        }
        let z = x * x
        var y: Float = 7.0376836292e-2
        y = fma(y, x, -1.1514610310e-1)
        y = fma(y, x, 1.1676998740e-1)
        y = fma(y, x, -1.2420140846e-1)
        y = fma(y, x, 1.4249322787e-1)
        y = fma(y, x, -1.6668057665e-1)
        y = fma(y, x, 2.0000714765e-1)
        y = fma(y, x, -2.4999993993e-1)
        y = fma(y, x, 3.3333331174e-1)
        y = y * x
        y = fma(y, z, e * -2.12194440e-4)
        y = fma(z, -0.5, y)
        return fma(e, 0.693359375, x + y)
    }

    /// Cephes sinf/cosf together (sincos256_ps) for a non-negative argument below 2 pi.
    @inline(__always)
    static func sincos(_ input: Float) -> (sin: Float, cos: Float) {
        var signSin = input.sign == .minus
        var x = Swift.abs(input)
        var j = Int32(x * 1.27323954473516)  // 4 / pi, truncated
        j = (j &+ 1) & ~1
        let y = Float(j)
        let swapSin = j & 4 != 0
        let usePolySin = j & 2 == 0
        let signCos = (j &- 2) & 4 == 0
        signSin = signSin != swapSin
        x = fma(y, -0.78515625, x)
        x = fma(y, -2.4187564849853515625e-4, x)
        x = fma(y, -3.77489497744594108e-8, x)
        let z = x * x
        var c: Float = 2.443315711809948e-5
        c = fma(c, z, -1.388731625493765e-3)
        c = fma(c, z, 4.166664568298827e-2)
        c = c * z
        c = fma(c, z, -(z * 0.5))
        c = c + 1
        var s: Float = -1.9515295891e-4
        s = fma(s, z, 8.3321608736e-3)
        s = fma(s, z, -1.6666654611e-1)
        s = s * z
        s = fma(s, x, x)
        // Blend as the vector code does (masked parts, then sums), signed zeros included.
        let sinFromS: Float = usePolySin ? s : 0
        let sinFromC: Float = usePolySin ? 0 : c
        let sinValue = sinFromC + sinFromS
        let cosValue = (c - sinFromC) + (s - sinFromS)
        return (signSin ? -sinValue : sinValue, signCos ? -cosValue : cosValue)
    }

    /// Box-Muller on 16 uniforms in place (mean 0, std 1).
    static func fill16(_ data: UnsafeMutablePointer<Float>) {
        let twoPi = Float(2.0 * Double.pi)
        for j in 0..<8 {
            let u1 = 1 - data[j]
            let u2 = data[j + 8]
            let radius = (-2 * log(u1)).squareRoot()
            let (s, c) = sincos(twoPi * u2)
            // _mm256_fmadd_ps(n, std, mean) with std 1, mean 0.
            data[j] = fma(radius * c, 1, 0)
            data[j + 8] = fma(radius * s, 1, 0)
        }
    }
}
