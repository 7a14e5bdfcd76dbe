// Scaled dot-product attention on the CPU: one task = one key/value head (or a share of its query blocks). It packs
// K into 16-key panels (d, 16) and V into 16-column panels (lk, 16), then for each block of queries computes the
// scores with a 6x16 AVX2 FMA microkernel, takes the softmax row by row in cache, multiplies by V with the same
// microkernel and scales the rows at the end. Causal blocks stop at the last key their queries can see.
// Few queries (decode) use a direct path without packing.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu_kernels.h"
#include "pool.h"
#include "simd.h"

namespace mlxkernels {
namespace {

constexpr int MR = 6;    // query rows per microkernel
constexpr int NR = 16;   // keys (or value columns) per microkernel
constexpr int BQ = 96;   // most queries per block (48 for heads narrower than 96)
constexpr int KC = 256;  // keys per step of P @ V
constexpr int DIRECT_ROWS = 8;  // up to this many queries: direct path
constexpr float HIDDEN = -1e9f; // score of a key hidden by causality (the MLX reference's value)

struct AlignedBuffer {
  float* data = nullptr;
  size_t size = 0;
  ~AlignedBuffer() { std::free(data); }
  void release() {
    std::free(data);
    data = nullptr;
    size = 0;
  }
  float* get(size_t n) {
    if (n > size) {
      std::free(data);
      size_t bytes = ((n * sizeof(float)) + 63) & ~size_t(63);
      data = static_cast<float*>(std::aligned_alloc(64, bytes));
      size = data ? n : 0;
    }
    return data;
  }
};

// exp(x) for x <= 0, exactly 0 below -87.3 (keys hidden by causality or a mask weigh nothing).
inline __m256 exp_nonpositive(__m256 x) {
  const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
  return _mm256_andnot_ps(under, exp_ps(x));
}

// Softmax numerator of one row in place: row[j] = exp(x_j - max) for j < count, where x_j = row[j] * scale +
// mask[j] (mask nullable); NaN inputs propagate. Returns the sum of the numerators.
float softmax_row(float* row, int count, float scale, const float* mask) {
  if (!mask && scale > 0) {
    // Unmasked rows: the maximum of the raw scores (scaling by a positive number keeps the order, so it is the
    // scaled maximum exactly), then x * scale - max in the same two roundings as a scaled copy, without storing one.
    __m256 vmax0 = _mm256_set1_ps(-INFINITY), vmax1 = vmax0;
    float m = -INFINITY;
    int j = 0;
    for (; j + 16 <= count; j += 16) {
      vmax0 = _mm256_max_ps(vmax0, _mm256_loadu_ps(row + j));
      vmax1 = _mm256_max_ps(vmax1, _mm256_loadu_ps(row + j + 8));
    }
    for (; j + 8 <= count; j += 8) vmax0 = _mm256_max_ps(vmax0, _mm256_loadu_ps(row + j));
    for (; j < count; ++j) m = std::max(m, row[j]);
    m = std::max(m, hmax(_mm256_max_ps(vmax0, vmax1))) * scale;
    if (m == -INFINITY) m = 0;
    const __m256 vs = _mm256_set1_ps(scale), vm = _mm256_set1_ps(m);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    j = 0;
    for (; j + 16 <= count; j += 16) {
      __m256 e0 = exp_nonpositive(_mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(row + j), vs), vm));
      __m256 e1 = exp_nonpositive(_mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(row + j + 8), vs), vm));
      _mm256_storeu_ps(row + j, e0);
      _mm256_storeu_ps(row + j + 8, e1);
      acc0 = _mm256_add_ps(acc0, e0);
      acc1 = _mm256_add_ps(acc1, e1);
    }
    for (; j + 8 <= count; j += 8) {
      __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(row + j), vs), vm));
      _mm256_storeu_ps(row + j, e);
      acc0 = _mm256_add_ps(acc0, e);
    }
    float sum = hsum(_mm256_add_ps(acc0, acc1));
    for (; j < count; ++j) {
      row[j] = std::exp(row[j] * scale - m);
      sum += row[j];
    }
    return sum;
  }
  const __m256 vs = _mm256_set1_ps(scale);
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  float m = -INFINITY;
  int j = 0;
  if (mask) {
    for (; j + 8 <= count; j += 8) {
      __m256 x = _mm256_fmadd_ps(_mm256_loadu_ps(row + j), vs, _mm256_loadu_ps(mask + j));
      _mm256_storeu_ps(row + j, x);
      vmax = _mm256_max_ps(vmax, x);
    }
    for (; j < count; ++j) {
      row[j] = row[j] * scale + mask[j];
      m = std::max(m, row[j]);
    }
  } else {
    for (; j + 8 <= count; j += 8) {
      __m256 x = _mm256_mul_ps(_mm256_loadu_ps(row + j), vs);
      _mm256_storeu_ps(row + j, x);
      vmax = _mm256_max_ps(vmax, x);
    }
    for (; j < count; ++j) {
      row[j] *= scale;
      m = std::max(m, row[j]);
    }
  }
  m = std::max(m, hmax(vmax));
  if (m == -INFINITY) m = 0;  // every key hidden by -inf: the exps are all zero and the row sums to zero (NaN out)
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  j = 0;
  for (; j + 8 <= count; j += 8) {
    __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(row + j), vm));
    _mm256_storeu_ps(row + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = hsum(acc);
  for (; j < count; ++j) {
    row[j] = std::exp(row[j] - m);
    sum += row[j];
  }
  return sum;
}

