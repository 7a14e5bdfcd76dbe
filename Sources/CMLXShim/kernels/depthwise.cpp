// Depthwise convolution (NHWC, stride 1, zero padding). One task = one image, 16 channels and a band of output
// rows: its input rows are copied into a zero-padded (rows, w + 2 pw, 16) strip that stays in cache, the taps into
// (kh, kw, 16), and each output row is computed four pixels at a time with eight accumulators (AVX2, FMA).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_kernels.h"
#include "pool.h"

namespace mlxkernels {
namespace {

constexpr int CB = 16;  // channels per task

// Output pixels [ox, ox + P) of output row oy, summed over the kernel rows [ky0, ky1) that fall inside the image.
// strip holds input rows starting at row0, each wp pixels of CB channels (zero-padded left by pw).
template <int P>
inline void pixels(const float* strip, int wp, int row0, const float* taps, int kw, int oy, int ph, int ky0, int ky1,
                   int ox, float* dst, int c_stride, int cn) {
  __m256 lo[P], hi[P];
  for (int p = 0; p < P; ++p) lo[p] = hi[p] = _mm256_setzero_ps();
  for (int ky = ky0; ky < ky1; ++ky) {
    const float* row = strip + (size_t(oy + ky - ph - row0) * wp + ox) * CB;
    const float* t = taps + size_t(ky) * kw * CB;
    for (int kx = 0; kx < kw; ++kx) {
      __m256 t0 = _mm256_loadu_ps(t + kx * CB), t1 = _mm256_loadu_ps(t + kx * CB + 8);
      const float* s = row + kx * CB;
      for (int p = 0; p < P; ++p) {
        lo[p] = _mm256_fmadd_ps(t0, _mm256_loadu_ps(s + p * CB), lo[p]);
        hi[p] = _mm256_fmadd_ps(t1, _mm256_loadu_ps(s + p * CB + 8), hi[p]);
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    float* o = dst + size_t(ox + p) * c_stride;
    if (cn == CB) {
      _mm256_storeu_ps(o, lo[p]);
      _mm256_storeu_ps(o + 8, hi[p]);
    } else {
      alignas(32) float tmp[CB];
      _mm256_store_ps(tmp, lo[p]);
      _mm256_store_ps(tmp + 8, hi[p]);
      std::memcpy(o, tmp, sizeof(float) * cn);
    }
  }
}

}  // namespace

void depthwise_conv2d(const float* x, const float* w, float* y, int b, int h, int wd, int c, int kh, int kw, int ph,
                      int pw) {
  const int oh = h + 2 * ph - kh + 1, ow = wd + 2 * pw - kw + 1;
  if (oh <= 0 || ow <= 0 || b <= 0 || c <= 0) return;
  const int wp = wd + 2 * pw;  // padded strip width: covers every x + kx for x < ow, kx < kw
  const int cblocks = (c + CB - 1) / CB;
  // Bands of output rows: enough tasks to keep every core busy, at least 4 rows per band.
  int bands = 1;
  const int threads = pool_threads();
  while (b * cblocks * bands < 4 * threads && oh / (bands * 2) >= 4) bands *= 2;
  const int band_rows = (oh + bands - 1) / bands;
  bands = (oh + band_rows - 1) / band_rows;

  parallel_for(b * cblocks * bands, [&](int task) {
    // Tasks that run at the same time (consecutive indices) get channel blocks far apart, so that the cores
    // never write to the same cache lines of the output.
    const int band = task % bands, slot = (task / bands) % cblocks, n = task / (bands * cblocks);
    const int half = (cblocks + 1) / 2;
    const int cbk = slot % 2 == 0 ? slot / 2 : half + slot / 2;
    const int c0 = cbk * CB, cn = std::min(CB, c - c0);
    const int oy0 = band * band_rows, oy1 = std::min(oh, oy0 + band_rows);
    // Input rows this band reads.
    const int row0 = std::max(0, oy0 - ph), row1 = std::min(h, oy1 - 1 - ph + kh);
    thread_local std::vector<float> strip, taps;
    const size_t strip_size = size_t(std::max(0, row1 - row0)) * wp * CB;
    if (strip.size() < strip_size) strip.resize(strip_size);
    if (taps.size() < size_t(kh) * kw * CB) taps.resize(size_t(kh) * kw * CB);
    // Taps as (kh, kw, CB); missing channels are zero.
    for (int t = 0; t < kh * kw; ++t) {
      float* dst = taps.data() + size_t(t) * CB;
      for (int ch = 0; ch < CB; ++ch) dst[ch] = ch < cn ? w[size_t(c0 + ch) * kh * kw + t] : 0.0f;
    }
    // Input strip with zero columns on both sides (and zero channels past c).
    for (int iy = row0; iy < row1; ++iy) {
      float* dst = strip.data() + size_t(iy - row0) * wp * CB;
      std::memset(dst, 0, sizeof(float) * pw * CB);
      std::memset(dst + size_t(pw + wd) * CB, 0, sizeof(float) * pw * CB);
      const float* src = x + ((size_t(n) * h + iy) * wd) * c + c0;
      float* d = dst + size_t(pw) * CB;
      if (cn == CB) {
        for (int ix = 0; ix < wd; ++ix) {
          _mm256_storeu_ps(d + size_t(ix) * CB, _mm256_loadu_ps(src + size_t(ix) * c));
          _mm256_storeu_ps(d + size_t(ix) * CB + 8, _mm256_loadu_ps(src + size_t(ix) * c + 8));
        }
      } else {
        for (int ix = 0; ix < wd; ++ix) {
          std::memcpy(d + size_t(ix) * CB, src + size_t(ix) * c, sizeof(float) * cn);
          std::memset(d + size_t(ix) * CB + cn, 0, sizeof(float) * (CB - cn));
        }
      }
    }
    for (int oy = oy0; oy < oy1; ++oy) {
      const int ky0 = std::max(0, ph - oy), ky1 = std::min(kh, h + ph - oy);
      float* dst = y + (size_t(n) * oh + oy) * ow * c + c0;
      if (ky0 >= ky1) {  // the whole kernel is in the padding
        for (int ox = 0; ox < ow; ++ox) std::memset(dst + size_t(ox) * c, 0, sizeof(float) * cn);
        continue;
      }
      int ox = 0;
      for (; ox + 6 <= ow; ox += 6) pixels<6>(strip.data(), wp, row0, taps.data(), kw, oy, ph, ky0, ky1, ox, dst, c, cn);
      for (; ox + 4 <= ow; ox += 4) pixels<4>(strip.data(), wp, row0, taps.data(), kw, oy, ph, ky0, ky1, ox, dst, c, cn);
      for (; ox < ow; ++ox) pixels<1>(strip.data(), wp, row0, taps.data(), kw, oy, ph, ky0, ky1, ox, dst, c, cn);
    }
  });
}

}  // namespace mlxkernels
