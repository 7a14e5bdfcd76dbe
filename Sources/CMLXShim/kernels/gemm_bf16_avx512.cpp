// y (m, n) = x (m, k) @ w^T for bfloat16 weights w (n, k) on AVX-512 hosts, x rounded to bf16 once per call (as
// PyTorch's bf16 autocast and DeepSeek's bf16 inference do) and products summed in float32. Two kernels share the
// layout of w: 16-column tiles of 32 inner positions, stored as 16 rows of 16 (even, odd) bf16 pairs.
// - AMX (Sapphire Rapids and later): one tdpbf16ps multiplies a 16 x 32 tile of x by such a tile of w into a
//   16 x 16 float32 tile, 16384 flops (an AVX2 FMA: 32). Four accumulator tiles hold a 32 x 32 block of y; two
//   tiles of x and two of w feed them.
// - AVX512_BF16 (vdpbf16ps: Cooper Lake, Zen 4 and later): a 12 x 32 block of y in 24 registers; each step
//   broadcasts one pair of x per row against two rows of the tiles (64 flops per instruction, an AVX-512 FMA's 32).
// Per call: x converted to a padded bf16 copy; each task takes a group of tiles of w, packs them chunk by chunk (KC
// inner positions) into a buffer that stays in L2, and runs every block of rows of x over them.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cpu_kernels.h"
#include "pool.h"

// Everything below runs only where cpu_path() is avx512_bf16 or amx (the caller checks); the tile functions only on amx.
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16"))), \
                             apply_to = function)