// C (rows x 16) (+)= A (rows x kc, row stride lda) @ B (kc x 16, packed contiguous, 32-byte aligned).
template <int R>
inline void micro(int kc, const float* a, int lda, const float* b, float* c, int ldc, bool accumulate) {
  __m256 c0[R], c1[R];
  for (int r = 0; r < R; ++r) c0[r] = c1[r] = _mm256_setzero_ps();
  const float* ar[R];
  for (int r = 0; r < R; ++r) ar[r] = a + size_t(r) * lda;
  for (int k = 0; k < kc; ++k) {
    __m256 b0 = _mm256_load_ps(b + size_t(k) * NR), b1 = _mm256_load_ps(b + size_t(k) * NR + 8);
    for (int r = 0; r < R; ++r) {
      __m256 x = _mm256_broadcast_ss(ar[r] + k);
      c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float* cr = c + size_t(r) * ldc;
    if (accumulate) {
      c0[r] = _mm256_add_ps(c0[r], _mm256_load_ps(cr));
      c1[r] = _mm256_add_ps(c1[r], _mm256_load_ps(cr + 8));
    }
    _mm256_store_ps(cr, c0[r]);
    _mm256_store_ps(cr + 8, c1[r]);
  }
}

inline void micro_rows(int rows, int kc, const float* a, int lda, const float* b, float* c, int ldc, bool accumulate) {
  switch (rows) {
    case 6: micro<6>(kc, a, lda, b, c, ldc, accumulate); break;
    case 5: micro<5>(kc, a, lda, b, c, ldc, accumulate); break;
    case 4: micro<4>(kc, a, lda, b, c, ldc, accumulate); break;
    case 3: micro<3>(kc, a, lda, b, c, ldc, accumulate); break;
    case 2: micro<2>(kc, a, lda, b, c, ldc, accumulate); break;
    default: micro<1>(kc, a, lda, b, c, ldc, accumulate); break;
  }
}

const float* mask_row(const AttentionArgs& a, int n, int h, int i) {
  if (!a.mask) return nullptr;
  size_t plane = (size_t(a.mb == 1 ? 0 : n) * a.mh + (a.mh == 1 ? 0 : h)) * a.mq + (a.mq == 1 ? 0 : i);
  return a.mask + plane * a.lk;
}

// Where query i of head h in batch row n writes its output (see AttentionArgs::out_by_position).
inline float* out_row(const AttentionArgs& a, int n, int h, int i) {
  return a.out + (a.out_by_position ? (size_t(n) * a.lq + i) * a.hq + h : (size_t(n) * a.hq + h) * a.lq + i) * a.d;
}

// Keys query i may see: all, or causally those j <= i + lk - lq (0 means none: the reference then averages
// over every key with score -1e9 + mask).
inline int visible_keys(const AttentionArgs& a, int i) {
  if (!a.causal) return a.lk;
  return std::clamp(i + a.lk - a.lq + 1, 0, a.lk);
}

// Keys row i must attend to: its causal view, less the trailing keys its mask hides (<= -1e8: the -1e9 of the
// engine's masks, -inf, -FLT_MAX), whose weights underflow to exactly zero. 0: every key the row may see is hidden,
// by causality or, with causality, by the mask too (see hidden_row).
constexpr float MASK_HIDDEN = -1e8f;
int row_keys(const AttentionArgs& a, const float* mrow, int i) {
  const int count = visible_keys(a, i);
  if (count == 0 || !mrow) return count;
  int c = count;
  const __m256 limit = _mm256_set1_ps(MASK_HIDDEN);
  while (c >= 8) {
    int hidden = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(mrow + c - 8), limit, _CMP_LE_OQ));
    if (hidden != 0xFF) {
      c -= 7 - (31 - __builtin_clz(unsigned(~hidden) & 0xFF));  // keep up to the last visible lane
      return c;
    }
    c -= 8;
  }
  while (c > 0 && mrow[c - 1] <= MASK_HIDDEN) --c;
  if (c > 0) return c;
  // Every key in view hidden by the mask: without causality, keep them all (the reference's uniform/NaN row over
  // score + mask); with it, the reference also weighs the keys causality hides (-1e9 + mask), so hidden_row.
  return a.causal && count < a.lk ? 0 : count;
}

