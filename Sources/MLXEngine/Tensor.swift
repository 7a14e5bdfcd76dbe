import CMLXShim
import Foundation

/// Element types an MLX array can hold.
public enum DType: Int32, Sendable, CaseIterable, CustomStringConvertible {
    /// One case per MLX element type: `bool`, unsigned and signed integers of 8 to 64 bits, `float16`, `float32`, `float64` and `bfloat16` (raw values are the shim's `mlxs_dtype` numbers).
    case bool = 0, uint8, uint16, uint32, uint64, int8, int16, int32, int64, float16, float32, float64, bfloat16

    var c: mlxs_dtype { mlxs_dtype(rawValue: UInt32(rawValue)) }
    init(_ c: mlxs_dtype) { self = DType(rawValue: Int32(c.rawValue)) ?? .float32 }

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .bool, .uint8, .int8: return 1
        case .uint16, .int16, .float16, .bfloat16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        }
    }

    /// Whether this is `float16`, `float32`, `float64` or `bfloat16`.
    public var isFloatingPoint: Bool { [.float16, .float32, .float64, .bfloat16].contains(self) }

    /// The name used by safetensors headers.
    public var safetensorsName: String {
        switch self {
        case .bool: return "BOOL"
        case .uint8: return "U8"
        case .uint16: return "U16"
        case .uint32: return "U32"
        case .uint64: return "U64"
        case .int8: return "I8"
        case .int16: return "I16"
        case .int32: return "I32"
        case .int64: return "I64"
        case .float16: return "F16"
        case .float32: return "F32"
        case .float64: return "F64"
        case .bfloat16: return "BF16"
        }
    }

    /// The dtype a safetensors header names (`"BF16"`, `"F32"`, ...), or nil for a name with no MLX dtype.
    public init?(safetensorsName: String) {
        guard let match = DType.allCases.first(where: { $0.safetensorsName == safetensorsName }) else { return nil }
        self = match
    }

    /// MLX's lowercase name of the dtype, such as `bfloat16`.
    public var description: String {
        switch self {
        case .bool: return "bool"
        case .uint8: return "uint8"
        case .uint16: return "uint16"
        case .uint32: return "uint32"
        case .uint64: return "uint64"
        case .int8: return "int8"
        case .int16: return "int16"
        case .int32: return "int32"
        case .int64: return "int64"
        case .float16: return "float16"
        case .float32: return "float32"
        case .float64: return "float64"
        case .bfloat16: return "bfloat16"
        }
    }
}

/// An error raised by MLX (shape mismatch, bad argument, ...) or by the engine around it.
public struct MLXError: Error, CustomStringConvertible, Equatable {
    /// What went wrong, as MLX or the engine worded it.
    public let message: String
    /// An error carrying `message`.
    public init(_ message: String) { self.message = message }
    /// The message, unchanged.
    public var description: String { message }
}

/// Owns one MLX array handle, or the error that prevented making it.
final class TensorStorage: @unchecked Sendable {
    let handle: mlxs_array?
    let error: MLXError?

    init(handle: mlxs_array) {
        self.handle = handle
        self.error = nil
    }

    init(error: MLXError) {
        self.handle = nil
        self.error = error
    }

    deinit {
        if let handle { mlxs_free(handle) }
    }
}

/// A lazily evaluated n-dimensional array backed by MLX.
///
/// Operations never throw: a failing operation (a shape mismatch, say) yields a tensor that carries MLX's
/// message, every operation on it passes the first error along, and `eval()` or reading the values throws it.
/// This keeps model code free of `try` while errors still reach the caller as Swift errors.
public struct Tensor: @unchecked Sendable {
    let storage: TensorStorage

    init(storage: TensorStorage) { self.storage = storage }

    /// Wraps a handle returned by the shim; NULL means the call failed and `mlxs_last_error` says why.
    init(checked handle: mlxs_array?) {
        if let handle {
            storage = TensorStorage(handle: handle)
        } else {
            storage = TensorStorage(error: MLXError(String(cString: mlxs_last_error())))
        }
    }

    init(error: MLXError) { storage = TensorStorage(error: error) }

    /// The error this tensor carries, if an operation producing it failed.
    public var error: MLXError? { storage.error }

    /// Runs a shim call on the handles of `inputs`, passing the first input error along.
    static func op(_ inputs: Tensor..., body: ([mlxs_array?]) -> mlxs_array?) -> Tensor {
        op(inputs, body: body)
    }

    static func op(_ inputs: [Tensor], body: ([mlxs_array?]) -> mlxs_array?) -> Tensor {
        var handles: [mlxs_array?] = []
        handles.reserveCapacity(inputs.count)
        for t in inputs {
            guard let h = t.storage.handle else { return Tensor(error: t.storage.error!) }
            handles.append(h)
        }
        let result = Tensor(checked: body(handles))
        withExtendedLifetime(inputs) {}
        return result
    }

