// Fast CPU kernels exposed as MLX custom primitives. Each primitive computes on the CPU itself and takes its
// gradient from the same computation written with MLX ops (so training sees exact autograd).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
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
    std::vector<mx::array> selected;
    for (int a : argnums) selected.push_back(grads[a]);
    return selected;
  }
  std::vector<mx::array> jvp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error(std::string(name()) + ": jvp not implemented");
  }
  std::pair<std::vector<mx::array>, std::vector<int>> vmap(const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error(std::string(name()) + ": vmap not implemented");
  }
};

class FastLinear : public ReferencedPrimitive {
 public:
  explicit FastLinear(mx::Stream s) : ReferencedPrimitive(s) {}
  mx::array reference(const std::vector<mx::array>& in) const override { return linear_reference(in[0], in[1]); }

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

// Depthwise convolution, NHWC, stride 1, zero padding: channels are contiguous, so each output pixel is a sum of
// kh*kw channel vectors scaled by per-channel weights (AVX2 over channels, rows split across cores).
mx::array depthwise_reference(const mx::array& x, const mx::array& w, int ph, int pw) {
  return mx::conv2d(x, mx::expand_dims(w, 3), {1, 1}, {ph, pw}, {1, 1}, int(w.shape(0)));
}

class DepthwiseConv : public ReferencedPrimitive {
 public:
  DepthwiseConv(mx::Stream s, int ph, int pw) : ReferencedPrimitive(s), ph_(ph), pw_(pw) {}
  mx::array reference(const std::vector<mx::array>& in) const override { return depthwise_reference(in[0], in[1], ph_, pw_); }

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    const auto& w = inputs[1];
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    encoder.set_input_array(w);
    encoder.set_output_array(out);
    int ph = ph_, pw = pw_;
    encoder.dispatch([x, w, out, ph, pw]() mutable {
      int b = int(x.shape(0)), h = int(x.shape(1)), wd = int(x.shape(2)), c = int(x.shape(3));
      int kh = int(w.shape(1)), kw = int(w.shape(2));
      int oh = int(out.shape(1)), ow = int(out.shape(2));
      const float* xp = x.data<float>();
      const float* wp = w.data<float>();
      float* yp = out.data<float>();
      // Weights as (kh, kw, C) so that each tap is a contiguous channel vector.
      std::vector<float> taps(size_t(kh) * kw * c);
      for (int ch = 0; ch < c; ++ch)
        for (int t = 0; t < kh * kw; ++t) taps[size_t(t) * c + ch] = wp[size_t(ch) * kh * kw + t];
      parallel_for(b * oh, [&](int lo, int hi) {
        for (int row = lo; row < hi; ++row) {
          int n = row / oh, oy = row % oh;
          for (int ox = 0; ox < ow; ++ox) {
            float* dst = yp + ((size_t(n) * oh + oy) * ow + ox) * c;
            int ch = 0;
            // Four independent accumulators hide the FMA latency.
            for (; ch + 32 <= c; ch += 32) {
              __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
              for (int ky = 0; ky < kh; ++ky) {
                int iy = oy + ky - ph;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < kw; ++kx) {
                  int ix = ox + kx - pw;
                  if (ix < 0 || ix >= wd) continue;
                  const float* src = xp + ((size_t(n) * h + iy) * wd + ix) * c + ch;
                  const float* tap = &taps[size_t(ky * kw + kx) * c + ch];
                  a0 = _mm256_fmadd_ps(_mm256_loadu_ps(src), _mm256_loadu_ps(tap), a0);
                  a1 = _mm256_fmadd_ps(_mm256_loadu_ps(src + 8), _mm256_loadu_ps(tap + 8), a1);
                  a2 = _mm256_fmadd_ps(_mm256_loadu_ps(src + 16), _mm256_loadu_ps(tap + 16), a2);
                  a3 = _mm256_fmadd_ps(_mm256_loadu_ps(src + 24), _mm256_loadu_ps(tap + 24), a3);
                }
              }
              _mm256_storeu_ps(dst + ch, a0);
              _mm256_storeu_ps(dst + ch + 8, a1);
              _mm256_storeu_ps(dst + ch + 16, a2);
              _mm256_storeu_ps(dst + ch + 24, a3);
            }
            for (; ch + 8 <= c; ch += 8) {
              __m256 acc = _mm256_setzero_ps();
              for (int ky = 0; ky < kh; ++ky) {
                int iy = oy + ky - ph;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < kw; ++kx) {
                  int ix = ox + kx - pw;
                  if (ix < 0 || ix >= wd) continue;
                  const float* src = xp + ((size_t(n) * h + iy) * wd + ix) * c + ch;
                  acc = _mm256_fmadd_ps(_mm256_loadu_ps(src), _mm256_loadu_ps(&taps[size_t(ky * kw + kx) * c + ch]), acc);
                }
              }
              _mm256_storeu_ps(dst + ch, acc);
            }
            for (; ch < c; ++ch) {
              float acc = 0;
              for (int ky = 0; ky < kh; ++ky) {
                int iy = oy + ky - ph;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < kw; ++kx) {
                  int ix = ox + kx - pw;
                  if (ix < 0 || ix >= wd) continue;
                  acc += xp[((size_t(n) * h + iy) * wd + ix) * c + ch] * taps[size_t(ky * kw + kx) * c + ch];
                }
              }
              dst[ch] = acc;
            }
          }
        }
      });
    });
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
  if (!fast_enabled || x.dtype() != mx::float32 || w.dtype() != mx::float32) return depthwise_reference(x, w, ph, pw);
  auto shape = x.shape();
  shape[1] = shape[1] + 2 * ph - int(w.shape(1)) + 1;
  shape[2] = shape[2] + 2 * pw - int(w.shape(2)) + 1;
  return mx::array(shape, mx::float32, std::make_shared<DepthwiseConv>(mx::default_stream(mx::Device::cpu), ph, pw),
                   {mx::contiguous(x), mx::contiguous(w)});
}

