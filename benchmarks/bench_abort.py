"""Abort latency: time from Model.abort() to the return of a generate() busy on a long prompt.

ggml checks the abort flag before each graph node, so the latency is bounded by the longest
node (a prompt-batch matmul): it grows with n_batch and shrinks with threads.

    python benchmarks/bench_abort.py [--model M] [--n-batch 512] [--threads 1 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import statistics
import threading
import time
from pathlib import Path

import numpy as np

import bitnet
from bench_e2e import DEFAULT_MODEL, cpu_name


def measure(model: bitnet.Model, prompt: list[int], delay: float) -> tuple[float, str]:
    done = threading.Event()
    result: list[bitnet.GenerationResult] = []

    def work() -> None:
        result.append(model.generate(prompt, max_tokens=4))
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(delay)
    t0 = time.perf_counter()
    model.abort()
    done.wait()
    latency = time.perf_counter() - t0
    thread.join()
    return latency, result[0].finish_reason


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.model.exists():
        raise SystemExit(
            f"{args.model} is missing: run benchmarks/bench_e2e.py once to generate it"
        )
    print(
        f"model: {args.model.name}; CPU: {cpu_name()}; prompt {args.prompt}, n_batch {args.n_batch}"
    )
    print(f"{'threads':>7} {'median ms':>10} {'max ms':>8}  outcomes")
    rng = np.random.default_rng(0)
    for threads in args.threads:
        with bitnet.Model(
            args.model,
            n_ctx=args.prompt + 16,
            n_batch=args.n_batch,
            n_threads=threads,
            n_threads_batch=threads,
        ) as m:
            m.generate([300, 301], max_tokens=1)  # page the weights in
            latencies, outcomes = [], []
            for i in range(args.repeats):
                prompt = rng.integers(256, 5000, size=args.prompt).tolist()
                latency, outcome = measure(m, prompt, delay=0.5 + 0.37 * i)
                latencies.append(latency * 1000)
                outcomes.append(outcome)
            print(
                f"{threads:>7} {statistics.median(latencies):>10.1f} {max(latencies):>8.1f}  "
                f"{','.join(outcomes)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
