#!/usr/bin/env python3
"""DeepSeek's official JanusFlow code timed on the GPU by the CPU peer harness (gpu-pack/bench_pytorch.py).

Every tensor the harness makes lands on CUDA (torch's default device), and every clock reading it takes waits for
the GPU first, so its wall-clock medians time finished work. The arguments are bench_pytorch.py's."""
import os
import sys
import time

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "gpu-pack"))
torch.set_default_device("cuda")


class SynchronizedClock:
    """`time` as the harness uses it, with perf_counter reading after the GPU's queued work has finished."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def perf_counter():
        torch.cuda.synchronize()
        return time.perf_counter()


import bench_pytorch  # noqa: E402

bench_pytorch.time = SynchronizedClock()
if __name__ == "__main__":
    torch.cuda.reset_peak_memory_stats()
    bench_pytorch.main()
    print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
