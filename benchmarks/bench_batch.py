"""Continuous batching: aggregate and per-stream speed, time to first token and latency.

For 1, 2, 4, 8 and 16 concurrent streams (each a distinct random prompt, greedy, a fixed number
of tokens) it runs, interleaved in one process and one run:

- ``bitnet batched``: one Model holding a sequence per stream (``n_seq``); its scheduler decodes
  every stream's next token in one pass over the weights;
- ``bitnet 1-seq``: the same model, one generation at a time (the path before continuous
  batching: calls wait for each other). It is the same Model behind a lock, not a second Model:
  two models in one process have two OpenMP thread teams, more threads than cores, and libgomp
  then throttles its spin-waits for both (measured: 40 -> 57 ms a token on 2 cores);
- ``llama-server``: llama.cpp's server with ``--parallel N`` (continuous batching) on the same
  file, when ``--llama-server`` names its binary (build it from the vendored llama.cpp of the
  pinned llama-cpp-python sdist; see docs/benchmarks.md).

Then the time to first token of a short request, idle and while a 2,048-token prompt is being
read, and the process's resident memory growth per added sequence against its KV cache.

    python benchmarks/bench_batch.py [--model F] [--streams 1 2 4 8 16] [--tokens 32]
        [--threads 2] [--llama-server /path/to/llama-server]

Default model: the generated 2B-4T shapes with a Q6_K head (``benchmarks/.models``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import bitnet
from bench_e2e import default_model
from bitnet.runtime.bench import prompt_speed, random_prompts


@dataclass
class Stream:
    """One request's timeline (seconds from the common start) and its generated tokens."""

    first: float
    end: float
    tokens: int


@dataclass
class Row:
    aggregate: float  # generated tokens/s of all streams together
    per_stream: float  # median tokens/s of a stream after its first token
    ttft_p50: float
    latency_p50: float
    latency_p95: float


def summarize(streams: list[Stream], wall: float) -> Row:
    lat = sorted(s.end for s in streams)
    per = [(s.tokens - 1) / (s.end - s.first) for s in streams if s.tokens > 1 and s.end > s.first]
    return Row(
        aggregate=sum(s.tokens for s in streams) / wall,
        per_stream=statistics.median(per) if per else 0.0,
        ttft_p50=statistics.median(s.first for s in streams),
        latency_p50=statistics.median(lat),
        latency_p95=lat[min(len(lat) - 1, int(0.95 * len(lat)))],
    )


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class BitNetRunner:
    def __init__(self, path: Path, n_seq: int, threads: int, n_ctx: int) -> None:
        self.model = bitnet.Model(path, n_seq=n_seq, n_threads=threads, n_ctx=n_ctx)
        self.model.generate([300, 301], max_tokens=2, temperature=0)  # page the weights in

    def request(self, prompt: list[int], n: int, t0: float) -> Stream:
        first = 0.0
        with self.model.stream(prompt, max_tokens=n, temperature=0) as s:
            for _ in s:
                if not first:
                    first = time.perf_counter() - t0
            result = s.result
        end = time.perf_counter() - t0
        assert result is not None
        return Stream(first or end, end, len(result.tokens))

    def close(self) -> None:
        self.model.close()


class SerialRunner:
    """One request at a time on a runner's model."""

    def __init__(self, runner: BitNetRunner) -> None:
        self.runner = runner
        self.lock = threading.Lock()

    def request(self, prompt: list[int], n: int, t0: float) -> Stream:
        with self.lock:
            return self.runner.request(prompt, n, t0)


