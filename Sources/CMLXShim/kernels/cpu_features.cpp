// What this CPU can run, read once from cpuid and xgetbv, and which kernel path the shim's large products take.
// The paths are ordered: each needs everything the one before it needs. MLXS_CPU_PATH caps the choice (to compare
// paths on one host, or to keep float32 activations where the best path rounds them to bfloat16).
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cpu_kernels.h"

namespace mlxkernels {
namespace {

uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

// Linux keeps the 8 KB tile state off until a process asks for it (arch_prctl ARCH_REQ_XCOMP_PERM for
// XFEATURE_XTILEDATA); a tile instruction before that is a SIGILL.
bool request_tile_permission() {
  constexpr int ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
  return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

CpuFeatures detect() {
  CpuFeatures f{};
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;
  const bool os_zmm = (xcr0 & 0xE6) == 0xE6;         // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_tiles = (xcr0 & 0x60000) == 0x60000;  // XTILECFG, XTILEDATA
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = os_ymm && (b & (1u << 5));
  f.avx512f = os_zmm && (b & (1u << 16));
  f.avx512dq = f.avx512f && (b & (1u << 17));
  f.avx512bw = f.avx512f && (b & (1u << 30));
  f.avx512vl = f.avx512f && (b & (1u << 31));
  f.avx512_vnni = f.avx512f && (c & (1u << 11));
  f.amx_bf16 = os_tiles && (d & (1u << 22));
  f.amx_tile = os_tiles && (d & (1u << 24));
  f.amx_int8 = os_tiles && (d & (1u << 25));
  unsigned a1, b1, c1, d1;
  __cpuid_count(7, 1, a1, b1, c1, d1);
  f.avx512_bf16 = f.avx512f && (a1 & (1u << 5));
  if (f.amx_tile) f.amx_permitted = request_tile_permission();
  return f;
}

CpuPath supported_path(const CpuFeatures& f) {
  const bool avx512 = f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  if (avx512 && f.avx512_bf16 && f.amx_tile && f.amx_bf16 && f.amx_permitted) return CpuPath::amx;
  if (avx512 && f.avx512_bf16) return CpuPath::avx512_bf16;
  if (avx512) return CpuPath::avx512;
  return CpuPath::avx2;
}

// The path the environment asks for (MLXS_CPU_PATH=avx2|avx512|avx512_bf16|amx), at most what the host supports.
int initial_path() {
  const CpuPath best = supported_path(cpu_features());
  const char* env = std::getenv("MLXS_CPU_PATH");
  CpuPath wanted = best;
  if (!env || !*env || std::strcmp(env, "auto") == 0) return int(best);
  if (!parse_cpu_path(env, &wanted)) {
    std::fprintf(stderr, "MLXS_CPU_PATH=%s is not one of auto, avx2, avx512, avx512_bf16, amx; using %s\n", env,
                 cpu_path_name(best));
    return int(best);
  }
  if (wanted > best) {
    std::fprintf(stderr, "MLXS_CPU_PATH=%s: this CPU runs at most %s; using %s\n", env, cpu_path_name(best),
                 cpu_path_name(best));
    return int(best);
  }
  return int(wanted);
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

CpuPath best_cpu_path() { return supported_path(cpu_features()); }

std::atomic<int> cpu_path_in_use{initial_path()};

bool set_cpu_path(CpuPath path) {
  if (path > best_cpu_path()) return false;
  cpu_path_in_use = int(path);
  return true;
}

const char* cpu_path_name(CpuPath path) {
  switch (path) {
    case CpuPath::avx2: return "avx2";
    case CpuPath::avx512: return "avx512";
    case CpuPath::avx512_bf16: return "avx512_bf16";
    case CpuPath::amx: return "amx";
  }
  return "avx2";
}

bool parse_cpu_path(const char* name, CpuPath* path) {
  for (CpuPath p : {CpuPath::avx2, CpuPath::avx512, CpuPath::avx512_bf16, CpuPath::amx}) {
    if (std::strcmp(name, cpu_path_name(p)) == 0) {
      *path = p;
      return true;
    }
  }
  return false;
}

std::string cpu_feature_list() {
  const CpuFeatures& f = cpu_features();
  std::string out;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!out.empty()) out += ' ';
    out += name;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.avx512f, "avx512f");
  add(f.avx512bw && f.avx512vl && f.avx512dq, "avx512bw/vl/dq");
  add(f.avx512_bf16, "avx512_bf16");
  add(f.avx512_vnni, "avx512_vnni");
  add(f.amx_bf16, f.amx_permitted ? "amx_bf16" : "amx_bf16(no permission)");
  add(f.amx_int8, "amx_int8");
  return out.empty() ? "none of avx2/avx512/amx" : out;
}

}  // namespace mlxkernels
