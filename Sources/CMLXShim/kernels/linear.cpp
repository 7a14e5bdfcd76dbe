// y = x @ w^T for few rows of x: memory bound on the weights, so every weight row is read once, converted in
// registers (bf16 -> f32 is a 16-bit shift) and dotted with all rows of x; weight rows split across cores.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu_kernels.h"
#include "pool.h"
#include "simd.h"

namespace mlxkernels {

// A software prefetch 4 KB ahead read weights 15% faster from DRAM on a Zen 2 host (AVX2 only); on a Zen 4 host
// (AVX-512) it made decoding 25-30% slower than the hardware prefetchers alone (in-process A/B, bench understand
// --compare-prefetch). MLXS_MATVEC_PREFETCH (bytes) overrides the choice.
int initial_matvec_prefetch() {
  if (const char* env = std::getenv("MLXS_MATVEC_PREFETCH")) return std::max(0, std::atoi(env));
  return __builtin_cpu_supports("avx512f") ? 0 : 4096;
}
std::atomic<int> matvec_prefetch_bytes{initial_matvec_prefetch()};

namespace {

inline float to_f32(float v) { return v; }
inline float to_f32(uint16_t v) { return bf16_to_f32(v); }

// Sixteen weights as two float vectors. float32: elements 0-7 and 8-15. bfloat16: one 32-byte load holds pairs
// (2t, 2t+1) in each 32-bit lane, so a left shift gives the even elements and a mask the odd ones; x is stored
// in the same even/odd order (see prepare_x_bf16).
inline void load16(const float* p, __m256& a, __m256& b) {
  a = _mm256_loadu_ps(p);
  b = _mm256_loadu_ps(p + 8);
}
inline void load16(const uint16_t* p, __m256& a, __m256& b) {
  __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  a = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  b = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xFFFF0000u))));
}

// y[r * ldy + j] = dot(x row r, w row j) for r < RX, j < RW. x rows and w rows have length k (stride k).
// prefetch (nullable): the next RW * k weights, pulled into cache one slice per step so that the weights stream
// from memory as one sequential run (the hardware prefetchers alone keep too few lines in flight for DRAM).
template <int RW, int RX, typename W>
inline void tile(const float* x, int k, const W* w, float* y, int ldy, const W* prefetch = nullptr) {
  constexpr int slice = RW * 16 * int(sizeof(W));  // bytes of the next tile per step of 16
  __m256 acc[RX][RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) acc[r][j] = _mm256_setzero_ps();
  const int k16 = k & ~15;
  for (int i = 0; i < k16; i += 16) {
    if (prefetch) {
      const char* p = reinterpret_cast<const char*>(prefetch) + size_t(i / 16) * slice;
      for (int b = 0; b < slice; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
    }
    __m256 xa[RX], xb[RX];
    for (int r = 0; r < RX; ++r) {
      xa[r] = _mm256_loadu_ps(x + size_t(r) * k + i);
      xb[r] = _mm256_loadu_ps(x + size_t(r) * k + i + 8);
    }
    for (int j = 0; j < RW; ++j) {
      __m256 a, b;
      load16(w + size_t(j) * k + i, a, b);
      for (int r = 0; r < RX; ++r) {
        acc[r][j] = _mm256_fmadd_ps(a, xa[r], acc[r][j]);
        acc[r][j] = _mm256_fmadd_ps(b, xb[r], acc[r][j]);
      }
    }
  }
  for (int r = 0; r < RX; ++r) {
    for (int j = 0; j < RW; ++j) {
      float s = hsum(acc[r][j]);
      for (int i = k16; i < k; ++i) s += to_f32(w[size_t(j) * k + i]) * x[size_t(r) * k + i];
      y[size_t(r) * ldy + j] = s;
    }
  }
}

// One row of x against weight rows [j0, j1), each row read front to back as one sequential stream (eight
// independent accumulators hide the FMA latency) with a software prefetch a few KB ahead: measured 15% faster
// from DRAM than interleaving the rows of a tile.
template <typename W>
void single_row_block(const float* x, const W* w, float* y, int k, int j0, int j1) {
  const int ahead = matvec_prefetch_bytes.load(std::memory_order_relaxed);  // bytes; runs on into the next row
  const int k64 = k & ~63, k16 = k & ~15;
  for (int j = j0; j < j1; ++j) {
    const W* row = w + size_t(j) * k;
    __m256 acc[8];
    for (auto& a : acc) a = _mm256_setzero_ps();
    for (int i = 0; i < k64; i += 64) {
      if (ahead > 0) {
        const char* p = reinterpret_cast<const char*>(row + i) + ahead;
        for (int b = 0; b < 64 * int(sizeof(W)); b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
      }
      for (int g = 0; g < 4; ++g) {
        __m256 a, b;
        load16(row + i + 16 * g, a, b);
        acc[2 * g] = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i + 16 * g), acc[2 * g]);
        acc[2 * g + 1] = _mm256_fmadd_ps(b, _mm256_loadu_ps(x + i + 16 * g + 8), acc[2 * g + 1]);
      }
    }
    for (int i = k64; i < k16; i += 16) {
      __m256 a, b;
      load16(row + i, a, b);
      acc[0] = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), acc[0]);
      acc[1] = _mm256_fmadd_ps(b, _mm256_loadu_ps(x + i + 8), acc[1]);
    }
    for (int t = 0; t < 4; ++t) acc[t] = _mm256_add_ps(acc[t], acc[t + 4]);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (int i = k16; i < k; ++i) s += to_f32(row[i]) * x[i];
    y[j] = s;
  }
}

