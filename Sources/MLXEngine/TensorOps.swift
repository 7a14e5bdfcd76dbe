import CMLXShim

// Elementwise math, reductions, shape manipulation and indexing, in the spirit of mlx-swift / PyTorch.

extension Tensor {
    func unary(_ op: mlxs_unary_op) -> Tensor { Tensor.op(self) { mlxs_unary(op, $0[0]) } }
    func binary(_ op: mlxs_binary_op, _ other: Tensor) -> Tensor { Tensor.op(self, other) { mlxs_binary(op, $0[0], $0[1]) } }

    /// A scalar of this tensor's dtype (floating tensors) so that `x * 0.5` keeps x's precision.
    func scalar(_ value: Double) -> Tensor { Tensor(value, dtype: dtype.isFloatingPoint ? dtype : .float32) }

    /// Element-wise e^x.
    public func exp() -> Tensor { unary(MLXS_EXP) }
    /// Element-wise natural logarithm.
    public func log() -> Tensor { unary(MLXS_LOG) }
    /// Element-wise log(1 + x), accurate near x = 0.
    public func log1p() -> Tensor { unary(MLXS_LOG1P) }
    /// Element-wise e^x - 1, accurate near x = 0.
    public func expm1() -> Tensor { unary(MLXS_EXPM1) }
    /// Element-wise square root.
    public func sqrt() -> Tensor { unary(MLXS_SQRT) }
    /// Element-wise reciprocal square root, 1 / sqrt(x).
    public func rsqrt() -> Tensor { unary(MLXS_RSQRT) }
    /// Element-wise sine of angles in radians.
    public func sin() -> Tensor { unary(MLXS_SIN) }
    /// Element-wise cosine of angles in radians.
    public func cos() -> Tensor { unary(MLXS_COS) }
    /// Element-wise hyperbolic tangent.
    public func tanh() -> Tensor { unary(MLXS_TANH) }
    /// Element-wise logistic function, 1 / (1 + e^-x).
    public func sigmoid() -> Tensor { unary(MLXS_SIGMOID) }
    /// Element-wise Gauss error function.
    public func erf() -> Tensor { unary(MLXS_ERF) }
    /// Element-wise inverse of the error function (argument in (-1, 1)).
    public func erfinv() -> Tensor { unary(MLXS_ERFINV) }
    /// Element-wise x * x.
    public func square() -> Tensor { unary(MLXS_SQUARE) }
    /// Element-wise absolute value.
    public func abs() -> Tensor { unary(MLXS_ABS) }
    /// Element-wise rounding toward negative infinity; the dtype is unchanged.
    public func floor() -> Tensor { unary(MLXS_FLOOR) }
    /// Element-wise rounding toward positive infinity; the dtype is unchanged.
    public func ceil() -> Tensor { unary(MLXS_CEIL) }
    /// Element-wise rounding to the nearest integer value (MLX's `round`, halves to even); the dtype is unchanged.
    public func rounded() -> Tensor { unary(MLXS_ROUND) }
    /// Element-wise sign: -1, 0 or 1.
    public func sign() -> Tensor { unary(MLXS_SIGN) }
    /// Element-wise 1 / x.
    public func reciprocal() -> Tensor { unary(MLXS_RECIPROCAL) }
    /// Element-wise boolean NOT, as a `bool` tensor.
    public func logicalNot() -> Tensor { unary(MLXS_LOGICAL_NOT) }
    /// A `bool` tensor, true where the element is NaN.
    public func isNaN() -> Tensor { unary(MLXS_ISNAN) }
    /// A `bool` tensor, true where the element is positive or negative infinity.
    public func isInf() -> Tensor { unary(MLXS_ISINF) }
    /// The same values, cut off from autograd.
    public func stopGradient() -> Tensor { unary(MLXS_STOP_GRADIENT) }
    /// A copy (a new node in the graph).
    public func copy() -> Tensor { unary(MLXS_COPY) }

