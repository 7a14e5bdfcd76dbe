// Machine reference figures (sgemm peak, memory read bandwidth) measured directly, for the benchmarks'
// "fraction of the machine" columns.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "mlxshim.h"

extern "C" void cblas_sgemm(int order, int transA, int transB, int M, int N, int K, float alpha, const float* A,
                            int lda, const float* B, int ldb, float beta, float* C, int ldc);

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

extern "C" char* openblas_get_corename(void);

extern "C" const char* mlxs_blas_core_name(void) { return openblas_get_corename(); }

extern "C" double mlxs_bench_sgemm_peak(int n, int repeats) {
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n, 0.0f);
  double best = 0;
  for (int r = 0; r < repeats + 1; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(101 /* row major */, 111 /* no trans */, 111, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    double s = seconds_since(t0);
    if (r > 0) best = std::max(best, 2.0 * n * double(n) * n / s / 1e9);  // first run warms up
  }
  return best;
}

extern "C" double mlxs_bench_read_bandwidth(size_t bytes, int repeats) {
  size_t count = bytes / sizeof(float);
  std::vector<float> data(count, 1.0f);
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  double best = 0;
  std::vector<float> sums(threads);
  for (int r = 0; r < repeats + 1; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        size_t lo = count * t / threads, hi = count * (t + 1) / threads;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
        size_t i = lo;
        for (; i + 32 <= hi; i += 32) {
          acc0 = _mm256_add_ps(acc0, _mm256_loadu_ps(&data[i]));
          acc1 = _mm256_add_ps(acc1, _mm256_loadu_ps(&data[i + 8]));
          acc2 = _mm256_add_ps(acc2, _mm256_loadu_ps(&data[i + 16]));
          acc3 = _mm256_add_ps(acc3, _mm256_loadu_ps(&data[i + 24]));
        }
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
        float s = 0;
        for (float v : lanes) s += v;
        for (; i < hi; ++i) s += data[i];
        sums[t] = s;
      });
    }
    for (auto& th : pool) th.join();
    double s = seconds_since(t0);
    if (r > 0) best = std::max(best, double(bytes) / s / 1e9);
  }
  volatile float sink = sums[0];
  (void)sink;
  return best;
}
