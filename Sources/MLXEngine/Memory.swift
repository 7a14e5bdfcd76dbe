import CMLXShim

/// MLX allocator figures, in bytes.
public enum Memory {
    public static var active: Int { Int(mlxs_active_memory()) }
    public static var peak: Int { Int(mlxs_peak_memory()) }
    public static var cache: Int { Int(mlxs_cache_memory()) }
    public static func resetPeak() { mlxs_reset_peak_memory() }
    @discardableResult public static func setCacheLimit(_ bytes: Int) -> Int { Int(mlxs_set_cache_limit(bytes)) }
    public static func clearCache() { mlxs_clear_cache() }
}

/// Which shared library supplies BLAS to MLX (guarded by a test: it must be OpenBLAS).
public enum BLASInfo {
    /// The library that the process's `cblas_sgemm` resolves to.
    public static var processSgemmLibrary: String { String(cString: mlxs_symbol_origin("cblas_sgemm")) }
    /// The library libmlx's own reference to `cblas_sgemm` binds to.
    public static var mlxSgemmLibrary: String { String(cString: mlxs_mlx_sgemm_origin()) }
}
