// Fast CPU kernels exposed as MLX custom primitives. Each primitive computes on the CPU itself (kernels/*.cpp:
// AVX2 on every core through a persistent pool, OpenBLAS sgemm where it wins) and takes its gradient from the same
// computation written with MLX ops, so training sees exact autograd.
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"
#include "mlx/transforms.h"

#include "mlx/fast.h"
#include "mlx/mlx.h"
#include "mlxshim.h"
#include "shim_internal.h"

#include "kernels/cpu_kernels.h"

namespace mx = mlx::core;
using namespace mlxshim;

namespace {
// On unless the environment says MLXS_FAST_KERNELS=0 (handy to compare a whole run against plain MLX).
int initial_fast_kernels() {
  const char* env = std::getenv("MLXS_FAST_KERNELS");
  return env && env[0] == '0' ? 0 : 1;
}
std::atomic<int> fast_enabled{initial_fast_kernels()};

template <typename F>
mlxs_array guard(F&& f) {
  try {
    return wrap(f());
  } catch (const std::exception& e) {
    set_error(e.what());
    return nullptr;
  }
}

mx::Stream cpu_stream() { return mx::default_stream(mx::Device::cpu); }

// The gradients a vjp was asked for, in argnums order.
std::vector<mx::array> selected_grads(const std::vector<mx::array>& grads, const std::vector<int>& argnums) {
  std::vector<mx::array> selected;
  for (int a : argnums) selected.push_back(grads[size_t(a)]);
  return selected;
}

// An array as a kernel reads it, row-contiguous: evaluated row-contiguous arrays as they are (mx::contiguous would
// add a graph node per array, and share buffers that must stay uniquely held to be updated in place).
mx::array plain(const mx::array& a) { return a.is_available() && a.flags().row_contiguous ? a : mx::contiguous(a); }

// A cotangent as the gradient kernels read it: contiguous float32.
mx::array float_cotangent(const mx::array& c) { return mx::contiguous(c.dtype() == mx::float32 ? c : mx::astype(c, mx::float32)); }

// A primitive computed by our own CPU code whose derivatives come from an equivalent expression in MLX ops.
class ReferencedPrimitive : public mx::UnaryPrimitive {
 public:
  explicit ReferencedPrimitive(mx::Stream s) : mx::UnaryPrimitive(s) {}
  virtual mx::array reference(const std::vector<mx::array>& inputs) const = 0;

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error(std::string(name()) + ": CPU only");
  }
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>&) override {
    auto [outs, grads] = mx::vjp([this](const std::vector<mx::array>& in) { return std::vector<mx::array>{reference(in)}; },
                                 primals, cotangents);
    return selected_grads(grads, argnums);
  }
  std::vector<mx::array> jvp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error(std::string(name()) + ": jvp not implemented");
  }
  std::pair<std::vector<mx::array>, std::vector<int>> vmap(const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error(std::string(name()) + ": vmap not implemented");
  }

 protected:
  // Allocates the output and queues `work` on the stream after the inputs (MLX's CPU command encoder).
  template <typename F>
  void dispatch(const std::vector<mx::array>& inputs, mx::array& out, F&& work) {
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (auto& a : inputs) encoder.set_input_array(a);
    encoder.set_output_array(out);
    if (mlxkernels::profiling()) {
      encoder.dispatch([key = name(), work = std::forward<F>(work)]() mutable {
        mlxkernels::ProfileScope scope(key);
        work();
      });
    } else {
      encoder.dispatch(std::forward<F>(work));
    }
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Linear: y = x @ w^T.

mx::array linear_reference(const mx::array& x, const mx::array& w) {
  auto wt = w.dtype() == x.dtype() ? w : mx::astype(w, x.dtype());
  return mx::matmul(x, mx::transpose(wt));
}

// c = op(a) @ op(b) for row-contiguous 2D float32 a and b (the linear layer's gradients).
class FastGemm : public ReferencedPrimitive {
 public:
  FastGemm(mx::Stream s, bool trans_a, bool trans_b) : ReferencedPrimitive(s), trans_a_(trans_a), trans_b_(trans_b) {}
  mx::array reference(const std::vector<mx::array>& in) const override {
    return mx::matmul(trans_a_ ? mx::transpose(in[0]) : in[0], trans_b_ ? mx::transpose(in[1]) : in[1]);
  }
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [a = inputs[0], b = inputs[1], out, ta = trans_a_, tb = trans_b_]() mutable {
      const int m = int(out.shape(0)), n = int(out.shape(1)), k = int(ta ? a.shape(0) : a.shape(1));
      mlxkernels::sgemm(ta, tb, m, n, k, a.data<float>(), int(a.shape(1)), b.data<float>(), int(b.shape(1)), out.data<float>(), n);
    });
  }
  const char* name() const override { return "FastGemm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto o = dynamic_cast<const FastGemm*>(&other);
    return o && o->trans_a_ == trans_a_ && o->trans_b_ == trans_b_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& in) override {
    return {{trans_a_ ? in[0].shape(1) : in[0].shape(0), trans_b_ ? in[1].shape(0) : in[1].shape(1)}};
  }

 private:
  bool trans_a_, trans_b_;
};

mx::array fast_gemm(const mx::array& a, const mx::array& b, bool trans_a, bool trans_b) {
  mx::Shape shape{trans_a ? a.shape(1) : a.shape(0), trans_b ? b.shape(0) : b.shape(1)};
  return mx::array(shape, mx::float32, std::make_shared<FastGemm>(cpu_stream(), trans_a, trans_b), {plain(a), plain(b)});
}

// y = x @ w^T (+ bias): inputs (x, w[, bias]), the bias float32 and added on both cores after the product (MLX's
// broadcast add runs on one core).
class FastLinear : public ReferencedPrimitive {
 public:
  FastLinear(mx::Stream s, bool has_bias) : ReferencedPrimitive(s), has_bias_(has_bias) {}
  mx::array reference(const std::vector<mx::array>& in) const override {
    auto y = linear_reference(in[0], in[1]);
    return has_bias_ ? mx::add(y, in[2]) : y;
  }

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [inputs, out, has_bias = has_bias_]() mutable {
      const auto &x = inputs[0], &w = inputs[1];
      const int k = int(x.shape(-1)), n = int(w.shape(0)), m = int(x.size() / size_t(k));
      const float* xp = x.data<float>();
      float* y = out.data<float>();
      if (w.dtype() == mx::bfloat16) {
        auto wp = reinterpret_cast<const uint16_t*>(w.data<mx::bfloat16_t>());
        if (m <= mlxkernels::linear_rows_limit(true, k)) mlxkernels::linear_rows_bf16(xp, wp, y, m, n, k);
        else mlxkernels::linear_gemm_bf16(xp, wp, y, m, n, k);
      } else if (m <= mlxkernels::linear_rows_limit(false, k)) {
        mlxkernels::linear_rows_f32(xp, w.data<float>(), y, m, n, k);
      } else {
        mlxkernels::ProfileScope scope("FastLinear.sgemm");
        mlxkernels::sgemm(false, true, m, n, k, xp, k, w.data<float>(), k, y, n);
      }
      if (has_bias) mlxkernels::add_rows(y, inputs[2].data<float>(), m, n);
    });
  }
  // float32: dx = dy w and dw = dy^T x, each one sgemm into its final layout (MLX's vjp of x w^T gives the
  // transposed product of w^T, which then costs a strided copy); the bias's gradient sums dy over the rows.
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override {
    const auto& x = primals[0];
    const auto& w = primals[1];
    if (!fast_enabled || w.dtype() != mx::float32) return ReferencedPrimitive::vjp(primals, cotangents, argnums, outputs);
    const int k = int(x.shape(-1)), n = int(w.shape(0)), m = int(x.size() / size_t(k));
    auto dy = mx::reshape(float_cotangent(cotangents[0]), {m, n});
    std::vector<mx::array> grads;
    for (int arg : argnums) {
      if (arg == 0) grads.push_back(mx::reshape(fast_gemm(dy, w, false, false), x.shape()));
      else if (arg == 1) grads.push_back(fast_gemm(dy, mx::reshape(plain(x), {m, k}), true, false));
      else grads.push_back(mx::sum(dy, 0));
    }
    return grads;
  }
  const char* name() const override { return "FastLinear"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastLinear*>(&other);
    return o && o->has_bias_ == has_bias_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    auto shape = inputs[0].shape();
    shape.back() = inputs[1].shape(0);
    return {shape};
  }

 private:
  bool has_bias_;
};

mx::array fast_linear(const mx::array& x, const mx::array& w, std::optional<mx::array> bias = std::nullopt) {
  if (!fast_enabled || x.dtype() != mx::float32 || (w.dtype() != mx::float32 && w.dtype() != mx::bfloat16) || w.ndim() != 2 ||
      x.ndim() < 1 || x.shape(-1) != w.shape(1) || x.size() == 0 || w.size() == 0 ||
      x.size() / size_t(x.shape(-1)) > size_t(INT32_MAX) ||
      (bias && (bias->ndim() != 1 || bias->shape(0) != w.shape(0) || !mx::issubdtype(bias->dtype(), mx::floating)))) {
    auto y = linear_reference(x, w);
    return bias ? mx::add(y, mx::astype(*bias, y.dtype())) : y;
  }
  auto shape = x.shape();
  shape.back() = w.shape(0);
  // The primitive reads plain row-major buffers.
  std::vector<mx::array> inputs = {mx::contiguous(x), mx::contiguous(w)};
  if (bias) inputs.push_back(mx::contiguous(bias->dtype() == mx::float32 ? *bias : mx::astype(*bias, mx::float32)));
  return mx::array(shape, mx::float32, std::make_shared<FastLinear>(cpu_stream(), bias.has_value()), inputs);
}

// ---------------------------------------------------------------------------------------------------------------
// Linear with int8 weights and per-group float32 scales.

mx::array dequantize_q8(const mx::array& q, const mx::array& scales, int group) {
  const int n = int(q.shape(0)), k = int(q.shape(1));
  auto w = mx::multiply(mx::reshape(mx::astype(q, mx::float32), {n, k / group, group}), mx::expand_dims(scales, -1));
  return mx::reshape(w, {n, k});
}

class FastLinearQ8 : public ReferencedPrimitive {
 public:
  FastLinearQ8(mx::Stream s, int group) : ReferencedPrimitive(s), group_(group) {}
  mx::array reference(const std::vector<mx::array>& in) const override {
    return mx::matmul(in[0], mx::transpose(dequantize_q8(in[1], in[2], group_)));
  }
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [x = inputs[0], w = inputs[1], s = inputs[2], out, group = group_]() mutable {
      const int k = int(x.shape(-1)), n = int(w.shape(0)), m = int(x.size() / size_t(k));
      if (m <= mlxkernels::linear_q8_rows_limit(k))
        mlxkernels::linear_rows_q8(x.data<float>(), w.data<int8_t>(), s.data<float>(), out.data<float>(), m, n, k, group);
      else
        mlxkernels::linear_gemm_q8(x.data<float>(), w.data<int8_t>(), s.data<float>(), out.data<float>(), m, n, k, group);
    });
  }
  const char* name() const override { return "FastLinearQ8"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastLinearQ8*>(&other);
    return o && o->group_ == group_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    auto shape = inputs[0].shape();
    shape.back() = inputs[1].shape(0);
    return {shape};
  }

 private:
  int group_;
};