// Rows [j0, j1) of the output for all m (> 1) rows of x.
template <typename W>
void rows_block(const float* x, const W* w, float* y, int m, int n, int k, int j0, int j1) {
  int j = j0;
  // The weights of the tile after this one (within the matrix), or nothing.
  auto next = [&](int rows) -> const W* { return j + 2 * rows <= n ? w + size_t(j + rows) * k : nullptr; };
  for (; j + 4 <= j1; j += 4) {
    int r = 0;
    const W* pf = next(4);  // only the first pass over these weights prefetches the next ones
    if constexpr (std::is_same_v<W, float>) {
      for (; r + 3 <= m; r += 3, pf = nullptr) tile<4, 3>(x + size_t(r) * k, k, w + size_t(j) * k, y + size_t(r) * n + j, n, pf);
    } else {
      for (; r + 2 <= m; r += 2, pf = nullptr) tile<4, 2>(x + size_t(r) * k, k, w + size_t(j) * k, y + size_t(r) * n + j, n, pf);
    }
    if (m - r == 2) tile<4, 2>(x + size_t(r) * k, k, w + size_t(j) * k, y + size_t(r) * n + j, n, pf);
    if (m - r == 1) tile<4, 1>(x + size_t(r) * k, k, w + size_t(j) * k, y + size_t(r) * n + j, n, pf);
  }
  for (; j < j1; ++j) {
    int r = 0;
    for (; r + 2 <= m; r += 2) tile<1, 2>(x + size_t(r) * k, k, w + size_t(j) * k, y + size_t(r) * n + j, n);
    if (r < m) tile<1, 1>(x + size_t(r) * k, k, w + size_t(j) * k, y + size_t(r) * n + j, n);
  }
}

template <typename W>
void rows_parallel(const float* x, const W* w, float* y, int m, int n, int k) {
  if (m == 1) {
    // Few large blocks keep each core's stream long; four per core still balance a core that is interrupted.
    const int threads = pool_threads();
    const int block = std::max(8, (n / (threads * 4) + 7) & ~7);
    parallel_for((n + block - 1) / block, [&](int t) {
      const int j0 = t * block;
      single_row_block(x, w, y, k, j0, std::min(n, j0 + block));
    });
    return;
  }
  // Blocks of weight rows small enough to balance the cores, large enough to amortise the hand-out.
  int threads = pool_threads();
  int block = std::max(8, std::min(256, (n / (threads * 8) + 7) & ~7));
  if (size_t(block) * k < 4096) block = std::max(block, int(4096 / std::max(k, 1)) & ~7);
  int tasks = (n + block - 1) / block;
  parallel_for(tasks, [&](int t) {
    int j0 = t * block, j1 = std::min(n, j0 + block);
    rows_block(x, w, y, m, n, k, j0, j1);
  });
}

// x rows reordered to match load16 on bfloat16 weights: within each full group of 16, even elements then odd.
// x to the nearest bfloat16 (ties to even), kept as float32; NaN stays NaN.
inline float round_to_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// Rounded to bf16 where the GEMM path rounds (so that a product's value does not depend on its row count).
void prepare_x_bf16(const float* x, float* xp, int m, int k) {
  const int k16 = k & ~15;
  const bool round = bf16_rounds_activations();
  for (int r = 0; r < m; ++r) {
    const float* src = x + size_t(r) * k;
    float* dst = xp + size_t(r) * k;
    for (int i = 0; i < k16; i += 16) {
      for (int t = 0; t < 8; ++t) {
        dst[i + t] = src[i + 2 * t];
        dst[i + 8 + t] = src[i + 2 * t + 1];
      }
    }
    for (int i = k16; i < k; ++i) dst[i] = src[i];
    if (round)
      for (int i = 0; i < k; ++i) dst[i] = round_to_bf16(dst[i]);
  }
}

}  // namespace

