"""HTTP server load: requests/s and p50/p95 latency of short completions.

Starts `bitnet serve` on a loopback port for each --parallel value and sends a bounded number
of non-streamed completions (max_tokens 16) from 1, 2 and 4 concurrent clients.

    python benchmarks/bench_server.py --model benchmarks/.models/bitnet-2b4t-tq2_0.gguf
    python benchmarks/bench_server.py --shape tiny
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bitnet.testing import generate_model
from bitnet.testing.server import ServerProcess


async def load(url: str, clients: int, requests: int, max_tokens: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            t0 = time.perf_counter()
            r = await http.post(
                url + "/v1/completions",
                json={
                    "prompt": f"Request {i}: the quick brown fox",
                    "max_tokens": max_tokens,
                    "temperature": 0.8,
                    "seed": i,
                },
            )
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(timeout=600) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return requests / elapsed, sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument(
        "--shape",
        choices=["tiny", "2b4t"],
        default="tiny",
        help="generated model when --model is absent",
    )
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--requests", type=int, default=16, help="requests per measurement")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or generate_model(Path(tmp) / f"{args.shape}.gguf", shape=args.shape)
        cores = len(os.sched_getaffinity(0))
        print(
            f"model {model.name}; {args.requests} completions of {args.max_tokens} tokens per row; "
            f"{cores} CPUs; threads per slot = CPUs / parallel"
        )
        print(f"{'parallel':>8} {'clients':>7} {'req/s':>8} {'p50 s':>8} {'p95 s':>8}")
        for parallel in args.parallel:
            server = ServerProcess(
                model,
                "--parallel",
                str(parallel),
                "-t",
                str(max(1, cores // parallel)),
                "--queue",
                "64",
                "-c",
                "512",
            )
            url = server.url
            try:
                asyncio.run(load(url, 1, 2, args.max_tokens))  # warm-up
                for clients in args.clients:
                    rps, lat = asyncio.run(load(url, clients, args.requests, args.max_tokens))
                    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
                    print(
                        f"{parallel:>8} {clients:>7} {rps:>8.2f} {statistics.median(lat):>8.3f} "
                        f"{p95:>8.3f}",
                        flush=True,
                    )
            finally:
                server.stop()


if __name__ == "__main__":
    main()
