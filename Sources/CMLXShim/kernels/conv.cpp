// 2-D convolution (NHWC input, OHWI weights, groups 1, dilation 1) as bands of im2col + OpenBLAS sgemm: a band's
// patch matrix (pixels, kh * kw * Cin) is built on both cores and stays small (a few MB), so the full im2col of a
// large image (680 MB for the VAE's 384x384x128 convolutions) never exists. 1x1 stride-1 convolutions are one sgemm.
// GroupNorm (optionally followed by SiLU) over NHWC input: mean, centred variance, then one fused write.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu_kernels.h"
#include "pool.h"

extern "C" void cblas_sgemm(int order, int transA, int transB, int M, int N, int K, float alpha, const float* A, int lda,
                            const float* B, int ldb, float beta, float* C, int ldc);

namespace mlxkernels {

void conv2d(const ConvArgs& a) {
  const int oh = (a.h + 2 * a.ph - a.kh) / a.sh + 1, ow = (a.w + 2 * a.pw - a.kw) / a.sw + 1;
  if (oh <= 0 || ow <= 0 || a.b <= 0 || a.cout <= 0) return;
  const int k = a.kh * a.kw * a.cin;
  const size_t pixels = size_t(oh) * ow;
  if (a.kh == 1 && a.kw == 1 && a.sh == 1 && a.sw == 1 && a.ph == 0 && a.pw == 0) {
    cblas_sgemm(101, 111, 112, int(size_t(a.b) * pixels), a.cout, a.cin, 1.0f, a.x, a.cin, a.weight, a.cin, 0.0f, a.y, a.cout);
    return;
  }
  // About 16 MB of patches per band (at least 64 pixels): long enough for sgemm to run near peak (4 MB measured
  // 75% of peak, 16 MB 80%, 48 MB no better), short enough that the full im2col never exists.
  const size_t band = std::max<size_t>(64, (size_t(16) << 20) / (sizeof(float) * size_t(k)));
  thread_local std::vector<float> patches_buf;
  if (patches_buf.size() < band * k) patches_buf.resize(band * k);
  float* patches = patches_buf.data();  // the pool's workers must not name the thread_local
  const size_t row_bytes = sizeof(float) * size_t(a.cin);
  for (int n = 0; n < a.b; ++n) {
    const float* image = a.x + size_t(n) * a.h * a.w * a.cin;
    float* out = a.y + size_t(n) * pixels * a.cout;
    for (size_t p0 = 0; p0 < pixels; p0 += band) {
      const size_t count = std::min(band, pixels - p0);
      const int chunk = 16;
      parallel_for(int((count + chunk - 1) / chunk), [&](int t) {
        const size_t lo = size_t(t) * chunk, hi = std::min(count, lo + chunk);
        for (size_t i = lo; i < hi; ++i) {
          const size_t p = p0 + i;
          const int oy = int(p / ow), ox = int(p % ow);
          float* dst = patches + i * k;
          for (int ky = 0; ky < a.kh; ++ky) {
            const int iy = oy * a.sh + ky - a.ph;
            for (int kx = 0; kx < a.kw; ++kx, dst += a.cin) {
              const int ix = ox * a.sw + kx - a.pw;
              if (iy < 0 || iy >= a.h || ix < 0 || ix >= a.w) std::memset(dst, 0, row_bytes);
              else std::memcpy(dst, image + (size_t(iy) * a.w + ix) * a.cin, row_bytes);
            }
          }
        }
      });
      cblas_sgemm(101, 111, 112, int(count), a.cout, k, 1.0f, patches, k, a.weight, k, 0.0f, out + p0 * a.cout, a.cout);
    }
  }
}

void group_norm(const float* x, const float* w, const float* b, float* y, int batch, size_t pixels, int c, int groups,
                float eps, bool silu) {
  const int cg = c / groups;
  const int threads = pool_threads();
  const size_t slice = (pixels + threads - 1) / threads;
  // Per (image, group): the mean, then the mean square around it (two passes, like the reference: no cancellation).
  // Each core sums a slice of pixels per channel in float over blocks of 256 pixels, folded into double.
  std::vector<double> mean(size_t(batch) * groups, 0.0), var(size_t(batch) * groups, 0.0);
  auto channel_sums = [&](int n, bool centered, std::vector<double>& out) {
    const float* xi = x + size_t(n) * pixels * c;
    std::vector<double> partial(size_t(threads) * groups, 0.0);
    std::vector<float> centre(size_t(c), 0.0f);
    if (centered)
      for (int i = 0; i < c; ++i) centre[i] = float(mean[size_t(n) * groups + i / cg]);
    parallel_for(threads, [&](int t) {
      std::vector<float> acc(static_cast<size_t>(c));
      const size_t lo = std::min(pixels, size_t(t) * slice), hi = std::min(pixels, lo + slice);
      for (size_t p0 = lo; p0 < hi; p0 += 256) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (size_t p = p0; p < std::min(hi, p0 + 256); ++p) {
          const float* row = xi + p * c;
          int i = 0;
          for (; i + 8 <= c; i += 8) {
            __m256 v = _mm256_sub_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(&centre[i]));
            __m256 a = _mm256_loadu_ps(&acc[i]);
            _mm256_storeu_ps(&acc[i], centered ? _mm256_fmadd_ps(v, v, a) : _mm256_add_ps(a, v));
          }
          for (; i < c; ++i) {
            const float v = row[i] - centre[i];
            acc[i] += centered ? v * v : v;
          }
        }
        for (int i = 0; i < c; ++i) partial[size_t(t) * groups + i / cg] += acc[i];
      }
    });
    const double count = double(pixels) * cg;
    for (int g = 0; g < groups; ++g) {
      double s = 0;
      for (int t = 0; t < threads; ++t) s += partial[size_t(t) * groups + g];
      out[size_t(n) * groups + g] = s / count;
    }
  };
  for (int n = 0; n < batch; ++n) {
    channel_sums(n, false, mean);
    channel_sums(n, true, var);
  }
  // Per channel: y = (x - mean) * scale + bias.
  std::vector<float> scale(size_t(batch) * c), centre(size_t(batch) * c), shift(size_t(batch) * c);
  for (int n = 0; n < batch; ++n) {
    for (int g = 0; g < groups; ++g) {
      const double m = mean[size_t(n) * groups + g], v = var[size_t(n) * groups + g];
      const float inv = float(1.0 / std::sqrt(v + double(eps)));
      for (int i = g * cg; i < (g + 1) * cg; ++i) {
        const float ww = w ? w[i] : 1.0f, bb = b ? b[i] : 0.0f;
        scale[size_t(n) * c + i] = inv * ww;
        centre[size_t(n) * c + i] = float(m);
        shift[size_t(n) * c + i] = bb;
      }
    }
  }
  // Apply.
  for (int n = 0; n < batch; ++n) {
    const float* xi = x + size_t(n) * pixels * c;
    float* yi = y + size_t(n) * pixels * c;
    const float* sc = scale.data() + size_t(n) * c;
    const float* sh = shift.data() + size_t(n) * c;
    const float* ce = centre.data() + size_t(n) * c;
    const size_t chunk = std::max<size_t>(1, (size_t(1) << 14) / size_t(c));
    parallel_for(int((pixels + chunk - 1) / chunk), [&](int t) {
      for (size_t p = size_t(t) * chunk; p < std::min(pixels, size_t(t + 1) * chunk); ++p) {
        const float* row = xi + p * c;
        float* dst = yi + p * c;
        int i = 0;
        for (; i + 8 <= c; i += 8) {
          __m256 v = _mm256_sub_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(ce + i));
          v = _mm256_fmadd_ps(v, _mm256_loadu_ps(sc + i), _mm256_loadu_ps(sh + i));
          _mm256_storeu_ps(dst + i, v);
        }
        for (; i < c; ++i) dst[i] = (row[i] - ce[i]) * sc[i] + sh[i];
      }
    });
  }
  if (silu) activation(y, y, size_t(batch) * pixels * c, Activation::silu);
}

}  // namespace mlxkernels
