// Fast CPU kernels exposed as MLX custom primitives. Each primitive computes on the CPU itself and takes its
// gradient from the same computation written with MLX ops (so training sees exact autograd).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"
#include "mlx/transforms.h"

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

extern "C" void cblas_sgemm(int order, int transA, int transB, int M, int N, int K, float alpha, const float* A, int lda,
                            const float* B, int ldb, float beta, float* C, int ldc);

namespace {

// y = x @ w^T written with MLX ops: the reference and the gradient path.
mx::array linear_reference(const mx::array& x, const mx::array& w) {
  auto wt = w.dtype() == x.dtype() ? w : mx::astype(w, x.dtype());
  return mx::matmul(x, mx::transpose(wt));
}

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  // bfloat16 -> float32: the 16 bits are the high half of the float.
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline float load1(const float* p) { return *p; }
inline float load1(const uint16_t* p) {
  uint32_t bits = uint32_t(*p) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

unsigned worker_count() { return std::max(1u, std::min(8u, std::thread::hardware_concurrency())); }

template <typename F>
void parallel_for(int n, F&& body) {
  unsigned workers = std::min<unsigned>(worker_count(), std::max(1, n / 64));
  if (workers <= 1) {
    body(0, n);
    return;
  }
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < workers; ++t) pool.emplace_back([&, t] { body(int(int64_t(n) * t / workers), int(int64_t(n) * (t + 1) / workers)); });
  body(0, int(int64_t(n) / workers));
  for (auto& th : pool) th.join();
}

// Few rows: every weight row is read once and dotted with each input row (memory bound).
template <typename W>
void matvec_rows(const float* x, const W* w, float* y, int m, int n, int k) {
  parallel_for(n, [&](int lo, int hi) {
    for (int j = lo; j < hi; ++j) {
      const W* wr = w + int64_t(j) * k;
      for (int r = 0; r < m; ++r) {
        const float* xr = x + int64_t(r) * k;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= k; i += 16) {
          a0 = _mm256_fmadd_ps(load8(wr + i), load8(xr + i), a0);
          a1 = _mm256_fmadd_ps(load8(wr + i + 8), load8(xr + i + 8), a1);
        }
        for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(load8(wr + i), load8(xr + i), a0);
        float s = hsum(_mm256_add_ps(a0, a1));
        for (; i < k; ++i) s += load1(wr + i) * xr[i];
        y[int64_t(r) * n + j] = s;
      }
    }
  });
}

// Many rows with bf16 weights: convert a block of weight rows to float32, then OpenBLAS sgemm on the block.
void gemm_bf16(const float* x, const uint16_t* w, float* y, int m, int n, int k) {
  const int block = std::max(64, std::min(n, (4 << 20) / std::max(k, 1)));  // about 16 MB of float32 per block
  std::vector<float> buffer(size_t(block) * k);
  for (int j0 = 0; j0 < n; j0 += block) {
    int rows = std::min(block, n - j0);
    const uint16_t* src = w + int64_t(j0) * k;
    parallel_for(rows, [&](int lo, int hi) {
      for (int64_t i = int64_t(lo) * k; i < int64_t(hi) * k; ++i) {
        uint32_t bits = uint32_t(src[i]) << 16;
        std::memcpy(&buffer[i], &bits, 4);
      }
    });
    cblas_sgemm(101, 111, 112, m, rows, k, 1.0f, x, k, buffer.data(), k, 0.0f, y + j0, n);
  }
}

class FastLinear : public mx::UnaryPrimitive {
 public:
  explicit FastLinear(mx::Stream s) : mx::UnaryPrimitive(s) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    const auto& w = inputs[1];
    int k = int(x.shape(-1)), n = int(w.shape(0)), m = int(x.size() / std::max<size_t>(k, 1));
    out.set_data(mx::allocator::malloc(out.nbytes()));
    // MLX computes on the stream's queue: the inputs are ready only when this task runs, in order.
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    encoder.set_input_array(w);
    encoder.set_output_array(out);
    encoder.dispatch([x, w, out, m, n, k]() mutable {
      float* y = out.data<float>();
      const float* xp = x.data<float>();
      if (m <= 8) {
        if (w.dtype() == mx::bfloat16) matvec_rows(xp, reinterpret_cast<const uint16_t*>(w.data<mx::bfloat16_t>()), y, m, n, k);
        else matvec_rows(xp, w.data<float>(), y, m, n, k);
      } else if (w.dtype() == mx::bfloat16) {
        gemm_bf16(xp, reinterpret_cast<const uint16_t*>(w.data<mx::bfloat16_t>()), y, m, n, k);
      } else {
        cblas_sgemm(101, 111, 112, m, n, k, 1.0f, xp, k, w.data<float>(), k, 0.0f, y, n);
      }
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { throw std::runtime_error("FastLinear: CPU only"); }

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>&) override {
    auto [outs, grads] = mx::vjp([](const std::vector<mx::array>& in) { return std::vector<mx::array>{linear_reference(in[0], in[1])}; },
                                 primals, cotangents);
    std::vector<mx::array> selected;
    for (int a : argnums) selected.push_back(grads[a]);
    return selected;
  }
  std::vector<mx::array> jvp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error("FastLinear: jvp not implemented");
  }
  std::pair<std::vector<mx::array>, std::vector<int>> vmap(const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error("FastLinear: vmap not implemented");
  }
  const char* name() const override { return "FastLinear"; }
  bool is_equivalent(const mx::Primitive& other) const override { return dynamic_cast<const FastLinear*>(&other) != nullptr; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    auto shape = inputs[0].shape();
    shape.back() = inputs[1].shape(0);
    return {shape};
  }
};

mx::array fast_linear(const mx::array& x, const mx::array& w) {
  if (!fast_enabled || x.dtype() != mx::float32 || (w.dtype() != mx::float32 && w.dtype() != mx::bfloat16) || w.ndim() != 2 ||
      x.ndim() < 1 || x.shape(-1) != w.shape(1)) {
    return linear_reference(x, w);
  }
  auto shape = x.shape();
  shape.back() = w.shape(0);
  // The primitive reads plain row-major buffers.
  auto xc = mx::contiguous(x), wc = mx::contiguous(w);
  return mx::array(shape, mx::float32, std::make_shared<FastLinear>(mx::default_stream(mx::Device::cpu)), {xc, wc});
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
  return guard([&] { return fast_linear(unwrap(x), unwrap(w)); });
}

}  // extern "C"
