# Writes torch_randn_exact.json: exact bit patterns of torch.randn draws from torch 2.15.0 (CPU, AVX2 kernel).
# `ref` is torch_randn_ref.cpp compiled against the headers and libtorch_cpu/libc10 of the torch-2.15.0 wheel:
#   g++ -O1 -std=c++20 -Itorch/include torch_randn_ref.cpp -o ref -Ltorch/lib -ltorch_cpu -lc10
# (run with LD_LIBRARY_PATH=torch/lib; the CUDA runtime libraries it names can be empty stubs, they are never called).
# `ref SEED f|b N1 N2 ...` does torch.manual_seed(SEED) and then torch.randn(N1), torch.randn(N2), ... (float32 or
# bfloat16) and prints every value as float32. Small draws are stored whole, large ones as an FNV-1a 64 hash.
import json, struct, subprocess, sys
REF = sys.argv[1] if len(sys.argv) > 1 else "./ref"
cases = [
    (7, "f", [1, 2, 3, 5, 15]),        # scalar path: the cached second Box-Muller value carries across calls
    (7, "b", [1, 2, 3, 5, 15]),
    (3, "f", [17, 33, 100]),           # vectorised path with tails (the last 16 recomputed from fresh uniforms)
    (3, "b", [17, 33, 100]),           # bfloat16 tails draw 16 fresh uniforms without the discarded partial ones
    (9, "f", [3, 16, 1, 16, 2]),       # the scalar cache survives vectorised draws in between
    (9, "b", [3, 16, 1, 16, 2]),
    (2**32 + 5, "f", [20, 4]),         # only the low 32 bits of the seed reach MT19937
    (2**64 - 1, "b", [31]),
    (1234, "b", [2 * 4 * 48 * 48]),    # the demo's noise for one prompt at 384 px (CFG pair, 4 x 48 x 48 latents)
    (1234, "f", [2 * 4 * 48 * 48]),
    (99, "f", [100003, 7, 250001]),
    (99, "b", [100003, 7, 250001]),
]
def fnv1a64(data):
    h = 0xcbf29ce484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h
out = []
for seed, dtype, counts in cases:
    raw = subprocess.run([REF, str(seed), dtype] + [str(n) for n in counts], check=True, capture_output=True).stdout
    assert len(raw) == 4 * sum(counts)
    case = {"seed": str(seed), "dtype": "bfloat16" if dtype == "b" else "float32", "counts": counts}
    if sum(counts) <= 200:
        case["bits"] = ["%08x" % w for w in struct.unpack("<%dI" % sum(counts), raw)]
    else:
        case["fnv1a64"] = "%016x" % fnv1a64(raw)
    out.append(case)
about = ("torch 2.15.0 CPU (AVX2 kernel): torch.manual_seed(seed) then torch.randn(n) for each n in counts, in order, "
         "from the one generator. 'bits' are the float32 bit patterns of every value (bfloat16 widened to float32); "
         "'fnv1a64' hashes the little-endian float32 bytes of all values in order. Made by make_torch_randn_exact.py.")
json.dump({"about": about, "cases": out}, open("torch_randn_exact.json", "w"), indent=1)
