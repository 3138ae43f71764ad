"""Ternary kernels: bitnet.kernels GEMV/GEMM vs numpy float32 matmul on the 2B-4T shapes.

Prints median time, GFLOP-equivalent/s (2*rows*k per token) and weight GB/s, with the
machine's memory read bandwidth (numpy sum over 1 GiB) as the roofline.

    python benchmarks/bench_kernels.py [--threads 1 2] [--repeats 7]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's pool would compete otherwise

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import bitnet.kernels as K

SHAPES = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)]


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    big = np.ones(1 << 28, np.float32)
    bandwidth = big.nbytes / median_seconds(big.sum, 3) / 1e9
    print(f"kernel {K.kernel_name()}; memory read bandwidth ~{bandwidth:.1f} GB/s (numpy sum)")
    print(f"{'shape':>11} {'n':>4} {'thr':>3} {'runner':>8} {'ms':>9} {'GFLOP/s':>9} {'w GB/s':>7}")
    rng = np.random.default_rng(0)
    for rows, k in SHAPES:
        w = rng.standard_normal((rows, k)).astype(np.float32)
        packed = K.quantize_weights(w)
        dense = K.dequantize(packed)
        for n in (1, args.batch):
            x = rng.standard_normal((n, k)).astype(np.float32)
            for threads in args.threads:
                runs = {
                    "bitnet": (
                        lambda p=packed, x=x, t=threads: K.matmul(p, x, n_threads=t),
                        packed.data.nbytes,
                    ),
                    "numpy": (lambda x=x, d=dense: x @ d.T, dense.nbytes),
                }
                with threadpool_limits(threads):
                    for name, (fn, nbytes) in runs.items():
                        s = median_seconds(fn, args.repeats)
                        print(
                            f"{rows:>5}x{k:<5} {n:>4} {threads:>3} {name:>8} {s * 1e3:>9.3f} "
                            f"{2 * rows * k * n / s / 1e9:>9.1f} {nbytes / s / 1e9:>7.2f}",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
