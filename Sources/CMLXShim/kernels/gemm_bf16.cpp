// y (m, n) = x (m, k) @ w^T for bfloat16 (or int8 with per-group scales) weights w (n, k) and many rows: a blocked
// GEMM that packs each 16-row (AVX2) or 32-row (AVX-512, gemm_micro_avx512.cpp) slice of w straight into a float32
// panel in L1, and runs a 6x16 AVX2 or 12x32 AVX-512 FMA microkernel that broadcasts x from its rows in place; each task packs its group of panels once and runs every row block over them
// (or, for an x too large for L3, one row block). Against converting w to float32 and calling OpenBLAS, this saves the
// conversion pass, OpenBLAS's own repacking of the converted weights and its zeroing of y. `janusflow bench kernels
// --compare-bf16-gemm` (the 1.3B model's shapes, weights cold as in the model): 600-row prefill shapes 177-194
// against 168-181 GFLOP/s (medians), the Euler step's 1154-row shapes equal or better (down 195 against 170).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cpu_kernels.h"
#include "pool.h"
#include "simd.h"

namespace mlxkernels {

std::atomic<int> bf16_gemm_enabled{[] {
  const char* env = std::getenv("MLXS_BF16_GEMM");
  return env ? std::atoi(env) != 0 : true;
}()};

namespace {

constexpr int MC = 240;  // most rows of x per block: 240 x KC floats (480 KB for AVX2) stay in L2 across the panels
constexpr int GROUP_COLUMNS = 256;  // output columns per task (at most, for tasks by column groups)
constexpr size_t COLUMN_GROUP_X_BYTES = size_t(16) << 20;  // x up to this size: tasks by column groups (x stays in L3)

// Where the weights come from: bf16 rows, or int8 rows with one float32 scale per `group` inputs of a row.
struct BF16Rows {
  const uint16_t* w;
  int n, k;
  const void* row(int j, int t) const { return w + size_t(j) * k + t; }
  float at(int j, int t) const { return bf16_to_f32(w[size_t(j) * k + t]); }
  // Eight weights of row j from position t (t a multiple of 8).
  __m256 load8(int j, int t) const { return load8_bf16(w + size_t(j) * k + t); }
  static constexpr int bytes = 2;
};
struct Q8Rows {
  const int8_t* w;
  const float* scales;
  int n, k, group;
  const void* row(int j, int t) const { return w + size_t(j) * k + t; }
  float at(int j, int t) const { return float(w[size_t(j) * k + t]) * scales[size_t(j) * (k / group) + t / group]; }
  // The eight share one scale: groups are multiples of 16 and t a multiple of 8.
  __m256 load8(int j, int t) const {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + size_t(j) * k + t));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(scales[size_t(j) * (k / group) + t / group]));
  }
  static constexpr int bytes = 1;
};