namespace mlxkernels {
namespace {

constexpr int TILE = 16;       // rows of x and columns of w per tile
constexpr int TILE_K = 32;     // inner positions per tile (64 bytes of bf16 per row)
// Measured on a 2-core Sapphire Rapids (linear 1200x2048->5632): 2048 x 16 tiles (1 MB packed, within the 2 MB L2)
// ran 2400-2670 GFLOP/s on amx, against 1850-2000 for 1536 x 8; 32-tile groups and shorter chunks were slower.
constexpr int KC_MOST = 2048;  // inner positions per packed chunk: 16 tiles of w x 2048 = 1 MB
constexpr int GROUP = 16;      // 16-column tiles of w per task (even: the kernel takes them in pairs)

struct alignas(64) TileConfig {
  uint8_t palette, start_row;
  uint8_t reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};

// Tiles 0-3: y (rows 0-15 / 16-31 by columns 0-15 / 16-31 of the block); 4-5: x; 6-7: w.
void configure_tiles() {
  TileConfig config{};
  config.palette = 1;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = TILE;
    config.bytes_per_row[t] = 64;
  }
  _tile_loadconfig(&config);
}

template <typename T>
T* grown(T*& buffer, size_t& capacity, size_t count) {
  if (capacity < count) {
    std::free(buffer);
    buffer = static_cast<T*>(std::aligned_alloc(64, (count * sizeof(T) + 63) / 64 * 64));
    if (!buffer) throw std::bad_alloc();
    capacity = count;
  }
  return buffer;
}

struct Buffer {
  uint16_t* data = nullptr;
  size_t capacity = 0;
  ~Buffer() { std::free(data); }
};

// Rows [r0, r1) of xb (stride ldb) = x rounded to bf16, zero past k up to kp and for rows past m.
void convert_rows(const float* x, int m, int k, uint16_t* xb, size_t ldb, int kp, int r0, int r1) {
  for (int r = r0; r < r1; ++r) {
    uint16_t* out = xb + size_t(r) * ldb;
    if (r >= m) {
      std::memset(out, 0, size_t(kp) * 2);
      continue;
    }
    const float* in = x + size_t(r) * k;
    for (int t = 0; t < kp; t += 32) {
      const int left = k - t;
      const __mmask16 lo = left >= 16 ? 0xFFFF : left > 0 ? __mmask16((1u << left) - 1) : 0;
      const __mmask16 hi = left >= 32 ? 0xFFFF : left > 16 ? __mmask16((1u << (left - 16)) - 1) : 0;
      const __m512 a = _mm512_maskz_loadu_ps(lo, in + t), b = _mm512_maskz_loadu_ps(hi, in + t + 16);
      _mm512_storeu_si512(out + t, (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
  }
}

// Sixteen rows of 32 bf16 (64 bytes each) as 16 x 16 32-bit pairs, transposed into the instruction's tile layout.
void transpose_pairs(const __m512i* r, uint32_t* tile);

// One tile of w in the instruction's pair layout: row r, column j = (w[n0 + j][k0 + 2r], w[n0 + j][k0 + 2r + 1]),
// zero outside w.
void pack_tile(const uint16_t* w, int n, int k, int n0, int k0, uint32_t* tile) {
  __m512i r[16];
  const int left = k - k0;
  const __mmask32 mask = left >= 32 ? 0xFFFFFFFFu : left > 0 ? __mmask32((1ull << left) - 1) : 0;
  for (int j = 0; j < 16; ++j)
    r[j] = n0 + j < n ? _mm512_maskz_loadu_epi16(mask, w + size_t(n0 + j) * k + k0) : _mm512_setzero_si512();
  transpose_pairs(r, tile);
}

// The same tile from int8 weights with one float32 scale per `group` inputs of a row (group a multiple of 16):
// each weight q * scale rounded to bf16 (nearest even), which is within 2^-9 of it.
void pack_tile_q8(const int8_t* w, const float* scales, int group, int n, int k, int n0, int k0, uint32_t* tile) {
  __m512i r[16];
  const int left = k - k0, groups = k / group;
  const __mmask32 mask = left >= 32 ? 0xFFFFFFFFu : left > 0 ? __mmask32((1ull << left) - 1) : 0;
  for (int j = 0; j < 16; ++j) {
    if (n0 + j >= n || left <= 0) {
      r[j] = _mm512_setzero_si512();
      continue;
    }
    const __m256i q = _mm256_maskz_loadu_epi8(mask, w + size_t(n0 + j) * k + k0);
    const float* row_scales = scales + size_t(n0 + j) * groups;
    // Each half of 16 lies in one group (k0 is a multiple of 32); a half past k is zeros, its scale not read.
    const float s0 = row_scales[k0 / group], s1 = left > 16 ? row_scales[(k0 + 16) / group] : 0.0f;
    const __m512 a = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q))), _mm512_set1_ps(s0));
    const __m512 b = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1))), _mm512_set1_ps(s1));
    r[j] = (__m512i)_mm512_cvtne2ps_pbh(b, a);
  }
  transpose_pairs(r, tile);
}

void transpose_pairs(const __m512i* r, uint32_t* tile) {
  // Within each 128-bit lane: pairs, then quads of rows; then the lanes gathered across the four quads.
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // u[4 i + e], lane L: pair 4 L + e of rows 4 i .. 4 i + 3.
  for (int e = 0; e < 4; ++e) {
    const __m512i x0 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x44), x1 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xEE);
    const __m512i y0 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x44), y1 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xEE);
    _mm512_store_si512(tile + (0 + e) * 16, _mm512_shuffle_i32x4(x0, y0, 0x88));
    _mm512_store_si512(tile + (4 + e) * 16, _mm512_shuffle_i32x4(x0, y0, 0xDD));
    _mm512_store_si512(tile + (8 + e) * 16, _mm512_shuffle_i32x4(x1, y1, 0x88));
    _mm512_store_si512(tile + (12 + e) * 16, _mm512_shuffle_i32x4(x1, y1, 0xDD));
  }
}

// A 16 x 16 block of y at (r0, j0): whole tiles straight from / to y, edge tiles through a small buffer.
template <int T>
void load_y(const float* y, int m, int n, int r0, int j0) {
  if (r0 + TILE <= m && j0 + TILE <= n) {
    _tile_loadd(T, y + size_t(r0) * n + j0, size_t(n) * 4);
    return;
  }
  alignas(64) float block[TILE * TILE] = {};
  for (int r = 0; r < TILE && r0 + r < m; ++r)
    for (int j = 0; j < TILE && j0 + j < n; ++j) block[r * TILE + j] = y[size_t(r0 + r) * n + j0 + j];
  _tile_loadd(T, block, 64);
}

