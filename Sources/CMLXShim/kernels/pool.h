// A small persistent thread pool for the shim's CPU kernels: the calling thread plus (cores - 1) workers that
// spin briefly after each job (consecutive kernels then start without a wake-up) and otherwise sleep.
#pragma once

#include <cstddef>
#include <type_traits>

namespace mlxkernels {

// Number of threads a parallel loop uses (workers + the caller); at least 1.
int pool_threads();

// Runs call(ctx, i) for every i in [0, n) across the pool and returns when all are done. Indices are handed out
// dynamically in increasing order. Called from inside a pool task (or while another thread owns the pool), the
// loop runs serially on the calling thread.
void pool_run(int n, void (*call)(void*, int), void* ctx);

template <typename F>
void parallel_for(int n, F&& body) {
  using Body = std::remove_reference_t<F>;
  pool_run(n, [](void* ctx, int i) { (*static_cast<Body*>(ctx))(i); }, const_cast<std::remove_const_t<Body>*>(&body));
}

}  // namespace mlxkernels