// panel[t * stride + r] = w[n0 + r][k0 + t] as float32 for t < kc, r < 16; rows past n are zero.
template <typename W>
void pack_16_rows(const W& w, int n0, int k0, int kc, float* panel, int stride) {
  const int rows = std::min(16, w.n - n0);
  if (rows < 16) {
    for (int t = 0; t < kc; ++t)
      for (int r = 0; r < 16; ++r) panel[t * stride + r] = r < rows ? w.at(n0 + r, k0 + t) : 0.0f;
    return;
  }
  int t = 0;
  for (; t + 8 <= kc; t += 8) {
    // Two 8x8 transposes: rows 0-7 and 8-15 of the panel, eight inner positions each.
    for (int half = 0; half < 2; ++half) {
      const int j = n0 + 8 * half;
      __m256 v0 = w.load8(j, k0 + t), v1 = w.load8(j + 1, k0 + t), v2 = w.load8(j + 2, k0 + t), v3 = w.load8(j + 3, k0 + t);
      __m256 v4 = w.load8(j + 4, k0 + t), v5 = w.load8(j + 5, k0 + t), v6 = w.load8(j + 6, k0 + t), v7 = w.load8(j + 7, k0 + t);
      __m256 t0 = _mm256_unpacklo_ps(v0, v1), t1 = _mm256_unpackhi_ps(v0, v1), t2 = _mm256_unpacklo_ps(v2, v3);
      __m256 t3 = _mm256_unpackhi_ps(v2, v3), t4 = _mm256_unpacklo_ps(v4, v5), t5 = _mm256_unpackhi_ps(v4, v5);
      __m256 t6 = _mm256_unpacklo_ps(v6, v7), t7 = _mm256_unpackhi_ps(v6, v7);
      __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      float* d = panel + t * stride + 8 * half;
      _mm256_store_ps(d + 0 * stride, _mm256_permute2f128_ps(s0, s4, 0x20));
      _mm256_store_ps(d + 1 * stride, _mm256_permute2f128_ps(s1, s5, 0x20));
      _mm256_store_ps(d + 2 * stride, _mm256_permute2f128_ps(s2, s6, 0x20));
      _mm256_store_ps(d + 3 * stride, _mm256_permute2f128_ps(s3, s7, 0x20));
      _mm256_store_ps(d + 4 * stride, _mm256_permute2f128_ps(s0, s4, 0x31));
      _mm256_store_ps(d + 5 * stride, _mm256_permute2f128_ps(s1, s5, 0x31));
      _mm256_store_ps(d + 6 * stride, _mm256_permute2f128_ps(s2, s6, 0x31));
      _mm256_store_ps(d + 7 * stride, _mm256_permute2f128_ps(s3, s7, 0x31));
    }
  }
  for (; t < kc; ++t)
    for (int r = 0; r < 16; ++r) panel[t * stride + r] = w.at(n0 + r, k0 + t);
}

template <typename W>
void prefetch_panel(const W& w, int n0, int k0, int kc, int nr) {
  const int rows = std::min(nr, w.n - n0);
  for (int r = 0; r < rows; ++r) {
    const char* row = static_cast<const char*>(w.row(n0 + r, k0));
    for (int b = 0; b < kc * W::bytes; b += 64) _mm_prefetch(row + b, _MM_HINT_T1);
  }
}

constexpr int NR = 16;  // the AVX2 microkernel's panel width

// y rows [0, R) x columns [0, cols) (+)= x rows (stride ldx) over kc inner positions @ panel.
template <int R>
inline void micro(const float* x, size_t ldx, const float* panel, int kc, float* y, size_t ldy, bool accumulate, int cols) {
  __m256 c0[R], c1[R];
  for (int r = 0; r < R; ++r) c0[r] = c1[r] = _mm256_setzero_ps();
  // y's tile is read or written at the end: ask for it now, so that its lines arrive during the products (without
  // this the kernel waited on memory at every tile: up to a fifth slower on one core).
  for (int r = 0; r < R; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(y + r * ldy), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(y + r * ldy + NR - 1), _MM_HINT_T0);
  }
  for (int t = 0; t < kc; ++t) {
    const __m256 b0 = _mm256_load_ps(panel + t * NR), b1 = _mm256_load_ps(panel + t * NR + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(x + r * ldx + t);
      c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
    }
  }
  if (cols == NR) {
    for (int r = 0; r < R; ++r) {
      float* yr = y + r * ldy;
      if (accumulate) {
        c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(yr));
        c1[r] = _mm256_add_ps(c1[r], _mm256_loadu_ps(yr + 8));
      }
      _mm256_storeu_ps(yr, c0[r]);
      _mm256_storeu_ps(yr + 8, c1[r]);
    }
    return;
  }
  for (int r = 0; r < R; ++r) {
    alignas(32) float tile[NR];
    _mm256_store_ps(tile, c0[r]);
    _mm256_store_ps(tile + 8, c1[r]);
    float* yr = y + r * ldy;
    for (int j = 0; j < cols; ++j) yr[j] = accumulate ? yr[j] + tile[j] : tile[j];
  }
}

void micro_rows(int rows, const float* x, size_t ldx, const float* panel, int kc, float* y, size_t ldy, bool accumulate, int cols) {
  switch (rows) {
    case 6: micro<6>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 5: micro<5>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 4: micro<4>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 3: micro<3>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    case 2: micro<2>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
    default: micro<1>(x, ldx, panel, kc, y, ldy, accumulate, cols); break;
  }
}

