// C API over mlx::core. Every entry point catches C++ exceptions and turns them into a NULL / -1 result
// with MLX's message in a thread-local buffer, so that Swift sees errors instead of crashes.
#include "mlxshim.h"
#include "shim_internal.h"

#include <dlfcn.h>
#include <malloc.h>
#include <elf.h>
#include <link.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "mlx/fast.h"
#include "mlx/memory.h"
#include "mlx/mlx.h"
#include "mlx/random.h"
#include "mlx/transforms.h"
#include "mlx/version.h"

namespace mx = mlx::core;

namespace {
thread_local std::string last_error;
}

namespace mlxshim {

void set_error(const std::string& message) { last_error = message; }

mx::Dtype to_mlx(mlxs_dtype d) {
  switch (d) {
    case MLXS_BOOL: return mx::bool_;
    case MLXS_UINT8: return mx::uint8;
    case MLXS_UINT16: return mx::uint16;
    case MLXS_UINT32: return mx::uint32;
    case MLXS_UINT64: return mx::uint64;
    case MLXS_INT8: return mx::int8;
    case MLXS_INT16: return mx::int16;
    case MLXS_INT32: return mx::int32;
    case MLXS_INT64: return mx::int64;
    case MLXS_FLOAT16: return mx::float16;
    case MLXS_FLOAT32: return mx::float32;
    case MLXS_FLOAT64: return mx::float64;
    case MLXS_BFLOAT16: return mx::bfloat16;
  }
  throw std::invalid_argument("unknown dtype code " + std::to_string(int(d)));
}

mlxs_dtype from_mlx(mx::Dtype d) {
  switch (d.val()) {
    case mx::Dtype::Val::bool_: return MLXS_BOOL;
    case mx::Dtype::Val::uint8: return MLXS_UINT8;
    case mx::Dtype::Val::uint16: return MLXS_UINT16;
    case mx::Dtype::Val::uint32: return MLXS_UINT32;
    case mx::Dtype::Val::uint64: return MLXS_UINT64;
    case mx::Dtype::Val::int8: return MLXS_INT8;
    case mx::Dtype::Val::int16: return MLXS_INT16;
    case mx::Dtype::Val::int32: return MLXS_INT32;
    case mx::Dtype::Val::int64: return MLXS_INT64;
    case mx::Dtype::Val::float16: return MLXS_FLOAT16;
    case mx::Dtype::Val::float32: return MLXS_FLOAT32;
    case mx::Dtype::Val::float64: return MLXS_FLOAT64;
    case mx::Dtype::Val::bfloat16: return MLXS_BFLOAT16;
    default: throw std::invalid_argument("dtype not supported by the Swift API");
  }
}

}  // namespace mlxshim

using namespace mlxshim;

namespace {

inline mx::array& A(mlxs_array a) {
  if (a == nullptr) throw std::invalid_argument("null array handle");
  return *reinterpret_cast<mx::array*>(a);
}

mx::Shape to_shape(const int32_t* s, int n) { return mx::Shape(s, s + n); }
std::vector<int> to_ints(const int* s, int n) { return std::vector<int>(s, s + n); }

std::vector<int> all_axes(const mx::array& a) {
  std::vector<int> axes(a.ndim());
  for (int i = 0; i < int(a.ndim()); ++i) axes[i] = i;
  return axes;
}

template <typename F>
int guard_status(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    set_error(e.what());
    return -1;
  } catch (...) {
    set_error("unknown C++ exception in MLX");
    return -1;
  }
}

