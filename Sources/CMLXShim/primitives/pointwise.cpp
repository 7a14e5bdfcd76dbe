// Row normalisations, activations, residual adds and the cross-entropy, each with a vectorised gradient.
#include "primitive.h"

using namespace mlxprims;

namespace {

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

}  // namespace

extern "C" {

mlxs_array mlxs_cross_entropy(mlxs_array logits, mlxs_array targets) {
  return guard([&] { return cross_entropy(unwrap(logits), unwrap(targets)); });
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

}  // extern "C"