// The two microkernel shapes: NR output columns per panel, up to MR rows of x per call, KC inner positions per
// panel (the panel, KC x NR floats, stays in L1: 32 KB for both). AVX-512 with KC 384 or 512 measured the same as
// 256 (the model's shapes, interleaved in one process on an Ice Lake Xeon).
struct Avx2Tiles {
  static constexpr int NR = 16, MR = 6, KC = 512;
  static void run(int rows, const float* x, size_t ldx, const float* panel, int kc, float* y, size_t ldy, bool accumulate, int cols) {
    micro_rows(rows, x, ldx, panel, kc, y, ldy, accumulate, cols);
  }
};
struct Avx512Tiles {
  static constexpr int NR = 32, MR = 12, KC = 256;
  static void run(int rows, const float* x, size_t ldx, const float* panel, int kc, float* y, size_t ldy, bool accumulate, int cols) {
    micro_f32_avx512(rows, x, ldx, panel, kc, y, ldy, accumulate, cols);
  }
};

// One panel of T::NR weight rows from n0, as 16-row slices side by side.
template <typename T, typename W>
void pack_panel(const W& w, int n0, int k0, int kc, float* panel) {
  for (int h = 0; h < T::NR; h += 16) pack_16_rows(w, n0 + h, k0, kc, panel + h, T::NR);
}

// A thread's buffer of floats, 64-byte aligned, kept between calls.
struct FloatBuffer {
  float* data = nullptr;
  size_t count = 0;
  ~FloatBuffer() { std::free(data); }
  float* at_least(size_t wanted) {
    if (count < wanted) {
      std::free(data);
      data = static_cast<float*>(std::aligned_alloc(64, (wanted * sizeof(float) + 63) / 64 * 64));
      if (!data) throw std::bad_alloc();
      count = wanted;
    }
    return data;
  }
};
thread_local FloatBuffer panel_buffer;

// Rows [m0, m0 + mc) x output columns [NR p0, NR p1): KC inner positions at a time, one panel after another, so
// that the rows' (mc x KC) block of x stays in L2 across the panels.
template <typename T, typename W>
void block(const float* x, const W& w, float* y, int m0, int mc, int p0, int p1) {
  constexpr int NR = T::NR, KC = T::KC;
  const int n = w.n, k = w.k;
  alignas(64) float panel[KC * NR];
  for (int k0 = 0; k0 < k; k0 += KC) {
    const int kc = std::min(KC, k - k0);
    const float* xb = x + size_t(m0) * k + k0;
    for (int p = p0; p < p1; ++p) {
      pack_panel<T>(w, NR * p, k0, kc, panel);
      // The next panel's weights (or the next block's first) asked for while this one computes: in the model they
      // come cold from memory, as 16 short runs that the hardware prefetchers would pick up late.
      const int next_p = p + 1 < p1 ? p + 1 : p0, next_k0 = p + 1 < p1 ? k0 : k0 + KC;
      if (next_k0 < k) prefetch_panel(w, NR * next_p, next_k0, std::min(KC, k - next_k0), NR);
      const int cols = std::min(NR, n - NR * p);
      float* yb = y + size_t(m0) * n + NR * p;
      for (int r = 0; r < mc; r += T::MR)
        T::run(std::min(T::MR, mc - r), xb + size_t(r) * k, size_t(k), panel, kc, yb + size_t(r) * n, size_t(n), k0 > 0, cols);
    }
  }
}

