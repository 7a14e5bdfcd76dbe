import CMLXShim
import Foundation
import Dispatch

/// MLX allocator figures, in bytes.
public enum Memory {
    /// Bytes currently held by live MLX arrays.
    public static var active: Int { Int(mlxs_active_memory()) }
    /// The most bytes held at once since the process started or `resetPeak()` was last called.
    public static var peak: Int { Int(mlxs_peak_memory()) }
    /// Bytes of freed buffers MLX keeps for reuse (not counted in `active`).
    public static var cache: Int { Int(mlxs_cache_memory()) }
    /// Restarts the `peak` figure from the memory in use now.
    public static func resetPeak() { mlxs_reset_peak_memory() }
    /// Caps MLX's buffer cache at `bytes` and returns the previous limit.
    @discardableResult public static func setCacheLimit(_ bytes: Int) -> Int { Int(mlxs_set_cache_limit(bytes)) }
    /// Releases the buffers in MLX's cache.
    public static func clearCache() { mlxs_clear_cache() }

    /// Makes the C allocator keep freed memory for reuse instead of returning large blocks to the system.
    /// MLX's CPU allocator has no cache, so without this each large activation is a fresh mapping whose pages the
    /// kernel zeroes on first touch (0.7-1.9 GB a JanusFlow-1.3B Euler step; the step ran 6-7% faster without
    /// them). The process then keeps its high-water mark of memory until it exits. Process-wide and for glibc only
    /// (false elsewhere); call it before loading a model. The `janusflow` command does, unless
    /// MLXS_KEEP_FREED_MEMORY=0.
    @discardableResult public static func keepFreedMemory() -> Bool { mlxs_keep_freed_memory() == 1 }
}

/// Which shared library supplies BLAS to MLX (guarded by a test: it must be OpenBLAS).
public enum BLASInfo {
    /// The library that the process's `cblas_sgemm` resolves to.
    public static var processSgemmLibrary: String { String(cString: mlxs_symbol_origin("cblas_sgemm")) }
    /// The library libmlx's own reference to `cblas_sgemm` binds to.
    public static var mlxSgemmLibrary: String { String(cString: mlxs_mlx_sgemm_origin()) }
    /// OpenBLAS's kernel family for this CPU ("Haswell" is AVX2; "SkylakeX"/"Cooperlake" are AVX-512), which the
    /// environment variable OPENBLAS_CORETYPE overrides.
    public static var coreName: String {
        let name = String(cString: mlxs_blas_core_name())
        guard let forced = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] else { return name }
        return "\(name) (OPENBLAS_CORETYPE=\(forced))"
    }
}

/// Reference figures of this machine, measured directly (not through MLX), for benchmark fractions.
public enum MachineFigures {
    /// Best OpenBLAS sgemm GFLOP/s on n x n x n.
    public static func sgemmPeak(n: Int = 2048, repeats: Int = 5) -> Double { mlxs_bench_sgemm_peak(Int32(n), Int32(repeats)) }
    /// Pages this process has faulted in so far without reading a file (fresh memory the kernel had to zero).
    public static var minorPageFaults: Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_minflt
    }
    /// Best GB/s reading `bytes` with all cores.
    public static func readBandwidth(bytes: Int = 1 << 30, repeats: Int = 5) -> Double {
        mlxs_bench_read_bandwidth(bytes, Int32(repeats))
    }
}

/// Wall-clock timing of tensor work: the best of `repeats` runs after one warm-up, evaluated each time.
public func bestTime(repeats: Int = 5, _ body: () -> Tensor) throws -> Double {
    var best = Double.infinity
    for r in 0...repeats {
        let start = DispatchTime.now().uptimeNanoseconds
        try body().eval()
        let s = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if r > 0 { best = Swift.min(best, s) }
    }
    return best
}