// Row of numerators when no key in view is visible: as the reference scores them, -1e9 + mask_j for the keys
// causality hides (j >= visible) and mask_j for the others (score + mask_j, the score lost beside -1e9 or -inf).
float hidden_row(float* row, int lk, const float* mask, int visible) {
  for (int j = 0; j < lk; ++j) row[j] = (j < visible ? 0.0f : HIDDEN) + (mask ? mask[j] : 0.0f);
  return softmax_row(row, lk, 1.0f, nullptr);
}

// ---- few queries: dot products straight from K and V.
void attention_direct(const AttentionArgs& a) {
  const int d = a.d, lk = a.lk, group = a.hq / a.hkv;
  parallel_for(a.b * a.hq * a.lq, [&](int task) {
    const int i = task % a.lq, h = (task / a.lq) % a.hq, n = task / (a.lq * a.hq);
    const float* q = a.q + ((size_t(n) * a.hq + h) * a.lq + i) * d;
    const size_t plane = a.kv_plane ? a.kv_plane : size_t(lk) * d;
    const float* K = a.k + (size_t(n) * a.hkv + h / group) * plane;
    const float* V = a.v + (size_t(n) * a.hkv + h / group) * plane;
    float* out = out_row(a, n, h, i);
    thread_local AlignedBuffer scores_buf;
    float* s = scores_buf.get(size_t(lk) + 8);
    const float* mrow = mask_row(a, n, h, i);
    int count = row_keys(a, mrow, i);
    float sum;
    if (count == 0) {
      count = lk;
      sum = hidden_row(s, lk, mrow, visible_keys(a, i));
    } else {
      const int d8 = d & ~7;
      int j = 0;
      for (; j + 4 <= count; j += 4) {
        const float* k0 = K + size_t(j) * d;
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int t = 0; t < d8; t += 8) {
          __m256 qv = _mm256_loadu_ps(q + t);
          s0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + t), s0);
          s1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d + t), s1);
          s2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * d + t), s2);
          s3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * d + t), s3);
        }
        float r0 = hsum(s0), r1 = hsum(s1), r2 = hsum(s2), r3 = hsum(s3);
        for (int t = d8; t < d; ++t) {
          r0 += q[t] * k0[t];
          r1 += q[t] * k0[d + t];
          r2 += q[t] * k0[2 * d + t];
          r3 += q[t] * k0[3 * d + t];
        }
        s[j] = r0, s[j + 1] = r1, s[j + 2] = r2, s[j + 3] = r3;
      }
      for (; j < count; ++j) {
        const float* kr = K + size_t(j) * d;
        __m256 acc = _mm256_setzero_ps();
        for (int t = 0; t < d8; t += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + t), _mm256_loadu_ps(kr + t), acc);
        float r = hsum(acc);
        for (int t = d8; t < d; ++t) r += q[t] * kr[t];
        s[j] = r;
      }
      sum = softmax_row(s, count, a.scale, mrow);
    }
    const float inv = 1.0f / sum;
    // out = sum_j s_j v_j / sum, 32 columns at a time.
    int t = 0;
    for (; t + 32 <= d; t += 32) {
      __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
      for (int j = 0; j < count; ++j) {
        const float* vr = V + size_t(j) * d + t;
        __m256 p = _mm256_set1_ps(s[j]);
        o0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr), o0);
        o1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 8), o1);
        o2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 16), o2);
        o3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 24), o3);
      }
      const __m256 vi = _mm256_set1_ps(inv);
      _mm256_storeu_ps(out + t, _mm256_mul_ps(o0, vi));
      _mm256_storeu_ps(out + t + 8, _mm256_mul_ps(o1, vi));
      _mm256_storeu_ps(out + t + 16, _mm256_mul_ps(o2, vi));
      _mm256_storeu_ps(out + t + 24, _mm256_mul_ps(o3, vi));
    }
    for (; t + 8 <= d; t += 8) {
      __m256 o0 = _mm256_setzero_ps();
      for (int j = 0; j < count; ++j) o0 = _mm256_fmadd_ps(_mm256_set1_ps(s[j]), _mm256_loadu_ps(V + size_t(j) * d + t), o0);
      _mm256_storeu_ps(out + t, _mm256_mul_ps(o0, _mm256_set1_ps(inv)));
    }
    for (; t < d; ++t) {
      float o = 0;
      for (int j = 0; j < count; ++j) o += s[j] * V[size_t(j) * d + t];
      out[t] = o * inv;
    }
  });
}

