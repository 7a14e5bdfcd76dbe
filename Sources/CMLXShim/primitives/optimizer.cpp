// Optimizer steps over all parameter tensors as one op each: the global gradient norm, AdamW and the EMA.
#include "primitive.h"

using namespace mlxprims;

namespace {

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

extern "C" {

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
