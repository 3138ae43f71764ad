"""End-to-end speed: prompt processing (pp) and generation (tg) tokens/s.

bitnet (BitNetEngine with ggml's TQ2_0 matmuls and with our own kernels, and libllama through
engine="llama") next to llama-cpp-python running the same file in this same script. Random
token prompts; every figure is the median of --repeats
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
from pathlib import Path

import bitnet
from bitnet._native import _core
from bitnet.formats.convert import convert
from bitnet.runtime.bench import generation_speed, prompt_speed, random_prompts
from bitnet.testing import generate_model

DEFAULT_MODEL = Path(__file__).resolve().parent / ".models" / "bitnet-2b4t-tq2_0.gguf"


def default_model(head: str = "f16") -> Path:
    """The benchmarks' model: the generated 2B-4T shapes (TQ2_0, F16 tied head), made once in
    ``benchmarks/.models``; with another ``head`` type, its conversion to it (made once)."""
    if not DEFAULT_MODEL.exists():
        DEFAULT_MODEL.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        generate_model(DEFAULT_MODEL, shape="2b4t", activation="relu2")
        print(f"generated {DEFAULT_MODEL} in {time.perf_counter() - t0:.0f} s")
    if head == "f16":
        return DEFAULT_MODEL
    path = DEFAULT_MODEL.with_name(f"{DEFAULT_MODEL.stem}-{head}.gguf")
    if not path.exists():
        convert(DEFAULT_MODEL, path, type="tq2_0", embedding_type=head)  # type: ignore[arg-type]
    return path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class BitNetRunner:
    """bitnet.Model; the engine's own timings exclude sampling and Python."""

    def __init__(
        self, path: Path, engine: str, threads: int, n_ctx: int, kernels: str = "auto"
    ) -> None:
        self.model = bitnet.Model(
            path,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            engine=engine,
            kernels=kernels,  # type: ignore[arg-type]
        )
        self.kernels = self.model.kernels
        self.model.generate([300, 301], max_tokens=2, temperature=0)  # page the weights in

    def pp(self, prompt: list[int]) -> float:
        return prompt_speed(self.model, prompt)

    def tg(self, prompt: list[int], n: int) -> float:
        return generation_speed(self.model, prompt, n)

    def close(self) -> None:
        self.model.close()


class LlamaCppPythonRunner:
    """llama_cpp.Llama.eval: decode only, like the engine timings above."""

    kernels = "ggml"

    def __init__(self, path: Path, threads: int, n_ctx: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=512,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.llm.eval([300, 301])

    def pp(self, prompt: list[int]) -> float:
        self.llm.reset()
        t0 = time.perf_counter()
        self.llm.eval(prompt)
        return len(prompt) / (time.perf_counter() - t0)

    def tg(self, prompt: list[int], n: int) -> float:
        self.llm.reset()
        self.llm.eval(prompt[:2])
        t0 = time.perf_counter()
        for token in prompt[2 : 2 + n]:
            self.llm.eval([token])
        return n / (time.perf_counter() - t0)

    def close(self) -> None:
        self.llm.close()


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
    parser.add_argument(
        "--heads",
        nargs="+",
        default=["f16"],
        choices=["f16", "q8_0", "q6_k", "q4_0"],
        help="embedding/output head types to compare (others than the file's are converted "
        "once next to it with `bitnet convert --embedding-type`)",
    )
    parser.add_argument(
        "--kernels",
        nargs="+",
        default=["ggml", "bitnet"],
        choices=["ggml", "bitnet"],
        help="BitNetEngine's ternary matmuls: ggml's TQ2_0 path and/or ours",
    )
    args = parser.parse_args()

    path = args.model if args.model is not None else default_model()
    size = os.path.getsize(path) / 2**30
    print(
        f"model: {path.name} ({size:.2f} GiB); CPU: {cpu_name()} ({os.cpu_count()} logical); "
        f"median of {args.repeats}; pp{args.pp}, tg{args.tg}"
    )
    files = {"f16": path}
    for head in args.heads:
        if head != "f16":
            files[head] = path.with_name(f"{path.stem}-{head}.gguf")
            if not files[head].exists():
                convert(path, files[head], type="tq2_0", embedding_type=head)
    print(f"{'runner':<32} {'kernels':<14} {'head':>5} {'threads':>7} {'pp t/s':>9} {'tg t/s':>9}")
    n_ctx = args.pp + args.tg + 8
    n_vocab = len(_core.gguf.read_metadata(str(path))["tokenizer.ggml.tokens"])
    prompts = random_prompts(max(args.pp, args.tg + 2), args.repeats, n_vocab)
    for threads in args.threads:
        runners: dict[tuple[str, str], BitNetRunner | LlamaCppPythonRunner] = {}
        for head in args.heads:
            file = files[head]
            if "bitnet" not in args.skip:
                for kernels in args.kernels:
                    runners[f"bitnet BitNetEngine/{kernels}", head] = BitNetRunner(
                        file, "bitnet", threads, n_ctx, kernels
                    )
            if "llama" not in args.skip:
                runners["bitnet engine=llama (libllama)", head] = BitNetRunner(
                    file, "llama", threads, n_ctx
                )
            if "llama-cpp-python" not in args.skip:
                runners["llama-cpp-python 0.3.36", head] = LlamaCppPythonRunner(
                    file, threads, n_ctx
                )
        pp: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
        tg: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
        # Interleaved, so that drift in the machine's speed touches every runner alike.
        for prompt in prompts:
            for name, runner in runners.items():
                pp[name].append(runner.pp(prompt[: args.pp]))
                tg[name].append(runner.tg(prompt, args.tg))
        for (name, head), runner in runners.items():
            runner.close()
            key = name, head
            print(
                f"{name.split('/')[0]:<32} {runner.kernels:<14} {head:>5} {threads:>7} "
                f"{statistics.median(pp[key]):>9.2f} {statistics.median(tg[key]):>9.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
