// 2-D convolution (NHWC input, OHWI weights, groups 1, dilation 1). 3x3 stride-1 padding-1 convolutions with enough
// channels use Winograd F(2x2, 3x3); the rest run as bands of im2col + OpenBLAS sgemm: a band's patch matrix
// (pixels, kh * kw * Cin) is built on both cores and stays small (a few MB), so the full im2col of a large image
// (680 MB for the VAE's 384x384x128 convolutions) never exists. 1x1 stride-1 convolutions are one sgemm. bf16 weights
// on the bf16 paths run the same three shapes with the shim's bf16 GEMM in place of sgemm.
// GroupNorm (optionally followed by SiLU) over NHWC input: mean, centred variance, then one fused write.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu_kernels.h"
#include "pool.h"
#include "simd.h"

extern "C" void cblas_sgemm(int order, int transA, int transB, int M, int N, int K, float alpha, const float* A, int lda,
                            const float* B, int ldb, float beta, float* C, int ldc);

namespace mlxkernels {
namespace {

// Winograd F(2x2, 3x3) for 3x3 convolutions with stride 1 and padding 1: each 2x2 output tile comes from a 4x4 input
// tile as Y = A^T [ (G g G^T) . (B^T d B) ] A, so the channel sums become 16 independent products
// M_e (tiles, Cout) = V_e (tiles, Cin) @ U_e^T: 16 multiplies per tile and channel pair instead of 36 (2.25x fewer
// FLOPs), each product a plain sgemm. Tile rows go in bands so V and M stay near 32 MB.
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1].

// U_e[o][i] = (G g G^T)_e for every output/input channel pair; weights OHWI. Written as float32 (u) or rounded to
// bf16 (ub), whichever is given; the loops run over the input channels, contiguous on both sides.
void winograd_weights(const float* weight, float* u, uint16_t* ub, int cout, int cin) {
  parallel_for(cout, [&](int o) {
    const float* g = weight + size_t(o) * 9 * cin;  // g[(ky * 3 + kx) * cin + i]
    std::vector<float> row(size_t(16) * cin);
    for (int i = 0; i < cin; ++i) {
      float t[4][3];  // G g
      for (int c = 0; c < 3; ++c) {
        const float g0 = g[size_t(c) * cin + i], g1 = g[size_t(3 + c) * cin + i], g2 = g[size_t(6 + c) * cin + i];
        t[0][c] = g0;
        t[1][c] = 0.5f * (g0 + g1 + g2);
        t[2][c] = 0.5f * (g0 - g1 + g2);
        t[3][c] = g2;
      }
      for (int r = 0; r < 4; ++r) {  // (G g) G^T
        row[size_t(r * 4 + 0) * cin + i] = t[r][0];
        row[size_t(r * 4 + 1) * cin + i] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
        row[size_t(r * 4 + 2) * cin + i] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
        row[size_t(r * 4 + 3) * cin + i] = t[r][2];
      }
    }
    for (int e = 0; e < 16; ++e) {
      const float* src = row.data() + size_t(e) * cin;
      if (ub) {
        uint16_t* dst = ub + (size_t(e) * cout + o) * cin;
        for (int i = 0; i < cin; ++i) dst[i] = f32_to_bf16(src[i]);
      } else {
        std::memcpy(u + (size_t(e) * cout + o) * cin, src, sizeof(float) * cin);
      }
    }
  });
}

// Stores L transformed values: float32 as they are, bf16 rounded to nearest even.
template <int L>
inline void store_lanes(const float* src, float* dst) {
  for (int l = 0; l < L; ++l) dst[l] = src[l];
}
template <int L>
inline void store_lanes(const float* src, uint16_t* dst) {
  if constexpr (L == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), cvt8_bf16(_mm256_loadu_ps(src)));
  } else {
    for (int l = 0; l < L; ++l) dst[l] = f32_to_bf16(src[l]);
  }
}

