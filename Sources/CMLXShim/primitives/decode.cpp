// One decoding position through a stack of Llama-style blocks (kernels/decode.cpp). Inference only.
#include "primitive.h"

using namespace mlxprims;

namespace {

constexpr int kBlockInputs = 11;  // input_norm, post_norm, k_cache, v_cache, q, k, v, o, gate, up, down
constexpr int kMatrices = 7;

class FastDecodeStep : public mx::Primitive {
 public:
  struct Shape {
    int layers, heads, kv_heads, head_dim, hidden, intermediate, past;
    float eps, rope_base;
    bool final_norm;
    std::vector<int> groups;  // per matrix: int8 group size, 0 for float weights (whose scales are absent)
  };
  FastDecodeStep(mx::Stream s, Shape shape) : mx::Primitive(s), shape_(std::move(shape)) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    auto& encoder = encode_outputs(stream(), inputs, outputs);
    encoder.dispatch([inputs, outputs, sh = shape_]() mutable {
      mlxkernels::ProfileScope scope("FastDecodeStep");
      // Norm weights in float32 whatever their stored dtype (a few thousand values per block).
      std::vector<std::vector<float>> norms;
      auto norm = [&](const mx::array& w) -> const float* {
        if (w.dtype() == mx::float32) return w.data<float>();
        std::vector<float> f(w.size());
        if (w.dtype() == mx::bfloat16) {
          auto p = reinterpret_cast<const uint16_t*>(w.data<mx::bfloat16_t>());
          for (size_t i = 0; i < f.size(); ++i) {
            uint32_t bits = uint32_t(p[i]) << 16;
            std::memcpy(&f[i], &bits, 4);
          }
        } else {
          auto p = w.data<mx::float16_t>();
          for (size_t i = 0; i < f.size(); ++i) f[i] = float(p[i]);
        }
        norms.push_back(std::move(f));
        return norms.back().data();
      };
      norms.reserve(size_t(2 * sh.layers + 1));
      std::vector<std::vector<float>> scratch;
      std::vector<std::vector<mx::bfloat16_t>> scratch16;
      scratch.reserve(size_t(2 * sh.layers));
      scratch16.reserve(size_t(2 * sh.layers));
      size_t at = 0;
      const mx::array& x = inputs[at++];
      const float* final_norm = sh.final_norm ? norm(inputs[at++]) : nullptr;
      std::vector<mlxkernels::DecodeBlock> blocks(size_t(sh.layers));
      for (int l = 0; l < sh.layers; ++l) {
        auto& b = blocks[size_t(l)];
        b.input_norm = norm(inputs[at++]);
        b.post_norm = norm(inputs[at++]);
        const mx::array& kc = inputs[at++];
        const mx::array& vc = inputs[at++];
        // A cache buffer is read in place; another layout is packed first (see planes_of).
        auto read = [](auto& pool, const mx::array& c, size_t& plane) -> const void* {
          pool.emplace_back();
          return planes_of(c, pool.back(), plane);
        };
        b.kv_bf16 = kc.dtype() == mx::bfloat16;
        b.k_cache = b.kv_bf16 ? read(scratch16, kc, b.k_plane) : read(scratch, kc, b.k_plane);
        b.v_cache = b.kv_bf16 ? read(scratch16, vc, b.v_plane) : read(scratch, vc, b.v_plane);
        mlxkernels::DecodeMatrix* matrices[kMatrices] = {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down};
        for (int m = 0; m < kMatrices; ++m) {
          const mx::array& w = inputs[at++];
          auto& d = *matrices[m];
          d.n = int(w.shape(0));
          d.k = int(w.shape(1));
          d.group = sh.groups[size_t(l * kMatrices + m)];
          d.scales = nullptr;
          if (w.dtype() == mx::float32) d.kind = mlxkernels::WeightKind::f32, d.w = w.data<float>();
          else if (w.dtype() == mx::bfloat16) d.kind = mlxkernels::WeightKind::bf16, d.w = w.data<mx::bfloat16_t>();
          else d.kind = mlxkernels::WeightKind::q8, d.w = w.data<int8_t>(), d.scales = inputs[at++].data<float>();
        }
        b.k_new = outputs[size_t(1 + 2 * l)].data<void>();
        b.v_new = outputs[size_t(2 + 2 * l)].data<void>();
      }
      mlxkernels::DecodeArgs a{};
      a.batch = int(x.shape(0));
      a.hidden = sh.hidden, a.heads = sh.heads, a.kv_heads = sh.kv_heads, a.head_dim = sh.head_dim;
      a.intermediate = sh.intermediate, a.past = sh.past, a.eps = sh.eps, a.rope_base = sh.rope_base;
      a.x = x.data<float>();
      a.final_norm = final_norm;
      a.out = outputs[0].data<float>();
      a.blocks = blocks.data();
      a.layers = sh.layers;
      mlxkernels::decode_step(a);
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("FastDecodeStep: CPU only");
  }
  std::vector<mx::array> vjp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&,
                             const std::vector<mx::array>&) override {
    throw std::runtime_error("decode_step is for inference: it has no gradient");
  }
  std::vector<mx::array> jvp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error("decode_step: jvp not implemented");
  }
  std::pair<std::vector<mx::array>, std::vector<int>> vmap(const std::vector<mx::array>&, const std::vector<int>&) override {
    throw std::runtime_error("decode_step: vmap not implemented");
  }
  const char* name() const override { return "FastDecodeStep"; }
  bool is_equivalent(const mx::Primitive&) const override { return false; }

 private:
  Shape shape_;
};