class LlamaServerRunner:
    """llama-server with --parallel slots of n_ctx each; requests stream from /completion."""

    def __init__(self, binary: str, path: Path, parallel: int, threads: int, n_ctx: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                binary,
                "-m",
                str(path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "-np",
                str(parallel),
                "-c",
                str(n_ctx * parallel),
                "-t",
                str(threads),
                "-tb",
                str(threads),
                "-ngl",
                "0",
                "-b",
                "512",
                "-ub",
                "512",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            self.close()
            raise RuntimeError("llama-server did not become healthy")

    def request(self, prompt: list[int], n: int, t0: float) -> Stream:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
        body = {
            "prompt": prompt,
            "n_predict": n,
            "temperature": 0,
            "stream": True,
            "ignore_eos": True,
            "cache_prompt": False,
        }
        c.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        first, tokens = 0.0, 0
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = json.loads(line[5:])
            if data.get("content") or data.get("tokens"):
                tokens += max(1, len(data.get("tokens") or []))
                if not first:
                    first = time.perf_counter() - t0
            if data.get("stop"):
                break
        end = time.perf_counter() - t0
        return Stream(first or end, end, tokens)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_streams(runner, prompts: list[list[int]], n: int) -> Row:
    results: list[Stream | None] = [None] * len(prompts)
    t0 = time.perf_counter()

    def work(i: int) -> None:
        results[i] = runner.request(prompts[i], n, t0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return summarize([r for r in results if r is not None], wall)


def ttft_under_long_prompt(
    runner, shorts: list[list[int]], longs: list[list[int]]
) -> tuple[float, float]:
    """(idle TTFT, TTFT while a long prompt is being read) of short requests, medians of 3.
    Every prompt is new (random, distinct first tokens): nothing comes from a prefix cache."""
    idle = statistics.median(
        runner.request(shorts[i], 2, time.perf_counter()).first for i in range(3)
    )
    busy = []
    for i in range(3):
        t = threading.Thread(target=runner.request, args=(longs[i], 1, time.perf_counter()))
        t.start()
        time.sleep(0.3)  # the long prompt is being read
        busy.append(runner.request(shorts[3 + i], 2, time.perf_counter()).first)
        t.join()
    return idle, statistics.median(busy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="GGUF file (default: 2B-4T, Q6_K head)"
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--tokens", type=int, default=32, help="generated per stream (default 32)")
    parser.add_argument(
        "--prompt", type=int, default=16, help="prompt tokens per stream (default 16)"
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--repeats", type=int, default=2, help="rounds per row (median of rows' streams)"
    )
    parser.add_argument(
        "--long", type=int, default=2048, help="long prompt of the TTFT test (0: skip)"
    )
    parser.add_argument("--llama-server", default=None, help="llama-server binary to compare with")
    parser.add_argument("--skip-one-seq", action="store_true", help="skip the n_seq=1 baseline")
    args = parser.parse_args()

    path = args.model if args.model is not None else default_model("q6_k")
    n_ctx = max(args.prompt + args.tokens + 8, args.long + 64)
    max_streams = max(args.streams)
    print(
        f"model {path.name}; {args.threads} threads; prompts of {args.prompt} tokens, "
        f"{args.tokens} generated per stream, greedy; n_ctx {n_ctx} per sequence; "
        f"{args.repeats} round(s) per row"
    )
    rss0 = rss_bytes()
    batched = BitNetRunner(path, max_streams, args.threads, n_ctx)
    rss_loaded = rss_bytes()
    one = None if args.skip_one_seq else SerialRunner(batched)
    n_vocab = batched.model.n_vocab
    pp = statistics.median(
        prompt_speed(batched.model, p) for p in random_prompts(128, 3, n_vocab, seed=99)
    )
    meta = batched.model.metadata
    arch = meta["general.architecture"]
    head_dim = meta[f"{arch}.embedding_length"] // meta[f"{arch}.attention.head_count"]
    kv_per_token = (
        2 * meta[f"{arch}.block_count"] * meta[f"{arch}.attention.head_count_kv"] * head_dim * 2
    )
    print(
        f"pp128 (the compute ceiling of a batch): {pp:.1f} tokens/s; "
        f"kernels {batched.model.kernels}"
    )
    print(f"RSS: {rss0 / 2**20:.0f} MiB before load, {rss_loaded / 2**20:.0f} MiB with the model")

    header = (
        f"{'runner':<16} {'streams':>7} {'agg t/s':>8} {'x 1':>5} {'%pp128':>7} {'stream t/s':>10} "
        f"{'ttft p50':>8} {'lat p50':>8} {'lat p95':>8}"
    )
    print(header)
    base: dict[str, float] = {}
    round_no = 0
    for n in args.streams:
        runners: list[tuple[str, object]] = [("bitnet batched", batched)]
        if one is not None:
            runners.append(("bitnet 1-seq", one))
        server = None
        if args.llama_server:
            server = LlamaServerRunner(args.llama_server, path, n, args.threads, n_ctx)
            runners.append(("llama-server", server))
        rows: dict[str, list[Row]] = {name: [] for name, _ in runners}
        rss_before = rss_bytes()  # the one model's: llama-server is another process
        for _ in range(args.repeats):
            round_no += 1
            for i, (name, runner) in enumerate(runners):  # interleaved: drift touches all
                # Prompts of their own: the runners share one model, whose cache would
                # otherwise hand the second one the first one's prompts.
                prompts = random_prompts(args.prompt, n, n_vocab, seed=1000 * round_no + i)
                rows[name].append(run_streams(runner, prompts, args.tokens))
        rss_grew = rss_bytes() - rss_before
        for name, _ in runners:
            r = rows[name]
            agg = statistics.median(x.aggregate for x in r)
            base.setdefault(name, agg)
            print(
                f"{name:<16} {n:>7} {agg:>8.2f} {agg / base[name]:>5.2f} {100 * agg / pp:>6.0f}% "
                f"{statistics.median(x.per_stream for x in r):>10.2f} "
                f"{statistics.median(x.ttft_p50 for x in r):>8.3f} "
                f"{statistics.median(x.latency_p50 for x in r):>8.3f} "
                f"{statistics.median(x.latency_p95 for x in r):>8.3f}",
                flush=True,
            )
        kv = n * (args.prompt + args.tokens) * kv_per_token
        print(
            f"{'':<16} RSS +{rss_grew / 2**20:.1f} MiB over this row (KV of {n} new sequences x "
            f"{args.prompt + args.tokens} tokens: {kv / 2**20:.1f} MiB)"
        )
        if server is not None:
            server.close()

    if args.long:
        shorts = random_prompts(32, 6 * 3, n_vocab, seed=7)
        longs = random_prompts(args.long, 3 * 3, n_vocab, seed=8)
        print(
            f"time to first token of a 32-token request, idle and while {args.long} tokens "
            "are read:"
        )
        todo: list[tuple[str, object]] = [("bitnet batched", batched)]
        if one is not None:
            todo.append(("bitnet 1-seq", one))
        server = None
        if args.llama_server:
            server = LlamaServerRunner(args.llama_server, path, 2, args.threads, n_ctx)
            todo.append(("llama-server", server))
        for i, (name, runner) in enumerate(todo):
            idle, busy = ttft_under_long_prompt(runner, shorts[6 * i :], longs[3 * i :])
            print(
                f"{name:<16} idle {idle:.3f} s, busy {busy:.3f} s ({busy / idle:.2f}x)", flush=True
            )
        if server is not None:
            server.close()
    print("batching stats:", batched.model.batching_stats())
    batched.close()


if __name__ == "__main__":
    main()
