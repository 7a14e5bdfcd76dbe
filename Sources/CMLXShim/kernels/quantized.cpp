// y = x @ w^T with int8 weights and one float32 scale per group of `group` consecutive inputs of a weight row
// (w[j, t] = q[j, t] * scales[j, t / group]). Decode reads a quarter of the float32 bytes; each group's products
// are summed in float32, then scaled into the row's total.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "cpu_kernels.h"
#include "pool.h"
#include "simd.h"

namespace mlxkernels {
namespace {

// Sixteen int8 weights as two float vectors (elements 0-7, 8-15).
inline void load16(const int8_t* p, __m256& a, __m256& b) {
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
  b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(v, v)));
}

// RW weight rows against RX rows of x; group a multiple of 16 dividing k.
template <int RW, int RX>
void tile(const float* x, int k, const int8_t* w, const float* s, int group, float* y, int ldy, const int8_t* prefetch) {
  __m256 total[RX][RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) total[r][j] = _mm256_setzero_ps();
  const int groups = k / group;
  for (int g = 0; g < groups; ++g) {
    __m256 part[RX][RW];
    for (int r = 0; r < RX; ++r)
      for (int j = 0; j < RW; ++j) part[r][j] = _mm256_setzero_ps();
    const int base = g * group;
    if (prefetch) {
      for (int j = 0; j < RW; ++j)
        for (int b = 0; b < group; b += 64) _mm_prefetch(reinterpret_cast<const char*>(prefetch + size_t(j) * k + base + b), _MM_HINT_T0);
    }
    for (int i = base; i < base + group; i += 16) {
      __m256 xa[RX], xb[RX];
      for (int r = 0; r < RX; ++r) {
        xa[r] = _mm256_loadu_ps(x + size_t(r) * k + i);
        xb[r] = _mm256_loadu_ps(x + size_t(r) * k + i + 8);
      }
      for (int j = 0; j < RW; ++j) {
        __m256 a, b;
        load16(w + size_t(j) * k + i, a, b);
        for (int r = 0; r < RX; ++r) {
          part[r][j] = _mm256_fmadd_ps(a, xa[r], part[r][j]);
          part[r][j] = _mm256_fmadd_ps(b, xb[r], part[r][j]);
        }
      }
    }
    for (int j = 0; j < RW; ++j) {
      const __m256 scale = _mm256_set1_ps(s[size_t(j) * groups + g]);
      for (int r = 0; r < RX; ++r) total[r][j] = _mm256_fmadd_ps(part[r][j], scale, total[r][j]);
    }
  }
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) y[size_t(r) * ldy + j] = hsum(total[r][j]);
}

// One weight row after another against RX <= 4 rows of x, each read front to back as one stream for the hardware
// prefetchers (the 4-row tiles below interleave four 2 KB streams: 20-23 GB/s from DRAM on a Zen 4 host where this
// reads 26-29, of 34). Four FMA chains per row of x (32 weights a step).
template <int RX>
void rows_sequential(const float* x, int k, const int8_t* w, const float* s, int group, float* y, int ldy, int j0, int j1) {
  const int groups = k / group;
  for (int j = j0; j < j1; ++j) {
    const int8_t* wj = w + size_t(j) * k;
    __m256 total[RX];
    for (int r = 0; r < RX; ++r) total[r] = _mm256_setzero_ps();
    for (int g = 0; g < groups; ++g) {
      __m256 part[RX][4];
      for (int r = 0; r < RX; ++r) part[r][0] = part[r][1] = part[r][2] = part[r][3] = _mm256_setzero_ps();
      const int end = (g + 1) * group;
      int i = g * group;
      for (; i + 32 <= end; i += 32) {
        __m256 a0, b0, a1, b1;
        load16(wj + i, a0, b0);
        load16(wj + i + 16, a1, b1);
        for (int r = 0; r < RX; ++r) {
          const float* xr = x + size_t(r) * k + i;
          part[r][0] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(xr), part[r][0]);
          part[r][1] = _mm256_fmadd_ps(b0, _mm256_loadu_ps(xr + 8), part[r][1]);
          part[r][2] = _mm256_fmadd_ps(a1, _mm256_loadu_ps(xr + 16), part[r][2]);
          part[r][3] = _mm256_fmadd_ps(b1, _mm256_loadu_ps(xr + 24), part[r][3]);
        }
      }
      if (i < end) {  // groups of 16 (or an odd multiple of it)
        __m256 a, b;
        load16(wj + i, a, b);
        for (int r = 0; r < RX; ++r) {
          part[r][0] = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + size_t(r) * k + i), part[r][0]);
          part[r][1] = _mm256_fmadd_ps(b, _mm256_loadu_ps(x + size_t(r) * k + i + 8), part[r][1]);
        }
      }
      const __m256 scale = _mm256_set1_ps(s[size_t(j) * groups + g]);
      for (int r = 0; r < RX; ++r) {
        const __m256 sum = _mm256_add_ps(_mm256_add_ps(part[r][0], part[r][1]), _mm256_add_ps(part[r][2], part[r][3]));
        total[r] = _mm256_fmadd_ps(sum, scale, total[r]);
      }
    }
    for (int r = 0; r < RX; ++r) y[size_t(r) * ldy + j] = hsum(total[r]);
  }
}