mx::array linear_q8(const mx::array& x, const mx::array& q, const mx::array& scales, int group) {
  if (q.dtype() != mx::int8 || q.ndim() != 2 || scales.ndim() != 2 || group <= 0 || q.shape(1) % group != 0 ||
      scales.shape(0) != q.shape(0) || scales.shape(1) != q.shape(1) / group || x.ndim() < 1 || x.shape(-1) != q.shape(1)) {
    throw std::invalid_argument("linear_q8: expected int8 weights (n, k), scales (n, k / group) and input (..., k)");
  }
  auto xf = x.dtype() == mx::float32 ? x : mx::astype(x, mx::float32);
  auto sf = scales.dtype() == mx::float32 ? scales : mx::astype(scales, mx::float32);
  if (!fast_enabled || group % 16 != 0 || xf.size() == 0 || xf.size() / size_t(xf.shape(-1)) > size_t(INT32_MAX)) {
    return mx::matmul(xf, mx::transpose(dequantize_q8(q, sf, group)));
  }
  auto shape = xf.shape();
  shape.back() = q.shape(0);
  return mx::array(shape, mx::float32, std::make_shared<FastLinearQ8>(cpu_stream(), group),
                   {mx::contiguous(xf), mx::contiguous(q), mx::contiguous(sf)});
}

// ---------------------------------------------------------------------------------------------------------------
// Depthwise convolution, NHWC, stride 1, zero padding.

mx::array depthwise_reference(const mx::array& x, const mx::array& w, int ph, int pw) {
  return mx::conv2d(x, mx::expand_dims(w, 3), {1, 1}, {ph, pw}, {1, 1}, int(w.shape(0)));
}

mx::array depthwise_conv(const mx::array& x, const mx::array& w, int ph, int pw);

class DepthwiseConv : public ReferencedPrimitive {
 public:
  DepthwiseConv(mx::Stream s, int ph, int pw) : ReferencedPrimitive(s), ph_(ph), pw_(pw) {}
  mx::array reference(const std::vector<mx::array>& in) const override { return depthwise_reference(in[0], in[1], ph_, pw_); }

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [x = inputs[0], w = inputs[1], out, ph = ph_, pw = pw_]() mutable {
      mlxkernels::depthwise_conv2d(x.data<float>(), w.data<float>(), out.data<float>(), int(x.shape(0)), int(x.shape(1)),
                                   int(x.shape(2)), int(x.shape(3)), int(w.shape(1)), int(w.shape(2)), ph, pw);
    });
  }
  // Gradients by the fast kernel where it applies (MLX's grouped convolution is very slow on CPU): the input
  // gradient is a depthwise convolution of the cotangent with the flipped kernel; the weight gradient sums, per
  // tap, the cotangent times the shifted input.
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>&) override {
    const auto &x = primals[0], &w = primals[1], &g = cotangents[0];
    const int c = int(w.shape(0)), kh = int(w.shape(1)), kw = int(w.shape(2));
    const int n = int(g.shape(0)), ho = int(g.shape(1)), wo = int(g.shape(2));
    std::vector<mx::array> grads;
    for (int a : argnums) {
      if (a == 0) {
        const int top = kh - 1 - ph_, left = kw - 1 - pw_;
        if (top < 0 || left < 0) {
          grads.push_back(ReferencedPrimitive::vjp(primals, cotangents, {0}, {})[0]);
          continue;
        }
        auto flipped = mx::take(mx::take(w, mx::arange(kh - 1, -1, -1, mx::int32), 1), mx::arange(kw - 1, -1, -1, mx::int32), 2);
        grads.push_back(depthwise_conv(g, mx::contiguous(flipped), top, left));
      } else {
        auto xp = (ph_ || pw_) ? mx::pad(x, {{0, 0}, {ph_, ph_}, {pw_, pw_}, {0, 0}}) : x;
        std::vector<mx::array> taps;
        for (int i = 0; i < kh; i++)
          for (int j = 0; j < kw; j++)
            taps.push_back(mx::sum(mx::multiply(g, mx::slice(xp, {0, i, j, 0}, {n, i + ho, j + wo, c})), {0, 1, 2}));
        grads.push_back(mx::reshape(mx::stack(taps, 1), {c, kh, kw}));
      }
    }
    return grads;
  }
  const char* name() const override { return "DepthwiseConv"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const DepthwiseConv*>(&other);
    return o && o->ph_ == ph_ && o->pw_ == pw_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    auto s = inputs[0].shape();
    s[1] = s[1] + 2 * ph_ - int(inputs[1].shape(1)) + 1;
    s[2] = s[2] + 2 * pw_ - int(inputs[1].shape(2)) + 1;
    return {s};
  }

 private:
  int ph_, pw_;
};

mx::array depthwise_conv(const mx::array& x, const mx::array& w, int ph, int pw) {
  if (w.ndim() != 3) throw std::invalid_argument("depthwise_conv2d: weight must be (C, kh, kw)");
  if (x.ndim() != 4 || x.shape(3) != w.shape(0)) throw std::invalid_argument("depthwise_conv2d: input must be NHWC with C channels");
  auto shape = x.shape();
  shape[1] = shape[1] + 2 * ph - int(w.shape(1)) + 1;
  shape[2] = shape[2] + 2 * pw - int(w.shape(2)) + 1;
  if (!fast_enabled || x.dtype() != mx::float32 || w.dtype() != mx::float32 || ph < 0 || pw < 0 || shape[1] <= 0 ||
      shape[2] <= 0 || x.size() == 0 || w.size() == 0) {
    return depthwise_reference(x, w, ph, pw);
  }
  return mx::array(shape, mx::float32, std::make_shared<DepthwiseConv>(cpu_stream(), ph, pw), {mx::contiguous(x), mx::contiguous(w)});
}

// ---------------------------------------------------------------------------------------------------------------
// Attention.

mx::array attention_reference(const mx::array& q, const mx::array& k, const mx::array& v, float scale, bool causal,
                              const std::optional<mx::array>& mask) {
  auto kk = k, vv = v;
  int hq = int(q.shape(1)), hkv = int(k.shape(1));
  if (hq != hkv) {
    kk = mx::repeat(k, hq / hkv, 1);
    vv = mx::repeat(v, hq / hkv, 1);
  }
  auto scores = mx::matmul(mx::multiply(q, mx::array(scale, q.dtype())), mx::swapaxes(kk, -1, -2));
  if (causal) {
    int lq = int(q.shape(2)), lk = int(k.shape(2));
    auto qi = mx::reshape(mx::arange(lk - lq, lk, mx::int32), {lq, 1});
    auto kj = mx::reshape(mx::arange(0, lk, mx::int32), {1, lk});
    // Additive, as the Swift reference: a row causality hides entirely then still passes gradients to its scores.
    scores = mx::add(scores, mx::where(mx::less_equal(kj, qi), mx::array(0.0f, scores.dtype()), mx::array(-1e9f, scores.dtype())));
  }
  if (mask) scores = mx::add(scores, *mask);
  return mx::matmul(mx::softmax(scores, std::vector<int>{-1}, true), vv);
}

// Element distance between the (batch, head) planes of a (B, H, L, D) array whose rows are contiguous D-vectors,
// consecutive within each plane, with equally spaced planes: a contiguous array or a slice along L of a longer
// buffer (a KV cache). 0 when the array is laid out otherwise.
size_t plane_stride(const mx::array& x) {
  const auto& st = x.strides();
  const int64_t b = x.shape(0), h = x.shape(1), l = x.shape(2), d = x.shape(3);
  if (d > 1 && st[3] != 1) return 0;
  if (l > 1 && st[2] != d) return 0;
  int64_t plane = h > 1 ? st[1] : (b > 1 ? st[0] : l * d);
  if (b > 1 && h > 1 && st[0] != plane * h) return 0;
  if (plane < l * d) return 0;  // overlapping or broadcast planes
  return size_t(plane);
}

// x (elements of type T) copied into `scratch` as a contiguous (B, H, L, D) array.
template <typename T>
const T* pack_planes(const mx::array& x, std::vector<T>& scratch) {
  const auto& st = x.strides();
  const int64_t b = x.shape(0), h = x.shape(1), l = x.shape(2), d = x.shape(3);
  scratch.resize(size_t(x.size()));
  const T* src = x.data<T>();
  T* dst = scratch.data();
  for (int64_t n = 0; n < b; ++n)
    for (int64_t c = 0; c < h; ++c)
      for (int64_t i = 0; i < l; ++i, dst += d) {
        const T* row = src + n * st[0] + c * st[1] + i * st[2];
        if (st[3] == 1) std::memcpy(dst, row, sizeof(T) * size_t(d));
        else for (int64_t t = 0; t < d; ++t) dst[t] = row[t * st[3]];
      }
  return scratch.data();
}

// x's planes as `plane_stride` describes them, copied into `scratch` (contiguous) when x is laid out otherwise.
template <typename T>
const T* planes_of(const mx::array& x, std::vector<T>& scratch, size_t& plane) {
  plane = plane_stride(x);
  if (plane) return x.data<T>();
  plane = size_t(x.shape(2)) * x.shape(3);
  return pack_planes(x, scratch);
}

// The kernels' description of attention of q (B, Hq, Lq, D) over keys shaped like k, with an optional
// (B|1, H|1, Lq|1, Lk) mask; the key and value pointers are the caller's.
mlxkernels::AttentionArgs attention_args(const mx::array& q, const mx::array& k, float scale, bool causal, const mx::array* mask) {
  mlxkernels::AttentionArgs a{};
  a.q = q.data<float>();
  a.b = int(q.shape(0)), a.hq = int(q.shape(1)), a.lq = int(q.shape(2)), a.d = int(q.shape(3));
  a.hkv = int(k.shape(1)), a.lk = int(k.shape(2));
  a.scale = scale;
  a.causal = causal;
  a.mb = a.mh = a.mq = 1;
  if (mask) {
    a.mask = mask->data<float>();
    a.mb = int(mask->shape(0)), a.mh = int(mask->shape(1)), a.mq = int(mask->shape(2));
  }
  return a;
}

