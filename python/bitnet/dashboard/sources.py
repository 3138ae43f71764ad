"""What the dashboard shows, without the terminal: frames from a live server or a recorded
telemetry file, period summaries for the Release theme, and snapshot views.

A :class:`Frame` is one refresh: status, slots, queue, rates, latency percentiles, errors by kind,
recent events and the supervisor's failure summary. :class:`LiveSource` polls a server's
``/telemetry/stats`` (one request per refresh, events since the last one included);
:class:`ReplaySource` rebuilds the same frames from a telemetry JSON-lines file at any point of
its recorded time. :func:`period_summary` and :func:`release_rows` compare two periods.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..telemetry import read_telemetry

__all__ = [
    "Frame",
    "LiveSource",
    "ReplaySource",
    "period_summary",
    "release_rows",
]

RECENT = 200  # events a frame keeps
GENERATION_EVENTS = ("supervised_generation", "generation")


@dataclass
class Frame:
    """One refresh of the dashboard."""

    source: str
    time: float
    status: str  # ready, busy, loading, draining, error, stopped, unreachable, replay
    reason: str | None = None
    in_flight: int = 0
    max_concurrency: int | None = None
    queued: int = 0
    max_queue: int | None = None
    request_rate: float | None = None  # finished requests per second, since the last refresh
    token_rate: float | None = None  # generated tokens per second, since the last refresh
    latency: dict[str, float | None] = field(default_factory=dict)  # p50, p95, max (seconds)
    errors: dict[str, int] = field(default_factory=dict)  # by kind
    totals: dict[str, int] = field(default_factory=dict)  # requests, failures, tokens
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    failures: list[dict[str, Any]] = field(default_factory=list)  # the supervisor's recent ones
    server: dict[str, Any] = field(default_factory=dict)


def event_time(rec: dict[str, Any]) -> float:
    """An event's time (its ISO 8601 ``time``) as seconds since the epoch."""
    try:
        return datetime.fromisoformat(str(rec["time"])).timestamp()
    except (KeyError, ValueError):
        return 0.0


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 4)

    return {"p50": pct(0.5), "p95": pct(0.95), "max": round(ordered[-1], 4)}


def _error_kind(rec: dict[str, Any]) -> str:
    outcome = str(rec.get("outcome"))
    return f"error:{rec['error_kind']}" if outcome == "error" and rec.get("error_kind") else outcome


def period_summary(
    records: Iterable[dict[str, Any]], seconds: float | None = None
) -> dict[str, Any]:
    """What a period's generation events add up to: requests, failures, error rate, latency
    percentiles, tokens and (given its length) requests and tokens per second."""
    durations: list[float] = []
    failures: Counter[str] = Counter()
    requests = tokens = 0
    speeds: list[float] = []
    records = list(records)
    # Under a server every request has a supervised_generation event; count plain generation
    # events (bitnet run, embedding code) only where there are no supervised ones.
    kind = (
        "supervised_generation"
        if any(r["event"] == "supervised_generation" for r in records)
        else "generation"
    )
    for rec in records:
        if rec.get("event") != kind:
            continue
        requests += 1
        if rec.get("outcome") in ("ok", "abort"):
            if rec.get("duration_ms") is not None:
                durations.append(float(rec["duration_ms"]) / 1000)
            tokens += int(rec.get("completion_tokens") or 0)
            if rec.get("tokens_per_second"):
                speeds.append(float(rec["tokens_per_second"]))
        else:
            failures[_error_kind(rec)] += 1
    latency = _percentiles(durations)
    out: dict[str, Any] = {
        "requests": requests,
        "failures": sum(failures.values()),
        "error_rate": round(sum(failures.values()) / requests, 4) if requests else None,
        "latency_p50": latency["p50"],
        "latency_p95": latency["p95"],
        "latency_max": latency["max"],
        "tokens": tokens,
        "tokens_per_second_median": round(statistics.median(speeds), 2) if speeds else None,
        "errors": dict(failures),
    }
    if seconds:
        out["requests_per_second"] = round(requests / seconds, 3)
        out["tokens_per_second"] = round(tokens / seconds, 2)
    return out


# Rows of the Release table: (label, key, a higher value is better).
RELEASE_METRICS = (
    ("requests", "requests", None),
    ("requests/s", "requests_per_second", None),
    ("failures", "failures", False),
    ("error rate", "error_rate", False),
    ("latency p50 (s)", "latency_p50", False),
    ("latency p95 (s)", "latency_p95", False),
    ("tokens", "tokens", None),
    ("tokens/s (all requests)", "tokens_per_second", True),
    ("tokens/s per request (median)", "tokens_per_second_median", True),
)


