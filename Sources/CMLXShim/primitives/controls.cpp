// Switches and meters of the fast kernels: on/off, profiling, and the tuning knobs the benchmarks turn.
#include "primitive.h"

namespace {
// On unless the environment says MLXS_FAST_KERNELS=0 (handy to compare a whole run against plain MLX).
int initial_fast_kernels() {
  const char* env = std::getenv("MLXS_FAST_KERNELS");
  return env && env[0] == '0' ? 0 : 1;
}
}  // namespace

std::atomic<int> mlxprims::fast_enabled{initial_fast_kernels()};

using namespace mlxprims;

extern "C" {

void mlxs_set_fast_kernels(int enabled) { fast_enabled = enabled ? 1 : 0; }

void mlxs_profile_enable(int enabled) { mlxkernels::set_profiling(enabled != 0); }
int mlxs_profile_enabled(void) { return mlxkernels::profiling() ? 1 : 0; }
void mlxs_profile_reset(void) { mlxkernels::profile_reset(); }
size_t mlxs_profile_report(char* buf, size_t size) {
  std::string text = mlxkernels::profile_report();
  if (buf && size > 0) {
    size_t n = std::min(size - 1, text.size());
    std::memcpy(buf, text.data(), n);
    buf[n] = 0;
  }
  return text.size();
}
int mlxs_fast_kernels_enabled(void) { return fast_enabled.load(); }
void mlxs_set_winograd_min_pixels(int64_t pixels) { mlxkernels::winograd_min_pixels = pixels; }
int64_t mlxs_winograd_min_pixels(void) { return mlxkernels::winograd_min_pixels.load(); }
void mlxs_set_matvec_prefetch_bytes(int bytes) { mlxkernels::matvec_prefetch_bytes = bytes < 0 ? 0 : bytes; }
int mlxs_matvec_prefetch_bytes(void) { return mlxkernels::matvec_prefetch_bytes.load(); }
void mlxs_set_bf16_gemm(int enabled) { mlxkernels::bf16_gemm_enabled = enabled != 0; }
int mlxs_bf16_gemm(void) { return mlxkernels::bf16_gemm_enabled.load(); }
void mlxs_set_int8_vnni(int enabled) { mlxkernels::q8_vnni_enabled = enabled != 0; }
int mlxs_int8_vnni(void) { return mlxkernels::q8_vnni_enabled.load(); }
int mlxs_int8_quantizes_activations(void) { return mlxkernels::q8_quantizes_activations() ? 1 : 0; }
void mlxs_set_gemm_split_limit(double flops) { mlxkernels::gemm_split_limit = flops < 0 ? 0 : flops; }
double mlxs_gemm_split_limit(void) { return mlxkernels::gemm_split_limit.load(); }

const char* mlxs_cpu_path(void) { return mlxkernels::cpu_path_name(mlxkernels::cpu_path()); }
const char* mlxs_best_cpu_path(void) { return mlxkernels::cpu_path_name(mlxkernels::best_cpu_path()); }
int mlxs_set_cpu_path(const char* name) {
  mlxkernels::CpuPath path;
  if (!name || !mlxkernels::parse_cpu_path(name, &path)) return -1;
  return mlxkernels::set_cpu_path(path) ? 0 : -2;
}
int mlxs_bf16_rounds_activations(void) { return mlxkernels::bf16_rounds_activations() ? 1 : 0; }
size_t mlxs_cpu_features(char* buf, size_t size) {
  std::string text = mlxkernels::cpu_feature_list();
  if (buf && size > 0) {
    size_t n = std::min(size - 1, text.size());
    std::memcpy(buf, text.data(), n);
    buf[n] = 0;
  }
  return text.size();
}

}  // extern "C"
