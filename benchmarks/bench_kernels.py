"""Ternary kernels: ours vs ggml's TQ2_0 path vs numpy float32, on the 2B-4T matrix shapes.

For GEMV (one token) and GEMM (--batch tokens) at each thread count, prints the median time,
GFLOP-equivalent/s (2*rows*k per token), weight GB/s and, for GEMV, the share of the machine's
read bandwidth (measured here by summing 1 GiB on that many threads: the roofline of a
memory-bound GEMV). ``bitnet`` runs our kernels on I2_S rows (what BitNetEngine repacks the
file's TQ2_0 weights into at load: 64-byte aligned, 2.0 bits per weight); ``bit-tq2`` runs them
on the TQ2_0 bytes themselves (2.06 bits per weight, blocks straddling cache lines); ggml reads
the same TQ2_0 bytes through the libggml the engine links, with a persistent thread pool. For
batches, ``packed`` is our kernel forced to its one-token path (2-bit codes decoded in the inner
loop), the baseline of the unpacked batch path ``bitnet`` takes from 4 tokens on.

    python benchmarks/bench_kernels.py [--threads 1 2] [--batch 128] [--repeats 7]

Matrices this small sit in the last-level cache between repeats; --cold cycles through enough
copies to read each one from memory, as generation does.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's pool would compete otherwise

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

import bitnet.kernels as K
from bitnet._native import _core

SHAPES = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)]


def median_seconds(fn: Callable[[], object], repeats: int, per_call: int = 1) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) / per_call)
    return statistics.median(times)


def packed_path_matmul(packed: K.PackedTernary, x: np.ndarray, threads: int) -> np.ndarray:
    """K.matmul with the batch forced onto the packed-codes path."""
    q, scales, sums = _core.quantize_activations(x)
    k = packed.shape[1]
    args = (packed.data, k, packed.layout, packed.scale, q, scales, sums, threads)
    return _core.ternary_gemm(*args, "auto", "packed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--cold",
        action="store_true",
        help="GEMV over 64 MiB+ of copies per call, so weights come from memory",
    )
    args = parser.parse_args()
    roofline = {t: _core.memory_read_bandwidth(1 << 30, t, 5) for t in args.threads}
    print(
        f"our kernel: {K.kernel_name()} (available: {', '.join(K.available_kernels())}); "
        "read bandwidth "
        + ", ".join(f"{roofline[t]:.1f} GB/s at {t} thread(s)" for t in args.threads)
    )
    print(
        f"{'shape':>11} {'n':>4} {'thr':>3} {'runner':>7} {'ms':>9} {'GFLOP/s':>8} "
        f"{'w GB/s':>7} {'roof%':>6}"
    )
    rng = np.random.default_rng(0)
    for rows, k in SHAPES:
        w = rng.standard_normal((rows, k)).astype(np.float32)
        packed = K.quantize_weights(w, layout="tq2_0")
        copies = 1
        if args.cold:
            copies = max(1, (64 << 20) // packed.data.nbytes + 1)
        mats = [packed] + [
            K.PackedTernary(packed.data.copy(), packed.scale, packed.shape, "tq2_0")
            for _ in range(copies - 1)
        ]
        i2s = [K.convert_layout(m, "i2_s") for m in mats]
        ggml = [_core.GgmlTernaryMatmul(m.data, k) for m in mats]
        dense = K.dequantize(packed)
        for n in (1, args.batch):
            x = rng.standard_normal((n, k)).astype(np.float32)
            per_call = len(mats) if n == 1 else 1
            for threads in args.threads:
                runs: dict[str, tuple[Callable[[], object], int]] = {
                    "bitnet": (
                        lambda x=x, t=threads, ms=i2s[:per_call]: [
                            K.matmul(m, x, n_threads=t) for m in ms
                        ],
                        i2s[0].data.nbytes,
                    ),
                    "bit-tq2": (
                        lambda x=x, t=threads, ms=mats[:per_call]: [
                            K.matmul(m, x, n_threads=t) for m in ms
                        ],
                        packed.data.nbytes,
                    ),
                    "ggml": (
                        lambda x=x, t=threads, gs=ggml[:per_call]: [g.run(x, t) for g in gs],
                        packed.data.nbytes,
                    ),
                }
                if n > 1:
                    runs["packed"] = (
                        lambda x=x, t=threads, p=i2s[0]: packed_path_matmul(p, x, t),
                        i2s[0].data.nbytes,
                    )
                runs["numpy"] = (lambda x=x, d=dense: x @ d.T, dense.nbytes)
                for name, (fn, nbytes) in runs.items():
                    calls = per_call if name != "numpy" else 1
                    # OpenBLAS gets its threads only for its own run: its idle threads spin and
                    # slowed the other runners' 2-thread GEMVs by up to 3x.
                    with threadpool_limits(threads if name == "numpy" else 1):
                        s = median_seconds(fn, args.repeats, calls)
                    gbs = nbytes / s / 1e9
                    roof = f"{100 * gbs / roofline[threads]:>5.0f}%" if n == 1 else ""
                    print(
                        f"{rows:>5}x{k:<5} {n:>4} {threads:>3} {name:>7} {s * 1e3:>9.3f} "
                        f"{2 * rows * k * n / s / 1e9:>8.1f} {gbs:>7.2f} {roof:>6}",
                        flush=True,
                    )
    again = {t: _core.memory_read_bandwidth(1 << 30, t, 5) for t in args.threads}
    print(
        "read bandwidth measured again at the end (this machine's drift): "
        + ", ".join(f"{again[t]:.1f} GB/s at {t} thread(s)" for t in args.threads)
    )


if __name__ == "__main__":
    main()