// V_e[tile][c0 .. c0+L) = (B^T d B)_e for the input tile whose top-left input pixel is (y0, x0) (may be outside);
// v points at the tile's row in V_0, e_stride apart from one e to the next. T: float, or uint16_t for bf16.
template <int L, typename T>
inline void winograd_input(const float* image, int h, int w, int cin, int y0, int x0, int c0, T* v, size_t e_stride) {
  float d[4][4][L];
  for (int r = 0; r < 4; ++r) {
    const int y = y0 + r;
    for (int c = 0; c < 4; ++c) {
      const int x = x0 + c;
      if (y < 0 || y >= h || x < 0 || x >= w) {
        for (int l = 0; l < L; ++l) d[r][c][l] = 0.0f;
      } else {
        const float* src = image + (size_t(y) * w + x) * cin + c0;
        for (int l = 0; l < L; ++l) d[r][c][l] = src[l];
      }
    }
  }
  float t[4][4][L];  // B^T d
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < L; ++l) {
      t[0][c][l] = d[0][c][l] - d[2][c][l];
      t[1][c][l] = d[1][c][l] + d[2][c][l];
      t[2][c][l] = d[2][c][l] - d[1][c][l];
      t[3][c][l] = d[1][c][l] - d[3][c][l];
    }
  float o[4][L];
  for (int r = 0; r < 4; ++r) {  // (B^T d) B
    for (int l = 0; l < L; ++l) {
      o[0][l] = t[r][0][l] - t[r][2][l];
      o[1][l] = t[r][1][l] + t[r][2][l];
      o[2][l] = t[r][2][l] - t[r][1][l];
      o[3][l] = t[r][1][l] - t[r][3][l];
    }
    for (int c = 0; c < 4; ++c) store_lanes<L>(o[c], v + size_t(r * 4 + c) * e_stride);
  }
}

// The 2x2 outputs (A^T M A) of one tile for channels [c0, c0+L), written where they fall inside the image.
template <int L>
inline void winograd_output(const float* m, size_t e_stride, float* out, int h, int w, int cout, int y0, int x0, int c0) {
  float t[2][4][L];  // A^T M
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < L; ++l) {
      const float m0 = m[size_t(c) * e_stride + l], m1 = m[size_t(4 + c) * e_stride + l];
      const float m2 = m[size_t(8 + c) * e_stride + l], m3 = m[size_t(12 + c) * e_stride + l];
      t[0][c][l] = m0 + m1 + m2;
      t[1][c][l] = m1 - m2 - m3;
    }
  for (int r = 0; r < 2; ++r) {
    const int y = y0 + r;
    if (y >= h) break;
    for (int c = 0; c < 2; ++c) {
      const int x = x0 + c;
      if (x >= w) break;
      float* dst = out + (size_t(y) * w + x) * cout + c0;
      for (int l = 0; l < L; ++l)
        dst[l] = c == 0 ? t[r][0][l] + t[r][1][l] + t[r][2][l] : t[r][1][l] - t[r][2][l] - t[r][3][l];
    }
  }
}

// MLXS_WINOGRAD=0 in the environment keeps every convolution on im2col + sgemm (for comparisons).
bool winograd_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("MLXS_WINOGRAD");
    return !(v && std::string(v) == "0");
  }();
  return enabled;
}

}  // namespace

// Layers with 32-127 channels take Winograd on 64x64 images and up by default: on the demo VAE's 32x32 and smaller
// images im2col + sgemm measured 10-20% faster (MLXS_WINOGRAD_MIN_PIXELS in the environment sets another start).
// With 128+ channels in and out the transforms are cheap next to the products at any size.
std::atomic<int64_t> winograd_min_pixels{[] {
  const char* v = std::getenv("MLXS_WINOGRAD_MIN_PIXELS");
  return v ? int64_t(std::strtoll(v, nullptr, 10)) : int64_t(4096);
}()};