// Runs a C closure on MLX arrays: the bridge used by autograd.
std::vector<mx::array> call_closure(mlxs_closure_fn fn, void* ctx, const std::vector<mx::array>& inputs) {
  std::vector<mlxs_array> in;
  in.reserve(inputs.size());
  for (auto& a : inputs) in.push_back(wrap(a));
  const int cap = 256;
  std::vector<mlxs_array> out(cap, nullptr);
  int n_out = 0;
  char err[1024] = {0};
  int rc = fn(ctx, in.data(), int(in.size()), out.data(), cap, &n_out, err, sizeof(err));
  for (auto h : in) mlxs_free(h);
  std::vector<mx::array> result;
  for (int i = 0; i < n_out && i < cap; ++i) {
    if (out[i] != nullptr) {
      result.push_back(A(out[i]));
      mlxs_free(out[i]);
    }
  }
  if (rc != 0) throw std::runtime_error(err[0] ? err : "traced function failed");
  return result;
}

}  // namespace

namespace mlxshim {
mlxs_array wrap(const mx::array& a) { return reinterpret_cast<mlxs_array>(new mx::array(a)); }
mx::array& unwrap(mlxs_array a) { return A(a); }
}  // namespace mlxshim

extern "C" {

const char* mlxs_last_error(void) { return last_error.c_str(); }
const char* mlxs_version(void) {
  static std::string v = mx::version();
  return v.c_str();
}

void mlxs_free(mlxs_array a) { delete reinterpret_cast<mx::array*>(a); }
mlxs_array mlxs_retain(mlxs_array a) {
  return guard([&] { return A(a); });
}

mlxs_array mlxs_from_data(const void* data, const int32_t* shape, int ndim, mlxs_dtype dtype) {
  return guard([&]() -> mx::array {
    auto dt = to_mlx(dtype);
    auto sh = to_shape(shape, ndim);
    switch (dtype) {
      case MLXS_BOOL: return mx::array(static_cast<const bool*>(data), sh, dt);
      case MLXS_UINT8: return mx::array(static_cast<const uint8_t*>(data), sh, dt);
      case MLXS_UINT16: return mx::array(static_cast<const uint16_t*>(data), sh, dt);
      case MLXS_UINT32: return mx::array(static_cast<const uint32_t*>(data), sh, dt);
      case MLXS_UINT64: return mx::array(static_cast<const uint64_t*>(data), sh, dt);
      case MLXS_INT8: return mx::array(static_cast<const int8_t*>(data), sh, dt);
      case MLXS_INT16: return mx::array(static_cast<const int16_t*>(data), sh, dt);
      case MLXS_INT32: return mx::array(static_cast<const int32_t*>(data), sh, dt);
      case MLXS_INT64: return mx::array(static_cast<const int64_t*>(data), sh, dt);
      case MLXS_FLOAT16: return mx::array(static_cast<const mx::float16_t*>(data), sh, dt);
      case MLXS_FLOAT32: return mx::array(static_cast<const float*>(data), sh, dt);
      case MLXS_FLOAT64: return mx::array(static_cast<const double*>(data), sh, dt);
      case MLXS_BFLOAT16: return mx::array(static_cast<const mx::bfloat16_t*>(data), sh, dt);
    }
    throw std::invalid_argument("unknown dtype");
  });
}

mlxs_array mlxs_scalar_f64(double value, mlxs_dtype dtype) {
  return guard([&] { return mx::astype(mx::array(value, mx::float64), to_mlx(dtype), mx::Device::cpu); });
}

mlxs_array mlxs_full(const int32_t* shape, int ndim, double value, mlxs_dtype dtype) {
  return guard([&] {
    auto dt = to_mlx(dtype);
    // A float32 fill value is exact for every dtype we create this way except int64 > 2^24.
    if (mx::issubdtype(dt, mx::integer))
      return mx::full(to_shape(shape, ndim), mx::array(int64_t(value)), dt);
    return mx::full(to_shape(shape, ndim), mx::array(float(value)), dt);
  });
}

mlxs_array mlxs_arange(double start, double stop, double step, mlxs_dtype dtype) {
  return guard([&] { return mx::arange(start, stop, step, to_mlx(dtype)); });
}

int mlxs_ndim(mlxs_array a) { return int(A(a).ndim()); }
int mlxs_shape(mlxs_array a, int32_t* out) {
  auto& s = A(a).shape();
  for (size_t i = 0; i < s.size(); ++i) out[i] = s[i];
  return 0;
}
mlxs_dtype mlxs_get_dtype(mlxs_array a) {
  try {
    return from_mlx(A(a).dtype());
  } catch (...) {
    return MLXS_FLOAT32;
  }
}
size_t mlxs_size(mlxs_array a) { return A(a).size(); }
size_t mlxs_nbytes(mlxs_array a) { return A(a).nbytes(); }

int mlxs_copy_out(mlxs_array a, mlxs_dtype dtype, void* out, size_t out_bytes) {
  return guard_status([&] {
    auto dt = to_mlx(dtype);
    mx::array x = A(a);
    if (x.dtype() != dt) x = mx::astype(x, dt);
    x = mx::contiguous(x);
    x.eval();
    size_t bytes = x.size() * dt.size();
    if (bytes > out_bytes) throw std::invalid_argument("output buffer too small");
    if (bytes > 0) std::memcpy(out, x.data<uint8_t>(), bytes);
  });
}

int mlxs_eval(const mlxs_array* arrays, int n) {
  return guard_status([&] {
    std::vector<mx::array> v;
    for (int i = 0; i < n; ++i) v.push_back(A(arrays[i]));
    mx::eval(v);
  });
}

int mlxs_async_eval(const mlxs_array* arrays, int n) {
  return guard_status([&] {
    std::vector<mx::array> v;
    for (int i = 0; i < n; ++i) v.push_back(A(arrays[i]));
    mx::async_eval(v);
  });
}

// ---- elementwise

}  // extern "C"