// Panels of a (rows x d) row-major matrix for the microkernel's B operand: P[p][r][c] = X[r][p*16 + c] (rows x 16
// per panel of 16 columns), zero beyond d.
void pack_column_panels(const float* x, int rows, int d, int ld, float* dst) {
  const int dpanels = (d + NR - 1) / NR;
  for (int p = 0; p < dpanels; ++p) {
    const int cols = std::min(NR, d - p * NR);
    float* panel = dst + size_t(p) * rows * NR;
    for (int r = 0; r < rows; ++r) {
      std::memcpy(panel + size_t(r) * NR, x + size_t(r) * ld + p * NR, sizeof(float) * cols);
      if (cols < NR) std::memset(panel + size_t(r) * NR + cols, 0, sizeof(float) * (NR - cols));
    }
  }
}

// Panels of 16 rows transposed: P[p][t][c] = X[p*16 + c][t] (d x 16 per panel of 16 rows), zero beyond `rows`.
void pack_row_panels(const float* x, int rows, int d, float* dst) {
  const int panels = (rows + NR - 1) / NR;
  for (int p = 0; p < panels; ++p) {
    float* panel = dst + size_t(p) * d * NR;
    const int count = std::min(NR, rows - p * NR);
    for (int c = 0; c < count; ++c) {
      const float* src = x + size_t(p * NR + c) * d;
      for (int t = 0; t < d; ++t) panel[size_t(t) * NR + c] = src[t];
    }
    for (int c = count; c < NR; ++c)
      for (int t = 0; t < d; ++t) panel[size_t(t) * NR + c] = 0.0f;
  }
}

