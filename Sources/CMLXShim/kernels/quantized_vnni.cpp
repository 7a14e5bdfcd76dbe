// Few-row products with int8 weights on AVX-512 VNNI: the activations are rounded to int8 too, one scale per group
// of the weights' group size, and `vpdpbusd` multiplies 64 weight bytes by 64 activation bytes per instruction
// into int32 sums. Widening every weight to float32 (quantized.cpp) costs three instructions per 8 weights and
// left decoding at about half the host's read bandwidth; here a group of 64 weights costs two integer dot
// products, one conversion and one FMA per row of x.
//
// vpdpbusd multiplies unsigned by signed bytes, so an activation q in [-127, 127] is stored as q + 128 and each
// group's sum is corrected by 128 times the sum of its weights (a second vpdpbusd of the weights with 128s).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>

#include "cpu_kernels.h"
#include "pool.h"

namespace mlxkernels {

namespace {
int initial_vnni_setting() {
  const char* env = std::getenv("MLXS_INT8_VNNI");
  return env && std::atoi(env) == 0 ? 0 : 1;
}
}  // namespace

std::atomic<int> q8_vnni_enabled{initial_vnni_setting()};

bool q8_quantizes_activations() {
  return q8_vnni_enabled.load(std::memory_order_relaxed) && cpu_path() >= CpuPath::avx512 && cpu_features().avx512_vnni;
}

bool q8_vnni_usable(int k, int group) { return q8_quantizes_activations() && group % 64 == 0 && group > 0 && k % group == 0; }

// Runs only where q8_vnni_usable() holds (AVX-512 F/BW/VL and VNNI).
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), apply_to = function)

void quantize_rows_q8(const float* x, int rows, int k, int group, QuantizedRows& out) {
  out.rows = rows;
  out.k = k;
  out.group = group;
  const int groups = k / group;
  out.bytes.resize(size_t(rows) * k);
  out.scales.resize(size_t(rows) * groups);
  for (int r = 0; r < rows; ++r) {
    for (int g = 0; g < groups; ++g) {
      const float* src = x + size_t(r) * k + size_t(g) * group;
      // probe turns NaN where an input is infinite or NaN (x * 0), which max() alone could drop.
      __m512 peak = _mm512_setzero_ps(), probe = _mm512_setzero_ps();
      for (int i = 0; i < group; i += 16) {
        const __m512 v = _mm512_loadu_ps(src + i);
        peak = _mm512_max_ps(peak, _mm512_abs_ps(v));
        probe = _mm512_add_ps(probe, _mm512_mul_ps(v, _mm512_setzero_ps()));
      }
      const float amax = _mm512_reduce_max_ps(peak);
      // A group of zeros gives zeros; a group holding inf or NaN gives NaN sums (its scale is NaN), as float32 would.
      const bool finite = !std::isnan(_mm512_reduce_add_ps(probe));
      out.scales[size_t(r) * groups + g] = !finite ? NAN : amax > 0 ? amax / 127.0f : 0.0f;
      const __m512 inverse = _mm512_set1_ps(finite && amax > 0 ? 127.0f / amax : 0.0f);
      uint8_t* dst = out.bytes.data() + size_t(r) * k + size_t(g) * group;
      for (int i = 0; i < group; i += 16) {
        // Round to nearest even (the default rounding mode), clamp to [-127, 127], offset by 128.
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(src + i), inverse));
        q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm512_cvtepi32_epi8(_mm512_add_epi32(q, _mm512_set1_epi32(128))));
      }
    }
  }
}

namespace {

// RW weight rows against RX rows of x; y[r * ldy + j] for r < RX, j < RW. prefetch (nullable): the next tile's weights.
template <int RW, int RX>
void tile(const QuantizedRows& x, int r0, const int8_t* w, const float* s, float* y, int ldy, const int8_t* prefetch) {
  const int k = x.k, group = x.group, groups = k / group;
  const __m512i offsets = _mm512_set1_epi8(char(-128));  // 128 as an unsigned byte
  __m512 total[RX][RW];
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) total[r][j] = _mm512_setzero_ps();
  for (int g = 0; g < groups; ++g) {
    __m512i sums[RX][RW], corrections[RW];
    for (int j = 0; j < RW; ++j) {
      corrections[j] = _mm512_setzero_si512();
      for (int r = 0; r < RX; ++r) sums[r][j] = _mm512_setzero_si512();
    }
    const int base = g * group;
    for (int i = base; i < base + group; i += 64) {
      if (prefetch)
        for (int j = 0; j < RW; ++j) _mm_prefetch(reinterpret_cast<const char*>(prefetch + size_t(j) * k + i), _MM_HINT_T0);
      __m512i xs[RX];
      for (int r = 0; r < RX; ++r) xs[r] = _mm512_loadu_si512(x.bytes.data() + size_t(r0 + r) * k + i);
      for (int j = 0; j < RW; ++j) {
        const __m512i wv = _mm512_loadu_si512(w + size_t(j) * k + i);
        corrections[j] = _mm512_dpbusd_epi32(corrections[j], offsets, wv);
        for (int r = 0; r < RX; ++r) sums[r][j] = _mm512_dpbusd_epi32(sums[r][j], xs[r], wv);
      }
    }
    for (int j = 0; j < RW; ++j) {
      const float ws = s[size_t(j) * groups + g];
      for (int r = 0; r < RX; ++r) {
        const __m512 scale = _mm512_set1_ps(ws * x.scales[size_t(r0 + r) * groups + g]);
        const __m512 exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums[r][j], corrections[j]));
        total[r][j] = _mm512_fmadd_ps(exact, scale, total[r][j]);
      }
    }
  }
  for (int r = 0; r < RX; ++r)
    for (int j = 0; j < RW; ++j) y[size_t(r) * ldy + j] = _mm512_reduce_add_ps(total[r][j]);
}

