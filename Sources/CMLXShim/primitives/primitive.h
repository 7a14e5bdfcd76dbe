// What every primitive file shares: the error guard of the C API, the array layouts the kernels read, and the
// two primitive bases (computed here, differentiated through an MLX reference; or several outputs, no derivatives).
#pragma once
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
#include "../shim_internal.h"

#include "../kernels/cpu_kernels.h"

namespace mx = mlx::core;

namespace mlxprims {
using namespace mlxshim;

// On unless the environment says MLXS_FAST_KERNELS=0 (handy to compare a whole run against plain MLX); controls.cpp.
extern std::atomic<int> fast_enabled;

inline mx::Stream cpu_stream() { return mx::default_stream(mx::Device::cpu); }

// The gradients a vjp was asked for, in argnums order.
inline std::vector<mx::array> selected_grads(const std::vector<mx::array>& grads, const std::vector<int>& argnums) {
  std::vector<mx::array> selected;
  for (int a : argnums) selected.push_back(grads[size_t(a)]);
  return selected;
}

// An array as a kernel reads it, row-contiguous: evaluated row-contiguous arrays as they are (mx::contiguous would
// add a graph node per array, and share buffers that must stay uniquely held to be updated in place).
inline mx::array plain(const mx::array& a) { return a.is_available() && a.flags().row_contiguous ? a : mx::contiguous(a); }

// A cotangent as the gradient kernels read it: contiguous float32.
inline mx::array float_cotangent(const mx::array& c) { return mx::contiguous(c.dtype() == mx::float32 ? c : mx::astype(c, mx::float32)); }

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


// Element distance between the (batch, head) planes of a (B, H, L, D) array whose rows are contiguous D-vectors,
// consecutive within each plane, with equally spaced planes: a contiguous array or a slice along L of a longer
// buffer (a KV cache). 0 when the array is laid out otherwise.
inline size_t plane_stride(const mx::array& x) {
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


// A multi-output CPU primitive's arrays registered with its stream's encoder, the outputs allocated.
inline mx::cpu::CommandEncoder& encode_outputs(mx::Stream s, const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
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

}  // namespace mlxprims
