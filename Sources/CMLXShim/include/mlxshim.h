// A plain C API over mlx::core, for Swift.
//
// Conventions: every function that makes an array returns a new owned handle, or NULL on failure; every
// function returning int returns 0 on success and -1 on failure. After a failure, mlxs_last_error() gives
// MLX's message (thread-local, valid until the next shim call on the same thread). Handles are freed with
// mlxs_free. Input handles are only borrowed.
#ifndef MLXSHIM_H
#define MLXSHIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mlxs_array_opaque* mlxs_array;

typedef enum {
  MLXS_BOOL = 0,
  MLXS_UINT8 = 1,
  MLXS_UINT16 = 2,
  MLXS_UINT32 = 3,
  MLXS_UINT64 = 4,
  MLXS_INT8 = 5,
  MLXS_INT16 = 6,
  MLXS_INT32 = 7,
  MLXS_INT64 = 8,
  MLXS_FLOAT16 = 9,
  MLXS_FLOAT32 = 10,
  MLXS_FLOAT64 = 11,
  MLXS_BFLOAT16 = 12,
} mlxs_dtype;

const char* mlxs_last_error(void);
const char* mlxs_version(void);

// ---- lifetime, creation, queries
void mlxs_free(mlxs_array a);
mlxs_array mlxs_retain(mlxs_array a);  // a new handle to the same array
// `data` holds size(shape) elements of `dtype`, row-major; it is copied.
mlxs_array mlxs_from_data(const void* data, const int32_t* shape, int ndim, mlxs_dtype dtype);
mlxs_array mlxs_scalar_f64(double value, mlxs_dtype dtype);
mlxs_array mlxs_full(const int32_t* shape, int ndim, double value, mlxs_dtype dtype);
mlxs_array mlxs_arange(double start, double stop, double step, mlxs_dtype dtype);
int mlxs_ndim(mlxs_array a);
int mlxs_shape(mlxs_array a, int32_t* out_shape);  // writes ndim entries
mlxs_dtype mlxs_get_dtype(mlxs_array a);
size_t mlxs_size(mlxs_array a);
size_t mlxs_nbytes(mlxs_array a);
// Evaluates, converts to `dtype` if needed and copies size*itemsize bytes into `out`.
int mlxs_copy_out(mlxs_array a, mlxs_dtype dtype, void* out, size_t out_bytes);
int mlxs_eval(const mlxs_array* arrays, int n);
int mlxs_async_eval(const mlxs_array* arrays, int n);

// ---- elementwise
typedef enum {
  MLXS_NEG, MLXS_ABS, MLXS_EXP, MLXS_LOG, MLXS_LOG1P, MLXS_SQRT, MLXS_RSQRT, MLXS_SIN, MLXS_COS, MLXS_TANH,
  MLXS_SIGMOID, MLXS_ERF, MLXS_SQUARE, MLXS_FLOOR, MLXS_CEIL, MLXS_ROUND, MLXS_SIGN, MLXS_RECIPROCAL,
  MLXS_LOGICAL_NOT, MLXS_STOP_GRADIENT, MLXS_SILU, MLXS_GELU, MLXS_GELU_TANH, MLXS_EXPM1, MLXS_ERFINV,
  MLXS_ISNAN, MLXS_ISINF, MLXS_COPY,
} mlxs_unary_op;
mlxs_array mlxs_unary(mlxs_unary_op op, mlxs_array a);

typedef enum {
  MLXS_ADD, MLXS_SUB, MLXS_MUL, MLXS_DIV, MLXS_POW, MLXS_MAXIMUM, MLXS_MINIMUM, MLXS_EQ, MLXS_NE, MLXS_LT,
  MLXS_LE, MLXS_GT, MLXS_GE, MLXS_LOGICAL_AND, MLXS_LOGICAL_OR, MLXS_FLOOR_DIVIDE, MLXS_REMAINDER,
  MLXS_ARCTAN2, MLXS_LOGADDEXP,
} mlxs_binary_op;
mlxs_array mlxs_binary(mlxs_binary_op op, mlxs_array a, mlxs_array b);
mlxs_array mlxs_where(mlxs_array cond, mlxs_array a, mlxs_array b);
mlxs_array mlxs_clip(mlxs_array a, mlxs_array lo /* nullable */, mlxs_array hi /* nullable */);
mlxs_array mlxs_astype(mlxs_array a, mlxs_dtype dtype);

