// Projection rows to attention heads in one pass: x (B, L, H * D) -> (B, H, P + L, D), each head vector rotated by
// rotate-half RoPE from precomputed tables, after P positions copied from a prefix (a shared prompt's cached keys
// or values). MLX would do this as a transpose copy, the rotary products and a concatenation, each a pass of its
// own on one core.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu_kernels.h"
#include "pool.h"

namespace mlxkernels {
namespace {

constexpr int TOKENS_PER_TASK = 32;

// dst[t] = src[t] cos[t] + rot[t] sin[t], rot = (-src[half:], src[:half]): the reference's products and sum,
// rounded as it rounds them (no fused multiply-add). d is even.
void rotate_half(const float* src, const float* cos, const float* sin, float* dst, int d) {
  const int half = d / 2;
  int t = 0;
  if (half % 8 == 0) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (; t < half; t += 8) {
      const __m256 a = _mm256_loadu_ps(src + t), b = _mm256_loadu_ps(src + half + t);
      _mm256_storeu_ps(dst + t, _mm256_add_ps(_mm256_mul_ps(a, _mm256_loadu_ps(cos + t)),
                                              _mm256_mul_ps(_mm256_xor_ps(b, sign), _mm256_loadu_ps(sin + t))));
      _mm256_storeu_ps(dst + half + t, _mm256_add_ps(_mm256_mul_ps(b, _mm256_loadu_ps(cos + half + t)),
                                                     _mm256_mul_ps(a, _mm256_loadu_ps(sin + half + t))));
    }
    return;
  }
  for (; t < half; ++t) {
    const float a = src[t], b = src[half + t];
    const float ra = a * cos[t], sa = -b * sin[t];
    const float rb = b * cos[half + t], sb = a * sin[half + t];
    dst[t] = ra + sa;
    dst[half + t] = rb + sb;
  }
}

}  // namespace

void split_heads(const HeadsArgs& a) {
  const int b = a.b, l = a.l, h = a.h, d = a.d, p = a.p;
  const int chunks = (l + TOKENS_PER_TASK - 1) / TOKENS_PER_TASK;
  const size_t plane = size_t(p + l) * d;
  // Tasks: per batch row, one for the prefix (when there is one) and one per chunk of tokens.
  const int per_row = chunks + (p > 0 ? 1 : 0);
  parallel_for(b * per_row, [&](int task) {
    const int n = task / per_row, part = task % per_row;
    float* out = a.out + size_t(n) * h * plane;
    if (p > 0 && part == chunks) {
      const float* src = a.prefix + size_t(n % a.prefix_rows) * a.prefix_strides[0];
      const size_t* st = a.prefix_strides;
      for (int head = 0; head < h; ++head)
        for (int j = 0; j < p; ++j) {
          float* dst = out + head * plane + size_t(j) * d;
          const float* row = src + head * st[1] + j * st[2];
          if (st[3] == 1) std::memcpy(dst, row, sizeof(float) * d);
          else for (int t = 0; t < d; ++t) dst[t] = row[t * st[3]];
        }
      return;
    }
    const int i0 = part * TOKENS_PER_TASK, i1 = std::min(l, i0 + TOKENS_PER_TASK);
    const size_t table_row = size_t(n % std::max(a.table_rows, 1)) * l * d;
    for (int i = i0; i < i1; ++i) {
      const float* row = a.x + (size_t(n) * l + i) * h * d;
      for (int head = 0; head < h; ++head) {
        float* dst = out + head * plane + size_t(p + i) * d;
        if (a.cos) rotate_half(row + size_t(head) * d, a.cos + table_row + size_t(i) * d, a.sin + table_row + size_t(i) * d, dst, d);
        else std::memcpy(dst, row + size_t(head) * d, sizeof(float) * d);
      }
    }
  });
}

}  // namespace mlxkernels
