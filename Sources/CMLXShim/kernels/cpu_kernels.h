// Raw CPU kernels behind the shim's MLX custom primitives (row-major float buffers, no MLX types).
#pragma once

#include <atomic>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mlxkernels {

// Time spent per kernel (profile.cpp): on with MLXS_PROFILE=1 (printed at exit) or set_profiling.
bool profiling();
void set_profiling(bool on);
void profile_add(const char* key, double seconds);
void profile_reset();
std::string profile_report();
// Adds the scope's wall time under `key` when profiling (key: a string literal).
class ProfileScope {
 public:
  explicit ProfileScope(const char* key) : key_(profiling() ? key : nullptr), start_(key_ ? now() : 0) {}
  ~ProfileScope() {
    if (key_) profile_add(key_, now() - start_);
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  static double now();
  const char* key_;
  double start_;
};

// The host's instruction sets (cpuid + what the OS saves; AMX only once Linux granted the tile state).
struct CpuFeatures {
  bool avx2, fma, f16c, avx512f, avx512dq, avx512bw, avx512vl, avx512_vnni, avx512_bf16, amx_tile, amx_bf16, amx_int8;
  bool amx_permitted;
};
const CpuFeatures& cpu_features();
std::string cpu_feature_list();
// Kernel paths for the large products, each needing what the one before needs: avx2 (+FMA, F16C); avx512 (F, BW,
// VL, DQ; float32 arithmetic); avx512_bf16 (vdpbf16ps: bf16 weights times activations rounded to bf16, float32
// sums); amx (BF16 tiles, the same rounding). The one in use: the best the host has, capped by MLXS_CPU_PATH.
enum class CpuPath { avx2 = 0, avx512 = 1, avx512_bf16 = 2, amx = 3 };
CpuPath best_cpu_path();
extern std::atomic<int> cpu_path_in_use;
inline CpuPath cpu_path() { return CpuPath(cpu_path_in_use.load(std::memory_order_relaxed)); }
bool set_cpu_path(CpuPath path);  // false (and unchanged) above best_cpu_path()
const char* cpu_path_name(CpuPath path);
bool parse_cpu_path(const char* name, CpuPath* path);

// y (m, n) = x (m, k) @ w^T for bf16 w (n, k), x rounded to bf16 (round to nearest even) and products summed in
// float32: by AMX tiles (tiles: only where cpu_path() is amx) or vdpbf16ps (where it is at least avx512_bf16).
void gemm_bf16_avx512(const float* x, const uint16_t* w, float* y, int m, int n, int k, bool tiles);
// The same product for int8 weights with float32 scales per `group` inputs (a multiple of 16): each weight times its
// scale rounded to bf16 as the weights are packed.
void gemm_q8_avx512_bf16(const float* x, const int8_t* w, const float* scales, int group, float* y, int m, int n, int k,
                         bool tiles);
// The same product for x already rounded to bf16 in the GEMM's own layout: bf16_gemm_padded_rows(m) rows of
// bf16_gemm_row_stride(k) values, zero past k up to bf16_gemm_padded_k(k) and in the rows past m (a caller that
// makes its activations itself, such as the Winograd convolution, writes them so and saves a pass).
void gemm_bf16_avx512_rounded(const uint16_t* xb, const uint16_t* w, float* y, int m, int n, int k, bool tiles);
inline int bf16_gemm_padded_k(int k) { return (k + 31) / 32 * 32; }
inline int bf16_gemm_padded_rows(int m) { return (m + 31) / 32 * 32; }
// One extra 64-byte line per row where the padded k is a multiple of 2048: strides of 4 KB multiples would put a
// tile's 16 rows in one L1 set.
inline size_t bf16_gemm_row_stride(int k) {
  const int kp = bf16_gemm_padded_k(k);
  return size_t(kp) + (kp % 2048 == 0 ? 32 : 0);
}
// Whether products with bf16 weights (any row count: GEMM, rows kernel, fused decode) round their activations to
// bf16 first: on the avx512_bf16 and amx paths with the shim's bf16 GEMM on.
bool bf16_rounds_activations();
// Whether int8-weight products over many rows (more than linear_q8_rows_limit) take the bf16 GEMM, activations and
// dequantised weights rounded to bf16: the same paths and switch.
inline bool q8_gemm_rounds_to_bf16() { return bf16_rounds_activations(); }

// c (m, n) = op(a) @ op(b) + beta c, row-major, op transposing when asked (lda/ldb: the stored rows' lengths).
// OpenBLAS with its threads above 1 GFLOP (MLXS_GEMM_SPLIT_LIMIT), else one single-threaded call per core on a
// share of the rows (or columns). Must be called from MLX's CPU stream thread (it switches OpenBLAS's thread
// count for the call).
// Products of at most this many flops run as one single-threaded OpenBLAS call per core (MLXS_GEMM_SPLIT_LIMIT).
extern std::atomic<double> gemm_split_limit;
void sgemm(bool trans_a, bool trans_b, int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
           int ldc, float beta = 0.0f);

// y (m, n) = x (m, k) @ w^T, w (n, k) row-major float32 or bfloat16 (raw 16-bit patterns). Both cores; AVX2.
// Meant for few rows (decode); reads every weight once per call.
void linear_rows_f32(const float* x, const float* w, float* y, int m, int n, int k);
void linear_rows_bf16(const float* x, const uint16_t* w, float* y, int m, int n, int k);
// Many rows: the shim's blocked GEMM on bf16 panels (gemm_bf16), or with bf16_gemm_enabled off, w converted to
// float32 block by block and OpenBLAS sgemm.
void linear_gemm_bf16(const float* x, const uint16_t* w, float* y, int m, int n, int k);
// y (m, n) = x (m, k) @ w^T: each 16-row slice of w packed from bf16 into a float32 panel, 6x16 FMA microkernel,
// both cores over the output columns. MLXS_BF16_GEMM=0 (or mlxs_set_bf16_gemm(0)) goes back to OpenBLAS, for
// int8 weights (gemm_q8) too.
extern std::atomic<int> bf16_gemm_enabled;
void gemm_bf16(const float* x, const uint16_t* w, float* y, int m, int n, int k);
// The same GEMM on int8 weights with float32 scales per `group` inputs (group a multiple of 16 dividing k).
// Both run the 12x32 AVX-512 microkernel where cpu_path() is avx512 or above.
void gemm_q8(const float* x, const int8_t* w, const float* scales, float* y, int m, int n, int k, int group);
// y rows [0, rows) x columns [0, cols) (+)= x (rows <= 12 of stride ldx, kc positions) @ a (kc, 32) float32 panel.
void micro_f32_avx512(int rows, const float* x, size_t ldx, const float* panel, int kc, float* y, size_t ldy,
                      bool accumulate, int cols);
// Rows of x up to which linear_rows_* is used (k: the inner dimension).
int linear_rows_limit(bool bf16, int k);

// y (m, n) = x (m, k) @ w^T with int8 w (n, k) and float32 scales (n, k / group): w[j, t] = q[j, t] *
// scales[j, t / group]; group a multiple of 16 dividing k. Rows kernel for few rows, dequantise + sgemm for many.
void linear_rows_q8(const float* x, const int8_t* w, const float* scales, float* y, int m, int n, int k, int group);
void linear_gemm_q8(const float* x, const int8_t* w, const float* scales, float* y, int m, int n, int k, int group);
int linear_q8_rows_limit(int k);

// Rows [j0, j1) of y (m, n) = x (m, k) @ w^T, on the calling thread: the pieces a caller composes into one
// parallel loop over several matrices. bf16 reads x as prepare_rows_bf16 reorders it (even/odd within each 16).
void prepare_rows_bf16(const float* x, float* xp, int m, int k);
void linear_block_f32(const float* x, const float* w, float* y, int m, int n, int k, int j0, int j1);
void linear_block_bf16(const float* xp, const uint16_t* w, float* y, int m, int n, int k, int j0, int j1);
void linear_block_q8(const float* x, const int8_t* w, const float* scales, float* y, int m, int n, int k, int group, int j0,
                     int j1);

// Few-row int8 products on AVX-512 VNNI (quantized_vnni.cpp): x rounded to int8 per group of the weights' group
// size (scale max|x| / 127, nearest even), stored offset by 128 for vpdpbusd; sums exact in int32, then scaled.
// Used where cpu_path() is avx512 or above, the CPU has VNNI and MLXS_INT8_VNNI (q8_vnni_enabled) is not 0, for
// groups that are multiples of 64; elsewhere the weights are widened to float32 (linear_block_q8).
struct QuantizedRows {
  std::vector<uint8_t> bytes;  // (rows, k): q + 128
  std::vector<float> scales;   // (rows, k / group)
  int rows = 0, k = 0, group = 0;
};
extern std::atomic<int> q8_vnni_enabled;
bool q8_quantizes_activations();
bool q8_vnni_usable(int k, int group);
void quantize_rows_q8(const float* x, int rows, int k, int group, QuantizedRows& out);
// Rows [j0, j1) of y (x.rows, n) = x @ w^T, on the calling thread.
void linear_block_q8_vnni(const QuantizedRows& x, const int8_t* w, const float* scales, float* y, int n, int j0, int j1);

// Row normalisations over the last axis of x (rows, d), float32; w / b nullable (d). rms: x / sqrt(mean(x^2) + eps)
// * w; layer: (x - mean) / sqrt(var + eps) * w + b (biased variance).
void rms_norm(const float* x, const float* w, float* y, int rows, int d, float eps);
void layer_norm(const float* x, const float* w, const float* b, float* y, int rows, int d, float eps);
// y = silu(a) * b (the SwiGLU gate), n values.
void silu_mul(const float* a, const float* b, float* y, size_t n);
// y = a + b elementwise on both cores (residual connections: MLX's add runs on one).
void add(const float* a, const float* b, float* y, size_t n);
// y (rows, n) += b (n) in every row, on both cores (a linear layer's bias).
void add_rows(float* y, const float* b, int rows, int n);
enum class Activation { silu, gelu_erf, gelu_tanh };
void activation(const float* x, float* y, size_t n, Activation kind);
// Their gradients for a cotangent c: dx = c f'(x); for silu(a) * b, da = c b silu'(a) and db = c silu(a).
void activation_grad(const float* x, const float* c, float* dx, size_t n, Activation kind);
// Cross-entropy per row of logits (rows, v): logsumexp(row) - row[target] (NaN for a target outside [0, v)); its
// gradient for a per-row cotangent c: c (softmax(row) - onehot(target)).
void cross_entropy(const float* logits, const int32_t* targets, float* loss, int rows, int v);
void cross_entropy_grad(const float* logits, const int32_t* targets, const float* cotangent, float* dlogits, int rows,
                        int v);
void silu_mul_grad(const float* a, const float* b, const float* c, float* da, float* db, size_t n);

// Convolution: x (b, h, w, cin) NHWC, weight (cout, kh, kw, cin) OHWI, y (b, oh, ow, cout) with
// oh = (h + 2 ph - kh) / sh + 1 (likewise ow); zero padding, groups 1, dilation 1. With weight_bf16 set instead of
// weight (bfloat16 weights, same layout) the products follow the bf16 linear layers' rule: on the paths that round
// activations (bf16_rounds_activations) the shim's bf16 GEMM on activations rounded to bf16, elsewhere the weights
// widened to float32 once and the float32 convolution (what casting them first gives).
struct ConvArgs {
  const float* x;
  const float* weight;
  float* y;
  int b, h, w, cin, cout, kh, kw, sh, sw, ph, pw;
  const uint16_t* weight_bf16 = nullptr;
};
void conv2d(const ConvArgs& a);
// Smallest image (h * w pixels) whose 3x3 stride-1 convolutions with 32-127 channels take Winograd F(2x2, 3x3)
// (with 128+ channels in and out they always do).
extern std::atomic<int64_t> winograd_min_pixels;
// How far ahead (bytes) the one-row matrix-vector kernel (float32 / bf16 weights) prefetches its weights; 0: no
// software prefetch. The int8 kernel keeps its next-tile prefetch: switching that off too cost int8 decoding 26%
// on the same Zen 4 host (11.2 -> 8.2 tokens/s).
extern std::atomic<int> matvec_prefetch_bytes;
// Its gradients for the cotangent dy (b, oh, ow, cout): dx like x and dw like the weight, either nullable (not
// computed); a.y is not read.
void conv2d_grad(const ConvArgs& a, const float* dy, float* dx, float* dw);
// GroupNorm of x (batch, pixels, c) over groups of c / groups channels and every pixel (PyTorch semantics: biased
// variance), per-channel w / b (nullable), then SiLU if asked.
void group_norm(const float* x, const float* w, const float* b, float* y, int batch, size_t pixels, int c, int groups,
                float eps, bool silu);
// Its gradients for the cotangent dy: dx (like x) and, where not null, dw and db (c each).
void group_norm_grad(const float* x, const float* w, const float* b, const float* dy, float* dx, float* dw, float* db,
                     int batch, size_t pixels, int c, int groups, float eps, bool silu);

// Depthwise convolution, stride 1, zero padding: x (b, h, w, c) NHWC, weights (c, kh, kw), y (b, oh, ow, c) with
// oh = h + 2 ph - kh + 1, ow = w + 2 pw - kw + 1.
void depthwise_conv2d(const float* x, const float* w, float* y, int b, int h, int wd, int c, int kh, int kw, int ph,
                      int pw);

// Scaled dot-product attention. q (b, hq, lq, d), k/v (b, hkv, lk, d), out (b, hq, lq, d), contiguous.
// mask: optional additive (mb, mh, mq, lk) with mb in {1, b}, mh in {1, hq}, mq in {1, lq}.
// causal: query i sees keys j <= i + lk - lq; hidden keys score -1e9 (plus the mask), as in the MLX reference.
struct AttentionArgs {
  const float* q;
  const float* k;
  const float* v;
  const float* mask;  // nullable
  float* out;
  int b, hq, hkv, lq, lk, d;
  int mb, mh, mq;
  float scale;
  bool causal;
  // Elements between consecutive (batch, head) planes of k and v; 0 means lk * d (contiguous). Larger values
  // read the first lk rows of longer planes (a KV cache's filled part) without a copy.
  size_t kv_plane = 0;
  // Output layout: false (B, Hq, Lq, D); true (B, Lq, Hq, D), the heads already merged for the output projection.
  bool out_by_position = false;
};
void attention(const AttentionArgs& a);

// Attention heads from projection rows: out (b, h, p + l, d) takes, in each plane, p prefix positions and then the
// l positions of x (b, l, h * d), rotate-half RoPE applied when cos/sin are given ((table_rows, l, d) each, row
// n % table_rows for batch row n), copied as they are otherwise. The prefix (prefix_rows, h, p, d) is read through
// its element strides (batch, head, position, feature), batch row n taking prefix row n % prefix_rows.
struct HeadsArgs {
  const float* x;
  int b, l, h, d;
  const float* cos = nullptr;
  const float* sin = nullptr;
  int table_rows = 1;
  const float* prefix = nullptr;
  int p = 0, prefix_rows = 1;
  size_t prefix_strides[4] = {0, 0, 0, 1};
  float* out;
};
void split_heads(const HeadsArgs& a);
// Gradients of attention(a) for the cotangent dout (the layout of a.out): dq like q, dk and dv like k (contiguous
// planes; a.kv_plane must be 0). One task per key/value head, in blocks of query rows (scores, softmax, then the
// three products), for training's small heads whose K and V panels sit in cache; heads are the only parallelism.
// Causality and masks are additive, as in the reference.
void attention_grad(const AttentionArgs& a, const float* dout, float* dq, float* dk, float* dv);
// One softmax row's numerators in place: row[j] = exp(row[j] * scale + mask[j] - max) (mask nullable); returns their sum.
float softmax_numerators(float* row, int count, float scale, const float* mask);

// One decoding position of a stack of pre-norm decoder blocks (Llama layout: RMSNorm, RoPE rotate-half attention
// with a KV cache, RMSNorm, SwiGLU MLP, residuals), for `batch` rows at the same position `past`, in one call:
// per block five parallel loops (q/k/v, attention, o, gate/up, down) and no graph between them.
enum class WeightKind { f32, bf16, q8 };
struct DecodeMatrix {
  WeightKind kind;
  const void* w;          // (n, k) row-major
  const float* scales;    // q8: (n, k / group)
  int group;
  int n, k;
};
struct DecodeBlock {
  const float* input_norm;  // (hidden) float32
  const float* post_norm;
  DecodeMatrix q, k, v, o, gate, up, down;
  // (batch, kv_heads) planes of head_dim-rows, float32 or (kv_bf16) bfloat16; the first `past` rows are read.
  const void* k_cache;
  const void* v_cache;
  size_t k_plane, v_plane;  // elements between consecutive planes (a cache buffer's capacity * head_dim)
  bool kv_bf16;
  void* k_new;  // (batch, kv_heads, head_dim) in the cache's dtype: this position's key after RoPE
  void* v_new;
};
struct DecodeArgs {
  int batch, hidden, heads, kv_heads, head_dim, intermediate, past;
  float eps, rope_base;
  const float* x;            // (batch, hidden)
  const float* final_norm;   // nullable
  float* out;                // (batch, hidden)
  const DecodeBlock* blocks;
  int layers;
};
void decode_step(const DecodeArgs& a);

// Optimizer steps over `count` float32 tensors of sizes[i] values, on every core (optimizer.cpp).
// Sum of x^2 over all of them (any dense layout), in double, grouped the same way whatever the thread count.
double sum_of_squares(const float* const* tensors, const size_t* sizes, int count);
// AdamW as Optimizers.swift writes it (float32, same operation order): g' = g * grad_scale (when given),
// m' = m b1 + g' (1 - b1), v' = v b2 + g'^2 (1 - b2), p' = p decay - m' / (sqrt(v' / bc2) + eps) * step_size.
// m / v entries may be null (zero state, the first step).
struct AdamWArgs {
  const float* const* params;
  const float* const* grads;
  const float* const* m;
  const float* const* v;
  float* const* params_out;
  float* const* m_out;
  float* const* v_out;
  const size_t* sizes;
  int count;
  // nullable; per tensor: 0, or for a 2D gradient stored transposed (column-major, as MLX leaves a weight's
  // gradient) its number of rows, so that g[r, c] is grads[t][c * rows + r].
  const int* grad_transposed_rows;
  const float* grad_scale;  // nullable: one value
  float beta1, one_minus_beta1, beta2, one_minus_beta2, decay, bias_correction2, eps, step_size;
};
void adamw_update(const AdamWArgs& a);
// out = shadow * decay + params * one_minus_decay.
void ema_update(const float* const* shadow, const float* const* params, float* const* out, const size_t* sizes, int count,
                float decay, float one_minus_decay);

}  // namespace mlxkernels