// ---- reductions and scans (axes may be NULL with naxes = 0 meaning all axes)
typedef enum {
  MLXS_SUM, MLXS_MEAN, MLXS_MAX, MLXS_MIN, MLXS_PROD, MLXS_LOGSUMEXP, MLXS_ALL, MLXS_ANY, MLXS_VAR,
} mlxs_reduce_op;
mlxs_array mlxs_reduce(mlxs_reduce_op op, mlxs_array a, const int* axes, int naxes, bool keepdims);
mlxs_array mlxs_argmax(mlxs_array a, int axis, bool keepdims);
mlxs_array mlxs_argmin(mlxs_array a, int axis, bool keepdims);
mlxs_array mlxs_cumsum(mlxs_array a, int axis, bool reverse, bool inclusive);
mlxs_array mlxs_cummax(mlxs_array a, int axis, bool reverse, bool inclusive);
mlxs_array mlxs_softmax(mlxs_array a, const int* axes, int naxes, bool precise);
mlxs_array mlxs_sort(mlxs_array a, int axis);
mlxs_array mlxs_argsort(mlxs_array a, int axis);
mlxs_array mlxs_topk(mlxs_array a, int k, int axis);

// ---- shapes and indexing
mlxs_array mlxs_reshape(mlxs_array a, const int32_t* shape, int ndim);
mlxs_array mlxs_transpose(mlxs_array a, const int* axes, int naxes);
mlxs_array mlxs_broadcast_to(mlxs_array a, const int32_t* shape, int ndim);
mlxs_array mlxs_expand_dims(mlxs_array a, const int* axes, int naxes);
mlxs_array mlxs_squeeze(mlxs_array a, const int* axes, int naxes);
mlxs_array mlxs_slice(mlxs_array a, const int32_t* start, const int32_t* stop, const int32_t* strides, int ndim);
mlxs_array mlxs_slice_update(mlxs_array a, mlxs_array update, const int32_t* start, const int32_t* stop,
                             const int32_t* strides, int ndim);
mlxs_array mlxs_concatenate(const mlxs_array* arrays, int n, int axis);
mlxs_array mlxs_stack(const mlxs_array* arrays, int n, int axis);
mlxs_array mlxs_take(mlxs_array a, mlxs_array indices, int axis);
mlxs_array mlxs_take_along_axis(mlxs_array a, mlxs_array indices, int axis);
mlxs_array mlxs_put_along_axis(mlxs_array a, mlxs_array indices, mlxs_array values, int axis);
mlxs_array mlxs_scatter_add_axis(mlxs_array a, mlxs_array indices, mlxs_array values, int axis);
mlxs_array mlxs_pad(mlxs_array a, const int32_t* low, const int32_t* high, int ndim, mlxs_array value);
mlxs_array mlxs_repeat(mlxs_array a, int repeats, int axis);
mlxs_array mlxs_contiguous(mlxs_array a);

// ---- linear algebra, convolution, neural-network ops
mlxs_array mlxs_matmul(mlxs_array a, mlxs_array b);
mlxs_array mlxs_addmm(mlxs_array c, mlxs_array a, mlxs_array b, float alpha, float beta);
// NHWC input, OHWI weight (MLX layout).
mlxs_array mlxs_conv2d(mlxs_array input, mlxs_array weight, int stride_h, int stride_w, int pad_h, int pad_w,
                       int dil_h, int dil_w, int groups);
mlxs_array mlxs_conv_transpose2d(mlxs_array input, mlxs_array weight, int stride_h, int stride_w, int pad_h,
                                 int pad_w, int dil_h, int dil_w, int out_pad_h, int out_pad_w, int groups);
mlxs_array mlxs_layer_norm(mlxs_array x, mlxs_array weight /* nullable */, mlxs_array bias /* nullable */, float eps);
mlxs_array mlxs_rms_norm(mlxs_array x, mlxs_array weight /* nullable */, float eps);
// x (..., L, D); positions start at `offset`.
mlxs_array mlxs_rope(mlxs_array x, int dims, bool traditional, float base, float scale, int offset);
// q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D); mask_mode "", "causal" or "array" (then mask is additive float or bool).
mlxs_array mlxs_sdpa(mlxs_array q, mlxs_array k, mlxs_array v, float scale, const char* mask_mode,
                     mlxs_array mask /* nullable */);