template <int T>
void store_y(float* y, int m, int n, int r0, int j0) {
  if (r0 >= m || j0 >= n) return;
  if (r0 + TILE <= m && j0 + TILE <= n) {
    _tile_stored(T, y + size_t(r0) * n + j0, size_t(n) * 4);
    return;
  }
  alignas(64) float block[TILE * TILE];
  _tile_stored(T, block, 64);
  for (int r = 0; r < TILE && r0 + r < m; ++r)
    for (int j = 0; j < TILE && j0 + j < n; ++j) y[size_t(r0 + r) * n + j0 + j] = block[r * TILE + j];
}

// The weights: bf16 rows, or int8 rows (w8) with float32 scales per `group` inputs.
struct Weights {
  const uint16_t* w = nullptr;
  const int8_t* w8 = nullptr;
  const float* scales = nullptr;
  int group = 0;
};

struct Problem {
  const uint16_t* xb;  // (mp, ldb) bf16, mp a multiple of 32
  size_t ldb;
  Weights w;
  float* y;
  int m, n, k, mp, kp, kc;
};

// Packs tiles [c0, c1) of w for inner positions [k0, k0 + kc) (kc a multiple of 32); tile c - c0 at
// packed + (c - c0) * stride.
void pack_tiles(const Problem& p, int c0, int c1, int k0, int kc, uint32_t* packed, size_t stride) {
  for (int c = c0; c < c1; ++c)
    for (int s = 0; s < kc / TILE_K; ++s) {
      uint32_t* tile = packed + (c - c0) * stride + s * 256;
      if (p.w.w8) pack_tile_q8(p.w.w8, p.w.scales, p.w.group, p.n, p.k, TILE * c, k0 + TILE_K * s, tile);
      else pack_tile(p.w.w, p.n, p.k, TILE * c, k0 + TILE_K * s, tile);
    }
}

