import CMLXShim

// Elementwise math, reductions, shape manipulation and indexing, in the spirit of mlx-swift / PyTorch.

extension Tensor {
    func unary(_ op: mlxs_unary_op) -> Tensor { Tensor.op(self) { mlxs_unary(op, $0[0]) } }
    func binary(_ op: mlxs_binary_op, _ other: Tensor) -> Tensor { Tensor.op(self, other) { mlxs_binary(op, $0[0], $0[1]) } }

    /// A scalar of this tensor's dtype (floating tensors) so that `x * 0.5` keeps x's precision.
    func scalar(_ value: Double) -> Tensor { Tensor(value, dtype: dtype.isFloatingPoint ? dtype : .float32) }

    public func exp() -> Tensor { unary(MLXS_EXP) }
    public func log() -> Tensor { unary(MLXS_LOG) }
    public func log1p() -> Tensor { unary(MLXS_LOG1P) }
    public func expm1() -> Tensor { unary(MLXS_EXPM1) }
    public func sqrt() -> Tensor { unary(MLXS_SQRT) }
    public func rsqrt() -> Tensor { unary(MLXS_RSQRT) }
    public func sin() -> Tensor { unary(MLXS_SIN) }
    public func cos() -> Tensor { unary(MLXS_COS) }
    public func tanh() -> Tensor { unary(MLXS_TANH) }
    public func sigmoid() -> Tensor { unary(MLXS_SIGMOID) }
    public func erf() -> Tensor { unary(MLXS_ERF) }
    public func erfinv() -> Tensor { unary(MLXS_ERFINV) }
    public func square() -> Tensor { unary(MLXS_SQUARE) }
    public func abs() -> Tensor { unary(MLXS_ABS) }
    public func floor() -> Tensor { unary(MLXS_FLOOR) }
    public func ceil() -> Tensor { unary(MLXS_CEIL) }
    public func rounded() -> Tensor { unary(MLXS_ROUND) }
    public func sign() -> Tensor { unary(MLXS_SIGN) }
    public func reciprocal() -> Tensor { unary(MLXS_RECIPROCAL) }
    public func logicalNot() -> Tensor { unary(MLXS_LOGICAL_NOT) }
    public func isNaN() -> Tensor { unary(MLXS_ISNAN) }
    public func isInf() -> Tensor { unary(MLXS_ISINF) }
    /// The same values, cut off from autograd.
    public func stopGradient() -> Tensor { unary(MLXS_STOP_GRADIENT) }
    /// A copy (a new node in the graph).
    public func copy() -> Tensor { unary(MLXS_COPY) }

    public func pow(_ exponent: Tensor) -> Tensor { binary(MLXS_POW, exponent) }
    public func pow(_ exponent: Double) -> Tensor { binary(MLXS_POW, scalar(exponent)) }
    public func maximum(_ other: Tensor) -> Tensor { binary(MLXS_MAXIMUM, other) }
    public func minimum(_ other: Tensor) -> Tensor { binary(MLXS_MINIMUM, other) }
    public func maximum(_ other: Double) -> Tensor { binary(MLXS_MAXIMUM, scalar(other)) }
    public func minimum(_ other: Double) -> Tensor { binary(MLXS_MINIMUM, scalar(other)) }
    public func logicalAnd(_ other: Tensor) -> Tensor { binary(MLXS_LOGICAL_AND, other) }
    public func logicalOr(_ other: Tensor) -> Tensor { binary(MLXS_LOGICAL_OR, other) }
    public func floorDivide(_ other: Tensor) -> Tensor { binary(MLXS_FLOOR_DIVIDE, other) }
    public func remainder(_ other: Tensor) -> Tensor { binary(MLXS_REMAINDER, other) }
    public func logAddExp(_ other: Tensor) -> Tensor { binary(MLXS_LOGADDEXP, other) }

    public func asType(_ dtype: DType) -> Tensor {
        if self.dtype == dtype && error == nil { return self }
        return Tensor.op(self) { mlxs_astype($0[0], dtype.c) }
    }

    /// Clamps to [lo, hi]; either bound may be omitted.
    public func clipped(min lo: Double? = nil, max hi: Double? = nil) -> Tensor {
        var inputs = [self]
        if let lo { inputs.append(scalar(lo)) }
        if let hi { inputs.append(scalar(hi)) }
        return Tensor.op(inputs) { h in
            mlxs_clip(h[0], lo == nil ? nil : h[1], hi == nil ? nil : h[lo == nil ? 1 : 2])
        }
    }