// A multi-output CPU primitive's arrays registered with its stream's encoder, the outputs allocated.
mx::cpu::CommandEncoder& encode_outputs(mx::Stream s, const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& encoder = mx::cpu::get_command_encoder(s);
  for (auto& a : inputs) encoder.set_input_array(a);
  for (auto& o : outputs) {
    o.set_data(mx::allocator::malloc(o.nbytes()));
    encoder.set_output_array(o);
  }
  return encoder;
}

// A CPU primitive of several outputs without derivatives of its own (gradient kernels, optimizer updates):
// subclasses give the work.
class NonDifferentiablePrimitive : public mx::Primitive {
 public:
  explicit NonDifferentiablePrimitive(mx::Stream s) : mx::Primitive(s) {}
  // The computation, reading `inputs` and writing the allocated `outputs` when the stream runs it.
  virtual std::function<void()> work(std::vector<mx::array> inputs, std::vector<mx::array> outputs) const = 0;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    auto& encoder = encode_outputs(stream(), inputs, outputs);
    encoder.dispatch([key = name(), task = work(inputs, outputs)]() {
      mlxkernels::ProfileScope scope(key);
      task();
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string(name()) + ": CPU only");
  }
  std::vector<mx::array> vjp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&,
                             const std::vector<mx::array>&) override {
    throw std::runtime_error(std::string(name()) + ": no derivatives (second derivatives are not implemented)");
  }
  std::vector<mx::array> jvp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error(std::string(name()) + ": jvp not implemented");
  }
  std::pair<std::vector<mx::array>, std::vector<int>> vmap(const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error(std::string(name()) + ": vmap not implemented");
  }
};

// Largest key/value plane (keys x head size) whose attention gradient FastAttentionGrad computes (one task per
// key/value head, its panels in cache); larger planes take MLX's vjp of the reference (sgemm-backed products).
constexpr int64_t kAttentionGradPlaneLimit = 1 << 16;

// Gradients of FastAttention: inputs (q, k, v, [mask], cotangent), all contiguous float32; outputs (dq, dk, dv).
class FastAttentionGrad : public NonDifferentiablePrimitive {
 public:
  FastAttentionGrad(mx::Stream s, float scale, bool causal, bool has_mask)
      : NonDifferentiablePrimitive(s), scale_(scale), causal_(causal), has_mask_(has_mask) {}

  std::function<void()> work(std::vector<mx::array> inputs, std::vector<mx::array> outputs) const override {
    return [inputs, outputs, scale = scale_, causal = causal_, has_mask = has_mask_]() mutable {
      auto a = attention_args(inputs[0], inputs[1], scale, causal, has_mask ? &inputs[3] : nullptr);
      a.k = inputs[1].data<float>();
      a.v = inputs[2].data<float>();
      mlxkernels::attention_grad(a, inputs.back().data<float>(), outputs[0].data<float>(), outputs[1].data<float>(),
                                 outputs[2].data<float>());
    };
  }
  const char* name() const override { return "FastAttentionGrad"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastAttentionGrad*>(&other);
    return o && o->scale_ == scale_ && o->causal_ == causal_ && o->has_mask_ == has_mask_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape(), inputs[1].shape(), inputs[2].shape()};
  }

 private:
  float scale_;
  bool causal_, has_mask_;
};

// (B, H, L, D) -> (B, L, H * D): the heads side by side again, as the output projection reads them.
mx::array merge_heads(const mx::array& o) {
  return mx::reshape(mx::transpose(o, {0, 2, 1, 3}), {o.shape(0), o.shape(2), o.shape(1) * o.shape(3)});
}

// Attention; with `merged`, the output comes as (B, Lq, Hq * D) (written in that layout by the kernel, no transpose).
class FastAttention : public ReferencedPrimitive {
 public:
  FastAttention(mx::Stream s, float scale, bool causal, bool has_mask, bool merged)
      : ReferencedPrimitive(s), scale_(scale), causal_(causal), has_mask_(has_mask), merged_(merged) {}
  mx::array reference(const std::vector<mx::array>& in) const override {
    std::optional<mx::array> m;
    if (has_mask_) m = in[3];
    auto o = attention_reference(in[0], in[1], in[2], scale_, causal_, m);
    return merged_ ? merge_heads(o) : o;
  }

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [inputs, out, scale = scale_, causal = causal_, has_mask = has_mask_, merged = merged_]() mutable {
      const auto &k = inputs[1], &v = inputs[2];
      auto a = attention_args(inputs[0], k, scale, causal, has_mask ? &inputs[3] : nullptr);
      std::vector<float> k_scratch, v_scratch;
      size_t k_plane = 0, v_plane = 0;
      a.k = planes_of(k, k_scratch, k_plane);
      a.v = planes_of(v, v_scratch, v_plane);
      const size_t packed = size_t(k.shape(2)) * k.shape(3);
      if (k_plane != v_plane) {  // the kernel takes one stride for both: pack whichever is strided
        if (k_plane != packed) a.k = pack_planes(k, k_scratch), k_plane = packed;
        if (v_plane != packed) a.v = pack_planes(v, v_scratch), v_plane = packed;
      }
      a.kv_plane = k_plane;
      a.out = out.data<float>();
      a.out_by_position = merged;
      mlxkernels::attention(a);
    });
  }
  // Small planes (training's heads): FastAttentionGrad. Larger ones, or a gradient for the mask: MLX's vjp.
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override {
    auto c = cotangents[0];
    const auto& q = primals[0];
    // A merged cotangent back to the heads' layout, which the gradient kernel reads.
    if (merged_ && c.ndim() == 3 && c.shape(0) == q.shape(0) && c.shape(1) == q.shape(2) && c.shape(2) == q.shape(1) * q.shape(3))
      c = mx::transpose(mx::reshape(c, {q.shape(0), q.shape(2), q.shape(1), q.shape(3)}), {0, 2, 1, 3});
    const bool mask_grad = std::find(argnums.begin(), argnums.end(), 3) != argnums.end();
    if (!fast_enabled || mask_grad || c.shape() != q.shape() || !mx::issubdtype(c.dtype(), mx::floating) ||
        primals[1].shape(2) * primals[1].shape(3) > kAttentionGradPlaneLimit)
      return ReferencedPrimitive::vjp(primals, cotangents, argnums, outputs);
    std::vector<mx::array> in = {q, mx::contiguous(primals[1]), mx::contiguous(primals[2])};
    if (has_mask_) in.push_back(primals[3]);
    in.push_back(float_cotangent(c));
    auto grads = mx::array::make_arrays({q.shape(), primals[1].shape(), primals[2].shape()},
                                        {mx::float32, mx::float32, mx::float32},
                                        std::make_shared<FastAttentionGrad>(stream(), scale_, causal_, has_mask_), in);
    return selected_grads(grads, argnums);
  }
  const char* name() const override { return "FastAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastAttention*>(&other);
    return o && o->scale_ == scale_ && o->causal_ == causal_ && o->has_mask_ == has_mask_ && o->merged_ == merged_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    const auto& q = inputs[0];
    if (merged_) return {{q.shape(0), q.shape(2), q.shape(1) * q.shape(3)}};
    return {q.shape()};
  }

 private:
  float scale_;
  bool causal_, has_mask_, merged_;
};

mx::array fast_attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale, bool causal,
                         std::optional<mx::array> mask, bool merged = false) {
  bool eligible = fast_enabled && q.dtype() == mx::float32 && k.dtype() == mx::float32 && v.dtype() == mx::float32 &&
                  q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4 && k.shape() == v.shape() && q.shape(0) == k.shape(0) &&
                  q.shape(3) == k.shape(3) && k.shape(1) > 0 && q.shape(1) % k.shape(1) == 0 && q.size() > 0 &&
                  k.size() > 0;
  if (mask) {
    auto m = *mask;
    // Boolean masks keep where true (MLX's convention); hidden keys get the most negative float.
    if (m.dtype() == mx::bool_) m = mx::where(m, mx::array(0.0f), mx::array(-FLT_MAX));
    else if (m.dtype() != mx::float32) m = mx::astype(m, mx::float32);
    while (m.ndim() < 4) m = mx::expand_dims(m, 0);
    eligible = eligible && m.ndim() == 4 && m.shape(3) == k.shape(2) && (m.shape(0) == 1 || m.shape(0) == q.shape(0)) &&
               (m.shape(1) == 1 || m.shape(1) == q.shape(1)) && (m.shape(2) == 1 || m.shape(2) == q.shape(2));
    mask = m;
  }
  if (!eligible) {
    auto o = attention_reference(q, k, v, scale, causal, mask);
    return merged ? merge_heads(o) : o;
  }
  // k and v go in as they are: the kernel reads a KV cache's filled part in place (see planes_of).
  std::vector<mx::array> inputs = {mx::contiguous(q), k, v};
  if (mask) inputs.push_back(mx::contiguous(*mask));
  auto shape = merged ? mx::Shape{q.shape(0), q.shape(2), q.shape(1) * q.shape(3)} : q.shape();
  return mx::array(shape, mx::float32, std::make_shared<FastAttention>(cpu_stream(), scale, causal, mask.has_value(), merged), inputs);
}

// ---------------------------------------------------------------------------------------------------------------
// Attention heads from projection rows.

// The prefix rows repeated to b rows (row n takes row n % rows).
mx::array rows_repeated(const mx::array& x, int b) {
  const int rows = int(x.shape(0));
  if (rows == b) return x;
  if (rows == 1) return mx::broadcast_to(x, [&] { auto s = x.shape(); s[0] = b; return s; }());
  return mx::tile(x, {b / rows, 1, 1, 1});
}

// x (B, L, H * D) -> (B, H, P + L, D): prefix positions, then x's heads, rotate-half RoPE from the tables
// (Bc, 1, L, D) when given. Inputs: x, [cos, sin], [prefix].
mx::array heads_reference(const std::vector<mx::array>& in, int heads, bool rotary, bool has_prefix) {
  const auto& x = in[0];
  const int b = int(x.shape(0)), l = int(x.shape(1)), d = int(x.shape(2)) / heads;
  auto y = mx::transpose(mx::reshape(x, {b, l, heads, d}), {0, 2, 1, 3});
  if (rotary) {
    auto cos = rows_repeated(in[1], b), sin = rows_repeated(in[2], b);
    auto x1 = mx::slice(y, {0, 0, 0, 0}, {b, heads, l, d / 2}), x2 = mx::slice(y, {0, 0, 0, d / 2}, {b, heads, l, d});
    y = mx::add(mx::multiply(y, cos), mx::multiply(mx::concatenate({mx::negative(x2), x1}, 3), sin));
  }
  if (has_prefix) y = mx::concatenate({rows_repeated(in.back(), b), y}, 2);
  return y;
}