    /// Element-wise `self` raised to `exponent`, broadcasting the shapes.
    public func pow(_ exponent: Tensor) -> Tensor { binary(MLXS_POW, exponent) }
    /// Element-wise `self` raised to a scalar power; the scalar takes this tensor's dtype when that is floating, float32 otherwise.
    public func pow(_ exponent: Double) -> Tensor { binary(MLXS_POW, scalar(exponent)) }
    /// Element-wise larger of `self` and `other`, broadcasting the shapes.
    public func maximum(_ other: Tensor) -> Tensor { binary(MLXS_MAXIMUM, other) }
    /// Element-wise smaller of `self` and `other`, broadcasting the shapes.
    public func minimum(_ other: Tensor) -> Tensor { binary(MLXS_MINIMUM, other) }
    /// Element-wise larger of each element and a scalar; the scalar takes this tensor's dtype when that is floating, float32 otherwise.
    public func maximum(_ other: Double) -> Tensor { binary(MLXS_MAXIMUM, scalar(other)) }
    /// Element-wise smaller of each element and a scalar; the scalar takes this tensor's dtype when that is floating, float32 otherwise.
    public func minimum(_ other: Double) -> Tensor { binary(MLXS_MINIMUM, scalar(other)) }
    /// Element-wise boolean AND, as a `bool` tensor.
    public func logicalAnd(_ other: Tensor) -> Tensor { binary(MLXS_LOGICAL_AND, other) }
    /// Element-wise boolean OR, as a `bool` tensor.
    public func logicalOr(_ other: Tensor) -> Tensor { binary(MLXS_LOGICAL_OR, other) }
    /// Element-wise division rounded toward negative infinity (integer division for integer tensors).
    public func floorDivide(_ other: Tensor) -> Tensor { binary(MLXS_FLOOR_DIVIDE, other) }
    /// Element-wise remainder of division by `other`, with the sign of the divisor (like Python's `%`).
    public func remainder(_ other: Tensor) -> Tensor { binary(MLXS_REMAINDER, other) }
    /// Element-wise log(e^self + e^other), computed without overflow.
    public func logAddExp(_ other: Tensor) -> Tensor { binary(MLXS_LOGADDEXP, other) }