// Output columns [NR p0, NR p1) for all m rows: for each KC-deep slice, the group's panels are packed once into
// `packed` (L2) and then serve every block of mc rows, each block's (mc x KC) slice of x staying in L2 across the
// panels. The next slice's weights are asked for one panel per panel computed.
template <typename T, typename W>
void column_group(const float* x, const W& w, float* y, int m, int mc, int p0, int p1, float* packed) {
  constexpr int NR = T::NR, KC = T::KC;
  const int n = w.n, k = w.k, count = p1 - p0;
  for (int k0 = 0; k0 < k; k0 += KC) {
    const int kc = std::min(KC, k - k0);
    for (int p = p0; p < p1; ++p) pack_panel<T>(w, NR * p, k0, kc, packed + size_t(p - p0) * KC * NR);
    const int next_k0 = k0 + KC;
    int step = 0;
    for (int m0 = 0; m0 < m; m0 += mc) {
      const int rows = std::min(mc, m - m0);
      const float* xb = x + size_t(m0) * k + k0;
      for (int p = p0; p < p1; ++p, ++step) {
        if (step < count && next_k0 < k) prefetch_panel(w, NR * (p0 + step), next_k0, std::min(KC, k - next_k0), NR);
        const int cols = std::min(NR, n - NR * p);
        const float* panel = packed + size_t(p - p0) * KC * NR;
        float* yb = y + size_t(m0) * n + NR * p;
        for (int r = 0; r < rows; r += T::MR)
          T::run(std::min(T::MR, rows - r), xb + size_t(r) * k, size_t(k), panel, kc, yb + size_t(r) * n, size_t(n), k0 > 0, cols);
      }
    }
  }
}

template <typename T, typename W>
void gemm(const float* x, const W& w, float* y, int m) {
  constexpr int NR = T::NR, MR = T::MR, GROUP = GROUP_COLUMNS / T::NR;
  // Row blocks of equal size (a multiple of MR) up to MC rows: a short last block (1154 rows as 6 x 192 + 2) would
  // pay for its rows a whole pass of the weights. Against fixed 192-row blocks, interleaved in one process: 1154-row
  // shapes 204-211 against 201-209 GFLOP/s, 600-row shapes 207 against 204 (best of six rounds).
  const int blocks = (m + MC - 1) / MC, mc = ((m + blocks - 1) / blocks + MR - 1) / MR * MR;
  const int panels = (w.n + NR - 1) / NR;
  if (size_t(m) * w.k * sizeof(float) <= COLUMN_GROUP_X_BYTES) {
    // Tasks by groups of output columns over all rows: each weight panel is packed once instead of once per row
    // block, and x (which fits in L3) is read again by every group. About eight groups per core. Against tasks of
    // one row block, interleaved: step q/k/v/o and gate/up 212-213 against 204 GFLOP/s (medians), prefill
    // 208-209 against 203, SigLIP +1%.
    const int group = std::clamp(panels / (8 * pool_threads()), 1, GROUP), groups = (panels + group - 1) / group;
    parallel_for(groups, [&](int t) {
      const int p0 = t * group;
      column_group<T>(x, w, y, m, mc, p0, std::min(panels, p0 + group), panel_buffer.at_least(size_t(group) * T::KC * NR));
    });
    return;
  }
  // A larger x (the step's down projection, 26 MB) is not read again per group: tasks of one row block by GROUP
  // panels, handed out in turn, many more than cores so that a core the host slows down hands its share to the
  // other (a static half each measured up to half speed in such moments).
  const int groups = (panels + GROUP - 1) / GROUP, row_blocks = (m + mc - 1) / mc;
  parallel_for(row_blocks * groups, [&](int t) {
    const int m0 = (t / groups) * mc, p0 = (t % groups) * GROUP;
    block<T>(x, w, y, m0, std::min(mc, m - m0), p0, std::min(panels, p0 + GROUP));
  });
}

template <typename W>
void gemm_on_path(const float* x, const W& w, float* y, int m) {
  if (cpu_path() >= CpuPath::avx512) gemm<Avx512Tiles>(x, w, y, m);
  else gemm<Avx2Tiles>(x, w, y, m);
}

}  // namespace

void gemm_bf16(const float* x, const uint16_t* w, float* y, int m, int n, int k) { gemm_on_path(x, BF16Rows{w, n, k}, y, m); }

void gemm_q8(const float* x, const int8_t* w, const float* scales, float* y, int m, int n, int k, int group) {
  gemm_on_path(x, Q8Rows{w, scales, n, k, group}, y, m);
}

}  // namespace mlxkernels
