#!/usr/bin/env python3
"""The peer benchmark (bench_pytorch.py) in bfloat16, and the peer's torch.mm peaks; run with the peer venv's python.

    PY bench-compare-peer-bf16.py [--mode autocast|cast] [bench_pytorch.py options ...]
    PY bench-compare-peer-bf16.py --matmul-peak OUT.json [--threads T]

The first form imports bench_pytorch.py from --peer-dir (unchanged) and runs its main() with every stage inside
torch.autocast(device_type="cpu", dtype=torch.bfloat16):
  cast      (default) model and VAE cast to bf16 after building (bf16 weights and activations); autocast stays
            on so the float32 inputs the harness makes (pixels, latents, noise) meet bf16 weights in matmul/conv.
            Peak RSS still includes the float32 build (the harness builds in float32, then we cast).
  autocast  float32 weights as built; autocast runs matmul/linear/conv/SDPA in bf16.  Under the harness's
            torch.inference_mode autocast re-casts every weight at every call (measured: decode 0.27 tok/s
            against 4.7 in float32), so this shows autocast's cost, not bf16 compute
Its two sgemm readings stay float32 (autocast off there).  Writes the harness's JSON shape, with
settings.dtype and settings.peer_variant naming what was done.

    PY bench-compare-peer-bf16.py --vae-only OUT.json [--threads T] [--reps N] [--precision f32|bf16|both]

The VAE-only form builds just the harness's SDXL-VAE (its config and seed, no language model) and times
vae.decode on one 4x48x48 latent as the harness does (one warm-up, median of N, default 3), in float32 and/or with
the VAE cast to bfloat16 under autocast (the bf16 column's "cast" mode); it writes {"f32": {...}, "bf16": {...}}
with each precision's median_s, times_s and the process's peak RSS.

The second form times torch.mm 2048x2048x2048 in float32 and bfloat16 (2 warm-ups, 10 timed; median and best
GFLOP/s) and writes {"f32": {...}, "bf16": {...}, "threads": T, "torch": version}.
"""

import argparse
import json
import os
import statistics
import sys
import time

DEFAULT_PEER_DIR = "/work/shared/tools/peer-pytorch"


def matmul_peak(out, threads, n=2048, reps=10):
    import torch

    torch.set_num_threads(threads)
    res = {"threads": torch.get_num_threads(), "torch": torch.__version__, "n": n}
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        c = torch.empty(n, n, dtype=dtype)
        for _ in range(2):
            torch.mm(a, b, out=c)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            times.append(time.perf_counter() - t0)
        flop = 2 * n ** 3
        res[name] = {"gflops": flop / statistics.median(times) / 1e9, "best_gflops": flop / min(times) / 1e9,
                     "times_s": times}
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"torch.mm {n}^3: f32 {res['f32']['gflops']:.1f} GFLOP/s, bf16 {res['bf16']['gflops']:.1f} GFLOP/s")


def vae_only(out, peer_dir, threads, reps, precisions):
    sys.path.insert(0, peer_dir)
    import bench_pytorch as bp  # the peer harness, unchanged: its VAE config, seed and timing rule
    import resource
    import torch
    from diffusers.models import AutoencoderKL

    torch.set_num_threads(threads)
    torch.manual_seed(1)  # the harness builds the VAE after torch.manual_seed(seed + 1), seed 0
    config = dict(bp.mf.REAL_SDXL_VAE_CONFIG)
    config.pop("_class_name")
    vae = AutoencoderKL(**config).eval()
    latent = torch.randn(1, 4, 48, 48, generator=torch.Generator().manual_seed(0))
    res = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    for name in precisions:
        if name == "bf16":
            vae.to(torch.bfloat16)
        times = []
        with torch.inference_mode(), torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
            for i in range(reps + 1):  # the first is the warm-up
                t0 = time.perf_counter()
                image = vae.decode(latent / vae.config.scaling_factor).sample
                if i:
                    times.append(time.perf_counter() - t0)
        assert image.shape == (1, 3, 384, 384), image.shape
        res[name] = {"median_s": statistics.median(times), "times_s": times,
                     "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
        print(f"peer VAE decode {name}: median {res[name]['median_s']:.3f} s {[round(t, 3) for t in times]}", flush=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


def bench_bf16(mode, peer_dir, rest):
    sys.path.insert(0, peer_dir)
    import bench_pytorch as bp  # the peer harness, unchanged
    import torch

    original_build, original_sgemm = bp.build, bp.sgemm

    def build(seed, attn):
        model, vae, t_model, t_vae = original_build(seed, attn)  # asserts float32, then we cast
        if mode == "cast":
            model.to(torch.bfloat16)
            vae.to(torch.bfloat16)
        return model, vae, t_model, t_vae

    def sgemm(*args, **kwargs):
        with torch.autocast(device_type="cpu", enabled=False):
            return original_sgemm(*args, **kwargs)

    bp.build, bp.sgemm = build, sgemm
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--out", default="pytorch-bench.json")
    out = ap.parse_known_args(rest)[0].out
    sys.argv = [bp.__file__] + rest
    variant = {"autocast": "float32 weights, torch.autocast(cpu, bfloat16) around every stage",
               "cast": "weights cast to bfloat16 (model.to / vae.to), torch.autocast(cpu, bfloat16) around every stage"}
    print(f"bf16 peer: {variant[mode]}", flush=True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        bp.main()
    with open(out) as f:
        res = json.load(f)
    res["settings"]["dtype"] = "bfloat16 (autocast)" if mode == "autocast" else "bfloat16 (cast weights)"
    res["settings"]["peer_variant"] = variant[mode]
    res["settings"]["sgemm_dtype"] = "float32 (autocast disabled)"
    res["about"] += " Run by scripts/bench-compare-peer-bf16.py: " + variant[mode] + "."
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Options not listed here go to bench_pytorch.py (see its --help).")
    ap.add_argument("--mode", choices=["cast", "autocast"], default="cast")
    ap.add_argument("--peer-dir", default=os.environ.get("PEER_DIR", DEFAULT_PEER_DIR),
                    help="folder holding bench_pytorch.py and make_fixtures.py (default: %(default)s)")
    ap.add_argument("--matmul-peak", metavar="OUT.json", help="only time torch.mm f32/bf16 and write OUT.json")
    ap.add_argument("--vae-only", metavar="OUT.json", help="only time the SDXL-VAE decode and write OUT.json")
    a, rest = ap.parse_known_args()
    if a.vae_only:
        t = argparse.ArgumentParser(add_help=False)
        t.add_argument("--threads", type=int, default=2)
        t.add_argument("--reps", type=int, default=3)
        t.add_argument("--precision", choices=["f32", "bf16", "both"], default="both")
        v = t.parse_args(rest)
        vae_only(a.vae_only, a.peer_dir, v.threads, v.reps, ["f32", "bf16"] if v.precision == "both" else [v.precision])
    elif a.matmul_peak:
        t = argparse.ArgumentParser(add_help=False)
        t.add_argument("--threads", type=int, default=2)
        matmul_peak(a.matmul_peak, t.parse_known_args(rest)[0].threads)
    else:
        bench_bf16(a.mode, a.peer_dir, rest)


if __name__ == "__main__":
    main()
