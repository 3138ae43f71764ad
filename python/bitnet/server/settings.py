"""ServerConfig: every setting of ``bitnet serve``, checked when built.

The model's load settings are a :class:`bitnet.options.LoadOptions` (``load``), the same object
``bitnet run`` and ``bitnet.Model`` use; the rest are the server's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..options import MAX_SEQUENCES, LoadOptions, checked_int
from ..runtime.runtime import BitNetRuntime

__all__ = ["ServerConfig"]


@dataclass
class ServerConfig:
    """What one server runs and how it listens, queues, limits and drains."""

    model: str
    load: LoadOptions = field(default_factory=LoadOptions)
    sha256: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    parallel: int = 1
    queue: int = 16
    timeout: float | None = None
    api_keys: list[str] = field(default_factory=list)
    max_body_bytes: int = 1 << 20
    cors_origins: list[str] = field(default_factory=list)
    grace: float = 30.0
    retry_after: int = 1
    model_alias: str | None = None
    # The telemetry stream (bitnet.telemetry): also written as JSON lines here ("-": stderr);
    # supervisor failure summaries at most every telemetry_interval seconds.
    telemetry_file: str | None = None
    telemetry_interval: float = 10.0

    def __post_init__(self) -> None:
        """Refuse settings the server would misbehave with (ValueError naming the flag)."""
        checked_int("--port", self.port, 1, 65535)
        checked_int("--parallel", self.parallel, 1, MAX_SEQUENCES)  # sequences of one model
        checked_int("--queue", self.queue, 0, 1 << 20)
        checked_int("--max-body-bytes", self.max_body_bytes, 1, 1 << 40)
        checked_int("retry_after", self.retry_after, 0, 86400)
        if self.timeout is not None:
            _check_float("--timeout", self.timeout, minimum=0.0, open_minimum=True)
        _check_float("--grace", self.grace, minimum=0.0)
        _check_float(
            "--telemetry-interval", self.telemetry_interval, minimum=0.0, open_minimum=True
        )

    def runtime(self) -> BitNetRuntime:
        """The runtime of the model this server serves, one slot per ``parallel``."""
        return BitNetRuntime(self.model, self.load, sha256=self.sha256, slots=self.parallel)


def _check_float(flag: str, value: object, *, minimum: float, open_minimum: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (open_minimum and value == minimum):
        bound = f"> {minimum:g}" if open_minimum else f">= {minimum:g}"
        raise ValueError(f"{flag} must be a finite number {bound} seconds, got {value!r}")
