"""The terminal dashboard (Textual): live from a server, replayed from a telemetry file, or
offline from snapshots.

Screens: *overview* (status, slots, queue, request and token rates, latency, errors by kind,
recent events, the supervisor's failures) for live and replay; *offline* (a snapshot's facts,
its models with their checksums and, with a second snapshot, the drift between them). Themes:
``bitnet`` (dark), ``bitnet-light``, and ``release``, which also shows the Release table: the
deltas between the previous and the current period (live, replay) or between two snapshots'
metrics (offline). Keys: ``q`` quit, ``r`` refresh now, ``t`` next theme, ``s`` save a
screenshot (SVG) in the current folder.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.theme import Theme
from textual.widgets import DataTable, Footer, Header, Static

from ..snapshot import Drift, compare_snapshots, drift_counts
from .sources import Frame, LiveSource, ReplaySource, period_summary, release_rows

__all__ = ["THEMES", "DashboardApp"]

THEMES = {
    "bitnet": Theme(
        name="bitnet",
        primary="#2F9E72",
        secondary="#3B7DD8",
        accent="#E0A030",
        warning="#E0A030",
        error="#E5484D",
        success="#2F9E72",
        background="#101418",
        surface="#161C22",
        panel="#1E262E",
        dark=True,
    ),
    "bitnet-light": Theme(
        name="bitnet-light",
        primary="#1F7A55",
        secondary="#2D5FA8",
        accent="#A86A00",
        warning="#A86A00",
        error="#C62828",
        success="#1F7A55",
        background="#F7F8FA",
        surface="#FFFFFF",
        panel="#E8ECF0",
        dark=False,
    ),
    # Release reviews: a calm palette, and the Release table of deltas on every screen.
    "release": Theme(
        name="release",
        primary="#7C5CD6",
        secondary="#3B7DD8",
        accent="#D6A45C",
        warning="#D6A45C",
        error="#E5484D",
        success="#46A758",
        background="#14121C",
        surface="#1B1826",
        panel="#262136",
        dark=True,
    ),
}
STATUS_STYLE = {
    "ready": "bold green",
    "busy": "bold yellow",
    "loading": "bold yellow",
    "draining": "bold yellow",
    "stopped": "bold",
    "replay": "bold",
}


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S")


class Card(Static):
    """A titled value."""

    DEFAULT_CSS = """
    Card { border: round $primary; padding: 0 1; height: 5; }
    """

    def __init__(self, title: str, **kwargs: Any) -> None:
        super().__init__("-", **kwargs)
        self.border_title = title


class DashboardApp(App[None]):
    """``mode``: ``live`` (``source`` a LiveSource), ``replay`` (a ReplaySource) or ``offline``
    (``snapshot``, and ``compare`` to diff against). ``refresh_seconds``: how often live mode
    polls and replay advances; ``speed``: replay speed (recorded seconds per second; 0 shows the
    end at once); ``period``: the Release theme's period in seconds (live; replay and None: the
    file's two halves)."""

    TITLE = "bitnet dashboard"
    CSS = """
    #cards { grid-size: 6; grid-gutter: 0 1; height: 5; }
    .tables { height: 1fr; }
    DataTable { height: 1fr; border: round $secondary; }
    #release { display: none; border: round $accent; height: 14; }
    .release #release { display: block; }
    #facts { height: auto; max-height: 14; }
    #models { width: 2fr; }
    #drift { width: 3fr; }
    """
    BINDINGS: ClassVar[list[Any]] = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("t", "next_theme", "Theme"),
        Binding("s", "save_svg", "Screenshot"),
    ]

    def __init__(
        self,
        mode: str,
        *,
        source: LiveSource | ReplaySource | None = None,
        snapshot: dict[str, Any] | None = None,
        compare: dict[str, Any] | None = None,
        theme: str = "bitnet",
        refresh_seconds: float = 2.0,
        speed: float = 0.0,
        period: float | None = 60.0,
    ) -> None:
        super().__init__()
        if mode not in ("live", "replay", "offline"):
            raise ValueError(f"mode must be live, replay or offline, got {mode!r}")
        if theme not in THEMES:
            raise ValueError(f"theme must be one of {', '.join(THEMES)}, got {theme!r}")
        self.mode = mode
        self.source = source
        self.snapshot = snapshot
        self.compare = compare
        self.refresh_seconds = refresh_seconds
        self.speed = speed
        self.period = period
        self.frame: Frame | None = None
        self.drift: list[Drift] = []
        self.refreshes = 0
        self._start_theme = theme
        self._replay_t: float | None = None
        self._started = time.monotonic()

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.mode == "live")
        if self.mode == "offline":
            yield Static(id="facts")
            with Horizontal(classes="tables"):
                yield DataTable(id="models", zebra_stripes=True)
                yield DataTable(id="drift", zebra_stripes=True)
            yield DataTable(id="release")
        else:
            with Grid(id="cards"):
                for key, title in (
                    ("status", "status"),
                    ("slots", "slots"),
                    ("queue", "queue"),
                    ("rate", "requests/s"),
                    ("tokens", "tokens/s"),
                    ("latency", "latency p50 / p95"),
                ):
                    yield Card(title, id=key)
            with Horizontal(classes="tables"):
                with Vertical():
                    yield DataTable(id="errors")
                    yield DataTable(id="failures")
                yield DataTable(id="events", zebra_stripes=True)
            yield DataTable(id="release")
        yield Footer()

    def on_mount(self) -> None:
        for theme in THEMES.values():
            self.register_theme(theme)
        self.theme = self._start_theme
        self._columns()
        if self.mode == "offline":
            self.sub_title = "offline snapshot" + (
                " vs " + self._label(self.compare) if self.compare else ""
            )
            self._show_offline()
            return
        where = self.source.url if isinstance(self.source, LiveSource) else self.source.path  # type: ignore[union-attr]
        self.sub_title = f"{self.mode}: {where}"
        if isinstance(self.source, ReplaySource):
            self._replay_t = self.source.end if self.speed <= 0 else self.source.start
        self.run_worker(self.refresh_data(), exclusive=True)
        self.set_interval(self.refresh_seconds, self._tick)

    def _columns(self) -> None:
        def cols(table_id: str, *names: str) -> None:
            table = self.query_one(f"#{table_id}", DataTable)
            table.add_columns(*names)

        if self.mode == "offline":
            cols("models", "model", "size", "sha256", "state")
            cols("drift", "severity", "kind", "what", "before", "after")
        else:
            cols("errors", "error kind", "count")
            cols("failures", "time", "outcome", "kind", "message")
            cols("events", "seq", "time", "event", "outcome", "ms", "detail")
        cols("release", "metric", "before", "after", "delta", "")
        self.query_one("#release", DataTable).border_title = "Release: before -> after"

    def watch_theme(self, theme: str) -> None:
        self.set_class(theme == "release", "release")
        if theme == "release" and self.frame is not None:
            self._show_release_periods()  # filled when shown, not on every refresh

    # -- refreshing ---------------------------------------------------------------------------

    def _tick(self) -> None:
        self.run_worker(self.refresh_data(), exclusive=True)

    async def refresh_data(self) -> None:
        """One refresh: poll the server (in a thread) or advance the replay, then redraw."""
        if isinstance(self.source, LiveSource):
            frame = await asyncio.to_thread(self.source.poll)
        elif isinstance(self.source, ReplaySource):
            assert self._replay_t is not None
            if self.speed > 0 and self.frame is not None:
                self._replay_t = min(
                    self.source.end, self._replay_t + self.refresh_seconds * self.speed
                )
            frame = self.source.frame_at(self._replay_t)
        else:
            return
        self.frame = frame
        self.refreshes += 1
        self._show(frame)

    def action_refresh_now(self) -> None:
        self._tick()

    def action_next_theme(self) -> None:
        names = list(THEMES)
        self.theme = (
            names[(names.index(self.theme) + 1) % len(names)] if self.theme in names else names[0]
        )

    def action_save_svg(self) -> None:
        path = self.save_screenshot()
        self.notify(f"saved {path}")

    # -- live and replay ----------------------------------------------------------------------

    def _show(self, f: Frame) -> None:
        status = Text(f.status.upper(), style=STATUS_STYLE.get(f.status, "bold red"))
        if f.reason and f.status != "ready":
            status.append(f"\n{f.reason}", style="dim")
        self.query_one("#status", Card).update(status)
        self.query_one("#slots", Card).update(f"{f.in_flight} busy of {_fmt(f.max_concurrency)}")
        self.query_one("#queue", Card).update(f"{f.queued} waiting of {_fmt(f.max_queue)}")
        self.query_one("#rate", Card).update(
            f"{_fmt(f.request_rate)}\n{f.totals.get('requests', 0)} done, "
            f"{f.totals.get('failures', 0)} failed"
        )
        self.query_one("#tokens", Card).update(
            f"{_fmt(f.token_rate, digits=1)}\n{f.totals.get('generated_tokens', 0)} generated"
        )
        self.query_one("#latency", Card).update(
            f"{_fmt(f.latency.get('p50'), ' s', 3)} / {_fmt(f.latency.get('p95'), ' s', 3)}"
        )
        errors = self.query_one("#errors", DataTable)
        errors.clear()
        for kind, n in sorted(f.errors.items(), key=lambda kv: -kv[1]):
            errors.add_row(Text(kind, style="red"), n)
        errors.border_title = f"errors by kind ({sum(f.errors.values())})"
        failures = self.query_one("#failures", DataTable)
        failures.clear()
        for fail in reversed(f.failures[-20:]):
            failures.add_row(
                _clock(float(fail.get("time", 0))),
                fail.get("outcome", ""),
                fail.get("kind", ""),
                str(fail.get("message", ""))[:80],
            )
        failures.border_title = f"supervisor failures ({len(f.failures)} recent)"
        table = self.query_one("#events", DataTable)
        table.clear()
        for rec in reversed(f.events[-100:]):
            outcome = str(rec.get("outcome", ""))
            table.add_row(
                rec.get("seq", ""),
                str(rec.get("time", ""))[11:23],
                rec.get("event", ""),
                Text(outcome, style="green" if outcome in ("ok", "abort") else "red"),
                _fmt(rec.get("duration_ms"), digits=1),
                _detail(rec),
            )
        table.border_title = f"recent events ({len(f.events)})"
        if self.theme == "release":
            self._show_release_periods()

    def _show_release_periods(self) -> None:
        if isinstance(self.source, LiveSource):
            before, after = self.source.periods(self.period or 60.0)
            label = f"previous {self.period or 60:g} s -> last {self.period or 60:g} s"
        elif isinstance(self.source, ReplaySource):
            before, after = self.source.periods(self.period, self._replay_t)
            label = (
                "first half -> second half"
                if self.period is None
                else f"previous {self.period:g} s -> last {self.period:g} s"
            )
        else:
            return
        self._fill_release(release_rows(before, after), label)

    def _fill_release(self, rows: list[tuple[str, Any, Any, str, str]], label: str) -> None:
        table = self.query_one("#release", DataTable)
        table.clear()
        for metric, a, b, delta, verdict in rows:
            style = {"better": "green", "worse": "red"}.get(verdict, "")
            table.add_row(
                metric,
                _fmt(a, digits=4),
                _fmt(b, digits=4),
                Text(delta, style=style),
                Text(verdict, style=style),
            )
        table.border_title = f"Release: {label}"

    # -- offline ------------------------------------------------------------------------------

    @staticmethod
    def _label(snap: dict[str, Any] | None) -> str:
        if not snap:
            return ""
        return f"{snap.get('host', {}).get('hostname', '?')} @ {snap.get('created', '?')}"

    def _show_offline(self) -> None:
        snap = self.snapshot or {}
        other = self.compare
        self.drift = compare_snapshots(snap, other) if other else []
        v, c, acc = snap.get("versions", {}), snap.get("cpu", {}), snap.get("accelerators", {})
        facts = Text()
        facts.append(f"{self._label(snap)}\n", style="bold")
        facts.append(
            f"bitnet {v.get('bitnet')}  llama.cpp {v.get('llama_cpp')}  ggml {v.get('ggml')}\n"
        )
        facts.append(
            f"CPU {c.get('model')} ({c.get('arch')}), {c.get('physical_cores')} cores; "
            f"features {' '.join(c.get('features', []))}\n"
        )
        devices = ", ".join(str(d.get("name")) for d in acc.get("devices", [])) or "none"
        facts.append(
            f"accelerators {devices}; llama.cpp GPU offload "
            f"{'yes' if acc.get('gpu_offload') else 'no'}\n"
        )
        boot = snap.get("bootstrap") or {}
        stages = ", ".join(sorted((boot.get("state") or {}).get("stages") or {})) or "none"
        facts.append(f"bootstrap {boot.get('path', 'not included')}: stages {stages}\n")
        problems = snap.get("diagnostics", {}).get("problems", [])
        facts.append(
            f"diagnostics {'ok' if snap.get('diagnostics', {}).get('ok') else 'PROBLEMS'}: "
            f"{len(problems)} problem(s)"
        )
        if other:
            counts = drift_counts(self.drift)
            facts.append(
                f"\ndrift vs {self._label(other)}: {counts['error']} error, "
                f"{counts['warning']} warning, {counts['info']} info",
                style="bold red"
                if counts["error"]
                else "bold yellow"
                if counts["warning"]
                else "bold green",
            )
        self.query_one("#facts", Static).update(facts)
        by_name = {
            d.key: d for d in self.drift if d.kind in ("checksum", "missing_model", "extra_model")
        }
        models = self.query_one("#models", DataTable)
        rows = list(snap.get("models", []))
        names = {m["name"] for m in rows}
        rows += [
            m for m in (other or {}).get("models", []) if m["name"] not in names
        ]  # extra there
        for m in sorted(rows, key=lambda m: m["name"]):
            d = by_name.get(m["name"])
            state = Text("ok", style="green") if other else Text("")
            if d is not None:
                state = Text(
                    {
                        "checksum": "CHECKSUM MISMATCH",
                        "missing_model": "MISSING",
                        "extra_model": "EXTRA",
                    }[d.kind],
                    style="bold red" if d.severity == "error" else "bold yellow",
                )
            models.add_row(m["name"], _size(m["size_bytes"]), m["sha256"][:16], state)
        models.border_title = f"models ({len(snap.get('models', []))})"
        drift = self.query_one("#drift", DataTable)
        for d in self.drift:
            style = {"error": "bold red", "warning": "yellow", "info": "dim"}[d.severity]
            drift.add_row(
                Text(d.severity, style=style), d.kind, d.key, _short(d.before), _short(d.after)
            )
        drift.border_title = "drift" if other else "drift (give --compare OTHER.json)"
        if other:
            self._fill_release(
                release_rows(_snapshot_metrics(snap), _snapshot_metrics(other)),
                f"{self._label(snap)} -> {self._label(other)}",
            )