    /// The values converted to `dtype`; `self` itself when it already has that dtype.
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
    /// Sum over one axis.
    public func sum(axis: Int, keepDims: Bool = false) -> Tensor { reduce(MLXS_SUM, [axis], keepDims) }
    /// Mean over `axes` (all axes when empty).
    public func mean(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_MEAN, axes, keepDims) }
    /// Mean over one axis.
    public func mean(axis: Int, keepDims: Bool = false) -> Tensor { reduce(MLXS_MEAN, [axis], keepDims) }
    /// Largest value over `axes` (all axes when empty).
    public func max(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_MAX, axes, keepDims) }
    /// Largest value over one axis.
    public func max(axis: Int, keepDims: Bool = false) -> Tensor { reduce(MLXS_MAX, [axis], keepDims) }
    /// Smallest value over `axes` (all axes when empty).
    public func min(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_MIN, axes, keepDims) }
    /// Smallest value over one axis.
    public func min(axis: Int, keepDims: Bool = false) -> Tensor { reduce(MLXS_MIN, [axis], keepDims) }
    /// Product over `axes` (all axes when empty).
    public func prod(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_PROD, axes, keepDims) }
    /// Population variance (divides by N).
    public func variance(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_VAR, axes, keepDims) }
    /// log(sum(exp(x))) over `axes` (all axes when empty), computed without overflow.
    public func logSumExp(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_LOGSUMEXP, axes, keepDims) }
    /// log(sum(exp(x))) over one axis, computed without overflow.
    public func logSumExp(axis: Int, keepDims: Bool = false) -> Tensor { reduce(MLXS_LOGSUMEXP, [axis], keepDims) }
    /// Whether every element over `axes` (all axes when empty) is non-zero, as a `bool` tensor.
    public func all(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_ALL, axes, keepDims) }
    /// Whether any element over `axes` (all axes when empty) is non-zero, as a `bool` tensor.
    public func any(axes: [Int] = [], keepDims: Bool = false) -> Tensor { reduce(MLXS_ANY, axes, keepDims) }

    /// Index of the largest value along `axis` (MLX gives uint32 indices).
    public func argMax(axis: Int, keepDims: Bool = false) -> Tensor { Tensor.op(self) { mlxs_argmax($0[0], Int32(axis), keepDims) } }
    /// Index of the smallest value along `axis` (MLX gives uint32 indices).
    public func argMin(axis: Int, keepDims: Bool = false) -> Tensor { Tensor.op(self) { mlxs_argmin($0[0], Int32(axis), keepDims) } }

    /// Running sum along `axis`.
    ///
    /// `reverse` accumulates from the end; with `inclusive` false each entry is the sum of those before it, not counting itself.
    public func cumsum(axis: Int, reverse: Bool = false, inclusive: Bool = true) -> Tensor {
        Tensor.op(self) { mlxs_cumsum($0[0], Int32(axis), reverse, inclusive) }
    }

    /// Running maximum along `axis`; `reverse` and `inclusive` work as in `cumsum(axis:reverse:inclusive:)`.
    public func cumulativeMax(axis: Int, reverse: Bool = false, inclusive: Bool = true) -> Tensor {
        Tensor.op(self) { mlxs_cummax($0[0], Int32(axis), reverse, inclusive) }
    }

    /// The values sorted in ascending order along `axis`.
    public func sorted(axis: Int = -1) -> Tensor { Tensor.op(self) { mlxs_sort($0[0], Int32(axis)) } }
    /// The indices (uint32) that sort `axis` in ascending order.
    public func argSort(axis: Int = -1) -> Tensor { Tensor.op(self) { mlxs_argsort($0[0], Int32(axis)) } }
    /// The k largest values along `axis` (unordered, as MLX returns them).
    public func topK(_ k: Int, axis: Int = -1) -> Tensor { Tensor.op(self) { mlxs_topk($0[0], Int32(k), Int32(axis)) } }

    // MARK: Shapes

    /// The same elements, row-major, in a new shape; one entry may be -1 to be inferred.
    public func reshaped(_ shape: [Int]) -> Tensor {
        let dims = shape.map { Int32($0) }
        return Tensor.op(self) { h in dims.withUnsafeBufferPointer { mlxs_reshape(h[0], $0.baseAddress, Int32(dims.count)) } }
    }

    /// The same elements, row-major, in a new shape given as separate sizes; one may be -1.
    public func reshaped(_ shape: Int...) -> Tensor { reshaped(shape) }

    /// Permutes axes; no argument reverses them.
    public func transposed(_ axes: [Int] = []) -> Tensor {
        let ax = axes.map { Int32($0) }
        return Tensor.op(self) { h in ax.withUnsafeBufferPointer { mlxs_transpose(h[0], $0.baseAddress, Int32(ax.count)) } }
    }

    /// Permutes axes, given as separate arguments; no argument reverses them.
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

    /// The tensor broadcast to `shape` by NumPy's rules (size-1 and missing leading axes stretch).
    public func broadcast(to shape: [Int]) -> Tensor {
        let dims = shape.map { Int32($0) }
        return Tensor.op(self) { h in dims.withUnsafeBufferPointer { mlxs_broadcast_to(h[0], $0.baseAddress, Int32(dims.count)) } }
    }

    /// Inserts size-1 axes at `axes`, positions in the result.
    public func expandedDims(axes: [Int]) -> Tensor {
        let ax = axes.map { Int32($0) }
        return Tensor.op(self) { h in ax.withUnsafeBufferPointer { mlxs_expand_dims(h[0], $0.baseAddress, Int32(ax.count)) } }
    }

    /// Inserts one size-1 axis at `axis`.
    public func expandedDims(axis: Int) -> Tensor { expandedDims(axes: [axis]) }

    /// Removes size-1 axes (all of them when `axes` is empty).
    public func squeezed(axes: [Int] = []) -> Tensor {
        let ax = axes.map { Int32($0) }
        return Tensor.op(self) { h in ax.withUnsafeBufferPointer { mlxs_squeeze(h[0], $0.baseAddress, Int32(ax.count)) } }
    }

    /// Removes one axis, which must have size 1.
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

    /// Elements `lower..<upper` (to the end when `upper` is nil) of one axis, every `stride`-th; negative bounds count
    /// from the end.
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

    /// Gathers the entries at `indices` along `axis`, where `indices` has this tensor's rank (NumPy's `take_along_axis`).
    public func takeAlong(_ indices: Tensor, axis: Int) -> Tensor {
        Tensor.op(self, indices) { mlxs_take_along_axis($0[0], $0[1], Int32(axis)) }
    }

    /// A copy with `values` written at `indices` along `axis` (NumPy's `put_along_axis`); the inverse of `takeAlong(_:axis:)`.
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

    /// Repeats each entry `count` times in a row along `axis`, like `numpy.repeat` ([a, b] becomes [a, a, b, b]).
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

