// Row normalisations and activations in one pass over memory on both cores (MLX's CPU versions take several
// passes with scalar exp/erf). Vector exp keeps float32 to about 1 ulp; GELU uses an erfc form accurate to
// ~1e-7 relative, so results stay within float rounding of MLX's.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "cpu_kernels.h"
#include "pool.h"
#include "simd.h"

namespace mlxkernels {
namespace {

// 1 + erf(x / sqrt 2) for GELU: erfc's Chebyshev fit (fractional error < 1.2e-7) on |z|, so the negative side keeps
// its relative accuracy far into the tail.
inline __m256 one_plus_erf_ps(__m256 x) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  __m256 z = _mm256_mul_ps(_mm256_andnot_ps(sign_mask, x), _mm256_set1_ps(0.70710678118654752f));
  __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(_mm256_set1_ps(0.5f), z, _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(0.17087277f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.82215223f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.48851587f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.13520398f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.27886807f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.18628806f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.09678418f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.37409196f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.00002368f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.26551223f));
  __m256 erfc = _mm256_mul_ps(t, exp_ps(_mm256_sub_ps(p, _mm256_mul_ps(z, z))));
  __m256 negative = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), erfc), erfc, negative);
}

inline __m256 gelu_erf_ps(__m256 x) { return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), one_plus_erf_ps(x)); }

// 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2 / pi) (x + 0.044715 x^3).
inline __m256 gelu_tanh_ps(__m256 x) {
  __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.79788456080286536f), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
  __m256 e = exp_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// gelu'(x) = (1 + erf(x / sqrt 2)) / 2 + x phi(x), phi the standard normal density.
inline __m256 gelu_erf_grad_ps(__m256 x) {
  __m256 density = _mm256_mul_ps(_mm256_set1_ps(0.39894228040143268f), exp_ps(_mm256_mul_ps(_mm256_set1_ps(-0.5f), _mm256_mul_ps(x, x))));
  return _mm256_fmadd_ps(x, density, _mm256_mul_ps(_mm256_set1_ps(0.5f), one_plus_erf_ps(x)));
}

// With y = x s, s = sigmoid(2u), u = k (x + 0.044715 x^3): y' = s + x s (1 - s) 2k (1 + 3 * 0.044715 x^2).
inline __m256 gelu_tanh_grad_ps(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f), k = _mm256_set1_ps(0.79788456080286536f), x2 = _mm256_mul_ps(x, x);
  __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), x2), x, x));
  __m256 s = sigmoid_ps(_mm256_add_ps(u, u));
  __m256 du = _mm256_mul_ps(_mm256_add_ps(k, k), _mm256_fmadd_ps(_mm256_set1_ps(3 * 0.044715f), x2, one));
  return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(x, s), _mm256_sub_ps(one, s)), du, s);
}

// Elementwise loops over n values in chunks handed to the pool; the tail goes through a padded vector.
template <typename F>
void elementwise(size_t n, F&& op) {
  const size_t chunk = 1 << 14;
  const int tasks = int((n + chunk - 1) / chunk);
  parallel_for(tasks, [&](int t) {
    const size_t lo = size_t(t) * chunk, hi = std::min(n, lo + chunk);
    op(lo, hi);
  });
}

template <typename F>
void map1(const float* x, float* y, size_t n, F f) {
  elementwise(n, [&](size_t lo, size_t hi) {
    size_t i = lo;
    for (; i + 8 <= hi; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(x + i)));
    if (i < hi) store_tail(y + i, f(load_tail(x + i, hi - i)), hi - i);
  });
}

// Rows of length d in parallel blocks.
template <typename F>
void by_rows(int rows, int d, F&& row) {
  const int per_task = std::max(1, int((size_t(1) << 14) / size_t(std::max(d, 1))));
  const int tasks = (rows + per_task - 1) / per_task;
  parallel_for(tasks, [&](int t) {
    for (int r = t * per_task; r < std::min(rows, (t + 1) * per_task); ++r) row(r);
  });
}

}  // namespace