mx::array mlxshim::unary_op(mlxs_unary_op op, const mx::array& x) {
    switch (op) {
      case MLXS_NEG: return mx::negative(x);
      case MLXS_ABS: return mx::abs(x);
      case MLXS_EXP: return mx::exp(x);
      case MLXS_LOG: return mx::log(x);
      case MLXS_LOG1P: return mx::log1p(x);
      case MLXS_SQRT: return mx::sqrt(x);
      case MLXS_RSQRT: return mx::rsqrt(x);
      case MLXS_SIN: return mx::sin(x);
      case MLXS_COS: return mx::cos(x);
      case MLXS_TANH: return mx::tanh(x);
      case MLXS_SIGMOID: return mx::sigmoid(x);
      case MLXS_ERF: return mx::erf(x);
      case MLXS_SQUARE: return mx::square(x);
      case MLXS_FLOOR: return mx::floor(x);
      case MLXS_CEIL: return mx::ceil(x);
      case MLXS_ROUND: return mx::round(x);
      case MLXS_SIGN: return mx::sign(x);
      case MLXS_RECIPROCAL: return mx::reciprocal(x);
      case MLXS_LOGICAL_NOT: return mx::logical_not(x);
      case MLXS_STOP_GRADIENT: return mx::stop_gradient(x);
      case MLXS_SILU: return mx::multiply(x, mx::sigmoid(x));
      case MLXS_GELU: {
        // Exact GELU: x * (1 + erf(x / sqrt 2)) / 2
        auto half = mx::array(0.5f, x.dtype());
        auto inv_sqrt2 = mx::array(0.70710678118654752440f, x.dtype());
        auto one = mx::array(1.0f, x.dtype());
        return mx::multiply(mx::multiply(x, half), mx::add(one, mx::erf(mx::multiply(x, inv_sqrt2))));
      }
      case MLXS_GELU_TANH: {
        // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        auto dt = x.dtype();
        auto inner = mx::multiply(mx::array(0.7978845608028654f, dt),
                                  mx::add(x, mx::multiply(mx::array(0.044715f, dt), mx::multiply(x, mx::square(x)))));
        return mx::multiply(mx::multiply(mx::array(0.5f, dt), x), mx::add(mx::array(1.0f, dt), mx::tanh(inner)));
      }
      case MLXS_EXPM1: return mx::expm1(x);
      case MLXS_ERFINV: return mx::erfinv(x);
      case MLXS_ISNAN: return mx::isnan(x);
      case MLXS_ISINF: return mx::isinf(x);
      case MLXS_COPY: return mx::copy(x);
    }
    throw std::invalid_argument("unknown unary op " + std::to_string(int(op)));
}