class FastHeads : public ReferencedPrimitive {
 public:
  FastHeads(mx::Stream s, int heads, bool rotary, bool has_prefix)
      : ReferencedPrimitive(s), heads_(heads), rotary_(rotary), has_prefix_(has_prefix) {}
  mx::array reference(const std::vector<mx::array>& in) const override { return heads_reference(in, heads_, rotary_, has_prefix_); }

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [inputs, out, heads = heads_, rotary = rotary_, has_prefix = has_prefix_]() mutable {
      const auto& x = inputs[0];
      mlxkernels::HeadsArgs a;
      a.x = x.data<float>();
      a.b = int(x.shape(0)), a.l = int(x.shape(1)), a.h = heads, a.d = int(x.shape(2)) / heads;
      if (rotary) {
        a.cos = inputs[1].data<float>();
        a.sin = inputs[2].data<float>();
        a.table_rows = int(inputs[1].shape(0));
      }
      if (has_prefix) {
        const auto& prefix = inputs.back();
        a.prefix = prefix.data<float>();
        a.p = int(prefix.shape(2));
        a.prefix_rows = int(prefix.shape(0));
        for (int i = 0; i < 4; ++i) a.prefix_strides[i] = size_t(prefix.strides()[size_t(i)]);
      }
      a.out = out.data<float>();
      mlxkernels::split_heads(a);
    });
  }
  const char* name() const override { return "FastHeads"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastHeads*>(&other);
    return o && o->heads_ == heads_ && o->rotary_ == rotary_ && o->has_prefix_ == has_prefix_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& in) override {
    const auto& x = in[0];
    const int p = has_prefix_ ? int(in.back().shape(2)) : 0;
    return {{x.shape(0), heads_, p + x.shape(1), x.shape(2) / heads_}};
  }

 private:
  int heads_;
  bool rotary_, has_prefix_;
};

mx::array fast_heads(const mx::array& x, int heads, const std::optional<mx::array>& cos, const std::optional<mx::array>& sin,
                     const std::optional<mx::array>& prefix) {
  if (heads <= 0 || x.ndim() != 3 || x.shape(2) % heads != 0) throw std::invalid_argument("split_heads: x must be (B, L, heads * D)");
  if (cos.has_value() != sin.has_value()) throw std::invalid_argument("split_heads: give both rotary tables or neither");
  const int b = int(x.shape(0)), l = int(x.shape(1)), d = int(x.shape(2)) / heads;
  std::vector<mx::array> in = {x};
  if (cos) {
    for (const auto* t : {&*cos, &*sin})
      if (t->ndim() != 4 || t->shape(1) != 1 || t->shape(2) != l || t->shape(3) != d || t->shape(0) < 1 || b % t->shape(0) != 0)
        throw std::invalid_argument("split_heads: rotary tables must be (B or a divisor of B, 1, L, D)");
    in.push_back(*cos);
    in.push_back(*sin);
  }
  if (prefix) {
    const auto& pr = *prefix;
    if (pr.ndim() != 4 || pr.shape(1) != heads || pr.shape(3) != d || pr.shape(0) < 1 || b % pr.shape(0) != 0)
      throw std::invalid_argument("split_heads: prefix must be (B or a divisor of B, heads, P, D)");
    in.push_back(pr);
  }
  const bool eligible = fast_enabled && d % 2 == 0 && l > 0 && b > 0 &&
                        std::all_of(in.begin(), in.end(), [](const mx::array& a) { return a.dtype() == mx::float32; });
  if (!eligible) return heads_reference(in, heads, cos.has_value(), prefix.has_value());
  // x and the tables are read as plain rows; the prefix (a cache's filled part) in place, through its strides.
  for (size_t i = 0; i + (prefix ? 1 : 0) < in.size(); ++i) in[i] = mx::contiguous(in[i]);
  const int p = prefix ? int(prefix->shape(2)) : 0;
  return mx::array({b, heads, p + l, d}, mx::float32, std::make_shared<FastHeads>(cpu_stream(), heads, cos.has_value(), prefix.has_value()),
                   in);
}

// ---------------------------------------------------------------------------------------------------------------
// Row normalisations and activations.

enum class PointwiseKind { rms_norm, layer_norm, silu_mul, silu, gelu, gelu_tanh, add };

mx::array pointwise_reference(PointwiseKind kind, const std::vector<mx::array>& in, float eps, bool has_w, bool has_b) {
  std::optional<mx::array> w, b;
  if (has_w) w = in[1];
  if (has_b) b = in[has_w ? 2 : 1];
  switch (kind) {
    case PointwiseKind::rms_norm: return mx::fast::rms_norm(in[0], w, eps);
    case PointwiseKind::layer_norm: return mx::fast::layer_norm(in[0], w, b, eps);
    case PointwiseKind::silu_mul: return mx::multiply(unary_op(MLXS_SILU, in[0]), in[1]);
    case PointwiseKind::silu: return unary_op(MLXS_SILU, in[0]);
    case PointwiseKind::gelu: return unary_op(MLXS_GELU, in[0]);
    case PointwiseKind::gelu_tanh: return unary_op(MLXS_GELU_TANH, in[0]);
    case PointwiseKind::add: return mx::add(in[0], in[1]);
  }
  throw std::invalid_argument("unknown pointwise kind");
}

// Gradients of the activations in one vectorised pass (MLX's own vjp re-evaluates sigmoid / erf with scalar exp):
// inputs (x, cotangent) -> dx, or for silu(a) * b, (a, b, cotangent) -> (da, db).
class FastActivationGrad : public NonDifferentiablePrimitive {
 public:
  FastActivationGrad(mx::Stream s, PointwiseKind kind) : NonDifferentiablePrimitive(s), kind_(kind) {}

  std::function<void()> work(std::vector<mx::array> inputs, std::vector<mx::array> outputs) const override {
    return [inputs, outputs, kind = kind_]() mutable {
      const size_t n = inputs[0].size();
      const float *x = inputs[0].data<float>(), *c = inputs.back().data<float>();
      float* dx = outputs[0].data<float>();
      switch (kind) {
        case PointwiseKind::silu_mul:
          mlxkernels::silu_mul_grad(x, inputs[1].data<float>(), c, dx, outputs[1].data<float>(), n);
          break;
        case PointwiseKind::silu: mlxkernels::activation_grad(x, c, dx, n, mlxkernels::Activation::silu); break;
        case PointwiseKind::gelu: mlxkernels::activation_grad(x, c, dx, n, mlxkernels::Activation::gelu_erf); break;
        case PointwiseKind::gelu_tanh: mlxkernels::activation_grad(x, c, dx, n, mlxkernels::Activation::gelu_tanh); break;
        default: throw std::invalid_argument("FastActivationGrad: not an activation");
      }
    };
  }
  const char* name() const override { return "FastActivationGrad"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastActivationGrad*>(&other);
    return o && o->kind_ == kind_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    if (kind_ == PointwiseKind::silu_mul) return {inputs[0].shape(), inputs[1].shape()};
    return {inputs[0].shape()};
  }

 private:
  PointwiseKind kind_;
};

class FastPointwise : public ReferencedPrimitive {
 public:
  FastPointwise(mx::Stream s, PointwiseKind kind, float eps, bool has_w, bool has_b)
      : ReferencedPrimitive(s), kind_(kind), eps_(eps), has_w_(has_w), has_b_(has_b) {}
  mx::array reference(const std::vector<mx::array>& in) const override { return pointwise_reference(kind_, in, eps_, has_w_, has_b_); }

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [inputs, out, kind = kind_, eps = eps_, has_w = has_w_, has_b = has_b_]() mutable {
      const auto& x = inputs[0];
      const float* xp = x.data<float>();
      float* y = out.data<float>();
      const int d = x.ndim() ? int(x.shape(-1)) : 1;
      const int rows = d ? int(x.size() / size_t(d)) : 0;
      const float* w = has_w ? inputs[1].data<float>() : nullptr;
      const float* b = has_b ? inputs[has_w ? 2 : 1].data<float>() : nullptr;
      switch (kind) {
        case PointwiseKind::rms_norm: mlxkernels::rms_norm(xp, w, y, rows, d, eps); break;
        case PointwiseKind::layer_norm: mlxkernels::layer_norm(xp, w, b, y, rows, d, eps); break;
        case PointwiseKind::silu_mul: mlxkernels::silu_mul(xp, inputs[1].data<float>(), y, x.size()); break;
        case PointwiseKind::silu: mlxkernels::activation(xp, y, x.size(), mlxkernels::Activation::silu); break;
        case PointwiseKind::gelu: mlxkernels::activation(xp, y, x.size(), mlxkernels::Activation::gelu_erf); break;
        case PointwiseKind::gelu_tanh: mlxkernels::activation(xp, y, x.size(), mlxkernels::Activation::gelu_tanh); break;
        case PointwiseKind::add: mlxkernels::add(xp, inputs[1].data<float>(), y, x.size()); break;
      }
    });
  }
  // Activations take their gradient from FastActivationGrad; the norms from MLX's vjp of the reference.
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override {
    const bool activation = kind_ != PointwiseKind::rms_norm && kind_ != PointwiseKind::layer_norm && kind_ != PointwiseKind::add;
    const auto& c = cotangents[0];
    if (!activation || !fast_enabled || c.shape() != primals[0].shape() || !mx::issubdtype(c.dtype(), mx::floating))
      return ReferencedPrimitive::vjp(primals, cotangents, argnums, outputs);
    std::vector<mx::array> in = primals;
    in.push_back(float_cotangent(c));
    std::vector<mx::Shape> shapes;
    for (size_t i = 0; i + 1 < in.size(); ++i) shapes.push_back(in[i].shape());
    auto grads = mx::array::make_arrays(shapes, std::vector<mx::Dtype>(shapes.size(), mx::float32),
                                        std::make_shared<FastActivationGrad>(stream(), kind_), in);
    return selected_grads(grads, argnums);
  }
  const char* name() const override { return "FastPointwise"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastPointwise*>(&other);
    return o && o->kind_ == kind_ && o->eps_ == eps_ && o->has_w_ == has_w_ && o->has_b_ == has_b_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }

 private:
  PointwiseKind kind_;
  float eps_;
  bool has_w_, has_b_;
};

