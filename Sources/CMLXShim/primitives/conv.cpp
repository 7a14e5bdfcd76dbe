// Convolution (NHWC, OHWI weights, groups 1, dilation 1) and GroupNorm (+ SiLU): the VAE and the UViT.
#include "primitive.h"

using namespace mlxprims;

namespace {

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
    // bf16 weights (inference) take the reference's gradient; the gradient kernel reads float32 weights.
    if (!fast_enabled || c.shape() != outputs[0].shape() || !mx::issubdtype(c.dtype(), mx::floating) ||
        primals[1].dtype() != mx::float32)
      return ReferencedPrimitive::vjp(primals, cotangents, argnums, outputs);
    const mx::Shape empty = {0};
    auto grads = mx::array::make_arrays({asks_for(argnums, 0) ? primals[0].shape() : empty, asks_for(argnums, 1) ? primals[1].shape() : empty},
                                        {mx::float32, mx::float32}, std::make_shared<FastConv2dGrad>(stream(), sh_, sw_, ph_, pw_),
                                        {primals[0], primals[1], float_cotangent(c)});
    return selected_grads(grads, argnums);
  }
  mx::array reference(const std::vector<mx::array>& in) const override {
    return mx::conv2d(in[0], mx::astype(in[1], mx::float32), {sh_, sw_}, {ph_, pw_}, {1, 1}, 1);
  }
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [x = inputs[0], w = inputs[1], out, sh = sh_, sw = sw_, ph = ph_, pw = pw_]() mutable {
      const bool bf16 = w.dtype() == mx::bfloat16;
      mlxkernels::ConvArgs a{x.data<float>(), bf16 ? nullptr : w.data<float>(), out.data<float>(), int(x.shape(0)),
                             int(x.shape(1)), int(x.shape(2)), int(x.shape(3)), int(w.shape(0)), int(w.shape(1)),
                             int(w.shape(2)), sh, sw, ph, pw, bf16 ? reinterpret_cast<const uint16_t*>(w.data<mx::bfloat16_t>()) : nullptr};
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
  // Float32 input with float32 or bfloat16 weights (bf16: the products of the bf16 linear layers; conv.cpp).
  const bool eligible = fast_enabled && x.dtype() == mx::float32 && (w.dtype() == mx::float32 || w.dtype() == mx::bfloat16) && x.ndim() == 4 &&
                        w.ndim() == 4 && x.shape(3) == w.shape(3) && groups == 1 && dh == 1 && dw == 1 && sh >= 1 &&
                        sw >= 1 && ph >= 0 && pw >= 0 && x.size() > 0 && w.size() > 0 &&
                        x.shape(1) + 2 * ph >= w.shape(1) && x.shape(2) + 2 * pw >= w.shape(2) &&
                        size_t(x.shape(0)) * x.shape(1) * x.shape(2) < size_t(INT32_MAX);
  if (!eligible) return mx::conv2d(x, x.dtype() == w.dtype() ? w : mx::astype(w, x.dtype()), {sh, sw}, {ph, pw}, {dh, dw}, groups);
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

}  // namespace

extern "C" {

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

}  // extern "C"
