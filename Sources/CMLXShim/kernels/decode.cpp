// One decoding position through a stack of Llama-style decoder blocks in a single call. Decoding is bound by
// reading the weights, and MLX's graph between ~20 small ops per block (each a hand-off between threads on two
// cores) cost a fifth of every token; here each block is five parallel loops with only row-sized work between.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu_kernels.h"
#include "pool.h"
#include "simd.h"

namespace mlxkernels {
namespace {

// A matrix-vector product to run: `rows` of x (already in the layout the weight kind reads) into y (rows, n).
struct Product {
  const DecodeMatrix* m;
  const float* x;  // float32 / q8: plain rows; bf16: prepared rows
  float* y;
  const QuantizedRows* quantized = nullptr;  // q8 on VNNI: the rows rounded to int8
};

// All the products in one parallel loop, their weight rows cut into blocks of about equal size (a few per core,
// as the single-matrix kernel does, so that one core's stream stays long).
void run_products(const Product* products, int count, int rows) {
  struct Task {
    int product, j0, j1;
  };
  int total = 0;
  for (int p = 0; p < count; ++p) total += products[p].m->n;
  const int threads = pool_threads();
  const int block = std::max(8, (total / (threads * 4) + 7) & ~7);
  thread_local std::vector<Task> tasks;
  tasks.clear();
  for (int p = 0; p < count; ++p)
    for (int j0 = 0; j0 < products[p].m->n; j0 += block) tasks.push_back({p, j0, std::min(products[p].m->n, j0 + block)});
  const Task* list = tasks.data();
  parallel_for(int(tasks.size()), [&](int t) {
    const Task& task = list[t];
    const Product& p = products[task.product];
    const DecodeMatrix& m = *p.m;
    switch (m.kind) {
      case WeightKind::f32:
        linear_block_f32(p.x, static_cast<const float*>(m.w), p.y, rows, m.n, m.k, task.j0, task.j1);
        break;
      case WeightKind::bf16:
        linear_block_bf16(p.x, static_cast<const uint16_t*>(m.w), p.y, rows, m.n, m.k, task.j0, task.j1);
        break;
      case WeightKind::q8:
        if (p.quantized) {
          linear_block_q8_vnni(*p.quantized, static_cast<const int8_t*>(m.w), m.scales, p.y, m.n, task.j0, task.j1);
          break;
        }
        linear_block_q8(p.x, static_cast<const int8_t*>(m.w), m.scales, p.y, rows, m.n, m.k, m.group, task.j0, task.j1);
        break;
    }
  });
}

// One input of the products: its rows as they are, and (made on first use) in the order bf16 kernels read or
// rounded to int8 for the VNNI kernel.
class Rows {
 public:
  Rows(const float* x, int rows, int k) : x_(x), rows_(rows), k_(k) {}
  Product product(const DecodeMatrix& m, float* y) {
    if (m.kind == WeightKind::q8 && q8_vnni_usable(m.k, m.group)) {
      if (quantized_.group != m.group) quantize_rows_q8(x_, rows_, k_, m.group, quantized_);
      return {&m, x_, y, &quantized_};
    }
    if (m.kind != WeightKind::bf16) return {&m, x_, y};
    if (!ready_) {
      prepared_.resize(size_t(rows_) * k_);
      prepare_rows_bf16(x_, prepared_.data(), rows_, k_);
      ready_ = true;
    }
    return {&m, prepared_.data(), y};
  }

 private:
  const float* x_;
  int rows_, k_;
  bool ready_ = false;
  std::vector<float> prepared_;
  QuantizedRows quantized_;
};

// Eight cache values as float32: a float32 cache as it is, a bfloat16 one (raw 16-bit patterns) widened.
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) { return load8_bf16(p); }
inline float value(const float* p, int i) { return p[i]; }
inline float value(const uint16_t* p, int i) { return bf16_to_f32(p[i]); }

// float32 -> bfloat16 bits, rounding to nearest even as MLX's conversion does.
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // NaN stays NaN
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

template <typename T>
float dot(const float* a, const T* b, int d) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  int i = 0;
  for (; i + 16 <= d; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), load8(b + i + 8), acc1);
  }
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < d; ++i) s += a[i] * value(b, i);
  return s;
}

// y += w * x over d values.
template <typename T>
void axpy(float w, const T* x, float* y, int d) {
  const __m256 vw = _mm256_set1_ps(w);
  int i = 0;
  for (; i + 8 <= d; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vw, load8(x + i), _mm256_loadu_ps(y + i)));
  for (; i < d; ++i) y[i] += w * value(x, i);
}

// Rotate-half RoPE of one head vector in place, with the angles' cosines and sines (d / 2 each).
void rotate(float* x, const float* cosines, const float* sines, int d) {
  const int half = d / 2;
  for (int i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cosines[i] - b * sines[i];
    x[i + half] = b * cosines[i] + a * sines[i];
  }
}

// Softmax attention of one query over `past` cached keys/values plus one new key/value; out (d).
template <typename T>
void attend(const float* q, const T* keys, const T* values, int past, const float* k_new, const float* v_new,
            int d, float scale, float* out, std::vector<float>& scores) {
  scores.resize(size_t(past) + 1);
  float* s = scores.data();
  for (int j = 0; j < past; ++j) s[j] = dot(q, keys + size_t(j) * d, d);
  s[past] = dot(q, k_new, d);
  const float total = softmax_numerators(s, past + 1, scale, nullptr);
  std::fill(out, out + d, 0.0f);
  for (int t = 0; t < past; ++t) axpy(s[t], values + size_t(t) * d, out, d);
  axpy(s[past], v_new, out, d);
  const float inv = 1.0f / total;
  for (int i = 0; i < d; ++i) out[i] *= inv;
}

