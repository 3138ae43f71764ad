"""HTTP server load: tokens/s, time to first token and p50/p95 latency of streamed completions.

Starts `bitnet serve` on a loopback port for each --parallel value (the sequences its one model
decodes together; 1 is the path before continuous batching, where requests wait for each other)
and sends a fixed number of streamed completions (max_tokens 16, distinct prompts) from 1, 2, 4,
8 and 16 concurrent clients. Every server uses all the CPUs.

    python benchmarks/bench_server.py --model benchmarks/.models/bitnet-2b4t-tq2_0-q6_k.gguf
    python benchmarks/bench_server.py --shape tiny
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bitnet.testing import generate_model
from bitnet.testing.server import ServerProcess


async def load(
    url: str, clients: int, requests: int, max_tokens: int, salt: int
) -> tuple[float, float, list[float], list[float]]:
    """(requests/s, generated tokens/s, sorted latencies, times to first token)."""
    latencies: list[float] = []
    ttfts: list[float] = []
    tokens = 0
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for i in counter:
            t0 = time.perf_counter()
            body = {
                "prompt": f"Request {salt}-{i}: the quick brown fox",
                "max_tokens": max_tokens,
                "temperature": 0.8,
                "seed": i,
                "stream": True,
            }
            first = None
            async with http.stream("POST", url + "/v1/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    if first is None and chunk["choices"][0].get("text"):
                        first = time.perf_counter() - t0
                    if chunk.get("usage"):
                        tokens += chunk["usage"]["completion_tokens"]
            latencies.append(time.perf_counter() - t0)
            ttfts.append(first if first is not None else latencies[-1])

    async with httpx.AsyncClient(timeout=600) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return requests / elapsed, tokens / elapsed, sorted(latencies), ttfts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument(
        "--shape",
        choices=["tiny", "2b4t"],
        default="tiny",
        help="generated model when --model is absent",
    )
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=2, help="requests per client and row")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or generate_model(Path(tmp) / f"{args.shape}.gguf", shape=args.shape)
        cores = len(os.sched_getaffinity(0))
        print(
            f"model {model.name}; {args.requests} streamed completions of {args.max_tokens} "
            f"tokens per client and row; {cores} CPUs, all of them for every server"
        )
        print(
            f"{'parallel':>8} {'clients':>7} {'req/s':>7} {'tok/s':>7} {'ttft p50':>8} "
            f"{'p50 s':>7} {'p95 s':>7}"
        )
        for parallel in args.parallel:
            server = ServerProcess(model, "--parallel", str(parallel), "--queue", "64", "-c", "512")
            url = server.url
            try:
                asyncio.run(load(url, 1, 2, args.max_tokens, -1))  # warm-up
                for clients in args.clients:
                    rps, tps, lat, ttft = asyncio.run(
                        load(url, clients, clients * args.requests, args.max_tokens, clients)
                    )
                    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
                    print(
                        f"{parallel:>8} {clients:>7} {rps:>7.2f} {tps:>7.1f} "
                        f"{statistics.median(ttft):>8.3f} {statistics.median(lat):>7.3f} "
                        f"{p95:>7.3f}",
                        flush=True,
                    )
            finally:
                server.stop()


if __name__ == "__main__":
    main()