// Attention as two OpenBLAS sgemms per head around a vectorised softmax (scores for one head fit in memory
// at the sizes JanusFlow uses: 600-1200 positions).
inline __m256 exp256(__m256 x) {
  // exp(x) = 2^n * e^r with r in [-ln2/2, ln2/2]; degree-6 polynomial for e^r (relative error ~1e-7).
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// Softmax of one row in place (after adding its mask and hiding keys beyond `valid`).
void softmax_row(float* row, int n, int valid) {
  float m = -INFINITY;
  for (int j = 0; j < valid; ++j) m = std::max(m, row[j]);
  __m256 vm = _mm256_set1_ps(m), vs = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= valid; j += 8) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(row + j), vm));
    _mm256_storeu_ps(row + j, e);
    vs = _mm256_add_ps(vs, e);
  }
  float sum = hsum(vs);
  for (; j < valid; ++j) {
    row[j] = std::exp(row[j] - m);
    sum += row[j];
  }
  float inv = 1.0f / sum;
  __m256 vi = _mm256_set1_ps(inv);
  j = 0;
  for (; j + 8 <= valid; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), vi));
  for (; j < valid; ++j) row[j] *= inv;
  for (j = valid; j < n; ++j) row[j] = 0;
}

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
    scores = mx::where(mx::less_equal(kj, qi), scores, mx::array(-1e9f, scores.dtype()));
  }
  if (mask) scores = mx::add(scores, *mask);
  return mx::matmul(mx::softmax(scores, std::vector<int>{-1}, true), vv);
}

