// Optimizer updates over every parameter tensor in one pass (one MLX op a step instead of a dozen per tensor).
// Each value follows the same float32 operations, in the same order and rounding, as the MLX-op versions in
// Optimizers.swift, so the fused and unfused updates agree bit for bit.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_kernels.h"
#include "pool.h"

#pragma clang fp contract(off)

namespace mlxkernels {
namespace {

// Work items: fixed slices of the tensors, so the sums below are grouped the same way on any number of threads.
constexpr size_t kSlice = 16384;

struct Slice {
  int tensor;
  size_t begin, end;
};

std::vector<Slice> slices(const size_t* sizes, int count) {
  std::vector<Slice> out;
  for (int t = 0; t < count; ++t)
    for (size_t b = 0; b < sizes[t]; b += kSlice) out.push_back({t, b, std::min(sizes[t], b + kSlice)});
  return out;
}

}  // namespace

double sum_of_squares(const float* const* tensors, const size_t* sizes, int count) {
  auto work = slices(sizes, count);
  std::vector<double> partial(work.size());
  parallel_for(int(work.size()), [&](int i) {
    const Slice& s = work[size_t(i)];
    const float* x = tensors[s.tensor];
    double lanes[4] = {0, 0, 0, 0};
    size_t j = s.begin;
    for (; j + 4 <= s.end; j += 4)
      for (int l = 0; l < 4; ++l) lanes[l] += double(x[j + l]) * double(x[j + l]);
    for (; j < s.end; ++j) lanes[0] += double(x[j]) * double(x[j]);
    partial[size_t(i)] = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

void adamw_update(const AdamWArgs& a) {
  auto work = slices(a.sizes, a.count);
  const float scale = a.grad_scale ? *a.grad_scale : 1.0f;
  parallel_for(int(work.size()), [&](int i) {
    const Slice& s = work[size_t(i)];
    const int t = s.tensor;
    const float *p = a.params[t], *g = a.grads[t], *m = a.m[t], *v = a.v[t];
    float *po = a.params_out[t], *mo = a.m_out[t], *vo = a.v_out[t];
    const size_t rows = a.grad_transposed_rows ? size_t(a.grad_transposed_rows[t]) : 0;
    const size_t cols = rows ? a.sizes[t] / rows : 0;
    for (size_t j = s.begin; j < s.end; ++j) {
      const float graw = rows ? g[(j % cols) * rows + j / cols] : g[j];
      const float gj = a.grad_scale ? graw * scale : graw;
      const float m0 = m ? m[j] : 0.0f, v0 = v ? v[j] : 0.0f;
      const float mb = m0 * a.beta1, gb = gj * a.one_minus_beta1;
      const float mn = mb + gb;
      const float g2 = gj * gj;
      const float vb = v0 * a.beta2, g2b = g2 * a.one_minus_beta2;
      const float vn = vb + g2b;
      const float decayed = p[j] * a.decay;
      const float denom = std::sqrt(vn / a.bias_correction2) + a.eps;
      const float ratio = mn / denom;
      const float step = ratio * a.step_size;
      po[j] = decayed - step;
      mo[j] = mn;
      vo[j] = vn;
    }
  });
}

void ema_update(const float* const* shadow, const float* const* params, float* const* out, const size_t* sizes, int count,
                float decay, float one_minus_decay) {
  auto work = slices(sizes, count);
  parallel_for(int(work.size()), [&](int i) {
    const Slice& s = work[size_t(i)];
    const float *e = shadow[s.tensor], *p = params[s.tensor];
    float* o = out[s.tensor];
    for (size_t j = s.begin; j < s.end; ++j) {
      const float a = e[j] * decay, b = p[j] * one_minus_decay;
      o[j] = a + b;
    }
  });
}

}  // namespace mlxkernels
