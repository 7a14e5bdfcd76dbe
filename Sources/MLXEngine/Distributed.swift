import CMLXShim
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The processes of one data-parallel run, on MLX's distributed backends: `ring` (TCP, in the CPU build), `mpi`,
/// or `nccl` (the CUDA build). A process joins from the environment MLX's launcher sets (for the ring: `MLX_RANK`
/// and `MLX_HOSTFILE`, a JSON list of each rank's `"ip:port"` addresses), so `mlx.launch` and `janusflow launch`
/// both work.
public struct ProcessGroup: Sendable, Equatable {
    /// This process's index in the group, from 0 to `size - 1`.
    public let rank: Int
    /// The number of processes in the group.
    public let size: Int

    /// Values per all-reduce of `allSum(_:bucketElements:)` (64 MB of float32).
    public static let defaultBucketElements = 1 << 24

    /// A run of one process (no communication).
    public static let single = ProcessGroup(rank: 0, size: 1)

    /// The process that writes checkpoints, metrics and reports.
    public var isWriter: Bool { rank == 0 }

    /// An error joining the group (MLX's message) or finding a free loopback port.
    public struct Failure: Error, CustomStringConvertible {
        /// What failed, in words.
        public let message: String
        /// The message, unchanged.
        public var description: String { message }
    }

    /// Whether this build can use `backend`.
    public static func isAvailable(_ backend: String = "ring") -> Bool { mlxs_distributed_available(backend) != 0 }

    /// Joins the group the environment describes (once per process; later calls return the same group).
    public static func join(backend: String = "ring") throws -> ProcessGroup {
        var rank: Int32 = 0, size: Int32 = 0
        guard mlxs_distributed_init(backend, &rank, &size) == 0 else { throw Failure(message: String(cString: mlxs_last_error())) }
        return ProcessGroup(rank: Int(rank), size: Int(size))
    }

    init(rank: Int, size: Int) {
        self.rank = rank
        self.size = size
    }

    /// The element-wise sum of `x` over every process.
    public func allSum(_ x: Tensor) -> Tensor {
        size == 1 ? x : Tensor.op(x) { mlxs_all_sum($0[0]) }
    }

    /// Every process's `x` concatenated along the first axis, in rank order.
    public func allGather(_ x: Tensor) -> Tensor {
        size == 1 ? x : Tensor.op(x) { mlxs_all_gather($0[0]) }
    }

    /// The sum over every process of each tensor (e.g. gradients), as float32 in buckets of up to `bucketElements`
    /// values: one all-reduce per bucket instead of one per tensor. Tensors go in name order, so every process packs
    /// the same buckets.
    public func allSum(_ tensors: [String: Tensor], bucketElements: Int = ProcessGroup.defaultBucketElements) -> [String: Tensor] {
        guard size > 1 else { return tensors }
        let names = tensors.keys.sorted()
        var out: [String: Tensor] = [:]
        var bucket: [String] = []
        var filled = 0
        func flush() {
            guard !bucket.isEmpty else { return }
            let flat = concatenated(bucket.map { tensors[$0]!.asType(.float32).reshaped([-1]) })
            let summed = allSum(flat)
            var offset = 0
            for name in bucket {
                let t = tensors[name]!
                out[name] = summed.slice(axis: 0, offset, offset + t.size).reshaped(t.shape).asType(t.dtype)
                offset += t.size
            }
            bucket = []
            filled = 0
        }
        for name in names {
            let n = tensors[name]!.size
            if filled > 0 && filled + n > bucketElements { flush() }
            bucket.append(name)
            filled += n
        }
        flush()
        return out
    }

    /// A ring host file for `processes` processes on this machine, each at a distinct port of 127.0.0.1 that the
    /// kernel had free just now: the JSON `janusflow launch` hands its processes in `MLX_HOSTFILE`.
    public static func loopbackHostfile(processes: Int) throws -> Data {
        var ports: [Int] = []
        while ports.count < processes {
            let p = try freeLoopbackPort()
            if !ports.contains(p) { ports.append(p) }
        }
        return try JSONSerialization.data(withJSONObject: ports.map { ["127.0.0.1:\($0)"] })
    }

    /// `environment` for one of `processes` processes sharing this machine's cores: the kernels' pool and OpenBLAS
    /// get an equal share of the cores each (at least one), unless the environment already sets them. Without it
    /// every process would start a thread per core and they would contend (measured: 38% scaling on 2 cores, 95%
    /// with one thread each).
    public static func sharedCoreEnvironment(processes: Int, cores: Int = ProcessInfo.processInfo.activeProcessorCount,
                                             base environment: [String: String]) -> [String: String] {
        var env = environment
        let share = "\(Swift.max(1, cores / Swift.max(1, processes)))"
        for key in ["MLXS_KERNEL_THREADS", "OPENBLAS_NUM_THREADS"] where env[key] == nil { env[key] = share }
        return env
    }

    static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(message: "no socket for a free port (errno \(errno))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw Failure(message: "no free port on 127.0.0.1 (errno \(errno))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