// One weight row after another against RX <= 4 rows of x, each row read front to back: the hardware prefetchers
// follow one sequential stream (4-row tiles, four interleaved 2 KB streams, read 21 GB/s from DRAM on a Zen 4 host
// where this reads 30, of 34). Pairs of groups keep two FMA chains per row in flight.
// The exact int32 sum of one group of weights against RX rows of x, each of those times its two scales added to acc.
template <int RX>
inline void group_products(const QuantizedRows& x, int r0, const int8_t* wj, float ws, int g, __m512* acc) {
  const int k = x.k, group = x.group, groups = k / group;
  const __m512i offsets = _mm512_set1_epi8(char(-128));  // 128 as an unsigned byte
  __m512i sums[RX], correction = _mm512_setzero_si512();
  for (int r = 0; r < RX; ++r) sums[r] = _mm512_setzero_si512();
  for (int at = g * group; at < (g + 1) * group; at += 64) {
    const __m512i wv = _mm512_loadu_si512(wj + at);
    correction = _mm512_dpbusd_epi32(correction, offsets, wv);
    for (int r = 0; r < RX; ++r) sums[r] = _mm512_dpbusd_epi32(sums[r], _mm512_loadu_si512(x.bytes.data() + size_t(r0 + r) * k + at), wv);
  }
  for (int r = 0; r < RX; ++r) {
    const __m512 scale = _mm512_set1_ps(ws * x.scales[size_t(r0 + r) * groups + g]);
    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sums[r], correction)), scale, acc[r]);
  }
}

// One weight row after another against RX <= 4 rows of x, each row read front to back: the hardware prefetchers
// follow one sequential stream (4-row tiles, four interleaved 2 KB streams, read 21 GB/s from DRAM on a Zen 4 host
// where this reads about 30, of 34). Even and odd groups keep two FMA chains per row in flight.
template <int RX>
void rows_sequential(const QuantizedRows& x, const int8_t* w, const float* s, float* y, int ldy, int j0, int j1) {
  const int k = x.k, groups = k / x.group;
  for (int j = j0; j < j1; ++j) {
    const int8_t* wj = w + size_t(j) * k;
    const float* sj = s + size_t(j) * groups;
    __m512 even[RX], odd[RX];
    for (int r = 0; r < RX; ++r) even[r] = odd[r] = _mm512_setzero_ps();
    int g = 0;
    for (; g + 2 <= groups; g += 2) {
      group_products<RX>(x, 0, wj, sj[g], g, even);
      group_products<RX>(x, 0, wj, sj[g + 1], g + 1, odd);
    }
    if (g < groups) group_products<RX>(x, 0, wj, sj[g], g, even);
    for (int r = 0; r < RX; ++r) y[size_t(r) * ldy + j] = _mm512_reduce_add_ps(_mm512_add_ps(even[r], odd[r]));
  }
}

}  // namespace

void linear_block_q8_vnni(const QuantizedRows& x, const int8_t* w, const float* scales, float* y, int n, int j0, int j1) {
  const int k = x.k, m = x.rows, groups = k / x.group;
  switch (m) {
    case 1: return rows_sequential<1>(x, w, scales, y, n, j0, j1);
    case 2: return rows_sequential<2>(x, w, scales, y, n, j0, j1);
    case 3: return rows_sequential<3>(x, w, scales, y, n, j0, j1);
    case 4: return rows_sequential<4>(x, w, scales, y, n, j0, j1);
    default: break;
  }
  // More rows: 4-row weight tiles, reused from L1 by every pair of x rows.
  int j = j0;
  for (; j + 4 <= j1; j += 4) {
    const int8_t* next = j + 8 <= n ? w + size_t(j + 4) * k : nullptr;
    const int8_t* wj = w + size_t(j) * k;
    const float* sj = scales + size_t(j) * groups;
    int r = 0;
    for (; r + 2 <= m; r += 2, next = nullptr) tile<4, 2>(x, r, wj, sj, y + size_t(r) * n + j, n, next);
    if (r < m) tile<4, 1>(x, r, wj, sj, y + size_t(r) * n + j, n, next);
  }
  for (; j < j1; ++j)
    for (int r = 0; r < m; ++r) tile<1, 1>(x, r, w + size_t(j) * k, scales + size_t(j) * groups, y + size_t(r) * n + j, n, nullptr);
}

#pragma clang attribute pop

}  // namespace mlxkernels