std::vector<mx::array> decode_step(const mx::array& x, std::optional<mx::array> final_norm, const std::vector<mx::array>& blocks,
                                   const std::vector<std::optional<mx::array>>& scales, const std::vector<int>& groups, int layers,
                                   int heads, int kv_heads, int head_dim, int past, float eps, float rope_base) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("decode_step: " + what); };
  if (layers < 1 || blocks.size() != size_t(layers * kBlockInputs) || scales.size() != size_t(layers * kMatrices) ||
      groups.size() != size_t(layers * kMatrices))
    fail("expected 11 block inputs and 7 scales and groups per layer");
  if (x.dtype() != mx::float32 || x.ndim() != 3 || x.shape(1) != 1) fail("x must be float32 (batch, 1, hidden)");
  if (heads < 1 || kv_heads < 1 || heads % kv_heads != 0 || head_dim < 2 || head_dim % 2 != 0 || past < 0)
    fail("heads must be a multiple of kv_heads and head_dim even");
  const int b = int(x.shape(0)), h = int(x.shape(2));
  const int inter = int(blocks[size_t(kBlockInputs - 3)].shape(0));  // gate rows
  auto is_norm = [&](const mx::array& w) {
    return w.ndim() == 1 && w.shape(0) == h && (w.dtype() == mx::float32 || w.dtype() == mx::bfloat16 || w.dtype() == mx::float16);
  };
  // Evaluated row-contiguous arrays go in as they are (plain): the cache buffers must stay uniquely held so that
  // the cache update after this step writes them in place.
  std::vector<mx::array> inputs = {plain(x)};
  if (final_norm) {
    if (!is_norm(*final_norm)) fail("final norm must be (hidden)");
    inputs.push_back(plain(*final_norm));
  }
  FastDecodeStep::Shape shape{layers, heads, kv_heads, head_dim, h, inter, past, eps, rope_base, final_norm.has_value(), {}};
  const mx::Dtype cache_type = blocks[2].dtype();
  const int rows[kMatrices] = {heads * head_dim, kv_heads * head_dim, kv_heads * head_dim, h, inter, inter, h};
  const int cols[kMatrices] = {h, h, h, heads * head_dim, h, h, inter};
  for (int l = 0; l < layers; ++l) {
    const auto* in = &blocks[size_t(l * kBlockInputs)];
    if (!is_norm(in[0]) || !is_norm(in[1])) fail("layer " + std::to_string(l) + ": norms must be (hidden)");
    inputs.push_back(plain(in[0]));
    inputs.push_back(plain(in[1]));
    for (int c = 2; c < 4; ++c) {
      const auto& cache = in[c];
      if ((cache_type != mx::float32 && cache_type != mx::bfloat16) || cache.dtype() != cache_type || cache.ndim() != 4 ||
          cache.shape(0) != b || cache.shape(1) != kv_heads || cache.shape(2) < past || cache.shape(3) != head_dim)
        fail("layer " + std::to_string(l) + ": caches must be (batch, kv_heads, >= past, head_dim), all float32 or all bfloat16");
      inputs.push_back(cache);
    }
    for (int m = 0; m < kMatrices; ++m) {
      const auto& w = in[4 + m];
      const auto& s = scales[size_t(l * kMatrices + m)];
      const int group = groups[size_t(l * kMatrices + m)];
      if (w.ndim() != 2 || w.shape(0) != rows[m] || w.shape(1) != cols[m])
        fail("layer " + std::to_string(l) + ": weight " + std::to_string(m) + " has the wrong shape");
      inputs.push_back(plain(w));
      shape.groups.push_back(w.dtype() == mx::int8 ? group : 0);
      if (w.dtype() == mx::int8) {
        if (!s || group <= 0 || group % 16 != 0 || cols[m] % group != 0 || s->ndim() != 2 || s->shape(0) != rows[m] ||
            s->shape(1) != cols[m] / group)
          fail("layer " + std::to_string(l) + ": int8 weight " + std::to_string(m) + " needs (n, k / group) scales");
        inputs.push_back(plain(s->dtype() == mx::float32 ? *s : mx::astype(*s, mx::float32)));
      } else if (w.dtype() != mx::float32 && w.dtype() != mx::bfloat16) {
        fail("weights must be float32, bfloat16 or int8");
      }
    }
  }
  std::vector<mx::Shape> shapes = {{b, 1, h}};
  std::vector<mx::Dtype> dtypes = {mx::float32};
  for (int l = 0; l < 2 * layers; ++l) {
    shapes.push_back({b, kv_heads, 1, head_dim});
    dtypes.push_back(cache_type);
  }
  return mx::array::make_arrays(std::move(shapes), dtypes, std::make_shared<FastDecodeStep>(cpu_stream(), std::move(shape)), inputs);
}

}  // namespace

extern "C" {

int mlxs_decode_step(mlxs_array x, mlxs_array final_norm, const mlxs_array* blocks, const mlxs_array* scales, const int* groups,
                     int layers, int heads, int kv_heads, int head_dim, int past, float eps, float rope_base,
                     mlxs_array* outputs) {
  try {
    std::optional<mx::array> fn;
    if (final_norm) fn = unwrap(final_norm);
    std::vector<mx::array> in;
    std::vector<std::optional<mx::array>> sc;
    for (int i = 0; i < layers * kBlockInputs; ++i) in.push_back(unwrap(blocks[i]));
    for (int i = 0; i < layers * kMatrices; ++i) sc.push_back(scales[i] ? std::optional<mx::array>(unwrap(scales[i])) : std::nullopt);
    auto outs = decode_step(unwrap(x), fn, in, sc, std::vector<int>(groups, groups + layers * kMatrices), layers, heads, kv_heads,
                            head_dim, past, eps, rope_base);
    for (size_t i = 0; i < outs.size(); ++i) outputs[i] = wrap(outs[i]);
    return 0;
  } catch (const std::exception& e) {
    set_error(e.what());
    return -1;
  }
}

}  // extern "C"