    var handle: mlxs_array? { storage.handle }

    // MARK: Creation

    /// A tensor holding `values` with the given shape (row-major).
    public init<T: TensorElement>(_ values: [T], shape: [Int]? = nil) {
        let shape = shape ?? [values.count]
        precondition(shape.reduce(1, *) == values.count, "Tensor: \(values.count) values do not fill shape \(shape)")
        let dims = shape.map { Int32($0) }
        self.init(checked: values.withUnsafeBytes { raw in
            dims.withUnsafeBufferPointer { mlxs_from_data(raw.baseAddress, $0.baseAddress, Int32(dims.count), T.dtype.c) }
        })
    }

    /// Creates a tensor from raw little-endian bytes of `dtype`.
    public init(bytes: UnsafeRawBufferPointer, shape: [Int], dtype: DType) {
        let dims = shape.map { Int32($0) }
        precondition(bytes.count == shape.reduce(1, *) * dtype.size, "Tensor: byte count does not match shape")
        self.init(checked: dims.withUnsafeBufferPointer {
            mlxs_from_data(bytes.baseAddress, $0.baseAddress, Int32(dims.count), dtype.c)
        })
    }

    /// A scalar (0-dimensional) tensor.
    public init(_ value: Double, dtype: DType = .float32) {
        self.init(checked: mlxs_scalar_f64(value, dtype.c))
    }

    /// A scalar tensor of a `Float` value, float32 unless `dtype` says otherwise.
    public init(_ value: Float, dtype: DType = .float32) { self.init(Double(value), dtype: dtype) }
    /// A scalar tensor of an `Int` value, int32 by default; the value passes through `Double`, so it is exact only up to 2^53.
    public init(_ value: Int, dtype: DType = .int32) { self.init(Double(value), dtype: dtype) }
    /// A scalar `bool` tensor.
    public init(_ value: Bool) { self.init(value ? 1.0 : 0.0, dtype: .bool) }

    /// A tensor of `shape` with every element set to `value` (rounded through float32 for floating dtypes, truncated for integer ones).
    public static func full(_ shape: [Int], value: Double, dtype: DType = .float32) -> Tensor {
        let dims = shape.map { Int32($0) }
        return Tensor(checked: dims.withUnsafeBufferPointer { mlxs_full($0.baseAddress, Int32(dims.count), value, dtype.c) })
    }

    /// A tensor of `shape` filled with zeros.
    public static func zeros(_ shape: [Int], dtype: DType = .float32) -> Tensor { full(shape, value: 0, dtype: dtype) }
    /// A tensor of `shape` filled with ones.
    public static func ones(_ shape: [Int], dtype: DType = .float32) -> Tensor { full(shape, value: 1, dtype: dtype) }

    /// Zeros with the shape and dtype of `t`.
    public static func zeros(like t: Tensor) -> Tensor { zeros(t.shape, dtype: t.dtype) }
    /// Ones with the shape and dtype of `t`.
    public static func ones(like t: Tensor) -> Tensor { ones(t.shape, dtype: t.dtype) }

    /// A 1-D tensor of `start`, `start + step`, ... up to but not including `stop` (int32 by default).
    public static func arange(_ start: Double, _ stop: Double, step: Double = 1, dtype: DType = .int32) -> Tensor {
        Tensor(checked: mlxs_arange(start, stop, step, dtype.c))
    }

    /// The 1-D tensor `0, 1, ..., stop - 1` (int32 by default).
    public static func arange(_ stop: Int, dtype: DType = .int32) -> Tensor { arange(0, Double(stop), dtype: dtype) }

    // MARK: Queries

    /// The shape; empty for a scalar and for a tensor carrying an error.
    public var shape: [Int] {
        guard let h = handle else { return [] }
        let n = Int(mlxs_ndim(h))
        var dims = [Int32](repeating: 0, count: n)
        _ = mlxs_shape(h, &dims)
        return dims.map(Int.init)
    }

    /// The number of axes; 0 for a scalar and for a tensor carrying an error.
    public var ndim: Int { handle.map { Int(mlxs_ndim($0)) } ?? 0 }
    /// The element type; `float32` for a tensor carrying an error.
    public var dtype: DType { handle.map { DType(mlxs_get_dtype($0)) } ?? .float32 }
    /// The number of elements (the product of the shape); 0 for a tensor carrying an error.
    public var size: Int { handle.map { Int(mlxs_size($0)) } ?? 0 }
    /// The bytes the elements take (`size` times `dtype.size`); 0 for a tensor carrying an error.
    public var nbytes: Int { handle.map { Int(mlxs_nbytes($0)) } ?? 0 }

