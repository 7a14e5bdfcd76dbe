#include "pool.h"

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace mlxkernels {
namespace {

struct Job {
  void (*call)(void*, int);
  void* ctx;
  int n;
  std::atomic<int> next{0};
  std::atomic<int> done{0};
  std::atomic<int> holders{0};  // workers that may still read this job
};

thread_local bool inside_pool_task = false;

void work_on(Job& job) {
  inside_pool_task = true;
  for (;;) {
    int i = job.next.fetch_add(1, std::memory_order_relaxed);
    if (i >= job.n) break;
    job.call(job.ctx, i);
    job.done.fetch_add(1, std::memory_order_release);
  }
  inside_pool_task = false;
}

// A short busy wait: pause, and now and then let another runnable thread (OpenBLAS's, MLX's) have the core.
inline void relax(unsigned& spins) {
  _mm_pause();
  if ((++spins & 63) == 0) sched_yield();
}

class Pool {
 public:
  Pool() {
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    if (const char* env = std::getenv("MLXS_KERNEL_THREADS")) {
      int v = std::atoi(env);
      if (v > 0) cores = unsigned(v);
    }
    cores = std::min(cores, 64u);
    for (unsigned t = 1; t < cores; ++t) workers_.emplace_back([this] { worker_loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int threads() const { return int(workers_.size()) + 1; }

  void run(int n, void (*call)(void*, int), void* ctx) {
    if (n <= 0) return;
    if (n == 1 || workers_.empty() || inside_pool_task || !owner_.try_lock()) {
      for (int i = 0; i < n; ++i) call(ctx, i);
      return;
    }
    Job job;
    job.call = call;
    job.ctx = ctx;
    job.n = n;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      current_ = &job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    work_on(job);
    unsigned spins = 0;
    while (job.done.load(std::memory_order_acquire) < n) relax(spins);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      current_ = nullptr;
    }
    while (job.holders.load(std::memory_order_acquire) > 0) relax(spins);
    owner_.unlock();
  }

 private:
  void worker_loop() {
    uint64_t seen = 0;  // the pool is built before any job: generation 0 means "none yet"
    for (;;) {
      // Spin for a while (about 200 microseconds) waiting for the next job, then sleep.
      auto start = std::chrono::steady_clock::now();
      unsigned spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen) {
        relax(spins);
        if ((spins & 255) == 0 && std::chrono::steady_clock::now() - start > std::chrono::microseconds(200)) break;
      }
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (generation_.load(std::memory_order_acquire) == seen && !stop_) {
          sleepers_.fetch_add(1, std::memory_order_acq_rel);
          wake_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
          sleepers_.fetch_sub(1, std::memory_order_acq_rel);
        }
        if (stop_) return;
        seen = generation_.load(std::memory_order_acquire);
        job = current_;
        if (job) job->holders.fetch_add(1, std::memory_order_acq_rel);
      }
      if (job) {
        work_on(*job);
        job->holders.fetch_sub(1, std::memory_order_release);
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex owner_;  // held by the thread whose job the pool runs
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> sleepers_{0};
  Job* current_ = nullptr;
  bool stop_ = false;
};

Pool& pool() {
  // Leaked on purpose: workers must not be joined during static destruction while MLX threads may still run.
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

int pool_threads() { return pool().threads(); }

void pool_run(int n, void (*call)(void*, int), void* ctx) { pool().run(n, call, ctx); }

}  // namespace mlxkernels