// ---- random (explicit keys)
mlxs_array mlxs_random_key(uint64_t seed);
int mlxs_random_split(mlxs_array key, int num, mlxs_array* out);  // writes num keys
mlxs_array mlxs_random_normal(const int32_t* shape, int ndim, mlxs_dtype dtype, mlxs_array key);
mlxs_array mlxs_random_uniform(const int32_t* shape, int ndim, mlxs_dtype dtype, mlxs_array key);
mlxs_array mlxs_random_bernoulli(mlxs_array p, const int32_t* shape, int ndim, mlxs_array key);
mlxs_array mlxs_random_categorical(mlxs_array logits, int axis, mlxs_array key);

// ---- autograd
// A traced function: reads n_inputs borrowed handles, writes up to max_outputs new handles into outputs and
// their count into *n_outputs. Returns 0, or non-zero with a message in error_out (capacity error_cap).
typedef int (*mlxs_closure_fn)(void* context, const mlxs_array* inputs, int n_inputs, mlxs_array* outputs,
                               int max_outputs, int* n_outputs, char* error_out, int error_cap);
// Evaluates fn(inputs) and the gradient of its FIRST output (a scalar) with respect to inputs[argnums[i]].
// values_out receives up to max_values outputs (*n_values set), grads_out receives nargnums gradients.
int mlxs_value_and_grad(mlxs_closure_fn fn, void* context, const mlxs_array* inputs, int n_inputs,
                        const int* argnums, int nargnums, mlxs_array* values_out, int max_values, int* n_values,
                        mlxs_array* grads_out);
// Vector-Jacobian product of fn at primals with the given cotangents (one per output).
int mlxs_vjp(mlxs_closure_fn fn, void* context, const mlxs_array* primals, int n_primals,
             const mlxs_array* cotangents, int n_cotangents, mlxs_array* outputs_out, int max_outputs,
             int* n_outputs, mlxs_array* vjps_out);

// ---- memory and threads
size_t mlxs_active_memory(void);
size_t mlxs_peak_memory(void);
size_t mlxs_cache_memory(void);
void mlxs_reset_peak_memory(void);
size_t mlxs_set_cache_limit(size_t limit);
void mlxs_clear_cache(void);
// glibc's allocator told to keep freed memory for reuse (no mmap for large blocks, no trimming below 2 GB, one
// arena); 1 if every setting took. Process-wide: call before the model loads.
int mlxs_keep_freed_memory(void);

// ---- devices
// 1 when this MLX build has a usable GPU (the CUDA build on a machine with an NVIDIA GPU), else 0.
int mlxs_gpu_available(void);
// 1 for the CUDA build of MLX, whatever the machine has; 0 for the CPU build.
int mlxs_cuda_build(void);
// Makes the GPU (gpu = 1) or the CPU the default device of every op that names none; -1 with an error when asked
// for a GPU this build or machine does not have.
int mlxs_set_default_device(int gpu);
// 1 when the default device is the GPU.
int mlxs_default_device_is_gpu(void);
// The GPU's name as MLX reports it (device_name), "" without one; the full length is returned.
size_t mlxs_gpu_name(char* buf, size_t size);

// ---- distributed (MLX's ring, MPI and NCCL backends)
// 1 when `backend` ("ring", "mpi", "nccl" or "any") can be used by this build.
int mlxs_distributed_available(const char* backend);
// Joins the process group the environment describes (ring: MLX_RANK and MLX_HOSTFILE, as mlx.launch sets them);
// once per process, later calls report the same group. Writes this process's rank and the group's size.
int mlxs_distributed_init(const char* backend, int* rank, int* size);
// The element-wise sum of x over every process of the group (lazy, like any op); all_gather concatenates along
// the first axis in rank order.
mlxs_array mlxs_all_sum(mlxs_array x);
mlxs_array mlxs_all_gather(mlxs_array x);

// ---- diagnostics
// The shared object that defines `symbol` as the process resolves it (dladdr), or "" if unresolved.
const char* mlxs_symbol_origin(const char* symbol);
// The library that libmlx's own reference to cblas_sgemm binds to (looked up from inside libmlx's scope).
const char* mlxs_mlx_sgemm_origin(void);

