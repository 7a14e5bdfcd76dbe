import CMLXShim

/// Where MLX runs ops: the CPU (with the shim's fast kernels), or the GPU of MLX's CUDA build (`make setup
/// BACKEND=cuda`), where the same model code runs on MLX's own GPU ops.
public enum Device: String, CaseIterable, Sendable {
    /// `cpu` runs ops on the processor; `gpu` on the GPU of MLX's CUDA build. Raw values are the names in lowercase.
    case cpu, gpu

    /// The error `use(_:)` throws when MLX cannot make the device the default (no GPU in this build or on this machine).
    public struct Unavailable: Error, CustomStringConvertible {
        /// MLX's reason for refusing the device.
        public let message: String
        /// The message, unchanged.
        public var description: String { message }
    }

    /// Whether this MLX build has a usable GPU on this machine.
    public static var gpuAvailable: Bool { mlxs_gpu_available() != 0 }
    /// Whether this is MLX's CUDA build (even on a machine without a GPU).
    public static var isCUDABuild: Bool { mlxs_cuda_build() != 0 }
    /// The GPU's name as MLX reports it, nil without one.
    public static var gpuName: String? {
        let n = mlxs_gpu_name(nil, 0)
        guard gpuAvailable, n > 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: n + 1)
        _ = mlxs_gpu_name(&buffer, buffer.count)
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    /// The GPU when MLX has one, else the CPU.
    public static var preferred: Device { gpuAvailable ? .gpu : .cpu }
    /// The device ops run on now.
    public static var current: Device { mlxs_default_device_is_gpu() != 0 ? .gpu : .cpu }

    /// Makes `device` the default of every op. The shim's kernels are CPU primitives, so on the GPU they are
    /// switched off (`Kernels.enabled`) and on the CPU switched back on; call it before building a model.
    public static func use(_ device: Device) throws {
        if mlxs_set_default_device(device == .gpu ? 1 : 0) != 0 {
            throw Unavailable(message: String(cString: mlxs_last_error()))
        }
        Kernels.enabled = device == .cpu
    }
}
