// Attention (grouped heads, causal and/or additive mask, KV caches read in place) and its gradient.
#include "primitive.h"

using namespace mlxprims;

namespace {

// Attention.

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
    // Additive, as the Swift reference: a row causality hides entirely then still passes gradients to its scores.
    scores = mx::add(scores, mx::where(mx::less_equal(kj, qi), mx::array(0.0f, scores.dtype()), mx::array(-1e9f, scores.dtype())));
  }
  if (mask) scores = mx::add(scores, *mask);
  return mx::matmul(mx::softmax(scores, std::vector<int>{-1}, true), vv);
}

// The kernels' description of attention of q (B, Hq, Lq, D) over keys shaped like k, with an optional
// (B|1, H|1, Lq|1, Lk) mask; the key and value pointers are the caller's.
mlxkernels::AttentionArgs attention_args(const mx::array& q, const mx::array& k, float scale, bool causal, const mx::array* mask) {
  mlxkernels::AttentionArgs a{};
  a.q = q.data<float>();
  a.b = int(q.shape(0)), a.hq = int(q.shape(1)), a.lq = int(q.shape(2)), a.d = int(q.shape(3));
  a.hkv = int(k.shape(1)), a.lk = int(k.shape(2));
  a.scale = scale;
  a.causal = causal;
  a.mb = a.mh = a.mq = 1;
  if (mask) {
    a.mask = mask->data<float>();
    a.mb = int(mask->shape(0)), a.mh = int(mask->shape(1)), a.mq = int(mask->shape(2));
  }
  return a;
}

// Largest key/value plane (keys x head size) whose attention gradient FastAttentionGrad computes (one task per
// key/value head, its panels in cache); larger planes take MLX's vjp of the reference (sgemm-backed products).
constexpr int64_t kAttentionGradPlaneLimit = 1 << 16;

// Gradients of FastAttention: inputs (q, k, v, [mask], cotangent), all contiguous float32; outputs (dq, dk, dv).
class FastAttentionGrad : public NonDifferentiablePrimitive {
 public:
  FastAttentionGrad(mx::Stream s, float scale, bool causal, bool has_mask)
      : NonDifferentiablePrimitive(s), scale_(scale), causal_(causal), has_mask_(has_mask) {}

  std::function<void()> work(std::vector<mx::array> inputs, std::vector<mx::array> outputs) const override {
    return [inputs, outputs, scale = scale_, causal = causal_, has_mask = has_mask_]() mutable {
      auto a = attention_args(inputs[0], inputs[1], scale, causal, has_mask ? &inputs[3] : nullptr);
      a.k = inputs[1].data<float>();
      a.v = inputs[2].data<float>();
      mlxkernels::attention_grad(a, inputs.back().data<float>(), outputs[0].data<float>(), outputs[1].data<float>(),
                                 outputs[2].data<float>());
    };
  }
  const char* name() const override { return "FastAttentionGrad"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastAttentionGrad*>(&other);
    return o && o->scale_ == scale_ && o->causal_ == causal_ && o->has_mask_ == has_mask_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape(), inputs[1].shape(), inputs[2].shape()};
  }

 private:
  float scale_;
  bool causal_, has_mask_;
};

// (B, H, L, D) -> (B, L, H * D): the heads side by side again, as the output projection reads them.
mx::array merge_heads(const mx::array& o) {
  return mx::reshape(mx::transpose(o, {0, 2, 1, 3}), {o.shape(0), o.shape(2), o.shape(1) * o.shape(3)});
}