/// Joins tensors end to end along the existing axis `axis`; their other axes must match.
public func concatenated(_ tensors: [Tensor], axis: Int = 0) -> Tensor {
    Tensor.op(tensors) { h in mlxs_concatenate(h, Int32(h.count), Int32(axis)) }
}

/// Stacks tensors of one shape along a new axis `axis`.
public func stacked(_ tensors: [Tensor], axis: Int = 0) -> Tensor {
    Tensor.op(tensors) { h in mlxs_stack(h, Int32(h.count), Int32(axis)) }
}

/// Element-wise choice: `a` where `condition` is true, `b` elsewhere, broadcasting all three (MLX's `where`).
public func which(_ condition: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor {
    Tensor.op(condition, a, b) { mlxs_where($0[0], $0[1], $0[2]) }
}

/// Matrix product over the last two axes, batched over the leading axes with broadcasting.
public func matmul(_ a: Tensor, _ b: Tensor) -> Tensor { Tensor.op(a, b) { mlxs_matmul($0[0], $0[1]) } }

/// beta * c + alpha * (a @ b), fused.
public func addmm(_ c: Tensor, _ a: Tensor, _ b: Tensor, alpha: Float = 1, beta: Float = 1) -> Tensor {
    Tensor.op(c, a, b) { mlxs_addmm($0[0], $0[1], $0[2], alpha, beta) }
}

// MARK: Operators

extension Tensor {
    /// Element-wise sum, broadcasting the shapes.
    public static func + (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_ADD, b) }
    /// Element-wise difference, broadcasting the shapes.
    public static func - (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_SUB, b) }
    /// Element-wise product, broadcasting the shapes (`.*` is the matrix product).
    public static func * (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_MUL, b) }
    /// Element-wise quotient, broadcasting the shapes.
    public static func / (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_DIV, b) }
    /// Element-wise negation.
    public static prefix func - (a: Tensor) -> Tensor { a.unary(MLXS_NEG) }

    /// Adds a scalar to every element; the scalar takes the tensor's dtype when that is floating, float32 otherwise.
    public static func + (a: Tensor, b: Double) -> Tensor { a + a.scalar(b) }
    /// Subtracts a scalar from every element; the scalar takes the tensor's dtype when that is floating, float32 otherwise.
    public static func - (a: Tensor, b: Double) -> Tensor { a - a.scalar(b) }
    /// Multiplies every element by a scalar; the scalar takes the tensor's dtype when that is floating, float32 otherwise.
    public static func * (a: Tensor, b: Double) -> Tensor { a * a.scalar(b) }
    /// Divides every element by a scalar; the scalar takes the tensor's dtype when that is floating, float32 otherwise.
    public static func / (a: Tensor, b: Double) -> Tensor { a / a.scalar(b) }
    /// Adds every element to a scalar; the scalar takes the tensor's dtype when that is floating, float32 otherwise.
    public static func + (a: Double, b: Tensor) -> Tensor { b.scalar(a) + b }
    /// Subtracts every element from a scalar; the scalar takes the tensor's dtype when that is floating, float32 otherwise.
    public static func - (a: Double, b: Tensor) -> Tensor { b.scalar(a) - b }
    /// Multiplies a scalar by every element; the scalar takes the tensor's dtype when that is floating, float32 otherwise.
    public static func * (a: Double, b: Tensor) -> Tensor { b.scalar(a) * b }
    /// Divides a scalar by every element; the scalar takes the tensor's dtype when that is floating, float32 otherwise.
    public static func / (a: Double, b: Tensor) -> Tensor { b.scalar(a) / b }

    /// Matrix product.
    public static func .* (a: Tensor, b: Tensor) -> Tensor { matmul(a, b) }

    /// Element-wise `a == b` as a `bool` tensor, broadcasting the shapes.
    public static func .== (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_EQ, b) }
    /// Element-wise `a != b` as a `bool` tensor, broadcasting the shapes.
    public static func .!= (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_NE, b) }
    /// Element-wise `a < b` as a `bool` tensor, broadcasting the shapes.
    public static func .< (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_LT, b) }
    /// Element-wise `a <= b` as a `bool` tensor, broadcasting the shapes.
    public static func .<= (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_LE, b) }
    /// Element-wise `a > b` as a `bool` tensor, broadcasting the shapes.
    public static func .> (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_GT, b) }
    /// Element-wise `a >= b` as a `bool` tensor, broadcasting the shapes.
    public static func .>= (a: Tensor, b: Tensor) -> Tensor { a.binary(MLXS_GE, b) }
    /// Element-wise `a == b` as a `bool` tensor, against a scalar converted to this tensor's dtype (for an integer tensor, a fractional value is truncated first).
    public static func .== (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_EQ, Tensor(b, dtype: a.dtype)) }
    /// Element-wise `a != b` as a `bool` tensor, against a scalar converted to this tensor's dtype (for an integer tensor, a fractional value is truncated first).
    public static func .!= (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_NE, Tensor(b, dtype: a.dtype)) }
    /// Element-wise `a < b` as a `bool` tensor, against a scalar converted to this tensor's dtype (for an integer tensor, a fractional value is truncated first).
    public static func .< (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_LT, Tensor(b, dtype: a.dtype)) }
    /// Element-wise `a <= b` as a `bool` tensor, against a scalar converted to this tensor's dtype (for an integer tensor, a fractional value is truncated first).
    public static func .<= (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_LE, Tensor(b, dtype: a.dtype)) }
    /// Element-wise `a > b` as a `bool` tensor, against a scalar converted to this tensor's dtype (for an integer tensor, a fractional value is truncated first).
    public static func .> (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_GT, Tensor(b, dtype: a.dtype)) }
    /// Element-wise `a >= b` as a `bool` tensor, against a scalar converted to this tensor's dtype (for an integer tensor, a fractional value is truncated first).
    public static func .>= (a: Tensor, b: Double) -> Tensor { a.binary(MLXS_GE, Tensor(b, dtype: a.dtype)) }

    /// Replaces `a` by the element-wise sum `a + b` (a new tensor; nothing is updated in place).
    public static func += (a: inout Tensor, b: Tensor) { a = a + b }
    /// Replaces `a` by the element-wise difference `a - b`.
    public static func -= (a: inout Tensor, b: Tensor) { a = a - b }
    /// Replaces `a` by the element-wise product `a * b`.
    public static func *= (a: inout Tensor, b: Tensor) { a = a * b }
    /// Replaces `a` by the element-wise quotient `a / b`.
    public static func /= (a: inout Tensor, b: Tensor) { a = a / b }
}

/// The matrix-product operator: `a .* b` is `matmul(a, b)`, not an element-wise product.
infix operator .*: MultiplicationPrecedence
