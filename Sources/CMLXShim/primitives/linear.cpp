// Linear layers: y = x @ w^T (+ bias) in float32 or bfloat16 weights, its gradients as sgemms, and int8 weights with per-group scales.
#include "primitive.h"

using namespace mlxprims;

namespace {

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

}  // namespace

extern "C" {

mlxs_array mlxs_fast_linear(mlxs_array x, mlxs_array w, mlxs_array bias) {
  return guard([&] {
    std::optional<mx::array> b;
    if (bias) b = unwrap(bias);
    return fast_linear(unwrap(x), unwrap(w), b);
  });
}

mlxs_array mlxs_linear_q8(mlxs_array x, mlxs_array q, mlxs_array scales, int group) {
  return guard([&] { return linear_q8(unwrap(x), unwrap(q), unwrap(scales), group); });
}

}  // extern "C"
