import CMLXShim

/// An explicit MLX random key (threefry). Split it to get independent streams; the same key always gives the
/// same draws.
public struct RandomKey: @unchecked Sendable {
    /// The key as an MLX array (two uint32 values), as MLX's random functions take it.
    public let tensor: Tensor

    /// The key MLX derives from `seed`.
    public init(seed: UInt64) { tensor = Tensor(checked: mlxs_random_key(seed)) }
    init(tensor: Tensor) { self.tensor = tensor }

    /// `count` new independent keys.
    public func split(into count: Int = 2) -> [RandomKey] {
        guard let h = tensor.handle else { return Array(repeating: self, count: count) }
        var out = [mlxs_array?](repeating: nil, count: count)
        if mlxs_random_split(h, Int32(count), &out) != 0 {
            let err = MLXError(String(cString: mlxs_last_error()))
            return Array(repeating: RandomKey(tensor: Tensor(error: err)), count: count)
        }
        return out.map { RandomKey(tensor: Tensor(checked: $0)) }
    }

    /// Splits off one new key, advancing this one.
    public mutating func next() -> RandomKey {
        let keys = split(into: 2)
        self = keys[0]
        return keys[1]
    }
}

/// Random draws from an explicit `RandomKey` (MLX's threefry generator); a key always gives the same values.
public enum Random {
    /// Samples of `shape` from the standard normal distribution (mean 0, standard deviation 1).
    public static func normal(_ shape: [Int], dtype: DType = .float32, key: RandomKey) -> Tensor {
        let dims = shape.map { Int32($0) }
        return Tensor.op(key.tensor) { mlxs_random_normal(dims, Int32(dims.count), dtype.c, $0[0]) }
    }

    /// Uniform in [0, 1).
    public static func uniform(_ shape: [Int], dtype: DType = .float32, key: RandomKey) -> Tensor {
        let dims = shape.map { Int32($0) }
        return Tensor.op(key.tensor) { mlxs_random_uniform(dims, Int32(dims.count), dtype.c, $0[0]) }
    }

    /// Booleans that are true with probability p.
    public static func bernoulli(_ p: Double, shape: [Int], key: RandomKey) -> Tensor {
        let dims = shape.map { Int32($0) }
        return Tensor.op(Tensor(p), key.tensor) { mlxs_random_bernoulli($0[0], dims, Int32(dims.count), $0[1]) }
    }

    /// Samples indices from unnormalised log-probabilities along `axis`.
    public static func categorical(logits: Tensor, axis: Int = -1, key: RandomKey) -> Tensor {
        Tensor.op(logits, key.tensor) { mlxs_random_categorical($0[0], Int32(axis), $0[1]) }
    }
}
