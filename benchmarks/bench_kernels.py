"""Ternary kernels: ours vs ggml's TQ2_0 path vs numpy float32, on the 2B-4T matrix shapes.

For GEMV (one token) and GEMM (--batch tokens) at each thread count, prints the median time,
GFLOP-equivalent/s (2*rows*k per token), weight GB/s and, for GEMV, the share of the machine's
read bandwidth (measured here by summing 1 GiB on that many threads: the roofline of a
memory-bound GEMV; on transparent huge pages where the kernel gives them). ``bitnet`` runs our
kernels on I2_S rows (what BitNetEngine repacks the file's TQ2_0 weights into at load: 64-byte
aligned, 2.0 bits per weight, on huge pages); ``bit-tq2`` runs them
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
import mmap
import statistics
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

import bitnet.kernels as K
from bitnet._native import _core

SHAPES = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)]


def call(fn: Callable[..., object], *args: object, **kwargs: object) -> Callable[[], float]:
    """A runner: the seconds of one fn(*args, **kwargs) call."""

    def run() -> float:
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        return time.perf_counter() - t0

    return run


def native_gemv(
    matrices: list, layout: str, k: int, x: np.ndarray, threads: int
) -> Callable[[], float]:
    """A runner: seconds per matrix of one pass of one-token GEMVs over ``matrices``, timed in
    C++ (PackedTernary data for our kernels, GgmlTernaryMatmul objects for ggml)."""
    items = matrices if layout == "ggml" else [m.data for m in matrices]
    return lambda: _core.bench.time_gemv(items, k, layout, 1.0, x, threads, 1)[0]


def medians(
    runs: dict[str, tuple[Callable[[], float], int]], repeats: int, threads: int
) -> dict[str, float]:
    """Median seconds per call of each runner (fn returns the seconds of one call), one runner
    after the other, each after a pause and an untimed run. Taking turns repeat by repeat went
    wrong: a pool's threads go on polling for a while after its run (ggml's OpenMP threads made
    our next 2-thread GEMVs up to 5x slower for tens of milliseconds). OpenBLAS gets its threads
    only for numpy's run: its idle threads spin and had slowed the others by up to 3x."""
    out = {}
    for name, (fn, _) in runs.items():
        with threadpool_limits(threads if name == "numpy" else 1):
            time.sleep(0.2)
            fn()
            out[name] = statistics.median(fn() for _ in range(repeats))
    return out


def huge_page_copies(mats: list[K.PackedTernary]) -> list[K.PackedTernary]:
    """The matrices copied back to back into one anonymous mapping that asks for transparent
    huge pages, as BitNetEngine lays out its repacked weights."""
    sizes = [(m.data.nbytes + 63) // 64 * 64 for m in mats]
    arena = mmap.mmap(-1, (sum(sizes) + (2 << 20) - 1) // (2 << 20) * (2 << 20))
    if hasattr(mmap, "MADV_HUGEPAGE"):
        arena.madvise(mmap.MADV_HUGEPAGE)
    out, offset = [], 0
    for m, size in zip(mats, sizes, strict=True):
        view = np.frombuffer(arena, np.uint8, m.data.nbytes, offset).reshape(m.data.shape)
        view[...] = m.data
        out.append(K.PackedTernary(view, m.scale, m.shape, m.layout))
        offset += size
    return out


def packed_path_matmul(packed: K.PackedTernary, x: np.ndarray, threads: int) -> np.ndarray:
    """K.matmul with the batch forced onto the packed-codes path."""
    q, scales, sums = _core.kernels.quantize_activations(x)
    k = packed.shape[1]
    args = (packed.data, k, packed.layout, packed.scale, q, scales, sums, threads)
    return _core.kernels.ternary_gemm(*args, "auto", "packed")


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
    roofline = {t: _core.bench.memory_read_bandwidth(1 << 30, t, 5) for t in args.threads}
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
        i2s = huge_page_copies([K.convert_layout(m, "i2_s") for m in mats])
        ggml = [_core.bench.GgmlTernaryMatmul(m.data, k) for m in mats]
        dense = K.dequantize(packed)
        for n in (1, args.batch):
            x = rng.standard_normal((n, k)).astype(np.float32)
            for threads in args.threads:
                if n == 1:
                    # Timed natively over all the copies: Python's ~10-20 us per call would
                    # otherwise be most of a small GEMV (the engine has no such overhead).
                    runs = {
                        "bitnet": (native_gemv(i2s, "i2_s", k, x[0], threads), i2s[0].data.nbytes),
                        "bit-tq2": (
                            native_gemv(mats, "tq2_0", k, x[0], threads),
                            packed.data.nbytes,
                        ),
                        "ggml": (native_gemv(ggml, "ggml", k, x[0], threads), packed.data.nbytes),
                    }
                else:
                    runs = {
                        "bitnet": (
                            call(K.matmul, i2s[0], x, n_threads=threads),
                            i2s[0].data.nbytes,
                        ),
                        "bit-tq2": (
                            call(K.matmul, mats[0], x, n_threads=threads),
                            packed.data.nbytes,
                        ),
                        "ggml": (call(ggml[0].run, x, threads), packed.data.nbytes),
                        "packed": (
                            call(packed_path_matmul, i2s[0], x, threads),
                            i2s[0].data.nbytes,
                        ),
                    }
                runs["numpy"] = (call(np.matmul, x, dense.T), dense.nbytes)
                seconds = medians(runs, args.repeats, threads)
                for name, (_, nbytes) in runs.items():
                    s = seconds[name]
                    gbs = nbytes / s / 1e9
                    roof = f"{100 * gbs / roofline[threads]:>5.0f}%" if n == 1 else ""
                    print(
                        f"{rows:>5}x{k:<5} {n:>4} {threads:>3} {name:>7} {s * 1e3:>9.3f} "
                        f"{2 * rows * k * n / s / 1e9:>8.1f} {gbs:>7.2f} {roof:>6}",
                        flush=True,
                    )
    again = {t: _core.bench.memory_read_bandwidth(1 << 30, t, 5) for t in args.threads}
    print(
        "read bandwidth measured again at the end (this machine's drift): "
        + ", ".join(f"{again[t]:.1f} GB/s at {t} thread(s)" for t in args.threads)
    )


if __name__ == "__main__":
    main()
