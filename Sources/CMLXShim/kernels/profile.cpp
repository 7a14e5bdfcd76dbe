// Time spent inside each fast kernel (and the parts of the larger ones), so that a benchmark's wall time splits into
// our kernels and the rest (MLX's own ops, graph building, thread hand-offs). Off unless MLXS_PROFILE=1 or
// mlxs_profile_enable(1); with the environment variable the totals are printed to stderr at exit.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cpu_kernels.h"

namespace mlxkernels {
namespace {

struct Entry {
  double seconds = 0;
  long calls = 0;
};

struct Registry {
  std::mutex mutex;
  std::map<std::string, Entry> entries;
  std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();
};

Registry& registry() {
  static Registry* r = new Registry();  // leaked: the exit handler reads it
  return *r;
}

void print_at_exit() { std::fputs(profile_report().c_str(), stderr); }

bool initial_profiling() {
  const char* env = std::getenv("MLXS_PROFILE");
  bool on = env && env[0] == '1';
  if (on) {
    registry();
    std::atexit(print_at_exit);
  }
  return on;
}

std::atomic<bool> enabled{initial_profiling()};

}  // namespace

double ProfileScope::now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool profiling() { return enabled.load(std::memory_order_relaxed); }

void set_profiling(bool on) { enabled.store(on, std::memory_order_relaxed); }

void profile_add(const char* key, double seconds) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto& e = r.entries[key];
  e.seconds += seconds;
  e.calls += 1;
}

void profile_reset() {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.entries.clear();
  r.since = std::chrono::steady_clock::now();
}

std::string profile_report() {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - r.since).count();
  std::vector<std::pair<std::string, Entry>> rows(r.entries.begin(), r.entries.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "kernel time over %.3f s of wall time (a part, after a dot, is inside its kernel):\n", wall);
  out += line;
  for (const auto& [name, e] : rows) {
    std::snprintf(line, sizeof line, "  %-26s %9.3f s %6.1f%% %8ld calls\n", name.c_str(), e.seconds,
                  wall > 0 ? 100 * e.seconds / wall : 0.0, e.calls);
    out += line;
  }
  return out;
}

}  // namespace mlxkernels
