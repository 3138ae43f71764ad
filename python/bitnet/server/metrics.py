"""The server's Prometheus metrics (``GET /metrics``), each in a registry of its own app."""

from __future__ import annotations

from collections.abc import Callable

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