extern "C" {

mlxs_array mlxs_unary(mlxs_unary_op op, mlxs_array a) {
  return guard([&]() -> mx::array { return mlxshim::unary_op(op, A(a)); });
}

mlxs_array mlxs_binary(mlxs_binary_op op, mlxs_array a, mlxs_array b) {
  return guard([&]() -> mx::array {
    auto& x = A(a);
    auto& y = A(b);
    switch (op) {
      case MLXS_ADD: return mx::add(x, y);
      case MLXS_SUB: return mx::subtract(x, y);
      case MLXS_MUL: return mx::multiply(x, y);
      case MLXS_DIV: return mx::divide(x, y);
      case MLXS_POW: return mx::power(x, y);
      case MLXS_MAXIMUM: return mx::maximum(x, y);
      case MLXS_MINIMUM: return mx::minimum(x, y);
      case MLXS_EQ: return mx::equal(x, y);
      case MLXS_NE: return mx::not_equal(x, y);
      case MLXS_LT: return mx::less(x, y);
      case MLXS_LE: return mx::less_equal(x, y);
      case MLXS_GT: return mx::greater(x, y);
      case MLXS_GE: return mx::greater_equal(x, y);
      case MLXS_LOGICAL_AND: return mx::logical_and(x, y);
      case MLXS_LOGICAL_OR: return mx::logical_or(x, y);
      case MLXS_FLOOR_DIVIDE: return mx::floor_divide(x, y);
      case MLXS_REMAINDER: return mx::remainder(x, y);
      case MLXS_ARCTAN2: return mx::arctan2(x, y);
      case MLXS_LOGADDEXP: return mx::logaddexp(x, y);
    }
    throw std::invalid_argument("unknown binary op " + std::to_string(int(op)));
  });
}

mlxs_array mlxs_where(mlxs_array c, mlxs_array a, mlxs_array b) {
  return guard([&] { return mx::where(A(c), A(a), A(b)); });
}

mlxs_array mlxs_clip(mlxs_array a, mlxs_array lo, mlxs_array hi) {
  return guard([&] {
    std::optional<mx::array> l, h;
    if (lo) l = A(lo);
    if (hi) h = A(hi);
    return mx::clip(A(a), l, h);
  });
}

mlxs_array mlxs_astype(mlxs_array a, mlxs_dtype dtype) {
  return guard([&] { return mx::astype(A(a), to_mlx(dtype)); });
}

// ---- reductions

mlxs_array mlxs_reduce(mlxs_reduce_op op, mlxs_array a, const int* axes, int naxes, bool keepdims) {
  return guard([&]() -> mx::array {
    auto& x = A(a);
    auto ax = naxes > 0 ? to_ints(axes, naxes) : all_axes(x);
    switch (op) {
      case MLXS_SUM: return mx::sum(x, ax, keepdims);
      case MLXS_MEAN: return mx::mean(x, ax, keepdims);
      case MLXS_MAX: return mx::max(x, ax, keepdims);
      case MLXS_MIN: return mx::min(x, ax, keepdims);
      case MLXS_PROD: return mx::prod(x, ax, keepdims);
      case MLXS_LOGSUMEXP: return mx::logsumexp(x, ax, keepdims);
      case MLXS_ALL: return mx::all(x, ax, keepdims);
      case MLXS_ANY: return mx::any(x, ax, keepdims);
      case MLXS_VAR: return mx::var(x, ax, keepdims);
    }
    throw std::invalid_argument("unknown reduction " + std::to_string(int(op)));
  });
}

mlxs_array mlxs_argmax(mlxs_array a, int axis, bool keepdims) {
  return guard([&] { return mx::argmax(A(a), axis, keepdims); });
}
mlxs_array mlxs_argmin(mlxs_array a, int axis, bool keepdims) {
  return guard([&] { return mx::argmin(A(a), axis, keepdims); });
}
mlxs_array mlxs_cumsum(mlxs_array a, int axis, bool reverse, bool inclusive) {
  return guard([&] { return mx::cumsum(A(a), axis, reverse, inclusive); });
}
mlxs_array mlxs_cummax(mlxs_array a, int axis, bool reverse, bool inclusive) {
  return guard([&] { return mx::cummax(A(a), axis, reverse, inclusive); });
}
mlxs_array mlxs_softmax(mlxs_array a, const int* axes, int naxes, bool precise) {
  return guard([&] {
    auto& x = A(a);
    auto ax = naxes > 0 ? to_ints(axes, naxes) : all_axes(x);
    return mx::softmax(x, ax, precise);
  });
}
mlxs_array mlxs_sort(mlxs_array a, int axis) {
  return guard([&] { return mx::sort(A(a), axis); });
}
mlxs_array mlxs_argsort(mlxs_array a, int axis) {
  return guard([&] { return mx::argsort(A(a), axis); });
}
mlxs_array mlxs_topk(mlxs_array a, int k, int axis) {
  return guard([&] { return mx::topk(A(a), k, axis); });
}

// ---- shapes and indexing

mlxs_array mlxs_reshape(mlxs_array a, const int32_t* shape, int ndim) {
  return guard([&] { return mx::reshape(A(a), to_shape(shape, ndim)); });
}
mlxs_array mlxs_transpose(mlxs_array a, const int* axes, int naxes) {
  return guard([&] { return naxes > 0 ? mx::transpose(A(a), to_ints(axes, naxes)) : mx::transpose(A(a)); });
}
mlxs_array mlxs_broadcast_to(mlxs_array a, const int32_t* shape, int ndim) {
  return guard([&] { return mx::broadcast_to(A(a), to_shape(shape, ndim)); });
}
mlxs_array mlxs_expand_dims(mlxs_array a, const int* axes, int naxes) {
  return guard([&] { return mx::expand_dims(A(a), to_ints(axes, naxes)); });
}
mlxs_array mlxs_squeeze(mlxs_array a, const int* axes, int naxes) {
  return guard([&] { return naxes > 0 ? mx::squeeze(A(a), to_ints(axes, naxes)) : mx::squeeze(A(a)); });
}
mlxs_array mlxs_slice(mlxs_array a, const int32_t* start, const int32_t* stop, const int32_t* strides, int ndim) {
  return guard([&] { return mx::slice(A(a), to_shape(start, ndim), to_shape(stop, ndim), to_shape(strides, ndim)); });
}
mlxs_array mlxs_slice_update(mlxs_array a, mlxs_array update, const int32_t* start, const int32_t* stop,
                             const int32_t* strides, int ndim) {
  return guard([&] {
    return mx::slice_update(A(a), A(update), to_shape(start, ndim), to_shape(stop, ndim), to_shape(strides, ndim));
  });
}
mlxs_array mlxs_concatenate(const mlxs_array* arrays, int n, int axis) {
  return guard([&] {
    std::vector<mx::array> v;
    for (int i = 0; i < n; ++i) v.push_back(A(arrays[i]));
    return mx::concatenate(v, axis);
  });
}
mlxs_array mlxs_stack(const mlxs_array* arrays, int n, int axis) {
  return guard([&] {
    std::vector<mx::array> v;
    for (int i = 0; i < n; ++i) v.push_back(A(arrays[i]));
    return mx::stack(v, axis);
  });
}
mlxs_array mlxs_take(mlxs_array a, mlxs_array indices, int axis) {
  return guard([&] { return mx::take(A(a), A(indices), axis); });
}
mlxs_array mlxs_take_along_axis(mlxs_array a, mlxs_array indices, int axis) {
  return guard([&] { return mx::take_along_axis(A(a), A(indices), axis); });
}
mlxs_array mlxs_put_along_axis(mlxs_array a, mlxs_array indices, mlxs_array values, int axis) {
  return guard([&] { return mx::put_along_axis(A(a), A(indices), A(values), axis); });
}
mlxs_array mlxs_scatter_add_axis(mlxs_array a, mlxs_array indices, mlxs_array values, int axis) {
  return guard([&] { return mx::scatter_add_axis(A(a), A(indices), A(values), axis); });
}
mlxs_array mlxs_pad(mlxs_array a, const int32_t* low, const int32_t* high, int ndim, mlxs_array value) {
  return guard([&] {
    std::vector<int> axes(ndim);
    for (int i = 0; i < ndim; ++i) axes[i] = i;
    mx::array v = value ? A(value) : mx::array(0.0f, A(a).dtype());
    return mx::pad(A(a), axes, to_shape(low, ndim), to_shape(high, ndim), v);
  });
}
mlxs_array mlxs_repeat(mlxs_array a, int repeats, int axis) {
  return guard([&] { return mx::repeat(A(a), repeats, axis); });
}
mlxs_array mlxs_contiguous(mlxs_array a) {
  return guard([&] { return mx::contiguous(A(a)); });
}

// ---- linear algebra and NN

mlxs_array mlxs_matmul(mlxs_array a, mlxs_array b) {
  return guard([&] { return mx::matmul(A(a), A(b)); });
}
mlxs_array mlxs_addmm(mlxs_array c, mlxs_array a, mlxs_array b, float alpha, float beta) {
  return guard([&] { return mx::addmm(A(c), A(a), A(b), alpha, beta); });
}
mlxs_array mlxs_conv2d(mlxs_array input, mlxs_array weight, int sh, int sw, int ph, int pw, int dh, int dw,
                       int groups) {
  return guard([&] { return mx::conv2d(A(input), A(weight), {sh, sw}, {ph, pw}, {dh, dw}, groups); });
}
mlxs_array mlxs_conv_transpose2d(mlxs_array input, mlxs_array weight, int sh, int sw, int ph, int pw, int dh,
                                 int dw, int oph, int opw, int groups) {
  return guard([&] {
    return mx::conv_transpose2d(A(input), A(weight), {sh, sw}, {ph, pw}, {dh, dw}, {oph, opw}, groups);
  });
}
mlxs_array mlxs_layer_norm(mlxs_array x, mlxs_array weight, mlxs_array bias, float eps) {
  return guard([&] {
    std::optional<mx::array> w, b;
    if (weight) w = A(weight);
    if (bias) b = A(bias);
    return mx::fast::layer_norm(A(x), w, b, eps);
  });
}
mlxs_array mlxs_rms_norm(mlxs_array x, mlxs_array weight, float eps) {
  return guard([&] {
    std::optional<mx::array> w;
    if (weight) w = A(weight);
    return mx::fast::rms_norm(A(x), w, eps);
  });
}
mlxs_array mlxs_rope(mlxs_array x, int dims, bool traditional, float base, float scale, int offset) {
  return guard([&] { return mx::fast::rope(A(x), dims, traditional, base, scale, offset); });
}
mlxs_array mlxs_sdpa(mlxs_array q, mlxs_array k, mlxs_array v, float scale, const char* mask_mode, mlxs_array mask) {
  return guard([&] {
    std::optional<mx::array> m;
    if (mask) m = A(mask);
    return mx::fast::scaled_dot_product_attention(A(q), A(k), A(v), scale, mask_mode ? mask_mode : "", m);
  });
}

// ---- random

mlxs_array mlxs_random_key(uint64_t seed) {
  return guard([&] { return mx::random::key(seed); });
}
int mlxs_random_split(mlxs_array key, int num, mlxs_array* out) {
  return guard_status([&] {
    auto keys = mx::random::split(A(key), num);
    for (int i = 0; i < num; ++i) out[i] = wrap(mx::take(keys, i, 0));
  });
}
mlxs_array mlxs_random_normal(const int32_t* shape, int ndim, mlxs_dtype dtype, mlxs_array key) {
  return guard([&] {
    std::optional<mx::array> k;
    if (key) k = A(key);
    return mx::random::normal(to_shape(shape, ndim), to_mlx(dtype), k);
  });
}
mlxs_array mlxs_random_uniform(const int32_t* shape, int ndim, mlxs_dtype dtype, mlxs_array key) {
  return guard([&] {
    std::optional<mx::array> k;
    if (key) k = A(key);
    return mx::random::uniform(to_shape(shape, ndim), to_mlx(dtype), k);
  });
}
mlxs_array mlxs_random_bernoulli(mlxs_array p, const int32_t* shape, int ndim, mlxs_array key) {
  return guard([&] {
    std::optional<mx::array> k;
    if (key) k = A(key);
    return mx::random::bernoulli(A(p), to_shape(shape, ndim), k);
  });
}
mlxs_array mlxs_random_categorical(mlxs_array logits, int axis, mlxs_array key) {
  return guard([&] {
    std::optional<mx::array> k;
    if (key) k = A(key);
    return mx::random::categorical(A(logits), axis, k);
  });
}

// ---- autograd

int mlxs_value_and_grad(mlxs_closure_fn fn, void* ctx, const mlxs_array* inputs, int n_inputs, const int* argnums,
                        int nargnums, mlxs_array* values_out, int max_values, int* n_values, mlxs_array* grads_out) {
  return guard_status([&] {
    std::vector<mx::array> in;
    for (int i = 0; i < n_inputs; ++i) in.push_back(A(inputs[i]));
    auto f = [fn, ctx](const std::vector<mx::array>& xs) { return call_closure(fn, ctx, xs); };
    auto [values, grads] = mx::value_and_grad(f, to_ints(argnums, nargnums))(in);
    if (int(values.size()) > max_values) throw std::invalid_argument("too many outputs");
    *n_values = int(values.size());
    for (size_t i = 0; i < values.size(); ++i) values_out[i] = wrap(values[i]);
    for (size_t i = 0; i < grads.size(); ++i) grads_out[i] = wrap(grads[i]);
  });
}

int mlxs_vjp(mlxs_closure_fn fn, void* ctx, const mlxs_array* primals, int n_primals, const mlxs_array* cotangents,
             int n_cotangents, mlxs_array* outputs_out, int max_outputs, int* n_outputs, mlxs_array* vjps_out) {
  return guard_status([&] {
    std::vector<mx::array> p, c;
    for (int i = 0; i < n_primals; ++i) p.push_back(A(primals[i]));
    for (int i = 0; i < n_cotangents; ++i) c.push_back(A(cotangents[i]));
    auto f = [fn, ctx](const std::vector<mx::array>& xs) { return call_closure(fn, ctx, xs); };
    auto [outs, vjps] = mx::vjp(f, p, c);
    if (int(outs.size()) > max_outputs) throw std::invalid_argument("too many outputs");
    *n_outputs = int(outs.size());
    for (size_t i = 0; i < outs.size(); ++i) outputs_out[i] = wrap(outs[i]);
    for (size_t i = 0; i < vjps.size(); ++i) vjps_out[i] = wrap(vjps[i]);
  });
}

// ---- memory

size_t mlxs_active_memory(void) { return mx::get_active_memory(); }
size_t mlxs_peak_memory(void) { return mx::get_peak_memory(); }
size_t mlxs_cache_memory(void) { return mx::get_cache_memory(); }
void mlxs_reset_peak_memory(void) { mx::reset_peak_memory(); }
size_t mlxs_set_cache_limit(size_t limit) { return mx::set_cache_limit(limit); }
void mlxs_clear_cache(void) { mx::clear_cache(); }

int mlxs_keep_freed_memory(void) {
#ifdef __GLIBC__
  // MLX's CPU allocator is plain malloc with no cache of its own, and glibc serves large blocks with mmap and
  // hands them back with munmap (or trims the heap), so every activation of a big model came back as fresh pages
  // the kernel had to zero: 0.7-1.9 GB a 1.3B Euler step.
  int ok = mallopt(M_MMAP_MAX, 0);
  ok &= mallopt(M_TRIM_THRESHOLD, 2147483647);
  ok &= mallopt(M_ARENA_MAX, 1);
  return ok;
#else
  return 0;
#endif
}

// ---- diagnostics

const char* mlxs_symbol_origin(const char* symbol) {
  static thread_local std::string result;
  void* p = dlsym(RTLD_DEFAULT, symbol);
  Dl_info info;
  if (p == nullptr || dladdr(p, &info) == 0 || info.dli_fname == nullptr) return "";
  result = info.dli_fname;
  return result.c_str();
}

const char* mlxs_mlx_sgemm_origin(void) {
  // Reads the address libmlx's relocation for cblas_sgemm actually holds (its GOT slot), after a matmul has
  // forced the lazy binding, and names the library that address belongs to.
  static thread_local std::string result;
  result.clear();
  try {
    auto a = mx::ones({64, 64});
    mx::eval(mx::matmul(a, a));
  } catch (...) {
  }
  Dl_info self;
  if (dladdr(reinterpret_cast<void*>(&mx::get_active_memory), &self) == 0) return "";
  struct Search {
    const char* path;
    void* slot_value = nullptr;
  } search{self.dli_fname};
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* data) -> int {
        auto* s = static_cast<Search*>(data);
        if (info->dlpi_name == nullptr || std::strcmp(info->dlpi_name, s->path) != 0) return 0;
        const ElfW(Dyn)* dyn = nullptr;
        for (int i = 0; i < info->dlpi_phnum; ++i)
          if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
        if (dyn == nullptr) return 1;
        const ElfW(Sym)* symtab = nullptr;
        const char* strtab = nullptr;
        const ElfW(Rela)* jmprel = nullptr;
        const ElfW(Rela)* rela = nullptr;
        size_t jmprel_size = 0, rela_size = 0;
        for (auto* d = dyn; d->d_tag != DT_NULL; ++d) {
          switch (d->d_tag) {
            case DT_SYMTAB: symtab = reinterpret_cast<const ElfW(Sym)*>(d->d_un.d_ptr); break;
            case DT_STRTAB: strtab = reinterpret_cast<const char*>(d->d_un.d_ptr); break;
            case DT_JMPREL: jmprel = reinterpret_cast<const ElfW(Rela)*>(d->d_un.d_ptr); break;
            case DT_PLTRELSZ: jmprel_size = d->d_un.d_val; break;
            case DT_RELA: rela = reinterpret_cast<const ElfW(Rela)*>(d->d_un.d_ptr); break;
            case DT_RELASZ: rela_size = d->d_un.d_val; break;
          }
        }
        if (symtab == nullptr || strtab == nullptr) return 1;
        for (auto [table, bytes] : {std::pair{jmprel, jmprel_size}, std::pair{rela, rela_size}}) {
          if (table == nullptr) continue;
          for (size_t i = 0; i < bytes / sizeof(ElfW(Rela)); ++i) {
            const auto& r = table[i];
            const auto& sym = symtab[ELF64_R_SYM(r.r_info)];
            if (std::strcmp(strtab + sym.st_name, "cblas_sgemm") == 0) {
              s->slot_value = *reinterpret_cast<void**>(info->dlpi_addr + r.r_offset);
              return 1;
            }
          }
        }
        return 1;
      },
      &search);
  Dl_info info;
  if (search.slot_value == nullptr || dladdr(search.slot_value, &info) == 0 || info.dli_fname == nullptr) return "";
  result = info.dli_fname;
  return result.c_str();
}

}  // extern "C"