void prepare_rows_bf16(const float* x, float* xp, int m, int k) { prepare_x_bf16(x, xp, m, k); }

void linear_block_f32(const float* x, const float* w, float* y, int m, int n, int k, int j0, int j1) {
  if (m == 1) single_row_block(x, w, y, k, j0, j1);
  else rows_block(x, w, y, m, n, k, j0, j1);
}

void linear_block_bf16(const float* xp, const uint16_t* w, float* y, int m, int n, int k, int j0, int j1) {
  if (m == 1) single_row_block(xp, w, y, k, j0, j1);
  else rows_block(xp, w, y, m, n, k, j0, j1);
}

// The rows kernel re-reads all of x for every four weight rows, so x must stay in L2; within that it beats
// OpenBLAS (small m) and the bf16 -> f32 conversion pass up to a few dozen rows.
int linear_rows_limit(bool bf16, int k) {
  int by_cache = int((size_t(128) << 10) / size_t(std::max(k, 1)));
  // bf16: the blocked GEMM overtakes this kernel above about 32 rows (k 2048, cold weights, medians: 48 rows 130 ->
  // 142 GFLOP/s by 2048 outputs and 152 -> 171 by 5632; 20 rows 114 against 103 and 118 against 125).
  const int most = bf16 && bf16_gemm_enabled.load(std::memory_order_relaxed) ? 32 : 64;
  return std::max(1, std::min(most, by_cache));
}

void linear_rows_f32(const float* x, const float* w, float* y, int m, int n, int k) { rows_parallel(x, w, y, m, n, k); }

void linear_rows_bf16(const float* x, const uint16_t* w, float* y, int m, int n, int k) {
  thread_local std::vector<float> xp;
  if (xp.size() < size_t(m) * k) xp.resize(size_t(m) * k);
  prepare_x_bf16(x, xp.data(), m, k);
  rows_parallel(xp.data(), w, y, m, n, k);
}

bool bf16_rounds_activations() {
  return bf16_gemm_enabled.load(std::memory_order_relaxed) && cpu_path() >= CpuPath::avx512_bf16;
}

void linear_gemm_bf16(const float* x, const uint16_t* w, float* y, int m, int n, int k) {
  if (bf16_rounds_activations()) {
    gemm_bf16_avx512(x, w, y, m, n, k, cpu_path() >= CpuPath::amx);
    return;
  }
  if (bf16_gemm_enabled.load(std::memory_order_relaxed)) {
    ProfileScope scope(cpu_path() >= CpuPath::avx512 ? "FastLinear.bf16_gemm_avx512" : "FastLinear.bf16_gemm");
    gemm_bf16(x, w, y, m, n, k);
    return;
  }
  // About 16 MB of float32 weights per sgemm (OpenBLAS repacks x for every call, so blocks stay large).
  const int block = std::max(64, std::min(n, (4 << 20) / std::max(k, 1)));
  // Kept between calls: fresh pages for 16 MB cost more than the conversion itself.
  thread_local std::vector<float> buffer;
  if (buffer.size() < size_t(std::min(block, n)) * k) buffer.resize(size_t(std::min(block, n)) * k);
  float* converted = buffer.data();  // the workers below must not name the thread_local
  for (int j0 = 0; j0 < n; j0 += block) {
    int rows = std::min(block, n - j0);
    const uint16_t* src = w + size_t(j0) * k;
    size_t total = size_t(rows) * k;
    const size_t chunk = 1 << 16;
    int chunks = int((total + chunk - 1) / chunk);
    {
      ProfileScope scope("FastLinear.bf16_to_f32");
      parallel_for(chunks, [&](int c) {
        size_t lo = size_t(c) * chunk, hi = std::min(total, lo + chunk);
        size_t i = lo;
        for (; i + 8 <= hi; i += 8) {
          _mm256_storeu_ps(converted + i, load8_bf16(src + i));
        }
        for (; i < hi; ++i) converted[i] = to_f32(src[i]);
      });
    }
    ProfileScope scope("FastLinear.sgemm");
    sgemm(false, true, m, rows, k, x, k, converted, k, y + j0, n);
  }
}

}  // namespace mlxkernels
