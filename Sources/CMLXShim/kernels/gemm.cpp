// Row-major sgemm for the shim's kernels. Large products go to OpenBLAS with its own threads. Smaller ones (the
// tiny demo's training shapes: thousands of rows by 128-533 columns) run faster as one single-threaded OpenBLAS
// call per core on a share of the rows (or columns): OpenBLAS's own split of such shapes leaves one thread
// packing and waiting (measured here 80-140 GFLOP/s against 150-175 split by rows; products above about
// 1 GFLOP lose 3-6% that way, so they keep OpenBLAS's threads).
#include <atomic>
#include <algorithm>
#include <cstdlib>

#include "cpu_kernels.h"
#include "pool.h"

extern "C" void cblas_sgemm(int order, int transA, int transB, int M, int N, int K, float alpha, const float* A, int lda,
                            const float* B, int ldb, float beta, float* C, int ldc);
extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);

namespace mlxkernels {
namespace {
// MLXS_GEMM_SPLIT_LIMIT (flops) overrides the default, e.g. 0 to leave every product to OpenBLAS's threads.
double initial_split_limit() {
  const char* env = std::getenv("MLXS_GEMM_SPLIT_LIMIT");
  return env ? std::atof(env) : 1e9;
}
}  // namespace

std::atomic<double> gemm_split_limit{initial_split_limit()};

void sgemm(bool trans_a, bool trans_b, int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
           int ldc, float beta) {
  const int ta = trans_a ? 112 : 111, tb = trans_b ? 112 : 111;
  const double flops = 2.0 * m * n * k;
  const int parts = pool_threads();
  // Shares under 32 rows (or columns), or work too small to cover a hand-off, gain nothing from a split. Called
  // where the pool cannot run in parallel (inside a pool task), the shares run one after the other: still right.
  const bool by_rows = m >= n;
  const int extent = by_rows ? m : n;
  if (parts < 2 || flops > gemm_split_limit.load(std::memory_order_relaxed) || flops < 4e6 || extent < 32 * parts) {
    cblas_sgemm(101, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Single-threaded calls for the duration; every BLAS call runs on MLX's one CPU stream thread, so nothing else
  // sees the setting.
  const int saved = openblas_get_num_threads();
  openblas_set_num_threads(1);
  const int share = (extent + parts - 1) / parts;
  const int step = (share + 15) / 16 * 16;
  parallel_for(parts, [&](int p) {
    const int lo = p * step, hi = std::min(extent, lo + step);
    if (lo >= hi) return;
    if (by_rows) {
      const float* ap = trans_a ? a + lo : a + size_t(lo) * lda;
      cblas_sgemm(101, ta, tb, hi - lo, n, k, 1.0f, ap, lda, b, ldb, beta, c + size_t(lo) * ldc, ldc);
    } else {
      const float* bp = trans_b ? b + size_t(lo) * ldb : b + lo;
      cblas_sgemm(101, ta, tb, m, hi - lo, k, 1.0f, a, lda, bp, ldb, beta, c + lo, ldc);
    }
  });
  openblas_set_num_threads(saved);
}

}  // namespace mlxkernels