// ---- many queries: packed panels and the 6x16 microkernel.
// One task = one key/value head (or a share of its query blocks when there are fewer heads than threads): it packs
// that head's K and V into its own buffer, then runs every query block of the query heads that read them, so the
// packed panels stay in this core's caches instead of cycling through all heads' panels in memory.
void attention_tiled(const AttentionArgs& a) {
  const int d = a.d, lk = a.lk, lq = a.lq, group = a.hq / a.hkv;
  const int kpanels = (lk + NR - 1) / NR, dpanels = (d + NR - 1) / NR;
  const size_t kpack = size_t(kpanels) * d * NR, vpack = size_t(dpanels) * lk * NR;
  const int heads = a.b * a.hkv;
  // Wide heads: larger blocks read each packed panel for more queries; narrow ones keep more blocks to share.
  const int bq = d >= 96 ? BQ : BQ / 2;
  const int qblocks = (lq + bq - 1) / bq;
  const int blocks_per_head = group * qblocks;
  // Enough tasks for every thread to have two; each share packs its head again (cheap beside its blocks).
  const int threads = pool_threads();
  const int shares = std::clamp((2 * threads + heads - 1) / heads, 1, blocks_per_head);
  const int ldo = dpanels * NR;

  parallel_for(heads * shares, [&](int task) {
    const int head = task / shares, share = task % shares;
    const int n = head / a.hkv, kvh = head % a.hkv;
    thread_local AlignedBuffer packed_buf;
    float* kp = packed_buf.get(kpack + vpack);
    if (!kp) throw std::bad_alloc();
    float* vp = kp + kpack;
    {
      const size_t plane = a.kv_plane ? a.kv_plane : size_t(lk) * d;
      const float* K = a.k + size_t(head) * plane;
      const float* V = a.v + size_t(head) * plane;
      // Kp[p][t][c] = K[p*16 + c][t], Vp[p][j][c] = V[j][p*16 + c], zero beyond the edges.
      pack_row_panels(K, lk, d, kp);
      pack_column_panels(V, lk, d, d, vp);
    }
    thread_local AlignedBuffer s_buf, o_buf;
    float* O = o_buf.get(size_t(BQ) * ldo);
    // Shares take every shares-th block, so causal blocks of every cost are spread over them.
    for (int blk = share; blk < blocks_per_head; blk += shares) {
      const int h = kvh * group + blk / qblocks, qb = blk % qblocks;
      const int i0 = qb * bq, rows = std::min(bq, lq - i0);
      const float* Q = a.q + ((size_t(n) * a.hq + h) * lq + i0) * d;

      // Keys each row and each group of MR rows needs (all keys for a row that sees none).
      const int groups = (rows + MR - 1) / MR;
      int row_count[BQ], group_keys[BQ / MR];
      int block_keys = 0;
      for (int g = 0; g < groups; ++g) group_keys[g] = 0;
      for (int r = 0; r < rows; ++r) {
        row_count[r] = row_keys(a, mask_row(a, n, h, i0 + r), i0 + r);
        int keys = row_count[r] == 0 ? lk : row_count[r];
        group_keys[r / MR] = std::max(group_keys[r / MR], keys);
        block_keys = std::max(block_keys, keys);
      }
      const int lds = ((block_keys + NR - 1) / NR) * NR;
      float* S = s_buf.get(size_t(BQ) * std::max(lds, NR));

      // S = Q K^T over the key panels each group needs.
      for (int p = 0; p * NR < block_keys; ++p) {
        const float* b = kp + size_t(p) * d * NR;
        for (int g = 0; g < groups; ++g) {
          if (p * NR >= group_keys[g]) continue;
          micro_rows(std::min(MR, rows - g * MR), d, Q + size_t(g) * MR * d, d, b, S + size_t(g) * MR * lds + p * NR, lds, false);
        }
      }
      // Softmax numerators; keys past a row's view (up to its group's extent) get zero weight.
      float inv[BQ];
      for (int r = 0; r < rows; ++r) {
        float* row = S + size_t(r) * lds;
        const float* mrow = mask_row(a, n, h, i0 + r);
        const int extent = group_keys[r / MR];
        int count = row_count[r];
        float sum;
        if (count == 0) {
          count = lk;
          sum = hidden_row(row, lk, mrow, visible_keys(a, i0 + r));
        } else {
          sum = softmax_row(row, count, a.scale, mrow);
        }
        for (int j = count; j < extent; ++j) row[j] = 0.0f;
        inv[r] = 1.0f / sum;
      }
      // O = P V in steps of KC keys.
      for (int k0 = 0; k0 < block_keys; k0 += KC) {
        for (int p = 0; p < dpanels; ++p) {
          const float* b = vp + (size_t(p) * lk + k0) * NR;
          for (int g = 0; g < groups; ++g) {
            if (k0 >= group_keys[g]) continue;
            const int kc = std::min(KC, group_keys[g] - k0);
            micro_rows(std::min(MR, rows - g * MR), kc, S + size_t(g) * MR * lds + k0, lds, b, O + size_t(g) * MR * ldo + p * NR, ldo,
                       k0 > 0);
          }
        }
      }
      for (int r = 0; r < rows; ++r) {
        const float* src = O + size_t(r) * ldo;
        float* dst = out_row(a, n, h, i0 + r);
        const __m256 vi = _mm256_set1_ps(inv[r]);
        int t = 0;
        for (; t + 8 <= d; t += 8) _mm256_storeu_ps(dst + t, _mm256_mul_ps(_mm256_load_ps(src + t), vi));
        for (; t < d; ++t) dst[t] = src[t] * inv[r];
      }
    }
    // Release unusually large buffers (a long sequence's panels) rather than keep them per thread.
    if (packed_buf.size > (size_t(64) << 20)) packed_buf.release();
  });
}

