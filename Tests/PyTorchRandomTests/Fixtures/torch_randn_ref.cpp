#include <ATen/ATen.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
// usage: ref seed dtype(f|b) n1 [n2 ...]  -> writes float32 values of all draws (successive) to stdout
int main(int argc, char** argv) {
  uint64_t seed = strtoull(argv[1], 0, 10);
  bool bf = argv[2][0] == 'b';
  at::manual_seed(seed);
  for (int i = 3; i < argc; ++i) {
    long n = atol(argv[i]);
    at::Tensor t = at::randn({n}, at::TensorOptions().dtype(bf ? at::kBFloat16 : at::kFloat));
    at::Tensor f = t.to(at::kFloat).contiguous();
    fwrite(f.data_ptr<float>(), 4, n, stdout);
  }
  return 0;
}