def release_rows(
    before: dict[str, Any], after: dict[str, Any]
) -> list[tuple[str, Any, Any, str, str]]:
    """(metric, before, after, delta, verdict) per Release metric; verdict ``better``,
    ``worse`` or ``""`` (no direction, or no change)."""
    rows = []
    for label, key, higher_better in RELEASE_METRICS:
        a, b = before.get(key), after.get(key)
        if a is None and b is None:
            continue
        delta, verdict = "", ""
        if isinstance(a, int | float) and isinstance(b, int | float):
            diff = b - a
            delta = f"{diff:+.4g}" + (f" ({diff / a:+.1%})" if a else "")
            if diff and higher_better is not None:
                verdict = "better" if (diff > 0) == higher_better else "worse"
        rows.append((label, a, b, delta, verdict))
    kinds = sorted(set(before.get("errors", {})) | set(after.get("errors", {})))
    for kind in kinds:
        a, b = before.get("errors", {}).get(kind, 0), after.get("errors", {}).get(kind, 0)
        rows.append(
            (f"errors {kind}", a, b, f"{b - a:+d}", "worse" if b > a else "better" if b < a else "")
        )
    return rows


# -- live -----------------------------------------------------------------------------------


class LiveSource:
    """A running ``bitnet serve``: each :meth:`poll` is one ``GET /telemetry/stats?since=N``."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 5.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._seq = 0
        self._events: deque[dict[str, Any]] = deque(maxlen=5000)  # for the Release periods
        self._last: tuple[float, int, int] | None = None  # time, finished requests, tokens
        self.polls = 0
        self.restarts = 0  # server restarts noticed (its telemetry numbering began again)
        self._server_time: float | None = None  # the server's clock at the last poll

    def close(self) -> None:
        self._client.close()

    def poll(self) -> Frame:
        """The server now; a server that cannot be reached or refuses is a frame saying so."""
        import httpx

        self.polls += 1
        now = time.time()
        try:
            r = self._client.get("/telemetry/stats", params={"since": self._seq})
        except httpx.HTTPError as exc:
            return Frame(
                self.url,
                now,
                "unreachable",
                f"{type(exc).__name__}: {exc}",
                events=list(self._events)[-RECENT:],
            )
        if r.status_code == 401:
            return Frame(
                self.url, now, "unauthorized", "the server wants an API key: give --api-key"
            )
        if r.status_code == 404:
            return Frame(
                self.url,
                now,
                "error",
                "no /telemetry/stats here: is this the URL of a bitnet serve (one with telemetry)?",
            )
        if r.status_code != 200:
            return Frame(self.url, now, "error", f"/telemetry/stats answered HTTP {r.status_code}")
        try:
            stats = r.json()
            if not isinstance(stats, dict) or not str(stats.get("schema", "")).startswith(
                "bitnet.telemetry.stats/"
            ):
                raise ValueError("not a bitnet.telemetry.stats document")
        except ValueError as exc:
            return Frame(self.url, now, "error", f"not a bitnet server's answer ({exc})")
        if int(stats.get("telemetry", {}).get("last_seq", 0)) < self._seq:
            # The server restarted (its numbering began again): read its records from the start,
            # and take no rates across the restart.
            self.restarts += 1
            self._seq, self._last = 0, None
            return self.poll()
        if isinstance(stats.get("time"), int | float):
            self._server_time = float(stats["time"])
        new = stats.get("events", [])
        if new:
            self._seq = new[-1]["seq"]
        self._events.extend(new)
        return self._frame(stats, now)

    def _frame(self, stats: dict[str, Any], now: float) -> Frame:
        server = stats.get("server", {})
        sup = stats.get("supervisor") or {}
        failures = stats.get("failures") or {}
        outcomes: dict[str, int] = sup.get("outcomes", {})
        finished = sum(outcomes.values())
        generated = int(stats.get("tokens", {}).get("generated", 0))
        request_rate = token_rate = None
        if self._last is not None and now > self._last[0] and finished >= self._last[1]:
            dt = now - self._last[0]
            request_rate = round((finished - self._last[1]) / dt, 3)
            token_rate = round((generated - self._last[2]) / dt, 2)
        self._last = (now, finished, generated)
        # Every failed request passes the supervisor (the HTTP counters count the same ones).
        errors = dict(failures.get("by_kind", {}))
        lat = sup.get("latency_seconds", {})
        return Frame(
            source=self.url,
            time=now,
            status=server.get("status", "unknown"),
            reason=server.get("reason"),
            in_flight=int(sup.get("in_flight", 0)),
            max_concurrency=sup.get("max_concurrency", server.get("parallel")),
            queued=int(sup.get("queued", 0)),
            max_queue=sup.get("max_queue", server.get("queue")),
            request_rate=request_rate,
            token_rate=token_rate,
            latency={k: lat.get(k) for k in ("p50", "p95", "max")},
            errors=errors,
            totals={
                "requests": finished,
                "failures": int(failures.get("total", 0)),
                "prompt_tokens": int(stats.get("tokens", {}).get("prompt", 0)),
                "generated_tokens": generated,
            },
            events=list(self._events)[-RECENT:],
            failures=list(sup.get("recent_failures", [])),
            server=server,
        )

    def periods(
        self, seconds: float, now: float | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(previous period, current period) summaries of the events seen, each ``seconds`` long
        and ending now: the server's clock at the last poll (event times are the server's, and
        the dashboard may run on a machine whose clock differs)."""
        if now is None:
            now = self._server_time if self._server_time is not None else time.time()
        return _two_periods([(event_time(r), r) for r in self._events], now, seconds)