    // MARK: Reductions

    func reduce(_ op: mlxs_reduce_op, _ axes: [Int], _ keepDims: Bool) -> Tensor {
        let ax = axes.map { Int32($0) }
        return Tensor.op(self) { h in ax.withUnsafeBufferPointer { mlxs_reduce(op, h[0], $0.baseAddress, Int32(ax.count), keepDims) } }
    }

    /// Sum over `axes` (all axes when empty).
    public func sum(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_SUM, axes, keepDims) }
    public func sum(axis: Int, keepDims: Bool = false) -> Tensor { reduce(MLXS_SUM, [axis], keepDims) }
    public func mean(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_MEAN, axes, keepDims) }
    public func mean(axis: Int, keepDims: Bool = false) -> Tensor { reduce(MLXS_MEAN, [axis], keepDims) }
    public func max(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_MAX, axes, keepDims) }
    public func max(axis: Int, keepDims: Bool = false) -> Tensor { reduce(MLXS_MAX, [axis], keepDims) }
    public func min(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_MIN, axes, keepDims) }
    public func min(axis: Int, keepDims: Bool = false) -> Tensor { reduce(MLXS_MIN, [axis], keepDims) }
    public func prod(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_PROD, axes, keepDims) }
    /// Population variance (divides by N).
    public func variance(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_VAR, axes, keepDims) }
    public func logSumExp(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_LOGSUMEXP, axes, keepDims) }
    public func logSumExp(axis: Int, keepDims: Bool = false) -> Tensor { reduce(MLXS_LOGSUMEXP, [axis], keepDims) }
    public func all(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_ALL, axes, keepDims) }
    public func any(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_ANY, axes, keepDims) }

    public func argMax(axis: Int, keepDims: Bool = false) -> Tensor { Tensor.op(self) { mlxs_argmax($0[0], Int32(axis), keepDims) } }
    public func argMin(axis: Int, keepDims: Bool = false) -> Tensor { Tensor.op(self) { mlxs_argmin($0[0], Int32(axis), keepDims) } }

    public func cumsum(axis: Int, reverse: Bool = false, inclusive: Bool = true) -> Tensor {
        Tensor.op(self) { mlxs_cumsum($0[0], Int32(axis), reverse, inclusive) }
    }

    public func cumulativeMax(axis: Int, reverse: Bool = false, inclusive: Bool = true) -> Tensor {
        Tensor.op(self) { mlxs_cummax($0[0], Int32(axis), reverse, inclusive) }
    }

    public func sorted(axis: Int = -1) -> Tensor { Tensor.op(self) { mlxs_sort($0[0], Int32(axis)) } }
    public func argSort(axis: Int = -1) -> Tensor { Tensor.op(self) { mlxs_argsort($0[0], Int32(axis)) } }
    /// The k largest values along `axis` (unordered, as MLX returns them).
    public func topK(_ k: Int, axis: Int = -1) -> Tensor { Tensor.op(self) { mlxs_topk($0[0], Int32(k), Int32(axis)) } }

    // MARK: Shapes

    public func reshaped(_ shape: [Int]) -> Tensor {
        let dims = shape.map { Int32($0) }
        return Tensor.op(self) { h in dims.withUnsafeBufferPointer { mlxs_reshape(h[0], $0.baseAddress, Int32(dims.count)) } }
    }

    public func reshaped(_ shape: Int...) -> Tensor { reshaped(shape) }

    /// Permutes axes; no argument reverses them.
    public func transposed(_ axes: [Int] = []) -> Tensor {
        let ax = axes.map { Int32($0) }
        return Tensor.op(self) { h in ax.withUnsafeBufferPointer { mlxs_transpose(h[0], $0.baseAddress, Int32(ax.count)) } }
    }

    public func transposed(_ axes: Int...) -> Tensor { transposed(axes) }

    /// Swaps two axes.
    public func swappedAxes(_ a: Int, _ b: Int) -> Tensor {
        var perm = Array(0..<ndim)
        let n = ndim
        perm.swapAt(a < 0 ? n + a : a, b < 0 ? n + b : b)
        return transposed(perm)
    }

    /// The transpose of the last two axes.
    public var T: Tensor { swappedAxes(-1, -2) }

    public func broadcast(to shape: [Int]) -> Tensor {
        let dims = shape.map { Int32($0) }
        return Tensor.op(self) { h in dims.withUnsafeBufferPointer { mlxs_broadcast_to(h[0], $0.baseAddress, Int32(dims.count)) } }
    }

    public func expandedDims(axes: [Int]) -> Tensor {
        let ax = axes.map { Int32($0) }
        return Tensor.op(self) { h in ax.withUnsafeBufferPointer { mlxs_expand_dims(h[0], $0.baseAddress, Int32(ax.count)) } }
    }

    public func expandedDims(axis: Int) -> Tensor { expandedDims(axes: [axis]) }

    /// Removes size-1 axes (all of them when `axes` is empty).
    public func squeezed(axes: [Int] = []) -> Tensor {
        let ax = axes.map { Int32($0) }
        return Tensor.op(self) { h in ax.withUnsafeBufferPointer { mlxs_squeeze(h[0], $0.baseAddress, Int32(ax.count)) } }
    }

    public func squeezed(axis: Int) -> Tensor { squeezed(axes: [axis]) }

    /// Merges axes `start...end` into one.
    public func flattened(start: Int = 0, end: Int = -1) -> Tensor {
        let s = shape
        let a = start < 0 ? s.count + start : start
        let b = end < 0 ? s.count + end : end
        guard a <= b, !s.isEmpty else { return reshaped([size]) }
        let merged = s[a...b].reduce(1, *)
        return reshaped(Array(s[..<a]) + [merged] + Array(s[(b + 1)...]))
    }

    /// A row-contiguous copy (or the same array when already contiguous).
    public func contiguous() -> Tensor { Tensor.op(self) { mlxs_contiguous($0[0]) } }

    /// Strided slice with explicit start/stop/stride per axis.
    public func slice(start: [Int], stop: [Int], strides: [Int]? = nil) -> Tensor {
        let st = start.map { Int32($0) }, sp = stop.map { Int32($0) }
        let sd = (strides ?? [Int](repeating: 1, count: start.count)).map { Int32($0) }
        return Tensor.op(self) { h in mlxs_slice(h[0], st, sp, sd, Int32(st.count)) }
    }

    /// Elements `range` of one axis (negative bounds count from the end).
    public func slice(axis: Int, _ lower: Int, _ upper: Int? = nil, stride: Int = 1) -> Tensor {
        let s = shape
        let ax = axis < 0 ? s.count + axis : axis
        var start = [Int](repeating: 0, count: s.count)
        var stop = s
        var strides = [Int](repeating: 1, count: s.count)
        let n = s[ax]
        start[ax] = lower < 0 ? Swift.max(n + lower, 0) : Swift.min(lower, n)
        let up = upper ?? n
        stop[ax] = up < 0 ? Swift.max(n + up, 0) : Swift.min(up, n)
        strides[ax] = stride
        return slice(start: start, stop: stop, strides: strides)
    }

    /// Writes `update` into the region [start, stop) and returns the result (a new array).
    public func sliceUpdated(_ update: Tensor, start: [Int], stop: [Int], strides: [Int]? = nil) -> Tensor {
        let st = start.map { Int32($0) }, sp = stop.map { Int32($0) }
        let sd = (strides ?? [Int](repeating: 1, count: start.count)).map { Int32($0) }
        return Tensor.op(self, update) { h in mlxs_slice_update(h[0], h[1], st, sp, sd, Int32(st.count)) }
    }

    /// Selects entries of `axis` by integer indices (gather).
    public func take(_ indices: Tensor, axis: Int) -> Tensor {
        Tensor.op(self, indices) { mlxs_take($0[0], $0[1], Int32(axis)) }
    }

    public func takeAlong(_ indices: Tensor, axis: Int) -> Tensor {
        Tensor.op(self, indices) { mlxs_take_along_axis($0[0], $0[1], Int32(axis)) }
    }

    public func putAlong(_ indices: Tensor, values: Tensor, axis: Int) -> Tensor {
        Tensor.op(self, indices, values) { mlxs_put_along_axis($0[0], $0[1], $0[2], Int32(axis)) }
    }

    /// Adds `values` at `indices` along `axis` (scatter-add; repeated indices accumulate).
    public func scatterAdd(_ indices: Tensor, values: Tensor, axis: Int) -> Tensor {
        Tensor.op(self, indices, values) { mlxs_scatter_add_axis($0[0], $0[1], $0[2], Int32(axis)) }
    }

    /// Pads each axis with `low[i]` values before and `high[i]` after.
    public func padded(low: [Int], high: [Int], value: Double = 0) -> Tensor {
        let lo = low.map { Int32($0) }, hi = high.map { Int32($0) }
        return Tensor.op(self, scalar(value).asType(dtype)) { h in mlxs_pad(h[0], lo, hi, Int32(lo.count), h[1]) }
    }

    public func repeated(_ count: Int, axis: Int) -> Tensor { Tensor.op(self) { mlxs_repeat($0[0], Int32(count), Int32(axis)) } }

    // MARK: Subscripts

    /// Index the first axis with an integer (removes that axis).
    public subscript(_ i: Int) -> Tensor {
        let n = dim(0)
        let index = i < 0 ? n + i : i
        return slice(axis: 0, index, index + 1).squeezed(axis: 0)
    }

    /// Index the first axis with a range.
    public subscript(_ r: Range<Int>) -> Tensor { slice(axis: 0, r.lowerBound, r.upperBound) }
}