// ---- fast CPU kernels (MLX custom primitives; each has a vjp through MLX's own ops)
// Depthwise 2D convolution: x NHWC (B, H, W, C), w (C, kh, kw) — same padding semantics as conv2d.
mlxs_array mlxs_depthwise_conv2d(mlxs_array x, mlxs_array w, int pad_h, int pad_w);
// Attention: q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D), optional additive float mask broadcastable to
// (B, Hq, Lq, Lk); causal aligns the last query with the last key (with a mask too, the mask is added to the causal
// scores, so a (B, 1, 1, Lk) mask of hidden keys stays one row per batch row). The output is (B, Hq, Lq, D), or with
// `merged` (B, Lq, Hq * D), the heads side by side as the output projection reads them.
mlxs_array mlxs_fast_attention(mlxs_array q, mlxs_array k, mlxs_array v, float scale, bool causal,
                               mlxs_array mask /* nullable */, bool merged);
// Attention heads from projection rows: x (B, L, heads * D) -> (B, heads, P + L, D), the P positions of `prefix`
// (B or a divisor of B rows, heads, P, D; batch row n takes prefix row n % rows) first, then x's heads, rotated by
// rotate-half RoPE with the tables cos/sin (B or a divisor of B rows, 1, L, D) when given. All nullable but x.
mlxs_array mlxs_split_heads(mlxs_array x, int heads, mlxs_array cos, mlxs_array sin, mlxs_array prefix);
// y = x @ w^T (+ bias (N)) for x (..., K) float32 and w (N, K) float32 or bfloat16.
mlxs_array mlxs_fast_linear(mlxs_array x, mlxs_array w, mlxs_array bias /* nullable */);
// y = x @ w^T with int8 weights q (n, k) and float32 scales (n, k / group): w[j, t] = q[j, t] * scales[j, t / group].
mlxs_array mlxs_linear_q8(mlxs_array x, mlxs_array q, mlxs_array scales, int group);
// One-pass fused kernels on float32 (other inputs take the plain MLX ops): RMSNorm / LayerNorm over the last axis
// (weight, bias nullable), silu(a) * b, and the activations MLXS_SILU, MLXS_GELU, MLXS_GELU_TANH (any other op
// runs as mlxs_unary).
mlxs_array mlxs_fast_rms_norm(mlxs_array x, mlxs_array weight, float eps);
// Cross-entropy per position: logits (..., v), integer targets (...) -> logsumexp(logits) - the target's logit,
// float32; differentiable in the logits. The kernel gives NaN where a target is outside [0, v); with fast kernels
// off it is MLX's ops, whose result for such a target is undefined.
mlxs_array mlxs_cross_entropy(mlxs_array logits, mlxs_array targets);
mlxs_array mlxs_fast_layer_norm(mlxs_array x, mlxs_array weight, mlxs_array bias, float eps);
mlxs_array mlxs_fast_silu_mul(mlxs_array a, mlxs_array b);
// a + b on both cores for float32 operands of one shape (others: MLX's add).
mlxs_array mlxs_fast_add(mlxs_array a, mlxs_array b);
mlxs_array mlxs_fast_activation(mlxs_unary_op op, mlxs_array x);
// conv2d (NHWC input, OHWI weights) by banded im2col + sgemm for float32, groups 1, dilation 1; other cases run
// MLX's convolution.
mlxs_array mlxs_fast_conv2d(mlxs_array x, mlxs_array w, int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h,
                            int dilation_w, int groups);
// GroupNorm over NHWC input (N, ..., C) as torch.nn.GroupNorm computes it on NCHW, then SiLU when `silu`;
// weight, bias (C) nullable. One fused kernel for float32 with fast kernels on, MLX ops otherwise.
mlxs_array mlxs_group_norm(mlxs_array x, int groups, mlxs_array weight, mlxs_array bias, float eps, bool silu);
// One decoding position through `layers` Llama-style decoder blocks (RMSNorm, RoPE rotate-half attention over a KV
// cache, RMSNorm, SwiGLU; residuals) in one primitive; inference only. x: float32 (B, 1, H); final_norm (H) or NULL.
// blocks: 11 per layer: input_norm, post_norm (H), k_cache, v_cache float32 (B, Hkv, capacity >= past, D) of which
// the first `past` positions are read, then the q, k, v, o, gate, up, down weights (out, in) in float32, bfloat16
// or int8. scales / groups: 7 per layer, an int8 weight's (out, in / group) scales and group (NULL / 0 otherwise).
// Writes 1 + 2 * layers handles: the hidden state (B, 1, H) (after final_norm), then each layer's new key and value
// (B, Hkv, 1, D), the key after RoPE at position `past`.
int mlxs_decode_step(mlxs_array x, mlxs_array final_norm, const mlxs_array* blocks, const mlxs_array* scales, const int* groups,
                     int layers, int heads, int kv_heads, int head_dim, int past, float eps, float rope_base,
                     mlxs_array* outputs);
