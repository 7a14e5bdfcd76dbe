// Depthwise convolution (NHWC, stride 1, zero padding): the ConvNeXt blocks of the UViT.
#include "primitive.h"

using namespace mlxprims;

namespace {

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

}  // namespace

extern "C" {

mlxs_array mlxs_depthwise_conv2d(mlxs_array x, mlxs_array w, int pad_h, int pad_w) {
  return guard([&] { return depthwise_conv(unwrap(x), unwrap(w), pad_h, pad_w); });
}

}  // extern "C"