void rms_norm(const float* x, const float* w, float* y, int rows, int d, float eps) {
  by_rows(rows, d, [&](int r) {
    const float* xr = x + size_t(r) * d;
    float* yr = y + size_t(r) * d;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    int i = 0;
    for (; i + 16 <= d; i += 16) {
      __m256 a = _mm256_loadu_ps(xr + i), b = _mm256_loadu_ps(xr + i + 8);
      acc0 = _mm256_fmadd_ps(a, a, acc0);
      acc1 = _mm256_fmadd_ps(b, b, acc1);
    }
    float ss = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < d; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / float(d) + eps);
    const __m256 vi = _mm256_set1_ps(inv);
    i = 0;
    for (; i + 8 <= d; i += 8) {
      __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xr + i), vi);
      if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
      _mm256_storeu_ps(yr + i, v);
    }
    for (; i < d; ++i) yr[i] = xr[i] * inv * (w ? w[i] : 1.0f);
  });
}

void layer_norm(const float* x, const float* w, const float* b, float* y, int rows, int d, float eps) {
  by_rows(rows, d, [&](int r) {
    const float* xr = x + size_t(r) * d;
    float* yr = y + size_t(r) * d;
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= d; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(xr + i));
    float sum = hsum(acc);
    for (; i < d; ++i) sum += xr[i];
    const float mean = sum / float(d);
    const __m256 vm = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    i = 0;
    for (; i + 8 <= d; i += 8) {
      __m256 c = _mm256_sub_ps(_mm256_loadu_ps(xr + i), vm);
      acc = _mm256_fmadd_ps(c, c, acc);
    }
    float var = hsum(acc);
    for (; i < d; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    const float inv = 1.0f / std::sqrt(var / float(d) + eps);
    const __m256 vi = _mm256_set1_ps(inv);
    i = 0;
    for (; i + 8 <= d; i += 8) {
      __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), vm), vi);
      if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
      if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
      _mm256_storeu_ps(yr + i, v);
    }
    for (; i < d; ++i) yr[i] = (xr[i] - mean) * inv * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
  });
}

void silu_mul(const float* a, const float* b, float* y, size_t n) {
  elementwise(n, [&](size_t lo, size_t hi) {
    size_t i = lo;
    for (; i + 8 <= hi; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(silu_ps(_mm256_loadu_ps(a + i)), _mm256_loadu_ps(b + i)));
    if (i < hi) store_tail(y + i, _mm256_mul_ps(silu_ps(load_tail(a + i, hi - i)), load_tail(b + i, hi - i)), hi - i);
  });
}

void add(const float* a, const float* b, float* y, size_t n) {
  elementwise(n, [&](size_t lo, size_t hi) {
    size_t i = lo;
    for (; i + 8 <= hi; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < hi; ++i) y[i] = a[i] + b[i];
  });
}

void add_rows(float* y, const float* b, int rows, int n) {
  by_rows(rows, n, [&](int r) {
    float* row = y + size_t(r) * n;
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(row + j, _mm256_add_ps(_mm256_loadu_ps(row + j), _mm256_loadu_ps(b + j)));
    for (; j < n; ++j) row[j] += b[j];
  });
}

void activation(const float* x, float* y, size_t n, Activation kind) {
  switch (kind) {
    case Activation::silu: map1(x, y, n, silu_ps); break;
    case Activation::gelu_erf: map1(x, y, n, gelu_erf_ps); break;
    case Activation::gelu_tanh: map1(x, y, n, gelu_tanh_ps); break;
  }
}

void activation_grad(const float* x, const float* c, float* dx, size_t n, Activation kind) {
  auto run = [&](auto grad) {
    elementwise(n, [&](size_t lo, size_t hi) {
      size_t i = lo;
      for (; i + 8 <= hi; i += 8) _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(c + i), grad(_mm256_loadu_ps(x + i))));
      if (i < hi) store_tail(dx + i, _mm256_mul_ps(load_tail(c + i, hi - i), grad(load_tail(x + i, hi - i))), hi - i);
    });
  };
  switch (kind) {
    case Activation::silu: run(silu_grad_ps); break;
    case Activation::gelu_erf: run(gelu_erf_grad_ps); break;
    case Activation::gelu_tanh: run(gelu_tanh_grad_ps); break;
  }
}

