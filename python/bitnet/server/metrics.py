"""The server's Prometheus metrics (``GET /metrics``), each in a registry of its own app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    """Request, token, latency and speed metrics; ``queued``/``in_flight`` are read when scraped."""

    def __init__(self, queued: Callable[[], float], in_flight: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bitnet_requests",
            "HTTP requests by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.prompt_tokens = Counter("bitnet_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generated_tokens = Counter("bitnet_generated_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram(
            "bitnet_time_to_first_token_seconds",
            "Time to the first token",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.speed = Histogram(
            "bitnet_generation_tokens_per_second",
            "Generation speed per request",
            registry=r,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
        )
        queue = Gauge("bitnet_queue_depth", "Requests waiting for a slot", registry=r)
        queue.set_function(queued)
        running = Gauge("bitnet_in_flight", "Generations running", registry=r)
        running.set_function(in_flight)

    def summary(self) -> dict[str, Any]:
        """The counters as plain numbers: requests by endpoint and outcome, tokens, and the
        time-to-first-token and speed histograms' counts and sums."""
        requests: dict[str, dict[str, int]] = {}
        for sample in self._samples(self.requests, "_total"):
            by = requests.setdefault(sample.labels["endpoint"], {})
            by[sample.labels["outcome"]] = int(sample.value)
        ttft = {
            s.name.rsplit("_", 1)[-1]: s.value for s in self._samples(self.ttft, "_count", "_sum")
        }
        speed = {
            s.name.rsplit("_", 1)[-1]: s.value for s in self._samples(self.speed, "_count", "_sum")
        }
        return {
            "requests": requests,
            "tokens": {
                "prompt": int(self._total(self.prompt_tokens)),
                "generated": int(self._total(self.generated_tokens)),
            },
            "ttft_seconds": {
                "count": int(ttft.get("count", 0)),
                "sum": round(ttft.get("sum", 0.0), 6),
            },
            "speed_tokens_per_second": {
                "count": int(speed.get("count", 0)),
                "sum": round(speed.get("sum", 0.0), 3),
            },
        }

    @staticmethod
    def _samples(metric: Any, *suffixes: str) -> list[Any]:
        return [s for m in metric.collect() for s in m.samples if s.name.endswith(suffixes)]

    def _total(self, counter: Counter) -> float:
        return sum(s.value for s in self._samples(counter, "_total"))
