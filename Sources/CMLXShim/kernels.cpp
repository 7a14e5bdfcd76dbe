// Fast CPU kernels exposed as MLX custom primitives (see kernels/ for the implementations).
#include <atomic>
#include <optional>

#include "mlx/fast.h"
#include "mlx/mlx.h"
#include "mlxshim.h"
#include "shim_internal.h"

namespace mx = mlx::core;
using namespace mlxshim;

namespace {
std::atomic<int> fast_enabled{1};

template <typename F>
mlxs_array guard(F&& f) {
  try {
    return wrap(f());
  } catch (const std::exception& e) {
    set_error(e.what());
    return nullptr;
  }
}
}  // namespace

extern "C" {

void mlxs_set_fast_kernels(int enabled) { fast_enabled = enabled ? 1 : 0; }
int mlxs_fast_kernels_enabled(void) { return fast_enabled.load(); }

mlxs_array mlxs_depthwise_conv2d(mlxs_array x, mlxs_array w, int pad_h, int pad_w) {
  return guard([&] {
    auto& weight = unwrap(w);
    if (weight.ndim() != 3) throw std::invalid_argument("depthwise_conv2d: weight must be (C, kh, kw)");
    auto ohwi = mx::expand_dims(weight, 3);
    return mx::conv2d(unwrap(x), ohwi, {1, 1}, {pad_h, pad_w}, {1, 1}, int(weight.shape(0)));
  });
}

mlxs_array mlxs_fast_attention(mlxs_array q, mlxs_array k, mlxs_array v, float scale, bool causal,
                               mlxs_array mask) {
  return guard([&] {
    std::optional<mx::array> m;
    if (mask) m = unwrap(mask);
    if (causal && m) throw std::invalid_argument("fast_attention: give either causal or a mask, not both");
    return mx::fast::scaled_dot_product_attention(unwrap(q), unwrap(k), unwrap(v), scale,
                                                  causal ? "causal" : (m ? "array" : ""), m);
  });
}

mlxs_array mlxs_fast_linear(mlxs_array x, mlxs_array w) {
  return guard([&] {
    auto& weight = unwrap(w);
    auto& input = unwrap(x);
    auto wt = weight.dtype() == input.dtype() ? weight : mx::astype(weight, input.dtype());
    return mx::matmul(input, mx::transpose(wt));
  });
}

}  // extern "C"
