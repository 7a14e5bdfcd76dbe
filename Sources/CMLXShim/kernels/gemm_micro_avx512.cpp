// The AVX-512 microkernel of the blocked GEMM on packed float32 panels (gemm_bf16.cpp): a 12 x 32 block of y in 24
// of the 32 zmm registers, each inner position two aligned panel loads and one broadcast of x per row against them
// (24 FMAs of 16 lanes per 14 loads; the AVX2 kernel's 6 x 16 does 12 FMAs of 8 lanes per 8 loads). x is read in
// place: packing it into one stream per 12 rows, once per call, measured the same (model shapes, one process).
// Columns past the panel's last output are masked, not copied through a tile.
#include <immintrin.h>

#include <cstddef>

#include "cpu_kernels.h"

// Runs only where cpu_path() is avx512 or above (gemm_bf16.cpp checks).
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))), apply_to = function)

namespace mlxkernels {
namespace {

constexpr int NR = 32;

template <int R>
inline void micro(const float* x, size_t ldx, const float* panel, int kc, float* y, size_t ldy, bool accumulate, int cols) {
  __m512 c0[R], c1[R];
  for (int r = 0; r < R; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
  // y's block is read or written at the end: its lines asked for now arrive during the products.
  for (int r = 0; r < R; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(y + r * ldy), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(y + r * ldy + 16), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(y + r * ldy + NR - 1), _MM_HINT_T0);
  }
  for (int t = 0; t < kc; ++t) {
    const __m512 b0 = _mm512_load_ps(panel + t * NR), b1 = _mm512_load_ps(panel + t * NR + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * ldx + t]);
      c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
    }
  }
  const __mmask16 low = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
  const __mmask16 high = cols >= NR ? __mmask16(0xFFFF) : cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : __mmask16(0);
  for (int r = 0; r < R; ++r) {
    float* yr = y + r * ldy;
    if (accumulate) {
      c0[r] = _mm512_add_ps(c0[r], _mm512_maskz_loadu_ps(low, yr));
      c1[r] = _mm512_add_ps(c1[r], _mm512_maskz_loadu_ps(high, yr + 16));
    }
    _mm512_mask_storeu_ps(yr, low, c0[r]);
    _mm512_mask_storeu_ps(yr + 16, high, c1[r]);
  }
}

}  // namespace

void micro_f32_avx512(int rows, const float* x, size_t ldx, const float* panel, int kc, float* y, size_t ldy,
                      bool accumulate, int cols) {
  switch (rows) {
    case 12: micro<12>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 11: micro<11>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 10: micro<10>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 9: micro<9>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 8: micro<8>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 7: micro<7>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 6: micro<6>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 5: micro<5>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 4: micro<4>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 3: micro<3>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 2: micro<2>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    default: micro<1>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
  }
}

}  // namespace mlxkernels

#pragma clang attribute pop