// The fast kernel on float32 row-major inputs; per-channel parameters (d) converted to float32. Anything else
// (other dtypes, broadcasting operands, kernels off) takes the MLX reference.
mx::array fast_pointwise(PointwiseKind kind, const mx::array& x, std::optional<mx::array> second, std::optional<mx::array> third,
                         float eps = 0) {
  const bool norm = kind == PointwiseKind::rms_norm || kind == PointwiseKind::layer_norm;
  std::vector<mx::array> in = {x};
  if (second) in.push_back(*second);
  if (third) in.push_back(*third);
  const bool has_w = norm && second.has_value(), has_b = kind == PointwiseKind::layer_norm && third.has_value();
  bool eligible = fast_enabled && x.dtype() == mx::float32 && x.size() > 0 && x.ndim() >= 1;
  if (norm) {
    const auto d = x.shape(-1);
    for (size_t i = 1; i < in.size(); ++i) eligible = eligible && in[i].ndim() == 1 && in[i].shape(0) == d && mx::issubdtype(in[i].dtype(), mx::floating);
    eligible = eligible && x.size() / size_t(d) <= size_t(INT32_MAX);
  } else if (kind == PointwiseKind::silu_mul || kind == PointwiseKind::add) {
    eligible = eligible && in[1].dtype() == mx::float32 && in[1].shape() == x.shape();
  }
  if (!eligible) return pointwise_reference(kind, in, eps, has_w, has_b);
  for (auto& a : in) a = mx::contiguous(a.dtype() == mx::float32 ? a : mx::astype(a, mx::float32));
  return mx::array(x.shape(), mx::float32, std::make_shared<FastPointwise>(cpu_stream(), kind, eps, has_w, has_b), in);
}

// ---------------------------------------------------------------------------------------------------------------
// Cross-entropy per row: logits (..., v) and integer targets (...) -> logsumexp - logit of the target. MLX's own
// logsumexp and its gradient run scalar exp on this build; here one pass per row with AVX2 exp.

mx::array cross_entropy_reference(const mx::array& logits, const mx::array& targets) {
  auto picked = mx::squeeze(mx::take_along_axis(logits, mx::expand_dims(targets, -1), -1), -1);
  return mx::subtract(mx::logsumexp(logits, -1, false), picked);
}

// Inputs (logits, targets, cotangent) -> dlogits.
class FastCrossEntropyGrad : public NonDifferentiablePrimitive {
 public:
  using NonDifferentiablePrimitive::NonDifferentiablePrimitive;
  std::function<void()> work(std::vector<mx::array> inputs, std::vector<mx::array> outputs) const override {
    return [inputs, outputs]() mutable {
      const auto& logits = inputs[0];
      const int v = int(logits.shape(-1)), rows = int(logits.size() / size_t(v));
      mlxkernels::cross_entropy_grad(logits.data<float>(), inputs[1].data<int32_t>(), inputs[2].data<float>(),
                                     outputs[0].data<float>(), rows, v);
    };
  }
  const char* name() const override { return "FastCrossEntropyGrad"; }
  bool is_equivalent(const mx::Primitive& other) const override { return dynamic_cast<const FastCrossEntropyGrad*>(&other); }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }
};

class FastCrossEntropy : public ReferencedPrimitive {
 public:
  using ReferencedPrimitive::ReferencedPrimitive;
  mx::array reference(const std::vector<mx::array>& in) const override { return cross_entropy_reference(in[0], in[1]); }
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [logits = inputs[0], targets = inputs[1], out]() mutable {
      const int v = int(logits.shape(-1)), rows = int(logits.size() / size_t(v));
      mlxkernels::cross_entropy(logits.data<float>(), targets.data<int32_t>(), out.data<float>(), rows, v);
    });
  }
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>&) override {
    std::vector<mx::array> grads;
    for (int a : argnums) {
      if (a == 0)
        grads.push_back(mx::array(primals[0].shape(), mx::float32, std::make_shared<FastCrossEntropyGrad>(stream()),
                                  {primals[0], primals[1], float_cotangent(cotangents[0])}));
      else
        grads.push_back(mx::zeros_like(primals[a]));  // integer targets
    }
    return grads;
  }
  const char* name() const override { return "FastCrossEntropy"; }
  bool is_equivalent(const mx::Primitive& other) const override { return dynamic_cast<const FastCrossEntropy*>(&other); }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[1].shape()}; }
};

mx::array cross_entropy(const mx::array& logits, const mx::array& targets) {
  if (logits.ndim() < 1 || targets.shape() != mx::Shape(logits.shape().begin(), logits.shape().end() - 1))
    throw std::invalid_argument("cross_entropy: targets must have the shape of the logits without their last axis");
  auto lf = logits.dtype() == mx::float32 ? logits : mx::astype(logits, mx::float32);
  auto ti = targets.dtype() == mx::int32 ? targets : mx::astype(targets, mx::int32);
  if (!fast_enabled || lf.size() == 0 || lf.size() / size_t(lf.shape(-1)) > size_t(INT32_MAX))
    return cross_entropy_reference(lf, ti);
  return mx::array(ti.shape(), mx::float32, std::make_shared<FastCrossEntropy>(cpu_stream()), {plain(lf), plain(ti)});
}

// ---------------------------------------------------------------------------------------------------------------
// Convolution (NHWC, OHWI weights, groups 1, dilation 1) and GroupNorm (+ SiLU).

bool asks_for(const std::vector<int>& argnums, int i) { return std::find(argnums.begin(), argnums.end(), i) != argnums.end(); }

// Gradients of FastConv2d: inputs (x, w, cotangent), contiguous float32; outputs (dx, dw), each empty (shape {0})
// where not asked for.
class FastConv2dGrad : public NonDifferentiablePrimitive {
 public:
  FastConv2dGrad(mx::Stream s, int sh, int sw, int ph, int pw) : NonDifferentiablePrimitive(s), sh_(sh), sw_(sw), ph_(ph), pw_(pw) {}
  std::function<void()> work(std::vector<mx::array> inputs, std::vector<mx::array> outputs) const override {
    return [inputs, outputs, sh = sh_, sw = sw_, ph = ph_, pw = pw_]() mutable {
      const auto &x = inputs[0], &w = inputs[1];
      mlxkernels::ConvArgs a{x.data<float>(), w.data<float>(), nullptr, int(x.shape(0)), int(x.shape(1)), int(x.shape(2)),
                             int(x.shape(3)), int(w.shape(0)), int(w.shape(1)), int(w.shape(2)), sh, sw, ph, pw};
      mlxkernels::conv2d_grad(a, inputs[2].data<float>(), outputs[0].size() ? outputs[0].data<float>() : nullptr,
                              outputs[1].size() ? outputs[1].data<float>() : nullptr);
    };
  }
  const char* name() const override { return "FastConv2dGrad"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastConv2dGrad*>(&other);
    return o && o->sh_ == sh_ && o->sw_ == sw_ && o->ph_ == ph_ && o->pw_ == pw_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>&) override {
    throw std::runtime_error("FastConv2dGrad: output shapes are set when it is made");
  }

 private:
  int sh_, sw_, ph_, pw_;
};

class FastConv2d : public ReferencedPrimitive {
 public:
  FastConv2d(mx::Stream s, int sh, int sw, int ph, int pw) : ReferencedPrimitive(s), sh_(sh), sw_(sw), ph_(ph), pw_(pw) {}
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override {
    const auto& c = cotangents[0];
    if (!fast_enabled || c.shape() != outputs[0].shape() || !mx::issubdtype(c.dtype(), mx::floating))
      return ReferencedPrimitive::vjp(primals, cotangents, argnums, outputs);
    const mx::Shape empty = {0};
    auto grads = mx::array::make_arrays({asks_for(argnums, 0) ? primals[0].shape() : empty, asks_for(argnums, 1) ? primals[1].shape() : empty},
                                        {mx::float32, mx::float32}, std::make_shared<FastConv2dGrad>(stream(), sh_, sw_, ph_, pw_),
                                        {primals[0], primals[1], float_cotangent(c)});
    return selected_grads(grads, argnums);
  }
  mx::array reference(const std::vector<mx::array>& in) const override {
    return mx::conv2d(in[0], in[1], {sh_, sw_}, {ph_, pw_}, {1, 1}, 1);
  }
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [x = inputs[0], w = inputs[1], out, sh = sh_, sw = sw_, ph = ph_, pw = pw_]() mutable {
      mlxkernels::ConvArgs a{x.data<float>(), w.data<float>(), out.data<float>(), int(x.shape(0)), int(x.shape(1)),
                             int(x.shape(2)), int(x.shape(3)), int(w.shape(0)), int(w.shape(1)), int(w.shape(2)),
                             sh, sw, ph, pw};
      mlxkernels::conv2d(a);
    });
  }
  const char* name() const override { return "FastConv2d"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastConv2d*>(&other);
    return o && o->sh_ == sh_ && o->sw_ == sw_ && o->ph_ == ph_ && o->pw_ == pw_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    const auto &x = inputs[0], &w = inputs[1];
    return {{x.shape(0), (x.shape(1) + 2 * ph_ - w.shape(1)) / sh_ + 1, (x.shape(2) + 2 * pw_ - w.shape(2)) / sw_ + 1, w.shape(0)}};
  }

 private:
  int sh_, sw_, ph_, pw_;
};

mx::array fast_conv2d(const mx::array& x, const mx::array& w, int sh, int sw, int ph, int pw, int dh, int dw, int groups) {
  const bool eligible = fast_enabled && x.dtype() == mx::float32 && w.dtype() == mx::float32 && x.ndim() == 4 &&
                        w.ndim() == 4 && x.shape(3) == w.shape(3) && groups == 1 && dh == 1 && dw == 1 && sh >= 1 &&
                        sw >= 1 && ph >= 0 && pw >= 0 && x.size() > 0 && w.size() > 0 &&
                        x.shape(1) + 2 * ph >= w.shape(1) && x.shape(2) + 2 * pw >= w.shape(2) &&
                        size_t(x.shape(0)) * x.shape(1) * x.shape(2) < size_t(INT32_MAX);
  if (!eligible) return mx::conv2d(x, w, {sh, sw}, {ph, pw}, {dh, dw}, groups);
  mx::Shape shape = {x.shape(0), (x.shape(1) + 2 * ph - w.shape(1)) / sh + 1, (x.shape(2) + 2 * pw - w.shape(2)) / sw + 1, w.shape(0)};
  return mx::array(shape, mx::float32, std::make_shared<FastConv2d>(cpu_stream(), sh, sw, ph, pw), {mx::contiguous(x), mx::contiguous(w)});
}

mx::array group_norm_reference(const mx::array& x, int groups, const std::optional<mx::array>& w,
                               const std::optional<mx::array>& b, float eps, bool silu) {
  const auto shape = x.shape();
  const int c = int(shape.back());
  auto grouped = mx::reshape(x, {shape[0], -1, groups, c / groups});
  auto mean = mx::mean(grouped, std::vector<int>{1, 3}, true);
  auto centred = mx::subtract(grouped, mean);
  auto var = mx::mean(mx::square(centred), std::vector<int>{1, 3}, true);
  auto y = mx::reshape(mx::multiply(centred, mx::rsqrt(mx::add(var, mx::array(eps)))), shape);
  if (w) y = mx::multiply(y, *w);
  if (b) y = mx::add(y, *b);
  return silu ? unary_op(MLXS_SILU, y) : y;
}