// The new key and value stored in the cache's dtype; with a bfloat16 cache the step attends to them as stored,
// as the unfused path (write the cache, then attend over it) does.
void store(float* x, void* dst, bool bf16, int d) {
  if (!bf16) {
    std::memcpy(dst, x, sizeof(float) * size_t(d));
    return;
  }
  auto* out = static_cast<uint16_t*>(dst);
  for (int i = 0; i < d; ++i) {
    out[i] = to_bf16(x[i]);
    x[i] = value(out, i);
  }
}

}  // namespace

void decode_step(const DecodeArgs& a) {
  const int b = a.batch, h = a.hidden, d = a.head_dim, hq = a.heads, hkv = a.kv_heads, inter = a.intermediate;
  const int group = hq / hkv;
  const float scale = 1.0f / std::sqrt(float(d));
  // Angles as MLX's rope computes them: inv_freq_i = exp(-i ln(base) / (d / 2)), theta = position * inv_freq.
  std::vector<float> cosines(size_t(d / 2)), sines(size_t(d / 2));
  const float log_base = std::log(a.rope_base);
  for (int i = 0; i < d / 2; ++i) {
    const float theta = float(a.past) * std::exp(float(-i) * log_base / float(d / 2));
    cosines[size_t(i)] = std::cos(theta);
    sines[size_t(i)] = std::sin(theta);
  }
  std::vector<float> x(a.x, a.x + size_t(b) * h), normed(size_t(b) * h);
  std::vector<float> q(size_t(b) * hq * d), k(size_t(b) * hkv * d), v(size_t(b) * hkv * d), attn(size_t(b) * hq * d);
  std::vector<float> proj(size_t(b) * h), gate(size_t(b) * inter), up(size_t(b) * inter);
  for (int layer = 0; layer < a.layers; ++layer) {
    const DecodeBlock& blk = a.blocks[layer];
    // Attention: norm, q/k/v in one loop, RoPE, then every (row, head) over the cache in one loop.
    rms_norm(x.data(), blk.input_norm, normed.data(), b, h, a.eps);
    {
      Rows in(normed.data(), b, h);
      Product products[3] = {in.product(blk.q, q.data()), in.product(blk.k, k.data()), in.product(blk.v, v.data())};
      run_products(products, 3, b);
    }
    for (int r = 0; r < b; ++r) {
      for (int i = 0; i < hq; ++i) rotate(q.data() + (size_t(r) * hq + i) * d, cosines.data(), sines.data(), d);
      for (int i = 0; i < hkv; ++i) {
        float* kr = k.data() + (size_t(r) * hkv + i) * d;
        rotate(kr, cosines.data(), sines.data(), d);
        const size_t at = (size_t(r) * hkv + i) * d, bytes = blk.kv_bf16 ? 2 : 4;
        store(kr, static_cast<char*>(blk.k_new) + at * bytes, blk.kv_bf16, d);
        store(v.data() + at, static_cast<char*>(blk.v_new) + at * bytes, blk.kv_bf16, d);
      }
    }
    parallel_for(b * hq, [&](int task) {
      thread_local std::vector<float> scores;
      const int r = task / hq, head = task % hq, kv = head / group;
      const size_t plane = size_t(r) * hkv + kv, own = plane * d;
      const float* qr = q.data() + (size_t(r) * hq + head) * d;
      float* out = attn.data() + (size_t(r) * hq + head) * d;
      if (blk.kv_bf16)
        attend(qr, static_cast<const uint16_t*>(blk.k_cache) + plane * blk.k_plane, static_cast<const uint16_t*>(blk.v_cache) + plane * blk.v_plane,
               a.past, k.data() + own, v.data() + own, d, scale, out, scores);
      else
        attend(qr, static_cast<const float*>(blk.k_cache) + plane * blk.k_plane, static_cast<const float*>(blk.v_cache) + plane * blk.v_plane,
               a.past, k.data() + own, v.data() + own, d, scale, out, scores);
    });
    {
      Rows in(attn.data(), b, hq * d);
      Product product = in.product(blk.o, proj.data());
      run_products(&product, 1, b);
    }
    for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
    // MLP: norm, gate/up in one loop, silu(gate) * up, down.
    rms_norm(x.data(), blk.post_norm, normed.data(), b, h, a.eps);
    {
      Rows in(normed.data(), b, h);
      Product products[2] = {in.product(blk.gate, gate.data()), in.product(blk.up, up.data())};
      run_products(products, 2, b);
    }
    silu_mul(gate.data(), up.data(), gate.data(), gate.size());
    {
      Rows in(gate.data(), b, inter);
      Product product = in.product(blk.down, proj.data());
      run_products(&product, 1, b);
    }
    for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
  }
  if (a.final_norm) rms_norm(x.data(), a.final_norm, a.out, b, h, a.eps);
  else std::memcpy(a.out, x.data(), sizeof(float) * x.size());
}

}  // namespace mlxkernels