namespace {

// y (m, n) = x (m, k) @ w^T for bf16 w on the paths that round activations: vdpbf16ps or AMX tiles.
void conv_product_bf16(const float* x, const uint16_t* w, float* y, int m, int n, int k) {
  ProfileScope scope("FastConv2d.bf16_gemm");
  gemm_bf16_avx512(x, w, y, m, n, k, cpu_path() >= CpuPath::amx);
}

void conv3x3_winograd(const ConvArgs& a) {
  const int h = a.h, w = a.w, cin = a.cin, cout = a.cout;
  const int tiles_h = (h + 1) / 2, tiles_w = (w + 1) / 2;
  // bf16 (conv2d leaves weight_bf16 set only where the products run in bf16): U rounded to bf16 as it is made and
  // V written as bf16 straight into the GEMM's layout, so neither is rounded or copied again by the GEMM.
  const bool bf16 = a.weight_bf16 != nullptr;
  const size_t ldv = bf16 ? bf16_gemm_row_stride(cin) : size_t(cin);
  const size_t per_tile = size_t(16) * ((bf16 ? 2 : 4) * ldv + 4 * size_t(cout));
  const int band_rows = std::max(1, std::min(tiles_h, int((size_t(32) << 20) / (per_tile * tiles_w))));
  const size_t band_tiles = size_t(band_rows) * tiles_w;
  thread_local std::vector<float> u_buf, v_buf, m_buf;
  thread_local std::vector<uint16_t> ub_buf, vb_buf;
  float *u = nullptr, *v = nullptr;
  uint16_t *ub = nullptr, *vb = nullptr;
  if (bf16) {
    ub_buf.resize(size_t(16) * cout * cin);
    vb_buf.resize(16 * size_t(bf16_gemm_padded_rows(int(band_tiles))) * ldv);
    ub = ub_buf.data(), vb = vb_buf.data();
  } else {
    u_buf.resize(size_t(16) * cout * cin);
    v_buf.resize(16 * band_tiles * cin);
    u = u_buf.data(), v = v_buf.data();
  }
  m_buf.resize(16 * band_tiles * cout);
  float* m = m_buf.data();  // the workers must not name the thread_locals
  winograd_weights(a.weight, u, ub, cout, cin);
  const int kp = bf16_gemm_padded_k(cin);
  for (int n = 0; n < a.b; ++n) {
    const float* image = a.x + size_t(n) * h * w * cin;
    float* out = a.y + size_t(n) * h * w * cout;
    for (int r0 = 0; r0 < tiles_h; r0 += band_rows) {
      const int rows = std::min(band_rows, tiles_h - r0);
      const size_t tiles = size_t(rows) * tiles_w;
      const size_t padded = bf16 ? size_t(bf16_gemm_padded_rows(int(tiles))) : tiles;
      const size_t e_stride = padded * ldv;
      parallel_for(int(tiles), [&](int t) {
        const int ty = r0 + t / tiles_w, tx = t % tiles_w, y0 = 2 * ty - 1, x0 = 2 * tx - 1;
        int c = 0;
        if (bf16) {
          uint16_t* row = vb + size_t(t) * ldv;
          for (; c + 8 <= cin; c += 8) winograd_input<8>(image, h, w, cin, y0, x0, c, row + c, e_stride);
          for (; c < cin; ++c) winograd_input<1>(image, h, w, cin, y0, x0, c, row + c, e_stride);
          for (int e = 0; e < 16 && kp > cin; ++e) std::memset(row + e * e_stride + cin, 0, sizeof(uint16_t) * (kp - cin));
        } else {
          float* row = v + size_t(t) * ldv;
          for (; c + 8 <= cin; c += 8) winograd_input<8>(image, h, w, cin, y0, x0, c, row + c, e_stride);
          for (; c < cin; ++c) winograd_input<1>(image, h, w, cin, y0, x0, c, row + c, e_stride);
        }
      });
      if (bf16) {
        for (int e = 0; e < 16 && padded > tiles; ++e)  // rows past the last tile: zero (AMX tiles read them)
          std::memset(vb + e * e_stride + tiles * ldv, 0, sizeof(uint16_t) * (padded - tiles) * ldv);
        ProfileScope scope("FastConv2d.bf16_gemm");
        for (int e = 0; e < 16; ++e)
          gemm_bf16_avx512_rounded(vb + e * e_stride, ub + size_t(e) * cout * cin, m + e * tiles * cout, int(tiles), cout, cin,
                                   cpu_path() >= CpuPath::amx);
      } else {
        // OpenBLAS's own threads: on these products (mostly 128+ channels both sides) they were faster than a split
        // by rows in one A/B of bench kernels' 3x3 row (266 against 193 GFLOP/s; later pairs were within noise).
        for (int e = 0; e < 16; ++e)
          cblas_sgemm(101, 111, 112, int(tiles), cout, cin, 1.0f, v + e * e_stride, cin, u + size_t(e) * cout * cin, cin, 0.0f,
                      m + e * tiles * cout, cout);
      }
      parallel_for(int(tiles), [&](int t) {
        const int ty = r0 + t / tiles_w, tx = t % tiles_w;
        int c = 0;
        for (; c + 8 <= cout; c += 8) winograd_output<8>(m + size_t(t) * cout + c, tiles * cout, out, h, w, cout, 2 * ty, 2 * tx, c);
        for (; c < cout; ++c) winograd_output<1>(m + size_t(t) * cout + c, tiles * cout, out, h, w, cout, 2 * ty, 2 * tx, c);
      });
    }
  }
}

// About 16 MB of patches per band (at least 64 pixels): long enough for sgemm to run near peak (4 MB measured
// 75% of peak, 16 MB 80%, 48 MB no better), short enough that the full im2col never exists.
size_t conv_band(int k) { return std::max<size_t>(64, (size_t(16) << 20) / (sizeof(float) * size_t(k))); }

// The patch rows (kh * kw * cin each, zeros outside the image) of output pixels [p0, p0 + count), counted over the
// whole batch, built on both cores.
void im2col(const ConvArgs& a, int oh, int ow, size_t p0, size_t count, float* patches) {
  const int k = a.kh * a.kw * a.cin;
  const size_t pixels = size_t(oh) * ow, row_bytes = sizeof(float) * size_t(a.cin);
  const int chunk = 16;
  parallel_for(int((count + chunk - 1) / chunk), [&](int t) {
    const size_t lo = size_t(t) * chunk, hi = std::min(count, lo + chunk);
    for (size_t i = lo; i < hi; ++i) {
      const size_t p = p0 + i, n = p / pixels, r = p % pixels;
      const float* image = a.x + n * a.h * a.w * a.cin;
      const int oy = int(r / ow), ox = int(r % ow);
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
}

}  // namespace

void conv2d(const ConvArgs& args) {
  const int oh = (args.h + 2 * args.ph - args.kh) / args.sh + 1, ow = (args.w + 2 * args.pw - args.kw) / args.sw + 1;
  if (oh <= 0 || ow <= 0 || args.b <= 0 || args.cout <= 0) return;
  const bool winograd = args.kh == 3 && args.kw == 3 && args.sh == 1 && args.sw == 1 && args.ph == 1 && args.pw == 1 &&
                        args.cin >= 32 && args.cout >= 32 &&
                        (int64_t(args.h) * args.w >= winograd_min_pixels.load() || (args.cin >= 128 && args.cout >= 128)) &&
                        winograd_enabled();
  ConvArgs a = args;
  if (a.weight_bf16) {
    if (!bf16_rounds_activations() || winograd) {
      // Float32 weights for the float32 products or for the Winograd transform (kept between calls, like the buffers).
      thread_local std::vector<float> widened_buf;
      const size_t total = size_t(a.cout) * a.kh * a.kw * a.cin, chunk = size_t(1) << 16;
      widened_buf.resize(total);
      float* widened = widened_buf.data();
      const uint16_t* src = a.weight_bf16;
      parallel_for(int((total + chunk - 1) / chunk), [&](int c) {
        for (size_t i = size_t(c) * chunk, end = std::min(total, i + chunk); i < end; ++i) widened[i] = bf16_to_f32(src[i]);
      });
      a.weight = widened;
    }
    if (!bf16_rounds_activations()) a.weight_bf16 = nullptr;
  }
  // Winograd where the transforms are small next to the products: enough channels, and large images or many channels.
  if (winograd) {
    conv3x3_winograd(a);
    return;
  }
  const int k = a.kh * a.kw * a.cin;
  const size_t pixels = size_t(oh) * ow;
  if (a.kh == 1 && a.kw == 1 && a.sh == 1 && a.sw == 1 && a.ph == 0 && a.pw == 0) {
    const int rows = int(size_t(a.b) * pixels);
    if (a.weight_bf16) conv_product_bf16(a.x, a.weight_bf16, a.y, rows, a.cout, a.cin);
    else sgemm(false, true, rows, a.cout, a.cin, a.x, a.cin, a.weight, a.cin, a.y, a.cout);
    return;
  }
  const size_t band = conv_band(k);
  thread_local std::vector<float> patches_buf;
  if (patches_buf.size() < band * k) patches_buf.resize(band * k);
  float* patches = patches_buf.data();  // the pool's workers must not name the thread_local
  for (int n = 0; n < a.b; ++n) {
    float* out = a.y + size_t(n) * pixels * a.cout;
    for (size_t p0 = 0; p0 < pixels; p0 += band) {
      const size_t count = std::min(band, pixels - p0);
      im2col(a, oh, ow, size_t(n) * pixels + p0, count, patches);
      if (a.weight_bf16) conv_product_bf16(patches, a.weight_bf16, out + p0 * a.cout, int(count), a.cout, k);
      else sgemm(false, true, int(count), a.cout, k, patches, k, a.weight, k, out + p0 * a.cout, a.cout);
    }
  }
}

void conv2d_grad(const ConvArgs& a, const float* dy, float* dx, float* dw) {
  const int oh = (a.h + 2 * a.ph - a.kh) / a.sh + 1, ow = (a.w + 2 * a.pw - a.kw) / a.sw + 1;
  const int k = a.kh * a.kw * a.cin;
  const size_t total = size_t(a.b) * oh * ow;
  if (oh <= 0 || ow <= 0 || a.b <= 0 || a.cout <= 0) {
    if (dx) std::memset(dx, 0, sizeof(float) * size_t(a.b) * a.h * a.w * a.cin);
    if (dw) std::memset(dw, 0, sizeof(float) * size_t(a.cout) * k);
    return;
  }
  const bool pointwise = a.kh == 1 && a.kw == 1 && a.sh == 1 && a.sw == 1 && a.ph == 0 && a.pw == 0;
  if (pointwise) {
    if (dw) sgemm(true, false, a.cout, a.cin, int(total), dy, a.cout, a.x, a.cin, dw, a.cin);
    if (dx) sgemm(false, false, int(total), a.cin, a.cout, dy, a.cout, a.weight, a.cin, dx, a.cin);
    return;
  }
  const size_t band = conv_band(k);
  thread_local std::vector<float> patches_buf;  // grown once, not cleared: every band writes what it reads
  if (patches_buf.size() < band * k) patches_buf.resize(band * k);
  float* patches = patches_buf.data();  // the pool's workers must not name the thread_local
  // dw = dy^T patches, accumulated over bands of output pixels across the whole batch.
  if (dw) {
    for (size_t p0 = 0; p0 < total; p0 += band) {
      const size_t count = std::min(band, total - p0);
      im2col(a, oh, ow, p0, count, patches);
      sgemm(true, false, a.cout, k, int(count), dy + p0 * a.cout, a.cout, patches, k, dw, k, p0 == 0 ? 0.0f : 1.0f);
    }
  }
  if (!dx) return;
  // Stride 1: dx is the convolution of dy with the flipped, transposed kernel (Winograd where it applies).
  if (a.sh == 1 && a.sw == 1 && a.ph <= a.kh - 1 && a.pw <= a.kw - 1) {
    std::vector<float> flipped(size_t(k) * a.cout);
    for (int co = 0; co < a.cout; ++co)
      for (int ky = 0; ky < a.kh; ++ky)
        for (int kx = 0; kx < a.kw; ++kx)
          for (int ci = 0; ci < a.cin; ++ci)
            flipped[((size_t(ci) * a.kh + (a.kh - 1 - ky)) * a.kw + (a.kw - 1 - kx)) * a.cout + co] =
                a.weight[((size_t(co) * a.kh + ky) * a.kw + kx) * a.cin + ci];
    ConvArgs t{dy, flipped.data(), dx, a.b, oh, ow, a.cout, a.cin, a.kh, a.kw, 1, 1, a.kh - 1 - a.ph, a.kw - 1 - a.pw};
    conv2d(t);
    return;
  }
  // Otherwise col2im: the patch gradients dy w, added back to the input pixels they were read from. Each task
  // owns a slice of the input channels, so no two tasks write the same value.
  std::memset(dx, 0, sizeof(float) * size_t(a.b) * a.h * a.w * a.cin);
  const int slices = std::max(1, std::min(pool_threads() * 2, (a.cin + 7) / 8));
  const int slice = (a.cin + slices - 1) / slices;
  for (size_t p0 = 0; p0 < total; p0 += band) {
    const size_t count = std::min(band, total - p0);
    sgemm(false, false, int(count), k, a.cout, dy + p0 * a.cout, a.cout, a.weight, k, patches, k);
    parallel_for(slices, [&](int t) {
      const int c0 = t * slice, c1 = std::min(a.cin, c0 + slice);
      for (size_t i = 0; i < count; ++i) {
        const size_t p = p0 + i, image = p / (size_t(oh) * ow), r = p % (size_t(oh) * ow);
        const int oy = int(r / ow), ox = int(r % ow);
        const float* src = patches + i * k;
        for (int ky = 0; ky < a.kh; ++ky) {
          const int iy = oy * a.sh + ky - a.ph;
          for (int kx = 0; kx < a.kw; ++kx, src += a.cin) {
            const int ix = ox * a.sw + kx - a.pw;
            if (iy < 0 || iy >= a.h || ix < 0 || ix >= a.w) continue;
            float* dst = dx + ((image * a.h + iy) * a.w + ix) * a.cin;
            int c = c0;
            for (; c + 8 <= c1; c += 8)
              _mm256_storeu_ps(dst + c, _mm256_add_ps(_mm256_loadu_ps(dst + c), _mm256_loadu_ps(src + c)));
            for (; c < c1; ++c) dst[c] += src[c];
          }
        }
      }
    });
  }
}

namespace {

// Per (image, group): the mean, then the mean square around it (two passes, like the reference: no cancellation).
// Each core sums a slice of pixels per channel in float over blocks of 256 pixels, folded into double.
void group_statistics(const float* x, int batch, size_t pixels, int c, int groups, std::vector<double>& mean,
                      std::vector<double>& var) {
  const int cg = c / groups;
  const int threads = pool_threads();
  const size_t slice = (pixels + threads - 1) / threads;
  mean.assign(size_t(batch) * groups, 0.0);
  var.assign(size_t(batch) * groups, 0.0);
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
}

}  // namespace

void group_norm(const float* x, const float* w, const float* b, float* y, int batch, size_t pixels, int c, int groups,
                float eps, bool silu) {
  const int cg = c / groups;
  std::vector<double> mean, var;
  group_statistics(x, batch, pixels, c, groups, mean, var);
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

void group_norm_grad(const float* x, const float* w, const float* b, const float* dy, float* dx, float* dw, float* db,
                     int batch, size_t pixels, int c, int groups, float eps, bool silu) {
  const int cg = c / groups;
  std::vector<double> mean, var;
  group_statistics(x, batch, pixels, c, groups, mean, var);
  const int threads = pool_threads();
  const size_t slice = (pixels + threads - 1) / threads;
  const double count = double(pixels) * cg;
  std::vector<float> wv(static_cast<size_t>(c), 1.0f), bv(static_cast<size_t>(c), 0.0f);
  for (int i = 0; i < c; ++i) {
    if (w) wv[i] = w[i];
    if (b) bv[i] = b[i];
  }
  // Per image and channel: the sums of g (the cotangent before the affine, through SiLU if any) and of g xhat.
  std::vector<double> sum_g(size_t(batch) * c, 0.0), sum_gx(size_t(batch) * c, 0.0);
  const size_t cs = static_cast<size_t>(c);
  std::vector<float> centre(cs), inv(cs), shift(cs), slope(cs);
  for (int n = 0; n < batch; ++n) {
    for (int i = 0; i < c; ++i) {
      const size_t g = size_t(n) * groups + i / cg;
      centre[i] = float(mean[g]);
      inv[i] = float(1.0 / std::sqrt(var[g] + double(eps)));
    }
    const float* xi = x + size_t(n) * pixels * c;
    const float* dyi = dy + size_t(n) * pixels * c;
    float* dxi = dx + size_t(n) * pixels * c;
    // Pass 1: g into dx, and the per-channel sums (float over blocks of 256 pixels, folded into double).
    std::vector<double> partial(size_t(threads) * 2 * c, 0.0);
    parallel_for(threads, [&](int t) {
      std::vector<float> acc(2 * size_t(c));
      double* pg = partial.data() + size_t(t) * 2 * c;
      const size_t lo = std::min(pixels, size_t(t) * slice), hi = std::min(pixels, lo + slice);
      for (size_t p0 = lo; p0 < hi; p0 += 256) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (size_t p = p0; p < std::min(hi, p0 + 256); ++p) {
          const float *row = xi + p * c, *grow = dyi + p * c;
          float* out = dxi + p * c;
          int i = 0;
          for (; i + 8 <= c; i += 8) {
            __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(&centre[i])), _mm256_loadu_ps(&inv[i]));
            __m256 g = _mm256_loadu_ps(grow + i);
            if (silu) g = _mm256_mul_ps(g, silu_grad_ps(_mm256_fmadd_ps(xhat, _mm256_loadu_ps(&wv[i]), _mm256_loadu_ps(&bv[i]))));
            _mm256_storeu_ps(out + i, g);
            _mm256_storeu_ps(&acc[i], _mm256_add_ps(_mm256_loadu_ps(&acc[i]), g));
            _mm256_storeu_ps(&acc[c + i], _mm256_fmadd_ps(g, xhat, _mm256_loadu_ps(&acc[c + i])));
          }
          for (; i < c; ++i) {
            const float xhat = (row[i] - centre[i]) * inv[i];
            float g = grow[i];
            if (silu) {
              const float pre = xhat * wv[i] + bv[i], sg = 1.0f / (1.0f + std::exp(-pre));
              g *= sg * (1.0f + pre * (1.0f - sg));
            }
            out[i] = g;
            acc[i] += g;
            acc[c + i] += g * xhat;
          }
        }
        for (int i = 0; i < 2 * c; ++i) pg[i] += acc[i];
      }
    });
    for (int t = 0; t < threads; ++t)
      for (int i = 0; i < c; ++i) {
        sum_g[size_t(n) * c + i] += partial[size_t(t) * 2 * c + i];
        sum_gx[size_t(n) * c + i] += partial[size_t(t) * 2 * c + c + i];
      }
    // dx = inv (w g - mean over the group of w g - xhat * mean over the group of w g xhat).
    for (int grp = 0; grp < groups; ++grp) {
      double a = 0, bsum = 0;
      for (int i = grp * cg; i < (grp + 1) * cg; ++i) {
        a += double(wv[i]) * sum_g[size_t(n) * c + i];
        bsum += double(wv[i]) * sum_gx[size_t(n) * c + i];
      }
      for (int i = grp * cg; i < (grp + 1) * cg; ++i) {
        shift[i] = float(a / count);
        slope[i] = float(bsum / count);
      }
    }
    const size_t chunk = std::max<size_t>(1, (size_t(1) << 14) / size_t(c));
    parallel_for(int((pixels + chunk - 1) / chunk), [&](int t) {
      for (size_t p = size_t(t) * chunk; p < std::min(pixels, size_t(t + 1) * chunk); ++p) {
        const float* row = xi + p * c;
        float* out = dxi + p * c;
        int i = 0;
        for (; i + 8 <= c; i += 8) {
          const __m256 iv = _mm256_loadu_ps(&inv[i]);
          __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(&centre[i])), iv);
          __m256 v = _mm256_fmsub_ps(_mm256_loadu_ps(out + i), _mm256_loadu_ps(&wv[i]), _mm256_loadu_ps(&shift[i]));
          v = _mm256_fnmadd_ps(xhat, _mm256_loadu_ps(&slope[i]), v);
          _mm256_storeu_ps(out + i, _mm256_mul_ps(v, iv));
        }
        for (; i < c; ++i) {
          const float xhat = (row[i] - centre[i]) * inv[i];
          out[i] = (out[i] * wv[i] - shift[i] - xhat * slope[i]) * inv[i];
        }
      }
    });
  }
  for (int i = 0; i < c; ++i) {
    double sg = 0, sgx = 0;
    for (int n = 0; n < batch; ++n) sg += sum_g[size_t(n) * c + i], sgx += sum_gx[size_t(n) * c + i];
    if (dw) dw[i] = float(sgx);
    if (db) db[i] = float(sg);
  }
}

}  // namespace mlxkernels