// AMX: columns [16 c0, 16 c1) of y over all rows (c1 - c0 even), the inner dimension in chunks of kc.
void amx_column_group(const Problem& p, int c0, int c1, uint32_t* packed) {
  configure_tiles();
  const size_t stride = size_t(p.kc / TILE_K) * 256;
  for (int k0 = 0; k0 < p.kp; k0 += p.kc) {
    const int kc = std::min(p.kc, p.kp - k0), tiles_k = kc / TILE_K;
    pack_tiles(p, c0, c1, k0, kc, packed, stride);
    for (int r0 = 0; r0 < p.mp; r0 += 2 * TILE) {
      const uint16_t* x0 = p.xb + size_t(r0) * p.ldb + k0;
      const uint16_t* x1 = x0 + size_t(TILE) * p.ldb;
      const bool lower_rows = r0 + TILE < p.m;
      for (int c = c0; c < c1; c += 2) {
        const int j0 = TILE * c, j1 = j0 + TILE;
        if (k0 == 0) {
          _tile_zero(0), _tile_zero(1), _tile_zero(2), _tile_zero(3);
        } else {
          load_y<0>(p.y, p.m, p.n, r0, j0), load_y<1>(p.y, p.m, p.n, r0, j1);
          load_y<2>(p.y, p.m, p.n, r0 + TILE, j0), load_y<3>(p.y, p.m, p.n, r0 + TILE, j1);
        }
        const uint32_t* b0 = packed + (c - c0) * stride;
        const uint32_t* b1 = b0 + stride;
        for (int s = 0; s < tiles_k; ++s) {
          _tile_loadd(4, x0 + TILE_K * s, p.ldb * 2);
          _tile_loadd(6, b0 + s * 256, 64);
          _tile_loadd(7, b1 + s * 256, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          if (lower_rows) {
            _tile_loadd(5, x1 + TILE_K * s, p.ldb * 2);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
          }
        }
        store_y<0>(p.y, p.m, p.n, r0, j0), store_y<1>(p.y, p.m, p.n, r0, j1);
        if (lower_rows) store_y<2>(p.y, p.m, p.n, r0 + TILE, j0), store_y<3>(p.y, p.m, p.n, r0 + TILE, j1);
      }
    }
  }
  _tile_release();
}

constexpr int DP_ROWS = 12;  // rows of y per vdpbf16ps block: 24 accumulators, 2 tile rows, 1 broadcast

// vdpbf16ps: rows [r0, r0 + R) of y by the 32 columns of tiles b0 and b1 (at j0), kc inner positions from k0.
template <int R>
void dp_block(const Problem& p, int r0, int j0, int k0, int kc, const uint32_t* b0, const uint32_t* b1) {
  __m512 acc[R][2];
  const int cols = std::min(2 * TILE, p.n - j0);
  const __mmask16 m0 = cols >= TILE ? 0xFFFF : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 2 * TILE ? 0xFFFF : cols > TILE ? __mmask16((1u << (cols - TILE)) - 1) : 0;
  for (int r = 0; r < R; ++r) {
    float* yr = p.y + size_t(r0 + r) * p.n + j0;
    acc[r][0] = k0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, yr);
    acc[r][1] = k0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, yr + TILE);
  }
  const uint32_t* xr = reinterpret_cast<const uint32_t*>(p.xb + size_t(r0) * p.ldb + k0);
  const size_t ldx = p.ldb / 2;  // pairs per row of xb
  for (int s = 0; s < kc / TILE_K; ++s) {
    for (int q = 0; q < TILE; ++q) {
      const __m512bh w0 = (__m512bh)_mm512_load_si512(b0 + s * 256 + q * 16);
      const __m512bh w1 = (__m512bh)_mm512_load_si512(b1 + s * 256 + q * 16);
      const int pair = s * TILE + q;
      for (int r = 0; r < R; ++r) {
        const __m512bh a = (__m512bh)_mm512_set1_epi32(int(xr[r * ldx + pair]));
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, w0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, w1);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float* yr = p.y + size_t(r0 + r) * p.n + j0;
    _mm512_mask_storeu_ps(yr, m0, acc[r][0]);
    _mm512_mask_storeu_ps(yr + TILE, m1, acc[r][1]);
  }
}

void dp_rows(int rows, const Problem& p, int r0, int j0, int k0, int kc, const uint32_t* b0, const uint32_t* b1) {
  switch (rows) {
    case 12: dp_block<12>(p, r0, j0, k0, kc, b0, b1); break;
    case 11: dp_block<11>(p, r0, j0, k0, kc, b0, b1); break;
    case 10: dp_block<10>(p, r0, j0, k0, kc, b0, b1); break;
    case 9: dp_block<9>(p, r0, j0, k0, kc, b0, b1); break;
    case 8: dp_block<8>(p, r0, j0, k0, kc, b0, b1); break;
    case 7: dp_block<7>(p, r0, j0, k0, kc, b0, b1); break;
    case 6: dp_block<6>(p, r0, j0, k0, kc, b0, b1); break;
    case 5: dp_block<5>(p, r0, j0, k0, kc, b0, b1); break;
    case 4: dp_block<4>(p, r0, j0, k0, kc, b0, b1); break;
    case 3: dp_block<3>(p, r0, j0, k0, kc, b0, b1); break;
    case 2: dp_block<2>(p, r0, j0, k0, kc, b0, b1); break;
    default: dp_block<1>(p, r0, j0, k0, kc, b0, b1); break;
  }
}