// Gradients of FastGroupNorm: inputs (x, [w], [b], cotangent), contiguous float32; outputs (dx, [dw], [db]).
class FastGroupNormGrad : public NonDifferentiablePrimitive {
 public:
  FastGroupNormGrad(mx::Stream s, int groups, float eps, bool silu, bool has_w, bool has_b)
      : NonDifferentiablePrimitive(s), groups_(groups), eps_(eps), silu_(silu), has_w_(has_w), has_b_(has_b) {}
  std::function<void()> work(std::vector<mx::array> inputs, std::vector<mx::array> outputs) const override {
    return [inputs, outputs, g = groups_, eps = eps_, silu = silu_, has_w = has_w_, has_b = has_b_]() mutable {
      const auto& x = inputs[0];
      const int c = int(x.shape(-1)), batch = int(x.shape(0));
      const size_t pixels = x.size() / size_t(batch) / size_t(c);
      const int bi = has_w ? 2 : 1;
      mlxkernels::group_norm_grad(x.data<float>(), has_w ? inputs[1].data<float>() : nullptr,
                                  has_b ? inputs[bi].data<float>() : nullptr, inputs.back().data<float>(),
                                  outputs[0].data<float>(), has_w ? outputs[1].data<float>() : nullptr,
                                  has_b ? outputs[bi].data<float>() : nullptr, batch, pixels, c, g, eps, silu);
    };
  }
  const char* name() const override { return "FastGroupNormGrad"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastGroupNormGrad*>(&other);
    return o && o->groups_ == groups_ && o->eps_ == eps_ && o->silu_ == silu_ && o->has_w_ == has_w_ && o->has_b_ == has_b_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    std::vector<mx::Shape> shapes;
    for (size_t i = 0; i + 1 < inputs.size(); ++i) shapes.push_back(inputs[i].shape());
    return shapes;
  }

 private:
  int groups_;
  float eps_;
  bool silu_, has_w_, has_b_;
};

class FastGroupNorm : public ReferencedPrimitive {
 public:
  FastGroupNorm(mx::Stream s, int groups, float eps, bool silu, bool has_w, bool has_b)
      : ReferencedPrimitive(s), groups_(groups), eps_(eps), silu_(silu), has_w_(has_w), has_b_(has_b) {}
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override {
    const auto& c = cotangents[0];
    if (!fast_enabled || c.shape() != primals[0].shape() || !mx::issubdtype(c.dtype(), mx::floating))
      return ReferencedPrimitive::vjp(primals, cotangents, argnums, outputs);
    std::vector<mx::array> in = primals;
    in.push_back(float_cotangent(c));
    std::vector<mx::Shape> shapes;
    for (auto& p : primals) shapes.push_back(p.shape());
    auto grads = mx::array::make_arrays(shapes, std::vector<mx::Dtype>(shapes.size(), mx::float32),
                                        std::make_shared<FastGroupNormGrad>(stream(), groups_, eps_, silu_, has_w_, has_b_), in);
    return selected_grads(grads, argnums);
  }
  mx::array reference(const std::vector<mx::array>& in) const override {
    std::optional<mx::array> w, b;
    if (has_w_) w = in[1];
    if (has_b_) b = in[has_w_ ? 2 : 1];
    return group_norm_reference(in[0], groups_, w, b, eps_, silu_);
  }
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [inputs, out, g = groups_, eps = eps_, silu = silu_, has_w = has_w_, has_b = has_b_]() mutable {
      const auto& x = inputs[0];
      const int c = int(x.shape(-1)), batch = int(x.shape(0));
      const size_t pixels = x.size() / size_t(batch) / size_t(c);
      mlxkernels::group_norm(x.data<float>(), has_w ? inputs[1].data<float>() : nullptr,
                             has_b ? inputs[has_w ? 2 : 1].data<float>() : nullptr, out.data<float>(), batch, pixels, c, g,
                             eps, silu);
    });
  }
  const char* name() const override { return "FastGroupNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastGroupNorm*>(&other);
    return o && o->groups_ == groups_ && o->eps_ == eps_ && o->silu_ == silu_ && o->has_w_ == has_w_ && o->has_b_ == has_b_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }

 private:
  int groups_;
  float eps_;
  bool silu_, has_w_, has_b_;
};

mx::array fast_group_norm(const mx::array& x, int groups, std::optional<mx::array> w, std::optional<mx::array> b, float eps,
                          bool silu) {
  if (x.ndim() < 2 || groups <= 0 || x.shape(-1) % groups != 0)
    throw std::invalid_argument("group_norm: input must be (N, ..., C) with C divisible by the number of groups");
  const auto c = x.shape(-1);
  bool eligible = fast_enabled && x.dtype() == mx::float32 && x.size() > 0;
  for (auto* p : {&w, &b})
    if (*p) eligible = eligible && (*p)->ndim() == 1 && (*p)->shape(0) == c && mx::issubdtype((*p)->dtype(), mx::floating);
  if (!eligible) return group_norm_reference(x, groups, w, b, eps, silu);
  std::vector<mx::array> in = {mx::contiguous(x)};
  if (w) in.push_back(mx::contiguous(mx::astype(*w, mx::float32)));
  if (b) in.push_back(mx::contiguous(mx::astype(*b, mx::float32)));
  return mx::array(x.shape(), mx::float32, std::make_shared<FastGroupNorm>(cpu_stream(), groups, eps, silu, w.has_value(), b.has_value()), in);
}

// ---------------------------------------------------------------------------------------------------------------
// Optimizer steps over all parameter tensors as one op each (kernels/optimizer.cpp): the global gradient norm,
// AdamW and the EMA. Inputs are contiguous float32.

std::vector<const float*> float_inputs(const std::vector<mx::array>& a, size_t from, size_t count) {
  std::vector<const float*> p;
  for (size_t i = 0; i < count; ++i) p.push_back(a[from + i].data<float>());
  return p;
}
std::vector<float*> float_outputs(std::vector<mx::array>& a, size_t from, size_t count) {
  std::vector<float*> p;
  for (size_t i = 0; i < count; ++i) p.push_back(a[from + i].data<float>());
  return p;
}
std::vector<size_t> sizes_of(const std::vector<mx::array>& a, size_t from, size_t count) {
  std::vector<size_t> s;
  for (size_t i = 0; i < count; ++i) s.push_back(a[from + i].size());
  return s;
}

// inputs: n tensors -> sqrt(sum of their squares), float32 scalar.
class FusedGlobalNorm : public NonDifferentiablePrimitive {
 public:
  using NonDifferentiablePrimitive::NonDifferentiablePrimitive;
  std::function<void()> work(std::vector<mx::array> inputs, std::vector<mx::array> outputs) const override {
    return [inputs, outputs]() mutable {
      auto data = float_inputs(inputs, 0, inputs.size());
      auto sizes = sizes_of(inputs, 0, inputs.size());
      *outputs[0].data<float>() = float(std::sqrt(mlxkernels::sum_of_squares(data.data(), sizes.data(), int(inputs.size()))));
    };
  }
  const char* name() const override { return "FusedGlobalNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override { return dynamic_cast<const FusedGlobalNorm*>(&other); }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>&) override { return {{}}; }
};

// inputs: params (n), grads (n), [m (n), v (n)], [grad scale] -> params', m', v' (n each).
class FusedAdamW : public NonDifferentiablePrimitive {
 public:
  FusedAdamW(mx::Stream s, int n, bool has_state, bool has_scale, std::vector<float> constants)
      : NonDifferentiablePrimitive(s), n_(n), has_state_(has_state), has_scale_(has_scale), constants_(std::move(constants)) {}
  std::function<void()> work(std::vector<mx::array> inputs, std::vector<mx::array> outputs) const override {
    return [inputs, outputs, n = size_t(n_), has_state = has_state_, has_scale = has_scale_, c = constants_]() mutable {
      auto params = float_inputs(inputs, 0, n), grads = float_inputs(inputs, n, n);
      std::vector<const float*> m(n, nullptr), v(n, nullptr);
      if (has_state) m = float_inputs(inputs, 2 * n, n), v = float_inputs(inputs, 3 * n, n);
      auto po = float_outputs(outputs, 0, n), mo = float_outputs(outputs, n, n), vo = float_outputs(outputs, 2 * n, n);
      auto sizes = sizes_of(inputs, 0, n);
      std::vector<int> transposed(n, 0);
      for (size_t i = 0; i < n; ++i)
        if (!inputs[n + i].flags().row_contiguous) transposed[i] = int(inputs[n + i].shape(0));
      mlxkernels::AdamWArgs a{params.data(), grads.data(), m.data(), v.data(), po.data(), mo.data(), vo.data(), sizes.data(),
                              int(n), transposed.data(), has_scale ? inputs.back().data<float>() : nullptr,
                              c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]};
      mlxkernels::adamw_update(a);
    };
  }
  const char* name() const override { return "FusedAdamW"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FusedAdamW*>(&other);
    return o && o->n_ == n_ && o->has_state_ == has_state_ && o->has_scale_ == has_scale_ && o->constants_ == constants_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    std::vector<mx::Shape> shapes;
    for (int r = 0; r < 3; ++r)
      for (int i = 0; i < n_; ++i) shapes.push_back(inputs[size_t(i)].shape());
    return shapes;
  }

 private:
  int n_;
  bool has_state_, has_scale_;
  std::vector<float> constants_;  // beta1, 1 - beta1, beta2, 1 - beta2, decay, bias correction 2, eps, step size
};

// inputs: shadow (n), params (n) -> shadow * decay + params * (1 - decay) (n).
class FusedEMA : public NonDifferentiablePrimitive {
 public:
  FusedEMA(mx::Stream s, float decay, float one_minus_decay) : NonDifferentiablePrimitive(s), decay_(decay), rest_(one_minus_decay) {}
  std::function<void()> work(std::vector<mx::array> inputs, std::vector<mx::array> outputs) const override {
    return [inputs, outputs, decay = decay_, rest = rest_]() mutable {
      const size_t n = outputs.size();
      auto shadow = float_inputs(inputs, 0, n), params = float_inputs(inputs, n, n);
      auto out = float_outputs(outputs, 0, n);
      auto sizes = sizes_of(inputs, 0, n);
      mlxkernels::ema_update(shadow.data(), params.data(), out.data(), sizes.data(), int(n), decay, rest);
    };
  }
  const char* name() const override { return "FusedEMA"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FusedEMA*>(&other);
    return o && o->decay_ == decay_ && o->rest_ == rest_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    std::vector<mx::Shape> shapes;
    for (size_t i = 0; i < inputs.size() / 2; ++i) shapes.push_back(inputs[i].shape());
    return shapes;
  }

 private:
  float decay_, rest_;
};