def _two_periods(
    timed: Iterable[tuple[float, dict[str, Any]]], end: float, seconds: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Summaries of the (time, record) pairs in (end - 2s, end - s] and (end - s, end]."""
    before, after = [], []
    for t, rec in timed:
        if end - 2 * seconds <= t <= end - seconds:
            before.append(rec)
        elif end - seconds < t <= end:
            after.append(rec)
    return period_summary(before, seconds), period_summary(after, seconds)


# -- replay ---------------------------------------------------------------------------------


class ReplaySource:
    """A telemetry JSON-lines file (``--telemetry-file``), replayed: :meth:`frame_at` is what a
    live dashboard would have shown at that recorded time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records = list(read_telemetry(self.path))
        if not self.records:
            raise ValueError(f"{self.path} has no telemetry records to replay")
        self.times = [event_time(r) for r in self.records]
        self.start, self.end = min(self.times), max(self.times)

    def frame_at(self, t: float | None = None) -> Frame:
        """The frame at recorded time ``t`` (default: the end of the file)."""
        t = self.end if t is None else t
        seen = [r for r, rt in zip(self.records, self.times, strict=True) if rt <= t]
        status, reason = "replay", None
        in_flight = queued = 0
        parallel = queue = None
        for rec in seen:
            name = rec["event"]
            if name == "server_start":
                status, reason = "loading", "loading"
                parallel, queue = rec.get("parallel"), rec.get("queue")
            elif name == "server_ready":
                status, reason = (
                    ("ready", None) if rec.get("outcome") == "ok" else ("error", rec.get("error"))
                )
            elif name == "server_drain":
                status, reason = "draining", "draining"
            elif name == "server_stop":
                status, reason = "stopped", None
            if name == "supervised_generation":
                in_flight, queued = int(rec.get("in_flight", 0)), int(rec.get("queued", 0))
        window = 10.0  # rates over the last ten recorded seconds
        recent = [r for r, rt in zip(self.records, self.times, strict=True) if t - window < rt <= t]
        now_summary = period_summary(recent, window)
        total = period_summary(seen)
        failures = [
            {
                "time": rt,
                "outcome": r.get("outcome"),
                "kind": r.get("error_kind", ""),
                "message": r.get("error", ""),
            }
            for r, rt in zip(self.records, self.times, strict=True)
            if rt <= t
            and r["event"] in GENERATION_EVENTS
            and r.get("outcome") not in ("ok", "abort")
        ]
        return Frame(
            source=str(self.path),
            time=t,
            status=status,
            reason=reason,
            in_flight=in_flight,
            max_concurrency=parallel,
            queued=queued,
            max_queue=queue,
            request_rate=now_summary.get("requests_per_second"),
            token_rate=now_summary.get("tokens_per_second"),
            latency={k: total[f"latency_{k}"] for k in ("p50", "p95", "max")},
            errors=total["errors"],
            totals={
                "requests": total["requests"],
                "failures": total["failures"],
                "generated_tokens": total["tokens"],
            },
            events=seen[-RECENT:],
            failures=failures[-20:],
        )

    def periods(
        self, seconds: float | None = None, t: float | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(previous, current) period summaries ending at ``t``; ``seconds`` None: the file's two
        halves."""
        t = self.end if t is None else t
        if seconds is None:
            seconds = max((t - self.start) / 2, 1e-3)
        return _two_periods(zip(self.times, self.records, strict=True), t, seconds)