    /// The size of one axis (negative axes count from the end).
    public func dim(_ axis: Int) -> Int {
        let s = shape
        return s[axis < 0 ? s.count + axis : axis]
    }

    // MARK: Evaluation and reading

    /// Computes the tensor now. Throws the first error of the computation.
    public func eval() throws {
        try Tensor.eval([self])
    }

    /// Computes several tensors in one graph evaluation.
    public static func eval(_ tensors: [Tensor]) throws {
        var handles: [mlxs_array?] = []
        for t in tensors {
            guard let h = t.handle else { throw t.error! }
            handles.append(h)
        }
        if mlxs_eval(handles, Int32(handles.count)) != 0 { throw MLXError(String(cString: mlxs_last_error())) }
        withExtendedLifetime(tensors) {}
    }

    /// Starts computing in the background (MLX's async_eval).
    public static func asyncEval(_ tensors: [Tensor]) throws {
        var handles: [mlxs_array?] = []
        for t in tensors {
            guard let h = t.handle else { throw t.error! }
            handles.append(h)
        }
        if mlxs_async_eval(handles, Int32(handles.count)) != 0 { throw MLXError(String(cString: mlxs_last_error())) }
        withExtendedLifetime(tensors) {}
    }

    /// The values, converted to `T`, in row-major order.
    public func values<T: TensorElement>(_ type: T.Type = T.self) throws -> [T] {
        guard let h = handle else { throw error! }
        let n = size
        var out = [T](repeating: T.zero, count: n)
        let rc = out.withUnsafeMutableBytes { mlxs_copy_out(h, T.dtype.c, $0.baseAddress, $0.count) }
        if rc != 0 { throw MLXError(String(cString: mlxs_last_error())) }
        return out
    }

    /// Raw bytes in the tensor's own dtype, row-major.
    public func rawBytes() throws -> Data {
        guard let h = handle else { throw error! }
        var data = Data(count: nbytes)
        let rc = data.withUnsafeMutableBytes { mlxs_copy_out(h, dtype.c, $0.baseAddress, $0.count) }
        if rc != 0 { throw MLXError(String(cString: mlxs_last_error())) }
        return data
    }

    /// The single value of a one-element tensor.
    public func item<T: TensorElement>(_ type: T.Type = T.self) throws -> T {
        let v: [T] = try values()
        guard v.count == 1 else { throw MLXError("item(): tensor has \(v.count) elements, shape \(shape)") }
        return v[0]
    }
}

/// Swift scalar types that map onto an MLX dtype.
public protocol TensorElement {
    /// The MLX dtype that values of this type are stored and read as.
    static var dtype: DType { get }
    /// The zero value, which fills the buffer `values()` copies into.
    static var zero: Self { get }
}

/// `Float` values are stored as float32.
extension Float: TensorElement { public static var dtype: DType { .float32 } }
/// `Double` values are stored as float64.
extension Double: TensorElement { public static var dtype: DType { .float64 } }
/// `Int32` values are stored as int32.
extension Int32: TensorElement { public static var dtype: DType { .int32 } }
/// `Int64` values are stored as int64.
extension Int64: TensorElement { public static var dtype: DType { .int64 } }
/// `UInt8` values are stored as uint8.
extension UInt8: TensorElement { public static var dtype: DType { .uint8 } }
/// `UInt32` values are stored as uint32.
extension UInt32: TensorElement { public static var dtype: DType { .uint32 } }
/// `Int8` values are stored as int8.
extension Int8: TensorElement { public static var dtype: DType { .int8 } }
/// `Int16` values are stored as int16.
extension Int16: TensorElement { public static var dtype: DType { .int16 } }
/// `UInt16` values are stored as uint16.
extension UInt16: TensorElement { public static var dtype: DType { .uint16 } }
extension Bool: TensorElement {
    /// Booleans are stored as MLX `bool`.
    public static var dtype: DType { .bool }
    /// `false`, the fill value for `values()`.
    public static var zero: Bool { false }
}
/// `Int` values are stored as int64 (the scalar `Tensor(_:dtype:)` for an `Int` defaults to int32 instead).
extension Int: TensorElement { public static var dtype: DType { .int64 } }

extension Tensor: CustomStringConvertible {
    /// The error, or the shape and dtype plus the values when there are at most 16 (reading them evaluates the tensor).
    public var description: String {
        if let error { return "Tensor(error: \(error.message))" }
        var text = "Tensor(shape: \(shape), dtype: \(dtype)"
        if size <= 16, let v = try? values(Double.self) { text += ", values: \(v)" }
        return text + ")"
    }
}

/// MLX's library version (from the pinned wheel).
public var mlxVersion: String { String(cString: mlxs_version()) }