// Attention; with `merged`, the output comes as (B, Lq, Hq * D) (written in that layout by the kernel, no transpose).
class FastAttention : public ReferencedPrimitive {
 public:
  FastAttention(mx::Stream s, float scale, bool causal, bool has_mask, bool merged)
      : ReferencedPrimitive(s), scale_(scale), causal_(causal), has_mask_(has_mask), merged_(merged) {}
  mx::array reference(const std::vector<mx::array>& in) const override {
    std::optional<mx::array> m;
    if (has_mask_) m = in[3];
    auto o = attention_reference(in[0], in[1], in[2], scale_, causal_, m);
    return merged_ ? merge_heads(o) : o;
  }

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [inputs, out, scale = scale_, causal = causal_, has_mask = has_mask_, merged = merged_]() mutable {
      const auto &k = inputs[1], &v = inputs[2];
      auto a = attention_args(inputs[0], k, scale, causal, has_mask ? &inputs[3] : nullptr);
      std::vector<float> k_scratch, v_scratch;
      size_t k_plane = 0, v_plane = 0;
      a.k = planes_of(k, k_scratch, k_plane);
      a.v = planes_of(v, v_scratch, v_plane);
      const size_t packed = size_t(k.shape(2)) * k.shape(3);
      if (k_plane != v_plane) {  // the kernel takes one stride for both: pack whichever is strided
        if (k_plane != packed) a.k = pack_planes(k, k_scratch), k_plane = packed;
        if (v_plane != packed) a.v = pack_planes(v, v_scratch), v_plane = packed;
      }
      a.kv_plane = k_plane;
      a.out = out.data<float>();
      a.out_by_position = merged;
      mlxkernels::attention(a);
    });
  }
  // Small planes (training's heads): FastAttentionGrad. Larger ones, or a gradient for the mask: MLX's vjp.
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override {
    auto c = cotangents[0];
    const auto& q = primals[0];
    // A merged cotangent back to the heads' layout, which the gradient kernel reads.
    if (merged_ && c.ndim() == 3 && c.shape(0) == q.shape(0) && c.shape(1) == q.shape(2) && c.shape(2) == q.shape(1) * q.shape(3))
      c = mx::transpose(mx::reshape(c, {q.shape(0), q.shape(2), q.shape(1), q.shape(3)}), {0, 2, 1, 3});
    const bool mask_grad = std::find(argnums.begin(), argnums.end(), 3) != argnums.end();
    if (!fast_enabled || mask_grad || c.shape() != q.shape() || !mx::issubdtype(c.dtype(), mx::floating) ||
        primals[1].shape(2) * primals[1].shape(3) > kAttentionGradPlaneLimit)
      return ReferencedPrimitive::vjp(primals, cotangents, argnums, outputs);
    std::vector<mx::array> in = {q, mx::contiguous(primals[1]), mx::contiguous(primals[2])};
    if (has_mask_) in.push_back(primals[3]);
    in.push_back(float_cotangent(c));
    auto grads = mx::array::make_arrays({q.shape(), primals[1].shape(), primals[2].shape()},
                                        {mx::float32, mx::float32, mx::float32},
                                        std::make_shared<FastAttentionGrad>(stream(), scale_, causal_, has_mask_), in);
    return selected_grads(grads, argnums);
  }
  const char* name() const override { return "FastAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastAttention*>(&other);
    return o && o->scale_ == scale_ && o->causal_ == causal_ && o->has_mask_ == has_mask_ && o->merged_ == merged_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    const auto& q = inputs[0];
    if (merged_) return {{q.shape(0), q.shape(2), q.shape(1) * q.shape(3)}};
    return {q.shape()};
  }

 private:
  float scale_;
  bool causal_, has_mask_, merged_;
};

mx::array fast_attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale, bool causal,
                         std::optional<mx::array> mask, bool merged = false) {
  bool eligible = fast_enabled && q.dtype() == mx::float32 && k.dtype() == mx::float32 && v.dtype() == mx::float32 &&
                  q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4 && k.shape() == v.shape() && q.shape(0) == k.shape(0) &&
                  q.shape(3) == k.shape(3) && k.shape(1) > 0 && q.shape(1) % k.shape(1) == 0 && q.size() > 0 &&
                  k.size() > 0;
  if (mask) {
    auto m = *mask;
    // Boolean masks keep where true (MLX's convention); hidden keys get the most negative float.
    if (m.dtype() == mx::bool_) m = mx::where(m, mx::array(0.0f), mx::array(-FLT_MAX));
    else if (m.dtype() != mx::float32) m = mx::astype(m, mx::float32);
    while (m.ndim() < 4) m = mx::expand_dims(m, 0);
    eligible = eligible && m.ndim() == 4 && m.shape(3) == k.shape(2) && (m.shape(0) == 1 || m.shape(0) == q.shape(0)) &&
               (m.shape(1) == 1 || m.shape(1) == q.shape(1)) && (m.shape(2) == 1 || m.shape(2) == q.shape(2));
    mask = m;
  }
  if (!eligible) {
    auto o = attention_reference(q, k, v, scale, causal, mask);
    return merged ? merge_heads(o) : o;
  }
  // k and v go in as they are: the kernel reads a KV cache's filled part in place (see planes_of).
  std::vector<mx::array> inputs = {mx::contiguous(q), k, v};
  if (mask) inputs.push_back(mx::contiguous(*mask));
  auto shape = merged ? mx::Shape{q.shape(0), q.shape(2), q.shape(1) * q.shape(3)} : q.shape();
  return mx::array(shape, mx::float32, std::make_shared<FastAttention>(cpu_stream(), scale, causal, mask.has_value(), merged), inputs);
}

}  // namespace

extern "C" {

mlxs_array mlxs_fast_attention(mlxs_array q, mlxs_array k, mlxs_array v, float scale, bool causal, mlxs_array mask,
                               bool merged) {
  return guard([&] {
    std::optional<mx::array> m;
    if (mask) m = unwrap(mask);
    if (!fast_enabled) {
      auto o = attention_reference(unwrap(q), unwrap(k), unwrap(v), scale, causal, m);
      return merged ? merge_heads(o) : o;
    }
    return fast_attention(unwrap(q), unwrap(k), unwrap(v), scale, causal, m, merged);
  });
}

}  // extern "C"
