"""What `bitnet dashboard` costs the server it watches: requests/s it adds, the server's CPU time
per refresh, and the time of one refresh (GET /telemetry/stats with the events since the last).

Starts `bitnet serve` on loopback (a generated model; the cost of a refresh does not depend on
the model), lets it idle for --seconds to measure its own CPU use, then polls it the way the
dashboard does at each --refresh interval for --seconds, with a steady trickle of completions so
that every refresh carries new events, and reports the server's extra CPU time.

    python benchmarks/bench_dashboard.py [--seconds 10] [--refresh 0.5 1 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bitnet.dashboard import LiveSource
from bitnet.testing import generate_model
from bitnet.testing.server import ServerProcess


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def trickle(url: str, stop: threading.Event, every: float = 0.5) -> int:
    """One short completion every `every` seconds until stopped; returns how many."""
    n = 0
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer k"}) as client:
        while not stop.wait(every):
            client.post(
                "/v1/completions", json={"prompt": "hi", "max_tokens": 4}
            ).raise_for_status()
            n += 1
    return n


def window(srv: ServerProcess, seconds: float, refresh: float | None) -> dict[str, float]:
    stop = threading.Event()
    counted: list[int] = []
    feeder = threading.Thread(target=lambda: counted.append(trickle(srv.url, stop)))
    source = LiveSource(srv.url, "k") if refresh else None
    feeder.start()
    c0, t0 = cpu_seconds(srv.proc.pid), time.perf_counter()
    polls, poll_ms = 0, []
    while time.perf_counter() - t0 < seconds:
        if source is not None:
            p0 = time.perf_counter()
            frame = source.poll()
            poll_ms.append((time.perf_counter() - p0) * 1000)
            assert frame.status == "ready", frame.reason
            polls += 1
            time.sleep(max(0.0, refresh - (time.perf_counter() - p0)))
        else:
            time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(srv.proc.pid) - c0
    stop.set()
    feeder.join()
    if source is not None:
        source.close()
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "polls": polls,
        "completions": counted[0] if counted else 0,
        "poll_ms_median": statistics.median(poll_ms) if poll_ms else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--refresh", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = generate_model(Path(tmp) / "tiny.gguf", seed=1)
        srv = ServerProcess(model, "-t", "1", "--api-key", "k")
        try:
            base = window(srv, args.seconds, None)
            base_rate = base["cpu_seconds"] / base["seconds"]
            print(
                f"server alone (one 4-token completion every 0.5 s): "
                f"{base_rate * 100:.2f}% of a core"
            )
            print(
                "| refresh (s) | requests/s added | poll ms (median) | server CPU added "
                "| per refresh |"
            )
            print("|---|---|---|---|---|")
            for refresh in args.refresh:
                w = window(srv, args.seconds, refresh)
                rate = w["polls"] / w["seconds"]
                extra = w["cpu_seconds"] / w["seconds"] - base_rate
                per = extra / rate * 1000 if rate else 0.0
                print(
                    f"| {refresh:g} | {rate:.2f} | {w['poll_ms_median']:.2f} | "
                    f"{extra * 100:+.2f}% of a core | {per:.2f} ms CPU |"
                )
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