// The arrays as the fused optimizer kernels read them, or an error naming `what` when one is not float32. Row
// contiguous, or with `layouts` also an evaluated dense array (the norm) or 2D column-major one (AdamW's gradients).
enum class Layouts { row_major, dense, row_or_column_major };
std::vector<mx::array> float32_arrays(const mlxs_array* handles, int n, const char* what, Layouts layouts = Layouts::row_major) {
  std::vector<mx::array> out;
  for (int i = 0; i < n; ++i) {
    const auto& a = unwrap(handles[i]);
    if (a.dtype() != mx::float32) throw std::invalid_argument(std::string(what) + " " + std::to_string(i) + " is not float32");
    const bool as_is = a.is_available() &&
                       ((layouts == Layouts::dense && a.flags().contiguous && a.data_size() == a.size()) ||
                        (layouts == Layouts::row_or_column_major && a.ndim() == 2 && a.flags().col_contiguous));
    out.push_back(as_is ? a : plain(a));
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// One decoding position through a stack of Llama-style blocks (kernels/decode.cpp). Inference only.

constexpr int kBlockInputs = 11;  // input_norm, post_norm, k_cache, v_cache, q, k, v, o, gate, up, down
constexpr int kMatrices = 7;

class FastDecodeStep : public mx::Primitive {
 public:
  struct Shape {
    int layers, heads, kv_heads, head_dim, hidden, intermediate, past;
    float eps, rope_base;
    bool final_norm;
    std::vector<int> groups;  // per matrix: int8 group size, 0 for float weights (whose scales are absent)
  };
  FastDecodeStep(mx::Stream s, Shape shape) : mx::Primitive(s), shape_(std::move(shape)) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    auto& encoder = encode_outputs(stream(), inputs, outputs);
    encoder.dispatch([inputs, outputs, sh = shape_]() mutable {
      mlxkernels::ProfileScope scope("FastDecodeStep");
      // Norm weights in float32 whatever their stored dtype (a few thousand values per block).
      std::vector<std::vector<float>> norms;
      auto norm = [&](const mx::array& w) -> const float* {
        if (w.dtype() == mx::float32) return w.data<float>();
        std::vector<float> f(w.size());
        if (w.dtype() == mx::bfloat16) {
          auto p = reinterpret_cast<const uint16_t*>(w.data<mx::bfloat16_t>());
          for (size_t i = 0; i < f.size(); ++i) {
            uint32_t bits = uint32_t(p[i]) << 16;
            std::memcpy(&f[i], &bits, 4);
          }
        } else {
          auto p = w.data<mx::float16_t>();
          for (size_t i = 0; i < f.size(); ++i) f[i] = float(p[i]);
        }
        norms.push_back(std::move(f));
        return norms.back().data();
      };
      norms.reserve(size_t(2 * sh.layers + 1));
      std::vector<std::vector<float>> scratch;
      std::vector<std::vector<mx::bfloat16_t>> scratch16;
      scratch.reserve(size_t(2 * sh.layers));
      scratch16.reserve(size_t(2 * sh.layers));
      size_t at = 0;
      const mx::array& x = inputs[at++];
      const float* final_norm = sh.final_norm ? norm(inputs[at++]) : nullptr;
      std::vector<mlxkernels::DecodeBlock> blocks(size_t(sh.layers));
      for (int l = 0; l < sh.layers; ++l) {
        auto& b = blocks[size_t(l)];
        b.input_norm = norm(inputs[at++]);
        b.post_norm = norm(inputs[at++]);
        const mx::array& kc = inputs[at++];
        const mx::array& vc = inputs[at++];
        // A cache buffer is read in place; another layout is packed first (see planes_of).
        auto read = [](auto& pool, const mx::array& c, size_t& plane) -> const void* {
          pool.emplace_back();
          return planes_of(c, pool.back(), plane);
        };
        b.kv_bf16 = kc.dtype() == mx::bfloat16;
        b.k_cache = b.kv_bf16 ? read(scratch16, kc, b.k_plane) : read(scratch, kc, b.k_plane);
        b.v_cache = b.kv_bf16 ? read(scratch16, vc, b.v_plane) : read(scratch, vc, b.v_plane);
        mlxkernels::DecodeMatrix* matrices[kMatrices] = {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down};
        for (int m = 0; m < kMatrices; ++m) {
          const mx::array& w = inputs[at++];
          auto& d = *matrices[m];
          d.n = int(w.shape(0));
          d.k = int(w.shape(1));
          d.group = sh.groups[size_t(l * kMatrices + m)];
          d.scales = nullptr;
          if (w.dtype() == mx::float32) d.kind = mlxkernels::WeightKind::f32, d.w = w.data<float>();
          else if (w.dtype() == mx::bfloat16) d.kind = mlxkernels::WeightKind::bf16, d.w = w.data<mx::bfloat16_t>();
          else d.kind = mlxkernels::WeightKind::q8, d.w = w.data<int8_t>(), d.scales = inputs[at++].data<float>();
        }
        b.k_new = outputs[size_t(1 + 2 * l)].data<void>();
        b.v_new = outputs[size_t(2 + 2 * l)].data<void>();
      }
      mlxkernels::DecodeArgs a{};
      a.batch = int(x.shape(0));
      a.hidden = sh.hidden, a.heads = sh.heads, a.kv_heads = sh.kv_heads, a.head_dim = sh.head_dim;
      a.intermediate = sh.intermediate, a.past = sh.past, a.eps = sh.eps, a.rope_base = sh.rope_base;
      a.x = x.data<float>();
      a.final_norm = final_norm;
      a.out = outputs[0].data<float>();
      a.blocks = blocks.data();
      a.layers = sh.layers;
      mlxkernels::decode_step(a);
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("FastDecodeStep: CPU only");
  }
  std::vector<mx::array> vjp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&,
                             const std::vector<mx::array>&) override {
    throw std::runtime_error("decode_step is for inference: it has no gradient");
  }
  std::vector<mx::array> jvp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error("decode_step: jvp not implemented");
  }
  std::pair<std::vector<mx::array>, std::vector<int>> vmap(const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error("decode_step: vmap not implemented");
  }
  const char* name() const override { return "FastDecodeStep"; }
  bool is_equivalent(const mx::Primitive&) const override { return false; }

 private:
  Shape shape_;
};

std::vector<mx::array> decode_step(const mx::array& x, std::optional<mx::array> final_norm, const std::vector<mx::array>& blocks,
                                   const std::vector<std::optional<mx::array>>& scales, const std::vector<int>& groups, int layers,
                                   int heads, int kv_heads, int head_dim, int past, float eps, float rope_base) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("decode_step: " + what); };
  if (layers < 1 || blocks.size() != size_t(layers * kBlockInputs) || scales.size() != size_t(layers * kMatrices) ||
      groups.size() != size_t(layers * kMatrices))
    fail("expected 11 block inputs and 7 scales and groups per layer");
  if (x.dtype() != mx::float32 || x.ndim() != 3 || x.shape(1) != 1) fail("x must be float32 (batch, 1, hidden)");
  if (heads < 1 || kv_heads < 1 || heads % kv_heads != 0 || head_dim < 2 || head_dim % 2 != 0 || past < 0)
    fail("heads must be a multiple of kv_heads and head_dim even");
  const int b = int(x.shape(0)), h = int(x.shape(2));
  const int inter = int(blocks[size_t(kBlockInputs - 3)].shape(0));  // gate rows
  auto is_norm = [&](const mx::array& w) {
    return w.ndim() == 1 && w.shape(0) == h && (w.dtype() == mx::float32 || w.dtype() == mx::bfloat16 || w.dtype() == mx::float16);
  };
  // Evaluated row-contiguous arrays go in as they are (plain): the cache buffers must stay uniquely held so that
  // the cache update after this step writes them in place.
  std::vector<mx::array> inputs = {plain(x)};
  if (final_norm) {
    if (!is_norm(*final_norm)) fail("final norm must be (hidden)");
    inputs.push_back(plain(*final_norm));
  }
  FastDecodeStep::Shape shape{layers, heads, kv_heads, head_dim, h, inter, past, eps, rope_base, final_norm.has_value(), {}};
  const mx::Dtype cache_type = blocks[2].dtype();
  const int rows[kMatrices] = {heads * head_dim, kv_heads * head_dim, kv_heads * head_dim, h, inter, inter, h};
  const int cols[kMatrices] = {h, h, h, heads * head_dim, h, h, inter};
  for (int l = 0; l < layers; ++l) {
    const auto* in = &blocks[size_t(l * kBlockInputs)];
    if (!is_norm(in[0]) || !is_norm(in[1])) fail("layer " + std::to_string(l) + ": norms must be (hidden)");
    inputs.push_back(plain(in[0]));
    inputs.push_back(plain(in[1]));
    for (int c = 2; c < 4; ++c) {
      const auto& cache = in[c];
      if ((cache_type != mx::float32 && cache_type != mx::bfloat16) || cache.dtype() != cache_type || cache.ndim() != 4 ||
          cache.shape(0) != b || cache.shape(1) != kv_heads || cache.shape(2) < past || cache.shape(3) != head_dim)
        fail("layer " + std::to_string(l) + ": caches must be (batch, kv_heads, >= past, head_dim), all float32 or all bfloat16");
      inputs.push_back(cache);
    }
    for (int m = 0; m < kMatrices; ++m) {
      const auto& w = in[4 + m];
      const auto& s = scales[size_t(l * kMatrices + m)];
      const int group = groups[size_t(l * kMatrices + m)];
      if (w.ndim() != 2 || w.shape(0) != rows[m] || w.shape(1) != cols[m])
        fail("layer " + std::to_string(l) + ": weight " + std::to_string(m) + " has the wrong shape");
      inputs.push_back(plain(w));
      shape.groups.push_back(w.dtype() == mx::int8 ? group : 0);
      if (w.dtype() == mx::int8) {
        if (!s || group <= 0 || group % 16 != 0 || cols[m] % group != 0 || s->ndim() != 2 || s->shape(0) != rows[m] ||
            s->shape(1) != cols[m] / group)
          fail("layer " + std::to_string(l) + ": int8 weight " + std::to_string(m) + " needs (n, k / group) scales");
        inputs.push_back(plain(s->dtype() == mx::float32 ? *s : mx::astype(*s, mx::float32)));
      } else if (w.dtype() != mx::float32 && w.dtype() != mx::bfloat16) {
        fail("weights must be float32, bfloat16 or int8");
      }
    }
  }
  std::vector<mx::Shape> shapes = {{b, 1, h}};
  std::vector<mx::Dtype> dtypes = {mx::float32};
  for (int l = 0; l < 2 * layers; ++l) {
    shapes.push_back({b, kv_heads, 1, head_dim});
    dtypes.push_back(cache_type);
  }
  return mx::array::make_arrays(std::move(shapes), dtypes, std::make_shared<FastDecodeStep>(cpu_stream(), std::move(shape)), inputs);
}

