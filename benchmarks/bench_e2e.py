"""End-to-end speed: prompt processing (pp) and generation (tg) tokens/s.

bitnet (BitNetEngine, and libllama through engine="llama") next to llama-cpp-python running the
same file in this same script. Random token prompts; every figure is the median of --repeats
runs. On a file of arch ``bitnet`` the pinned llama.cpp uses a SiLU FFN instead of relu²: the
text differs, the amount of work is the same.

    python benchmarks/bench_e2e.py                      # 2B-4T shapes, generated on first use
    python benchmarks/bench_e2e.py --model m.gguf --threads 1 2 --repeats 5
"""

from __future__ import annotations

import os

# numpy's OpenBLAS threads spin after numpy calls and would steal cycles from the engines.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import bitnet
from bitnet.testing import generate_model

DEFAULT_MODEL = Path(__file__).resolve().parent / ".models" / "bitnet-2b4t-tq2_0.gguf"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def median_rate(run: Callable[[int], tuple[int, float]], repeats: int) -> float:
    """run(i) -> (tokens, seconds); returns the median tokens/s over `repeats` runs."""
    rates = []
    for i in range(repeats):
        n, seconds = run(i)
        rates.append(n / seconds)
    return statistics.median(rates)


def random_prompts(n_vocab: int, length: int, count: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # Ordinary (non-special) ids; a different first token each time defeats prefix caching.
    return [rng.integers(256, 5000, size=length).tolist() for _ in range(count)]


def bench_bitnet(
    path: Path, engine: str, threads: int, pp: int, tg: int, repeats: int
) -> tuple[float, float]:
    with bitnet.Model(
        path, n_ctx=pp + tg + 8, n_threads=threads, n_threads_batch=threads, engine=engine
    ) as m:
        prompts = random_prompts(m.n_vocab, pp, repeats + 1)
        m.generate(prompts[-1][:8], max_tokens=2, temperature=0)  # warm-up: page in the weights

        def run_pp(i: int) -> tuple[int, float]:
            r = m.generate(prompts[i], max_tokens=0, temperature=0)
            return r.timings.prompt_tokens_evaluated, r.timings.prompt_ms / 1000

        def run_tg(i: int) -> tuple[int, float]:
            r = m.generate(prompts[i][:2], max_tokens=tg + 1, temperature=0)
            return r.timings.generation_decodes, r.timings.generation_ms / 1000

        return median_rate(run_pp, repeats), median_rate(run_tg, repeats)


def bench_llama_cpp_python(
    path: Path, threads: int, pp: int, tg: int, repeats: int
) -> tuple[float, float]:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(path),
        n_ctx=pp + tg + 8,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    prompts = random_prompts(llm.n_vocab(), pp, repeats + 1)
    llm.reset()
    llm.eval(prompts[-1][:8])

    def run_pp(i: int) -> tuple[int, float]:
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompts[i])
        return pp, time.perf_counter() - t0

    def run_tg(i: int) -> tuple[int, float]:
        llm.reset()
        llm.eval(prompts[i][:2])
        token = prompts[i][2]
        t0 = time.perf_counter()
        for _ in range(tg):
            llm.eval([token])
        return tg, time.perf_counter() - t0

    try:
        return median_rate(run_pp, repeats), median_rate(run_tg, repeats)
    finally:
        llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="GGUF file (default: generated 2B-4T shapes)"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pp", type=int, default=128, help="prompt tokens (default 128)")
    parser.add_argument("--tg", type=int, default=64, help="generated tokens (default 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["bitnet", "llama", "llama-cpp-python"]
    )
    args = parser.parse_args()

    path = args.model
    if path is None:
        path = DEFAULT_MODEL
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            generate_model(path, shape="2b4t", activation="relu2")
            print(f"generated {path} in {time.perf_counter() - t0:.0f} s")
    size = os.path.getsize(path) / 2**30
    print(
        f"model: {path.name} ({size:.2f} GiB); CPU: {cpu_name()} ({os.cpu_count()} logical); "
        f"median of {args.repeats}; pp{args.pp}, tg{args.tg}"
    )
    print(f"{'runner':<34} {'threads':>7} {'pp t/s':>9} {'tg t/s':>9}")
    runners: list[tuple[str, Callable[[int], tuple[float, float]]]] = []
    if "bitnet" not in args.skip:
        runners.append(
            (
                "bitnet (BitNetEngine, ggml TQ2_0)",
                lambda t: bench_bitnet(path, "bitnet", t, args.pp, args.tg, args.repeats),
            )
        )
    if "llama" not in args.skip:
        runners.append(
            (
                "bitnet engine=llama (libllama)",
                lambda t: bench_bitnet(path, "llama", t, args.pp, args.tg, args.repeats),
            )
        )
    if "llama-cpp-python" not in args.skip:
        runners.append(
            (
                "llama-cpp-python 0.3.36",
                lambda t: bench_llama_cpp_python(path, t, args.pp, args.tg, args.repeats),
            )
        )
    for threads in args.threads:
        for name, run in runners:
            pp_rate, tg_rate = run(threads)
            print(f"{name:<34} {threads:>7} {pp_rate:>9.2f} {tg_rate:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