def _snapshot_metrics(snap: dict[str, Any]) -> dict[str, Any]:
    """A snapshot's server metrics as a period summary (what the Release table compares)."""
    stats = ((snap.get("metrics") or {}).get("stats")) or {}
    sup = stats.get("supervisor") or {}
    failures = stats.get("failures") or {}
    out = period_summary([])
    lat = sup.get("latency_seconds", {})
    out.update(
        requests=sum((sup.get("outcomes") or {}).values()),
        failures=failures.get("total", 0),
        latency_p50=lat.get("p50"),
        latency_p95=lat.get("p95"),
        tokens=(stats.get("tokens") or {}).get("generated", 0),
        tokens_per_second_median=(sup.get("generation_tokens_per_second") or {}).get("median"),
        errors=failures.get("by_kind", {}),
    )
    return out


def _detail(rec: dict[str, Any]) -> str:
    if rec.get("error"):
        return f"{rec.get('error_kind', '')}: {rec['error']}"[:90]
    parts = []
    for key in (
        "completion_tokens",
        "tokens_per_second",
        "in_flight",
        "queued",
        "model",
        "engine",
        "kernels",
    ):
        if rec.get(key) is not None:
            parts.append(f"{key}={rec[key]}")
    if rec.get("summary"):
        parts.append(f"failures={rec['summary'].get('total')}")
    return " ".join(parts)[:90]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 32 else text[:14] + "..." + text[-14:]