extern "C" {

void mlxs_set_fast_kernels(int enabled) { fast_enabled = enabled ? 1 : 0; }

void mlxs_profile_enable(int enabled) { mlxkernels::set_profiling(enabled != 0); }
int mlxs_profile_enabled(void) { return mlxkernels::profiling() ? 1 : 0; }
void mlxs_profile_reset(void) { mlxkernels::profile_reset(); }
size_t mlxs_profile_report(char* buf, size_t size) {
  std::string text = mlxkernels::profile_report();
  if (buf && size > 0) {
    size_t n = std::min(size - 1, text.size());
    std::memcpy(buf, text.data(), n);
    buf[n] = 0;
  }
  return text.size();
}
int mlxs_fast_kernels_enabled(void) { return fast_enabled.load(); }
void mlxs_set_winograd_min_pixels(int64_t pixels) { mlxkernels::winograd_min_pixels = pixels; }
int64_t mlxs_winograd_min_pixels(void) { return mlxkernels::winograd_min_pixels.load(); }
void mlxs_set_matvec_prefetch_bytes(int bytes) { mlxkernels::matvec_prefetch_bytes = bytes < 0 ? 0 : bytes; }
int mlxs_matvec_prefetch_bytes(void) { return mlxkernels::matvec_prefetch_bytes.load(); }
void mlxs_set_bf16_gemm(int enabled) { mlxkernels::bf16_gemm_enabled = enabled != 0; }
int mlxs_bf16_gemm(void) { return mlxkernels::bf16_gemm_enabled.load(); }
void mlxs_set_gemm_split_limit(double flops) { mlxkernels::gemm_split_limit = flops < 0 ? 0 : flops; }
double mlxs_gemm_split_limit(void) { return mlxkernels::gemm_split_limit.load(); }

mlxs_array mlxs_depthwise_conv2d(mlxs_array x, mlxs_array w, int pad_h, int pad_w) {
  return guard([&] { return depthwise_conv(unwrap(x), unwrap(w), pad_h, pad_w); });
}

mlxs_array mlxs_fast_attention(mlxs_array q, mlxs_array k, mlxs_array v, float scale, bool causal, mlxs_array mask,
                               bool merged) {
  return guard([&] {
    std::optional<mx::array> m;
    if (mask) m = unwrap(mask);
    if (!fast_enabled) {
      auto o = attention_reference(unwrap(q), unwrap(k), unwrap(v), scale, causal, m);
      return merged ? merge_heads(o) : o;
    }
    return fast_attention(unwrap(q), unwrap(k), unwrap(v), scale, causal, m, merged);
  });
}

mlxs_array mlxs_split_heads(mlxs_array x, int heads, mlxs_array cos, mlxs_array sin, mlxs_array prefix) {
  return guard([&] {
    std::optional<mx::array> c, s, p;
    if (cos) c = unwrap(cos);
    if (sin) s = unwrap(sin);
    if (prefix) p = unwrap(prefix);
    return fast_heads(unwrap(x), heads, c, s, p);
  });
}

mlxs_array mlxs_cross_entropy(mlxs_array logits, mlxs_array targets) {
  return guard([&] { return cross_entropy(unwrap(logits), unwrap(targets)); });
}

mlxs_array mlxs_fast_linear(mlxs_array x, mlxs_array w, mlxs_array bias) {
  return guard([&] {
    std::optional<mx::array> b;
    if (bias) b = unwrap(bias);
    return fast_linear(unwrap(x), unwrap(w), b);
  });
}

mlxs_array mlxs_fast_rms_norm(mlxs_array x, mlxs_array weight, float eps) {
  return guard([&] {
    std::optional<mx::array> w;
    if (weight) w = unwrap(weight);
    return fast_pointwise(PointwiseKind::rms_norm, unwrap(x), w, std::nullopt, eps);
  });
}

mlxs_array mlxs_fast_layer_norm(mlxs_array x, mlxs_array weight, mlxs_array bias, float eps) {
  return guard([&] {
    std::optional<mx::array> w, b;
    if (weight) w = unwrap(weight);
    if (bias) b = unwrap(bias);
    return fast_pointwise(PointwiseKind::layer_norm, unwrap(x), w, b, eps);
  });
}

mlxs_array mlxs_fast_add(mlxs_array a, mlxs_array b) {
  return guard([&] { return fast_pointwise(PointwiseKind::add, unwrap(a), unwrap(b), std::nullopt); });
}

mlxs_array mlxs_fast_silu_mul(mlxs_array a, mlxs_array b) {
  return guard([&] { return fast_pointwise(PointwiseKind::silu_mul, unwrap(a), unwrap(b), std::nullopt); });
}

mlxs_array mlxs_fast_activation(mlxs_unary_op op, mlxs_array x) {
  return guard([&] {
    switch (op) {
      case MLXS_SILU: return fast_pointwise(PointwiseKind::silu, unwrap(x), std::nullopt, std::nullopt);
      case MLXS_GELU: return fast_pointwise(PointwiseKind::gelu, unwrap(x), std::nullopt, std::nullopt);
      case MLXS_GELU_TANH: return fast_pointwise(PointwiseKind::gelu_tanh, unwrap(x), std::nullopt, std::nullopt);
      default: return unary_op(op, unwrap(x));
    }
  });
}

mlxs_array mlxs_fast_conv2d(mlxs_array x, mlxs_array w, int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h,
                            int dilation_w, int groups) {
  return guard([&] {
    return fast_conv2d(unwrap(x), unwrap(w), stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups);
  });
}

mlxs_array mlxs_group_norm(mlxs_array x, int groups, mlxs_array weight, mlxs_array bias, float eps, bool silu) {
  return guard([&] {
    std::optional<mx::array> w, b;
    if (weight) w = unwrap(weight);
    if (bias) b = unwrap(bias);
    return fast_group_norm(unwrap(x), groups, w, b, eps, silu);
  });
}

mlxs_array mlxs_linear_q8(mlxs_array x, mlxs_array q, mlxs_array scales, int group) {
  return guard([&] { return linear_q8(unwrap(x), unwrap(q), unwrap(scales), group); });
}

int mlxs_decode_step(mlxs_array x, mlxs_array final_norm, const mlxs_array* blocks, const mlxs_array* scales, const int* groups,
                     int layers, int heads, int kv_heads, int head_dim, int past, float eps, float rope_base,
                     mlxs_array* outputs) {
  try {
    std::optional<mx::array> fn;
    if (final_norm) fn = unwrap(final_norm);
    std::vector<mx::array> in;
    std::vector<std::optional<mx::array>> sc;
    for (int i = 0; i < layers * kBlockInputs; ++i) in.push_back(unwrap(blocks[i]));
    for (int i = 0; i < layers * kMatrices; ++i) sc.push_back(scales[i] ? std::optional<mx::array>(unwrap(scales[i])) : std::nullopt);
    auto outs = decode_step(unwrap(x), fn, in, sc, std::vector<int>(groups, groups + layers * kMatrices), layers, heads, kv_heads,
                            head_dim, past, eps, rope_base);
    for (size_t i = 0; i < outs.size(); ++i) outputs[i] = wrap(outs[i]);
    return 0;
  } catch (const std::exception& e) {
    set_error(e.what());
    return -1;
  }
}

mlxs_array mlxs_fused_global_norm(const mlxs_array* tensors, int n) {
  return guard([&] {
    if (n <= 0) return mx::array(0.0f);
    return mx::array(mx::Shape{}, mx::float32, std::make_shared<FusedGlobalNorm>(cpu_stream()),
                     float32_arrays(tensors, n, "tensor", Layouts::dense));
  });
}

// Tensors per fused op: MLX links each output of a primitive to all its siblings (quadratic in their number), so
// hundreds of tensors go as several ops.
constexpr int kFusedGroup = 16;

int mlxs_fused_adamw(const mlxs_array* params, const mlxs_array* grads, const mlxs_array* m, const mlxs_array* v, int n,
                     mlxs_array grad_scale, const float* constants, mlxs_array* outputs) {
  try {
    auto p = float32_arrays(params, n, "parameter"), g = float32_arrays(grads, n, "gradient", Layouts::row_or_column_major);
    std::vector<mx::array> mm, vv;
    if (m) mm = float32_arrays(m, n, "first moment"), vv = float32_arrays(v, n, "second moment");
    std::optional<mx::array> scale;
    if (grad_scale) scale = float32_arrays(&grad_scale, 1, "gradient scale")[0];
    std::vector<float> c(constants, constants + 8);
    for (int start = 0; start < n; start += kFusedGroup) {
      const int k = std::min(kFusedGroup, n - start);
      std::vector<mx::array> in(p.begin() + start, p.begin() + start + k);
      in.insert(in.end(), g.begin() + start, g.begin() + start + k);
      if (m) {
        in.insert(in.end(), mm.begin() + start, mm.begin() + start + k);
        in.insert(in.end(), vv.begin() + start, vv.begin() + start + k);
      }
      if (scale) in.push_back(*scale);
      std::vector<mx::Shape> shapes;
      for (int r = 0; r < 3; ++r)
        for (int i = 0; i < k; ++i) shapes.push_back(in[size_t(i)].shape());
      auto prim = std::make_shared<FusedAdamW>(cpu_stream(), k, m != nullptr, scale.has_value(), c);
      auto outs = mx::array::make_arrays(std::move(shapes), std::vector<mx::Dtype>(size_t(3 * k), mx::float32), prim, in);
      for (int r = 0; r < 3; ++r)
        for (int i = 0; i < k; ++i) outputs[r * n + start + i] = wrap(outs[size_t(r * k + i)]);
    }
    return 0;
  } catch (const std::exception& e) {
    set_error(e.what());
    return -1;
  }
}

int mlxs_fused_ema(const mlxs_array* shadow, const mlxs_array* params, int n, float decay, float one_minus_decay,
                   mlxs_array* outputs) {
  try {
    auto e = float32_arrays(shadow, n, "average"), p = float32_arrays(params, n, "parameter");
    for (int start = 0; start < n; start += kFusedGroup) {
      const int k = std::min(kFusedGroup, n - start);
      std::vector<mx::array> in(e.begin() + start, e.begin() + start + k);
      in.insert(in.end(), p.begin() + start, p.begin() + start + k);
      std::vector<mx::Shape> shapes;
      for (int i = 0; i < k; ++i) shapes.push_back(in[size_t(i)].shape());
      auto outs = mx::array::make_arrays(std::move(shapes), std::vector<mx::Dtype>(size_t(k), mx::float32),
                                         std::make_shared<FusedEMA>(cpu_stream(), decay, one_minus_decay), in);
      for (int i = 0; i < k; ++i) outputs[start + i] = wrap(outs[size_t(i)]);
    }
    return 0;
  } catch (const std::exception& e) {
    set_error(e.what());
    return -1;
  }
}

}  // extern "C"