// C (m x 16 panels, ldc) (+)= A (m x kc, lda) @ B (column panels of kc rows), in groups of MR rows.
void panel_product(int m, int kc, int panels, const float* a, int lda, const float* b, size_t b_panel, float* c, int ldc,
                   bool accumulate) {
  for (int p = 0; p < panels; ++p)
    for (int r = 0; r < m; r += MR)
      micro_rows(std::min(MR, m - r), kc, a + size_t(r) * lda, lda, b + size_t(p) * b_panel, c + size_t(r) * ldc + p * NR, ldc,
                 accumulate);
}

}  // namespace

void attention_grad(const AttentionArgs& a, const float* dout, float* dq, float* dk, float* dv) {
  const int d = a.d, lk = a.lk, lq = a.lq, group = a.hq / a.hkv;
  const int kpanels = (lk + NR - 1) / NR, dpanels = (d + NR - 1) / NR;
  const int ldo = dpanels * NR, lks = kpanels * NR;
  const size_t kv_plane = size_t(lk) * d, q_plane = size_t(lq) * d;
  constexpr int BR = 48;  // query rows per block
  // One task per key/value head: it packs K and V, owns that head's dk and dv, and runs every block of query rows
  // of its query heads: S = Q K^T, P = softmax, dP = dO V^T, dS = P (dP - rowsum(P dP)) scale, then dQ = dS K,
  // dV += P^T dO and dK += dS^T Q, all with the forward's 6x16 microkernel.
  parallel_for(a.b * a.hkv, [&](int task) {
    const int n = task / a.hkv, kvh = task % a.hkv;
    const float* K = a.k + size_t(task) * kv_plane;
    const float* V = a.v + size_t(task) * kv_plane;
    const size_t key_panels = size_t(kpanels) * d * NR, col_panels = size_t(dpanels) * lk * NR;
    const size_t acc = size_t(lks) * ldo, block = size_t(BR) * lks;
    thread_local AlignedBuffer buf;
    float* base = buf.get(2 * key_panels + col_panels + 2 * acc + 4 * block + 2 * size_t(dpanels) * BR * NR + size_t(BR) * ldo);
    if (!base) throw std::bad_alloc();
    float *Kp = base, *Vp = Kp + key_panels, *Kc = Vp + key_panels, *dKa = Kc + col_panels, *dVa = dKa + acc;
    float *S = dVa + acc, *dP = S + block, *PT = dP + block, *dST = PT + block;
    float *Qc = dST + block, *Gc = Qc + size_t(dpanels) * BR * NR, *dQb = Gc + size_t(dpanels) * BR * NR;
    pack_row_panels(K, lk, d, Kp);
    pack_row_panels(V, lk, d, Vp);
    pack_column_panels(K, lk, d, d, Kc);
    std::fill(dKa, dKa + 2 * acc, 0.0f);
    for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
      const size_t plane = size_t(n) * a.hq + h;
      for (int i0 = 0; i0 < lq; i0 += BR) {
        const int rows = std::min(BR, lq - i0);
        const float* Q = a.q + plane * q_plane + size_t(i0) * d;
        const float* G = dout + plane * q_plane + size_t(i0) * d;
        int count[BR];
        int keys = 0;
        for (int r = 0; r < rows; ++r) {
          count[r] = row_keys(a, mask_row(a, n, h, i0 + r), i0 + r);
          keys = std::max(keys, count[r] == 0 ? lk : count[r]);
        }
        const int kp = (keys + NR - 1) / NR, lds = kp * NR;
        panel_product(rows, d, kp, Q, d, Kp, size_t(d) * NR, S, lds, false);
        panel_product(rows, d, kp, G, d, Vp, size_t(d) * NR, dP, lds, false);
        for (int r = 0; r < rows; ++r) {
          float* pr = S + size_t(r) * lds;
          float* gr = dP + size_t(r) * lds;
          const float* mrow = mask_row(a, n, h, i0 + r);
          int c = count[r];
          float sum;
          if (c == 0) {  // no key in view visible: weights as hidden_row gives them, gradients for every score
            c = lk;
            sum = hidden_row(pr, lk, mrow, visible_keys(a, i0 + r));
          } else {
            sum = softmax_row(pr, c, a.scale, mrow);
          }
          const float inv = 1.0f / sum;
          float total = 0;
          for (int j = 0; j < c; ++j) {
            pr[j] *= inv;
            total += pr[j] * gr[j];
          }
          for (int j = 0; j < c; ++j) gr[j] = pr[j] * (gr[j] - total) * a.scale;  // dP becomes dS
          for (int j = c; j < lds; ++j) pr[j] = gr[j] = 0.0f;
          for (int j = 0; j < lds; ++j) {
            PT[size_t(j) * BR + r] = pr[j];
            dST[size_t(j) * BR + r] = gr[j];
          }
        }
        // dQ = dS K over the block's keys.
        panel_product(rows, keys, dpanels, dP, lds, Kc, size_t(lk) * NR, dQb, ldo, false);
        float* dqo = dq + plane * q_plane + size_t(i0) * d;
        for (int r = 0; r < rows; ++r) std::memcpy(dqo + size_t(r) * d, dQb + size_t(r) * ldo, sizeof(float) * d);
        // dV += P^T dO and dK += dS^T Q over the block's keys.
        pack_column_panels(G, rows, d, d, Gc);
        pack_column_panels(Q, rows, d, d, Qc);
        panel_product(keys, rows, dpanels, PT, BR, Gc, size_t(rows) * NR, dVa, ldo, true);
        panel_product(keys, rows, dpanels, dST, BR, Qc, size_t(rows) * NR, dKa, ldo, true);
      }
    }
    float* dK = dk + size_t(task) * kv_plane;
    float* dV = dv + size_t(task) * kv_plane;
    for (int j = 0; j < lk; ++j) {
      std::memcpy(dK + size_t(j) * d, dKa + size_t(j) * ldo, sizeof(float) * d);
      std::memcpy(dV + size_t(j) * d, dVa + size_t(j) * ldo, sizeof(float) * d);
    }
    if (buf.size > (size_t(64) << 20)) buf.release();
  });
}

float softmax_numerators(float* row, int count, float scale, const float* mask) { return softmax_row(row, count, scale, mask); }

void attention(const AttentionArgs& a) {
  if (a.b <= 0 || a.hq <= 0 || a.lq <= 0 || a.d <= 0) return;
  if (a.lk <= 0) {  // no keys: softmax over nothing
    std::fill(a.out, a.out + size_t(a.b) * a.hq * a.lq * a.d, NAN);
    return;
  }
  if (a.lq <= DIRECT_ROWS) attention_direct(a);
  else attention_tiled(a);
}

}  // namespace mlxkernels
