"""Structured events: one JSON-able record per model load and per generation attempt.

Events go through Python logging (logger ``bitnet.events``) with the event dict attached as
``record.bitnet_event``; :class:`JsonLinesFormatter` writes them as one JSON object per line.
Stable keys: ``event``, ``time`` (UTC, ISO 8601), ``outcome`` (``ok``, ``error``, ``timeout``,
``cancelled``, ``rejected``, ``abort``), ``duration_ms``, ``params``; on failure also
``error_kind`` (exception class) and ``error`` (message).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

__all__ = ["EVENT_LOGGER", "JsonLinesFormatter", "emit"]

EVENT_LOGGER = logging.getLogger("bitnet.events")


def emit(
    name: str,
    *,
    outcome: str,
    duration_ms: float | None = None,
    params: dict[str, Any] | None = None,
    error: BaseException | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Log one event (WARNING level when it failed) and return it."""
    event: dict[str, Any] = {
        "event": name,
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "outcome": outcome,
        "duration_ms": None if duration_ms is None else round(duration_ms, 3),
        "params": params or {},
    }
    if error is not None:
        event["error_kind"] = type(error).__name__
        event["error"] = str(error)
    event.update(fields)
    level = logging.INFO if outcome in ("ok", "abort") else logging.WARNING
    EVENT_LOGGER.log(level, "%s: %s", name, outcome, extra={"bitnet_event": event})
    return event


class JsonLinesFormatter(logging.Formatter):
    """Formats bitnet events as their JSON object, other records as a small JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "bitnet_event", None)
        if event is None:
            event = {
                "event": "log",
                "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                    timespec="milliseconds"
                ),
                "logger": record.name,
                "level": record.levelname,
                "message": record.getMessage(),
            }
        return json.dumps(event, default=str, ensure_ascii=False)