class FastAttention : public ReferencedPrimitive {
 public:
  FastAttention(mx::Stream s, float scale, bool causal, bool has_mask)
      : ReferencedPrimitive(s), scale_(scale), causal_(causal), has_mask_(has_mask) {}
  mx::array reference(const std::vector<mx::array>& in) const override {
    std::optional<mx::array> m;
    if (has_mask_) m = in[3];
    return attention_reference(in[0], in[1], in[2], scale_, causal_, m);
  }

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (auto& a : inputs) encoder.set_input_array(a);
    encoder.set_output_array(out);
    float scale = scale_;
    bool causal = causal_, has_mask = has_mask_;
    auto q = inputs[0], k = inputs[1], v = inputs[2];
    std::optional<mx::array> mask;
    if (has_mask) mask = inputs[3];
    encoder.dispatch([q, k, v, mask, out, scale, causal]() mutable {
      int b = int(q.shape(0)), hq = int(q.shape(1)), lq = int(q.shape(2)), d = int(q.shape(3));
      int hkv = int(k.shape(1)), lk = int(k.shape(2));
      const float* qp = q.data<float>();
      const float* kp = k.data<float>();
      const float* vp = v.data<float>();
      float* op = out.data<float>();
      std::vector<float> scores(size_t(lq) * lk);
      int mb = 1, mh = 1, mq = 1;
      const float* mp = nullptr;
      if (mask) {
        mb = int(mask->shape(0)), mh = int(mask->shape(1)), mq = int(mask->shape(2));
        mp = mask->data<float>();
      }
      for (int n = 0; n < b; ++n) {
        for (int h = 0; h < hq; ++h) {
          int kvh = h / (hq / hkv);
          const float* Q = qp + (size_t(n) * hq + h) * lq * d;
          const float* K = kp + (size_t(n) * hkv + kvh) * lk * d;
          const float* V = vp + (size_t(n) * hkv + kvh) * lk * d;
          cblas_sgemm(101, 111, 112, lq, lk, d, scale, Q, d, K, d, 0.0f, scores.data(), lk);
          const float* M = mp ? mp + ((size_t(mb == 1 ? 0 : n) * mh + (mh == 1 ? 0 : h)) * mq) * lk : nullptr;
          parallel_for(lq, [&](int lo, int hi) {
            for (int i = lo; i < hi; ++i) {
              float* row = scores.data() + size_t(i) * lk;
              if (M) {
                const float* mrow = M + size_t(mq == 1 ? 0 : i) * lk;
                for (int j = 0; j < lk; ++j) row[j] += mrow[j];
              }
              softmax_row(row, lk, causal ? std::min(lk, i + 1 + (lk - lq)) : lk);
            }
          });
          cblas_sgemm(101, 111, 111, lq, d, lk, 1.0f, scores.data(), lk, V, d, 0.0f, op + (size_t(n) * hq + h) * lq * d, d);
        }
      }
    });
  }
  const char* name() const override { return "FastAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastAttention*>(&other);
    return o && o->scale_ == scale_ && o->causal_ == causal_ && o->has_mask_ == has_mask_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }

 private:
  float scale_;
  bool causal_, has_mask_;
};

mx::array fast_attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale, bool causal,
                         std::optional<mx::array> mask) {
  bool eligible = fast_enabled && q.dtype() == mx::float32 && k.dtype() == mx::float32 && v.dtype() == mx::float32 &&
                  q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4 && k.shape(1) > 0 && q.shape(1) % k.shape(1) == 0 &&
                  // One head's scores must stay small (the kernel keeps them whole).
                  int64_t(q.shape(2)) * k.shape(2) <= (int64_t(1) << 24);
  if (mask) {
    auto m = *mask;
    if (m.dtype() != mx::float32) m = mx::astype(m, mx::float32);
    while (m.ndim() < 4) m = mx::expand_dims(m, 0);
    eligible = eligible && m.ndim() == 4 && m.shape(3) == k.shape(2) && (m.shape(0) == 1 || m.shape(0) == q.shape(0)) &&
               (m.shape(1) == 1 || m.shape(1) == q.shape(1)) && (m.shape(2) == 1 || m.shape(2) == q.shape(2));
    mask = m;
  }
  if (!eligible) return attention_reference(q, k, v, scale, causal, mask);
  std::vector<mx::array> inputs = {mx::contiguous(q), mx::contiguous(k), mx::contiguous(v)};
  if (mask) inputs.push_back(mx::contiguous(*mask));
  return mx::array(q.shape(), mx::float32,
                   std::make_shared<FastAttention>(mx::default_stream(mx::Device::cpu), scale, causal, mask.has_value()), inputs);
}

}  // namespace

extern "C" {

void mlxs_set_fast_kernels(int enabled) { fast_enabled = enabled ? 1 : 0; }
int mlxs_fast_kernels_enabled(void) { return fast_enabled.load(); }

mlxs_array mlxs_depthwise_conv2d(mlxs_array x, mlxs_array w, int pad_h, int pad_w) {
  return guard([&] { return depthwise_conv(unwrap(x), unwrap(w), pad_h, pad_w); });
}

mlxs_array mlxs_fast_attention(mlxs_array q, mlxs_array k, mlxs_array v, float scale, bool causal,
                               mlxs_array mask) {
  return guard([&] {
    std::optional<mx::array> m;
    if (mask) m = unwrap(mask);
    if (causal && m) throw std::invalid_argument("fast_attention: give either causal or a mask, not both");
    if (!fast_enabled) {
      return mx::fast::scaled_dot_product_attention(unwrap(q), unwrap(k), unwrap(v), scale, causal ? "causal" : (m ? "array" : ""), m);
    }
    return fast_attention(unwrap(q), unwrap(k), unwrap(v), scale, causal, m);
  });
}

mlxs_array mlxs_fast_linear(mlxs_array x, mlxs_array w) {
  return guard([&] { return fast_linear(unwrap(x), unwrap(w)); });
}

}  // extern "C"