// vdpbf16ps: columns [16 c0, 16 c1) of y over all rows, as amx_column_group.
void dp_column_group(const Problem& p, int c0, int c1, uint32_t* packed) {
  const size_t stride = size_t(p.kc / TILE_K) * 256;
  for (int k0 = 0; k0 < p.kp; k0 += p.kc) {
    const int kc = std::min(p.kc, p.kp - k0);
    pack_tiles(p, c0, c1, k0, kc, packed, stride);
    for (int r0 = 0; r0 < p.m; r0 += DP_ROWS)
      for (int c = c0; c < c1 && TILE * c < p.n; c += 2)
        dp_rows(std::min(DP_ROWS, p.m - r0), p, r0, TILE * c, k0, kc, packed + (c - c0) * stride, packed + (c - c0 + 1) * stride);
  }
}

void gemm_rounded(const uint16_t* xb, const Weights& w, float* y, int m, int n, int k, bool tiles);

// x rounded to bf16 into the GEMM's padded layout (a buffer kept per thread).
const uint16_t* rounded_rows(const float* x, int m, int k) {
  const int kp = bf16_gemm_padded_k(k), mp = bf16_gemm_padded_rows(m);
  const size_t ldb = bf16_gemm_row_stride(k);
  thread_local Buffer x_buffer;
  uint16_t* xb = grown(x_buffer.data, x_buffer.capacity, size_t(mp) * ldb);
  parallel_for(mp / TILE, [&](int b) { convert_rows(x, m, k, xb, ldb, kp, b * TILE, (b + 1) * TILE); });
  return xb;
}

}  // namespace

void gemm_bf16_avx512(const float* x, const uint16_t* w, float* y, int m, int n, int k, bool tiles) {
  ProfileScope scope(tiles ? "FastLinear.amx_gemm" : "FastLinear.dpbf16_gemm");
  Weights weights;
  weights.w = w;
  gemm_rounded(rounded_rows(x, m, k), weights, y, m, n, k, tiles);
}

void gemm_q8_avx512_bf16(const float* x, const int8_t* w, const float* scales, int group, float* y, int m, int n, int k,
                         bool tiles) {
  ProfileScope scope(tiles ? "FastLinearQ8.amx_gemm" : "FastLinearQ8.dpbf16_gemm");
  Weights weights;
  weights.w8 = w;
  weights.scales = scales;
  weights.group = group;
  gemm_rounded(rounded_rows(x, m, k), weights, y, m, n, k, tiles);
}

void gemm_bf16_avx512_rounded(const uint16_t* xb, const uint16_t* w, float* y, int m, int n, int k, bool tiles) {
  Weights weights;
  weights.w = w;
  gemm_rounded(xb, weights, y, m, n, k, tiles);
}

namespace {

void gemm_rounded(const uint16_t* xb, const Weights& w, float* y, int m, int n, int k, bool tiles) {
  const int kp = bf16_gemm_padded_k(k), mp = bf16_gemm_padded_rows(m);
  const size_t ldb = bf16_gemm_row_stride(k);
  const int chunks = (kp + KC_MOST - 1) / KC_MOST;
  const int kc = ((kp + chunks - 1) / chunks + TILE_K - 1) / TILE_K * TILE_K;
  const Problem problem{xb, ldb, w, y, m, n, k, mp, kp, kc};
  const int tiles_n = ((n + TILE - 1) / TILE + 1) / 2 * 2;
  // Groups small enough that each core gets at least two (a core the host slows down then hands work to the other).
  const int group = std::clamp(tiles_n / (2 * pool_threads()) / 2 * 2, 2, GROUP), groups = (tiles_n + group - 1) / group;
  parallel_for(groups, [&](int g) {
    thread_local Buffer packed;
    uint32_t* buffer = reinterpret_cast<uint32_t*>(grown(packed.data, packed.capacity, size_t(group) * kc * TILE));
    const int c0 = g * group, c1 = std::min(tiles_n, c0 + group);
    if (tiles) amx_column_group(problem, c0, c1, buffer);
    else dp_column_group(problem, c0, c1, buffer);
  });
}

}  // namespace

}  // namespace mlxkernels

#pragma clang attribute pop