void silu_mul_grad(const float* a, const float* b, const float* c, float* da, float* db, size_t n) {
  auto step = [](__m256 av, __m256 bv, __m256 cv, __m256& dav, __m256& dbv) {
    const __m256 one = _mm256_set1_ps(1.0f), s = sigmoid_ps(av);
    dbv = _mm256_mul_ps(cv, _mm256_mul_ps(av, s));
    dav = _mm256_mul_ps(_mm256_mul_ps(cv, bv), _mm256_mul_ps(s, _mm256_fmadd_ps(av, _mm256_sub_ps(one, s), one)));
  };
  elementwise(n, [&](size_t lo, size_t hi) {
    size_t i = lo;
    __m256 dav, dbv;
    for (; i + 8 <= hi; i += 8) {
      step(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), _mm256_loadu_ps(c + i), dav, dbv);
      _mm256_storeu_ps(da + i, dav);
      _mm256_storeu_ps(db + i, dbv);
    }
    if (i < hi) {
      const size_t r = hi - i;
      step(load_tail(a + i, r), load_tail(b + i, r), load_tail(c + i, r), dav, dbv);
      store_tail(da + i, dav, r);
      store_tail(db + i, dbv, r);
    }
  });
}

namespace {

// Largest value and sum of exp(x - max) of one row.
void row_max_sum(const float* x, int v, float& mx_out, float& sum_out) {
  __m256 m8 = _mm256_set1_ps(-INFINITY);
  int j = 0;
  for (; j + 8 <= v; j += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + j));
  float m = hmax(m8);
  for (; j < v; ++j) m = std::max(m, x[j]);
  const __m256 mv = _mm256_set1_ps(m);
  __m256 s8 = _mm256_setzero_ps();
  j = 0;
  for (; j + 8 <= v; j += 8) s8 = _mm256_add_ps(s8, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv)));
  float s = hsum(s8);
  for (; j < v; ++j) s += std::exp(x[j] - m);
  mx_out = m;
  sum_out = s;
}

template <typename F>
void over_rows(int rows, int v, F&& body) {
  const int chunk = std::max(1, (1 << 14) / std::max(1, v));
  parallel_for((rows + chunk - 1) / chunk, [&](int t) {
    for (int r = t * chunk; r < std::min(rows, (t + 1) * chunk); ++r) body(r);
  });
}

}  // namespace

void cross_entropy(const float* logits, const int32_t* targets, float* loss, int rows, int v) {
  over_rows(rows, v, [&](int r) {
    const float* x = logits + size_t(r) * v;
    const int t = targets[r];
    if (t < 0 || t >= v) {
      loss[r] = NAN;  // a target outside the vocabulary: the loss says so instead of reading past the row
      return;
    }
    float m, s;
    row_max_sum(x, v, m, s);
    loss[r] = m + std::log(s) - x[t];
  });
}

void cross_entropy_grad(const float* logits, const int32_t* targets, const float* cotangent, float* dlogits, int rows,
                        int v) {
  over_rows(rows, v, [&](int r) {
    const float* x = logits + size_t(r) * v;
    float* d = dlogits + size_t(r) * v;
    const float c = cotangent[r];
    float m, s;
    row_max_sum(x, v, m, s);
    // softmax * c, then -c at the target.
    const __m256 mv = _mm256_set1_ps(m), scale = _mm256_set1_ps(c / s);
    int j = 0;
    for (; j + 8 <= v; j += 8) _mm256_storeu_ps(d + j, _mm256_mul_ps(exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv)), scale));
    if (j < v) store_tail(d + j, _mm256_mul_ps(exp_ps(_mm256_sub_ps(load_tail(x + j, size_t(v - j)), mv)), scale), size_t(v - j));
    const int t = targets[r];
    if (t >= 0 && t < v) d[t] -= c;
  });
}

}  // namespace mlxkernels