void rows_block(const float* x, const int8_t* w, const float* s, float* y, int m, int n, int k, int group, int j0, int j1) {
  switch (m) {
    case 1: return rows_sequential<1>(x, k, w, s, group, y, n, j0, j1);
    case 2: return rows_sequential<2>(x, k, w, s, group, y, n, j0, j1);
    case 3: return rows_sequential<3>(x, k, w, s, group, y, n, j0, j1);
    case 4: return rows_sequential<4>(x, k, w, s, group, y, n, j0, j1);
    default: break;
  }
  // More rows: 4-row weight tiles, reused from L1 by every pair of x rows.
  const int groups = k / group;
  int j = j0;
  for (; j + 4 <= j1; j += 4) {
    const int8_t* next = j + 8 <= n ? w + size_t(j + 4) * k : nullptr;
    const int8_t* wj = w + size_t(j) * k;
    const float* sj = s + size_t(j) * groups;
    int r = 0;
    for (; r + 2 <= m; r += 2, next = nullptr) tile<4, 2>(x + size_t(r) * k, k, wj, sj, group, y + size_t(r) * n + j, n, next);
    if (r < m) tile<4, 1>(x + size_t(r) * k, k, wj, sj, group, y + size_t(r) * n + j, n, next);
  }
  for (; j < j1; ++j)
    for (int r = 0; r < m; ++r) tile<1, 1>(x + size_t(r) * k, k, w + size_t(j) * k, s + size_t(j) * groups, group, y + size_t(r) * n + j, n, nullptr);
}

}  // namespace

void linear_block_q8(const float* x, const int8_t* w, const float* scales, float* y, int m, int n, int k, int group, int j0,
                     int j1) {
  rows_block(x, w, scales, y, m, n, k, group, j0, j1);
}

int linear_q8_rows_limit(int k) { return std::max(1, std::min(32, int((size_t(128) << 10) / size_t(std::max(k, 1))))); }

void linear_rows_q8(const float* x, const int8_t* w, const float* scales, float* y, int m, int n, int k, int group) {
  const int threads = pool_threads();
  int block = std::max(8, std::min(256, (n / (threads * 8) + 7) & ~7));
  const int tasks = (n + block - 1) / block;
  if (q8_vnni_usable(k, group)) {
    thread_local QuantizedRows quantized;
    quantize_rows_q8(x, m, k, group, quantized);
    const QuantizedRows& xq = quantized;
    parallel_for(tasks, [&](int t) {
      const int j0 = t * block, j1 = std::min(n, j0 + block);
      linear_block_q8_vnni(xq, w, scales, y, n, j0, j1);
    });
    return;
  }
  parallel_for(tasks, [&](int t) {
    const int j0 = t * block, j1 = std::min(n, j0 + block);
    rows_block(x, w, scales, y, m, n, k, group, j0, j1);
  });
}

void linear_gemm_q8(const float* x, const int8_t* w, const float* scales, float* y, int m, int n, int k, int group) {
  if (q8_gemm_rounds_to_bf16()) {
    gemm_q8_avx512_bf16(x, w, scales, group, y, m, n, k, cpu_path() >= CpuPath::amx);
    return;
  }
  if (bf16_gemm_enabled.load(std::memory_order_relaxed)) {
    ProfileScope scope("FastLinearQ8.gemm");
    gemm_q8(x, w, scales, y, m, n, k, group);
    return;
  }
  // Blocks of about 16 MB of float32 weights, dequantised on both cores, then one sgemm per block.
  const int block = std::max(64, std::min(n, (4 << 20) / std::max(k, 1)));
  thread_local std::vector<float> buffer;
  if (buffer.size() < size_t(std::min(block, n)) * k) buffer.resize(size_t(std::min(block, n)) * k);
  float* converted = buffer.data();
  const int groups = k / group;
  for (int j0 = 0; j0 < n; j0 += block) {
    const int rows = std::min(block, n - j0);
    parallel_for(rows, [&](int r) {
      const int8_t* src = w + size_t(j0 + r) * k;
      const float* sc = scales + size_t(j0 + r) * groups;
      float* dst = converted + size_t(r) * k;
      for (int g = 0; g < groups; ++g) {
        const __m256 scale = _mm256_set1_ps(sc[g]);
        for (int i = g * group; i < (g + 1) * group; i += 16) {
          __m256 a, b;
          load16(src + i, a, b);
          _mm256_storeu_ps(dst + i, _mm256_mul_ps(a, scale));
          _mm256_storeu_ps(dst + i + 8, _mm256_mul_ps(b, scale));
        }
      }
    });
    sgemm(false, true, m, rows, k, x, k, converted, k, y + j0, n);
  }
}

}  // namespace mlxkernels
