// Attention heads from projection rows: split, rotary embedding and a prefix (the cache) in one pass.
#include "primitive.h"

using namespace mlxprims;

namespace {

// Attention heads from projection rows.

// The prefix rows repeated to b rows (row n takes row n % rows).
mx::array rows_repeated(const mx::array& x, int b) {
  const int rows = int(x.shape(0));
  if (rows == b) return x;
  if (rows == 1) return mx::broadcast_to(x, [&] { auto s = x.shape(); s[0] = b; return s; }());
  return mx::tile(x, {b / rows, 1, 1, 1});
}

// x (B, L, H * D) -> (B, H, P + L, D): prefix positions, then x's heads, rotate-half RoPE from the tables
// (Bc, 1, L, D) when given. Inputs: x, [cos, sin], [prefix].
mx::array heads_reference(const std::vector<mx::array>& in, int heads, bool rotary, bool has_prefix) {
  const auto& x = in[0];
  const int b = int(x.shape(0)), l = int(x.shape(1)), d = int(x.shape(2)) / heads;
  auto y = mx::transpose(mx::reshape(x, {b, l, heads, d}), {0, 2, 1, 3});
  if (rotary) {
    auto cos = rows_repeated(in[1], b), sin = rows_repeated(in[2], b);
    auto x1 = mx::slice(y, {0, 0, 0, 0}, {b, heads, l, d / 2}), x2 = mx::slice(y, {0, 0, 0, d / 2}, {b, heads, l, d});
    y = mx::add(mx::multiply(y, cos), mx::multiply(mx::concatenate({mx::negative(x2), x1}, 3), sin));
  }
  if (has_prefix) y = mx::concatenate({rows_repeated(in.back(), b), y}, 2);
  return y;
}

class FastHeads : public ReferencedPrimitive {
 public:
  FastHeads(mx::Stream s, int heads, bool rotary, bool has_prefix)
      : ReferencedPrimitive(s), heads_(heads), rotary_(rotary), has_prefix_(has_prefix) {}
  mx::array reference(const std::vector<mx::array>& in) const override { return heads_reference(in, heads_, rotary_, has_prefix_); }

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    dispatch(inputs, out, [inputs, out, heads = heads_, rotary = rotary_, has_prefix = has_prefix_]() mutable {
      const auto& x = inputs[0];
      mlxkernels::HeadsArgs a;
      a.x = x.data<float>();
      a.b = int(x.shape(0)), a.l = int(x.shape(1)), a.h = heads, a.d = int(x.shape(2)) / heads;
      if (rotary) {
        a.cos = inputs[1].data<float>();
        a.sin = inputs[2].data<float>();
        a.table_rows = int(inputs[1].shape(0));
      }
      if (has_prefix) {
        const auto& prefix = inputs.back();
        a.prefix = prefix.data<float>();
        a.p = int(prefix.shape(2));
        a.prefix_rows = int(prefix.shape(0));
        for (int i = 0; i < 4; ++i) a.prefix_strides[i] = size_t(prefix.strides()[size_t(i)]);
      }
      a.out = out.data<float>();
      mlxkernels::split_heads(a);
    });
  }
  const char* name() const override { return "FastHeads"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const FastHeads*>(&other);
    return o && o->heads_ == heads_ && o->rotary_ == rotary_ && o->has_prefix_ == has_prefix_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& in) override {
    const auto& x = in[0];
    const int p = has_prefix_ ? int(in.back().shape(2)) : 0;
    return {{x.shape(0), heads_, p + x.shape(1), x.shape(2) / heads_}};
  }

 private:
  int heads_;
  bool rotary_, has_prefix_;
};

mx::array fast_heads(const mx::array& x, int heads, const std::optional<mx::array>& cos, const std::optional<mx::array>& sin,
                     const std::optional<mx::array>& prefix) {
  if (heads <= 0 || x.ndim() != 3 || x.shape(2) % heads != 0) throw std::invalid_argument("split_heads: x must be (B, L, heads * D)");
  if (cos.has_value() != sin.has_value()) throw std::invalid_argument("split_heads: give both rotary tables or neither");
  const int b = int(x.shape(0)), l = int(x.shape(1)), d = int(x.shape(2)) / heads;
  std::vector<mx::array> in = {x};
  if (cos) {
    for (const auto* t : {&*cos, &*sin})
      if (t->ndim() != 4 || t->shape(1) != 1 || t->shape(2) != l || t->shape(3) != d || t->shape(0) < 1 || b % t->shape(0) != 0)
        throw std::invalid_argument("split_heads: rotary tables must be (B or a divisor of B, 1, L, D)");
    in.push_back(*cos);
    in.push_back(*sin);
  }
  if (prefix) {
    const auto& pr = *prefix;
    if (pr.ndim() != 4 || pr.shape(1) != heads || pr.shape(3) != d || pr.shape(0) < 1 || b % pr.shape(0) != 0)
      throw std::invalid_argument("split_heads: prefix must be (B or a divisor of B, heads, P, D)");
    in.push_back(pr);
  }
  const bool eligible = fast_enabled && d % 2 == 0 && l > 0 && b > 0 &&
                        std::all_of(in.begin(), in.end(), [](const mx::array& a) { return a.dtype() == mx::float32; });
  if (!eligible) return heads_reference(in, heads, cos.has_value(), prefix.has_value());
  // x and the tables are read as plain rows; the prefix (a cache's filled part) in place, through its strides.
  for (size_t i = 0; i + (prefix ? 1 : 0) < in.size(); ++i) in[i] = mx::contiguous(in[i]);
  const int p = prefix ? int(prefix->shape(2)) : 0;
  return mx::array({b, heads, p + l, d}, mx::float32, std::make_shared<FastHeads>(cpu_stream(), heads, cos.has_value(), prefix.has_value()),
                   in);
}

}  // namespace

extern "C" {

mlxs_array mlxs_split_heads(mlxs_array x, int heads, mlxs_array cos, mlxs_array sin, mlxs_array prefix) {
  return guard([&] {
    std::optional<mx::array> c, s, p;
    if (cos) c = unwrap(cos);
    if (sin) s = unwrap(sin);
    if (prefix) p = unwrap(prefix);
    return fast_heads(unwrap(x), heads, c, s, p);
  });
}

}  // extern "C"