// MARK: Free functions

public func concatenated(_ tensors: [Tensor], axis: Int = 0) -> Tensor {
    Tensor.op(tensors) { h in mlxs_concatenate(h, Int32(h.count), Int32(axis)) }
}

public func stacked(_ tensors: [Tensor], axis: Int = 0) -> Tensor {
    Tensor.op(tensors) { h in mlxs_stack(h, Int32(h.count), Int32(axis)) }
}

public func which(_ condition: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor {
    Tensor.op(condition, a, b) { mlxs_where($0[0], $0[1], $0[2]) }
}

public func matmul(_ a: Tensor, _ b: Tensor) -> Tensor { Tensor.op(a, b) { mlxs_matmul($0[0], $0[1]) } }

/// beta * c + alpha * (a @ b), fused.
public func addmm(_ c: Tensor, _ a: Tensor, _ b: Tensor, alpha: Float = 1, beta: Float = 1) -> Tensor {
    Tensor.op(c, a, b) { mlxs_addmm($0[0], $0[1], $0[2], alpha, beta) }
}

// MARK: Operators

extension Tensor {
    public static func + (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_ADD, b) }
    public static func - (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_SUB, b) }
    public static func * (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_MUL, b) }
    public static func / (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_DIV, b) }
    public static prefix func - (a: Tensor) -> Tensor { a.unary(MLXS_NEG) }

    public static func + (a: Tensor, b: Double) -> Tensor { a + a.scalar(b) }
    public static func - (a: Tensor, b: Double) -> Tensor { a - a.scalar(b) }
    public static func * (a: Tensor, b: Double) -> Tensor { a * a.scalar(b) }
    public static func / (a: Tensor, b: Double) -> Tensor { a / a.scalar(b) }
    public static func + (a: Double, b: Tensor) -> Tensor { b.scalar(a) + b }
    public static func - (a: Double, b: Tensor) -> Tensor { b.scalar(a) - b }
    public static func * (a: Double, b: Tensor) -> Tensor { b.scalar(a) * b }
    public static func / (a: Double, b: Tensor) -> Tensor { b.scalar(a) / b }

    /// Matrix product.
    public static func .* (a: Tensor, b: Tensor) -> Tensor { matmul(a, b) }

    public static func .== (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_EQ, b) }
    public static func .!= (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_NE, b) }
    public static func .< (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_LT, b) }
    public static func .<= (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_LE, b) }
    public static func .> (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_GT, b) }
    public static func .>= (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_GE, b) }
    public static func .== (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_EQ, Tensor(b, dtype: a.dtype)) }
    public static func .!= (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_NE, Tensor(b, dtype: a.dtype)) }
    public static func .< (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_LT, Tensor(b, dtype: a.dtype)) }
    public static func .<= (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_LE, Tensor(b, dtype: a.dtype)) }
    public static func .> (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_GT, Tensor(b, dtype: a.dtype)) }
    public static func .>= (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_GE, Tensor(b, dtype: a.dtype)) }

    public static func += (a: inout Tensor, b: Tensor) { a = a + b }
    public static func -= (a: inout Tensor, b: Tensor) { a = a - b }
    public static func *= (a: inout Tensor, b: Tensor) { a = a * b }
    public static func /= (a: inout Tensor, b: Tensor) { a = a / b }
}

infix operator .*: MultiplicationPrecedence
