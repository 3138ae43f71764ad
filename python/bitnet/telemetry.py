"""The telemetry stream: every structured event of this process, numbered, as JSON lines and to
live subscribers.

Each record is the event :func:`bitnet.events.emit` wrote (``event``, ``time``, ``outcome``,
``duration_ms``, ``params``, and on failure ``error_kind`` and ``error``, plus the event's own
fields) with two keys added: ``schema`` (:data:`TELEMETRY_SCHEMA`) and ``seq``, its number in
this process (1, 2, ...; a reader that saw ``seq`` N asks for what came after N). Events:
``model_load``, ``generation``, ``supervised_generation``, ``dry_run``, ``missing_artifact`` (a
model path that does not exist), ``snapshot``, the server's ``server_start``, ``server_ready``,
``server_drain`` and ``server_stop``, and ``supervisor_failures`` (a failure summary of the
server's supervisor, sent when failures happened since the last one and when it stops).

:class:`TelemetryHub` is a logging handler on ``bitnet.events``: it keeps the last ``capacity``
records for late readers, hands each new one to subscribers (asyncio queues, fed thread-safely:
generations emit from worker threads) and, when given a sink, writes it as one JSON line.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .events import EVENT_LOGGER

__all__ = ["TELEMETRY_SCHEMA", "TelemetryHub", "read_telemetry"]

TELEMETRY_SCHEMA = "bitnet.telemetry/1"


class TelemetryHub(logging.Handler):
    """Numbered events: a ring of recent ones, live subscribers and an optional JSON-lines sink.

    ``sink``: a path (appended to), ``"-"`` for stderr, an open text file, or None.
    Use :meth:`attach` / :meth:`detach` (or ``with hub:``) to follow ``bitnet.events``.
    """

    def __init__(self, capacity: int = 1000, sink: str | Path | IO[str] | None = None) -> None:
        super().__init__(logging.INFO)
        self._lock_ = threading.Lock()
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._seq = 0
        self._subscribers: list[
            tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]
        ] = []
        self.dropped = 0  # records a slow subscriber's full queue could not take
        self._own_sink = False
        self._sink: IO[str] | None
        if sink is None or hasattr(sink, "write"):
            self._sink = sink  # type: ignore[assignment]
        elif str(sink) == "-":
            self._sink = sys.stderr
        else:
            path = Path(sink)
            try:
                self._sink = path.open("a", encoding="utf-8")
            except OSError as exc:
                raise ValueError(
                    f"cannot write the telemetry file '{path}': {exc.strerror}; check the "
                    "path and its folder's permissions"
                ) from None
            self._own_sink = True
        self._saved_level: int | None = None

    # -- following bitnet.events ----------------------------------------------------------

    def attach(self) -> TelemetryHub:
        """Start receiving ``bitnet.events`` records (the logger is set to INFO if it was
        quieter, so that ok outcomes reach this handler)."""
        if self not in EVENT_LOGGER.handlers:
            EVENT_LOGGER.addHandler(self)
            if EVENT_LOGGER.getEffectiveLevel() > logging.INFO:
                self._saved_level = EVENT_LOGGER.level
                EVENT_LOGGER.setLevel(logging.INFO)
        return self

    def detach(self) -> None:
        """Stop receiving events and close a sink this hub opened."""
        EVENT_LOGGER.removeHandler(self)
        if self._saved_level is not None:
            EVENT_LOGGER.setLevel(self._saved_level)
            self._saved_level = None
        if self._own_sink and self._sink is not None:
            self._sink.close()
            self._sink = None

    def __enter__(self) -> TelemetryHub:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    # -- records ----------------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:  # logging.Handler's hook
        event = getattr(record, "bitnet_event", None)
        if event is None:
            return
        self.publish(event)

    def publish(self, event: dict[str, Any]) -> dict[str, Any]:
        """Number one event, keep it, write it to the sink and hand it to every subscriber."""
        with self._lock_:
            self._seq += 1
            rec = {"schema": TELEMETRY_SCHEMA, "seq": self._seq, **event}
            self._recent.append(rec)
            subscribers = list(self._subscribers)
            if self._sink is not None:
                try:
                    self._sink.write(json.dumps(rec, default=str, ensure_ascii=False) + "\n")
                    self._sink.flush()
                except (OSError, ValueError):  # a full disk or a closed stream loses lines only
                    pass
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(self._offer, queue, rec)
            except RuntimeError:  # that loop is closed: its subscriber is gone
                self._drop_subscriber(queue)
        return rec

    def _offer(self, queue: asyncio.Queue[dict[str, Any]], rec: dict[str, Any]) -> None:
        try:
            queue.put_nowait(rec)
        except asyncio.QueueFull:
            self.dropped += 1

    @property
    def last_seq(self) -> int:
        """The number of the newest record (0 before the first)."""
        return self._seq

    def since(self, seq: int, limit: int | None = None) -> list[dict[str, Any]]:
        """Kept records numbered above ``seq``, oldest first (at most ``limit``, the newest)."""
        with self._lock_:
            out = [r for r in self._recent if r["seq"] > seq]
        return out[-limit:] if limit else out

    # -- subscribers ------------------------------------------------------------------------

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[dict[str, Any]]:
        """A queue that receives every new record (call from the event loop that reads it)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        with self._lock_:
            self._subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._drop_subscriber(queue)

    def _drop_subscriber(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock_:
            self._subscribers = [(lp, q) for lp, q in self._subscribers if q is not queue]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def read_telemetry(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a telemetry JSON-lines file, in order. A line that is not a JSON object is a
    ValueError naming the file and line (a truncated last line, from a process killed while
    writing, is skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"telemetry file '{path}' does not exist (write one with `bitnet serve "
            "--telemetry-file PATH`)"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a telemetry file (not UTF-8 text: {exc.reason})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                return  # the last line, cut short
            raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
        if not isinstance(rec, dict) or "event" not in rec:
            raise ValueError(
                f"{path}:{number}: not a bitnet event (a JSON object with an 'event' key, as "
                "`--telemetry-file` writes)"
            )
        yield rec