// Optimizer steps as one op over n float32 tensors (the arrays may differ in shape). The global L2 norm
// sqrt(sum x^2) as a float32 scalar. AdamW: writes 3n handles, the new parameters, first and second moments;
// m and v NULL for the zero state of the first step; grad_scale (a float32 scalar, nullable) multiplies every
// gradient first; constants: beta1, 1 - beta1, beta2, 1 - beta2, weight-decay factor (1 - lr wd), bias correction
// 1 - beta2^t, eps, step size lr / (1 - beta1^t). EMA: writes n handles, shadow * decay + params * one_minus_decay.
// Both return 0, or -1 with the error set.
mlxs_array mlxs_fused_global_norm(const mlxs_array* tensors, int n);
int mlxs_fused_adamw(const mlxs_array* params, const mlxs_array* grads, const mlxs_array* m, const mlxs_array* v, int n,
                     mlxs_array grad_scale, const float* constants, mlxs_array* outputs);
int mlxs_fused_ema(const mlxs_array* shadow, const mlxs_array* params, int n, float decay, float one_minus_decay,
                   mlxs_array* outputs);
// Which kernels to use: 1 = fast kernels on (default), 0 = plain MLX ops.
void mlxs_set_fast_kernels(int enabled);
int mlxs_fast_kernels_enabled(void);
// Smallest image (height * width pixels) whose 3x3 stride-1 convolutions with 32-127 channels run as Winograd
// F(2x2, 3x3) (smaller ones as im2col + sgemm); with 128+ channels in and out they always do.
void mlxs_set_winograd_min_pixels(int64_t pixels);
int64_t mlxs_winograd_min_pixels(void);
// Software prefetch distance (bytes ahead) of the one-row matrix-vector kernel (decoding); 0 turns it off.
void mlxs_set_matvec_prefetch_bytes(int bytes);
int mlxs_matvec_prefetch_bytes(void);
// Linear layers with bf16 or int8 weights and many rows: 1 = the shim's blocked GEMM (default), 0 = weights
// converted to float32 and OpenBLAS sgemm.
// Kernel path of the large products: "avx2", "avx512", "avx512_bf16" or "amx" (cpu_kernels.h says what each
// needs). Set returns 0, -1 for an unknown name, -2 for a path this CPU lacks; features: the instruction sets found.
const char* mlxs_cpu_path(void);
const char* mlxs_best_cpu_path(void);
int mlxs_set_cpu_path(const char* name);
size_t mlxs_cpu_features(char* buf, size_t size);
// 1 where products with bf16 weights round their activations to bf16 (avx512_bf16 or amx, the bf16 GEMM on).
int mlxs_bf16_rounds_activations(void);
void mlxs_set_bf16_gemm(int enabled);
int mlxs_bf16_gemm(void);
// Few-row products with int8 weights on AVX-512 VNNI, activations rounded to int8 per weight group: 1 = where the
// path is avx512 or above and the CPU has VNNI (default; MLXS_INT8_VNNI=0 turns it off), 0 = float32 activations.
// quantizes: 1 where that is in effect now.
void mlxs_set_int8_vnni(int enabled);
int mlxs_int8_vnni(void);
int mlxs_int8_quantizes_activations(void);
// Largest product (flops) that the kernels' sgemm splits into one single-threaded OpenBLAS call per core.
void mlxs_set_gemm_split_limit(double flops);
double mlxs_gemm_split_limit(void);
// Kernel time profile: enable (also MLXS_PROFILE=1), clear, and the table since the last clear as text
// (written NUL-terminated into buf, cut at size; returns the full length).
void mlxs_profile_enable(int enabled);
int mlxs_profile_enabled(void);
void mlxs_profile_reset(void);
size_t mlxs_profile_report(char* buf, size_t size);

// ---- machine figures for benchmarks (bypass MLX)
// Best GFLOP/s of OpenBLAS's cblas_sgemm on n x n x n over `repeats` runs.
double mlxs_bench_sgemm_peak(int n, int repeats);
// Best GB/s reading a `bytes`-sized buffer with every core (a sum, so nothing is optimised away).
double mlxs_bench_read_bandwidth(size_t bytes, int repeats);
// The OpenBLAS kernel family in use (e.g. "Haswell", "Cooperlake"; OPENBLAS_CORETYPE can force one).
const char* mlxs_blas_core_name(void);

#ifdef __cplusplus
}
#endif

#endif
