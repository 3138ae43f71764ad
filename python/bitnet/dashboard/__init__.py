"""``bitnet dashboard``: a terminal UI (Textual) for operators.

Attached to a running server (``bitnet dashboard URL --api-key KEY``) it shows health and
readiness, slots and queue, request and token rates, latency percentiles, errors by kind, the
recent events and the supervisor's failure summaries, refreshed live; attached to a telemetry
file (``--replay FILE``) it replays it; with ``--offline SNAP.json [--compare OTHER.json]`` it
shows snapshots (``bitnet snapshot``) and their drift without any network. The ``release``
theme adds the deltas between two periods or two snapshots.

It needs the ``dashboard`` extra: ``pip install "bitnet-cpu[dashboard]"``. The modules:
``sources`` (frames from a server or a file, period summaries; no terminal needed) and ``app``
(the Textual application).
"""

from __future__ import annotations

import importlib.util

_MISSING = [name for name in ("textual", "httpx") if importlib.util.find_spec(name) is None]
if _MISSING:
    raise ImportError(
        f"bitnet's dashboard needs {', '.join(_MISSING)}, which come with the dashboard extra: "
        'pip install "bitnet-cpu[dashboard]"',
        name=_MISSING[0],
    )

from .app import THEMES, DashboardApp  # noqa: E402  (after the check, which explains a missing extra)
from .sources import Frame, LiveSource, ReplaySource, period_summary, release_rows  # noqa: E402

__all__ = [
    "THEMES",
    "DashboardApp",
    "Frame",
    "LiveSource",
    "ReplaySource",
    "period_summary",
    "release_rows",
]
