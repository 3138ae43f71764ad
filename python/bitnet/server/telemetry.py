"""The server's telemetry: lifecycle events, supervisor failure summaries, and two routes behind
the API key: ``GET /telemetry/events`` (the stream, as server-sent events or one JSON list) and
``GET /telemetry/stats`` (everything a dashboard shows, as one JSON object)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

from .. import events
from ..telemetry import TELEMETRY_SCHEMA
from ..version import version
from .schemas import responses
from .state import ServerState, model_id, readiness

__all__ = ["STATS_SCHEMA", "failure_summaries", "server_stats", "telemetry_router"]

STATS_SCHEMA = "bitnet.telemetry.stats/1"

telemetry_router = APIRouter()


def _server_state(request: Request) -> ServerState:
    return request.app.state.bitnet


State = Annotated[ServerState, Depends(_server_state)]


def server_stats(state: ServerState, metrics: Any, since: int | None = None) -> dict[str, Any]:
    """The stats document (:data:`STATS_SCHEMA`): the server, its supervisor, request and token
    counters, and with ``since`` the telemetry records numbered after it."""
    c = state.config
    sup = state.supervisor
    now_status, reason = readiness(state)
    hub = state.hub
    out: dict[str, Any] = {
        "schema": STATS_SCHEMA,
        "time": time.time(),
        "server": {
            "version": version(),
            "model": c.model,
            "model_id": model_id(c),
            "status": now_status,
            "ready": now_status == "ready",
            "reason": reason,
            "uptime_seconds": round(time.monotonic() - state.started, 3),
            "parallel": c.parallel,
            "queue": c.queue,
            "timeout": c.timeout,
            "grace": c.grace,
            "api_keys": len(c.api_keys),
            "engine": sup.model.engine if sup is not None and sup.state == "running" else None,
            "kernels": sup.model.kernels if sup is not None and sup.state == "running" else None,
        },
        "supervisor": sup.stats() if sup is not None else None,
        "failures": sup.failure_summary() if sup is not None else None,
        **metrics.summary(),
        "telemetry": {
            "schema": TELEMETRY_SCHEMA,
            "last_seq": hub.last_seq,
            "subscribers": hub.subscribers,
            "dropped": hub.dropped,
        },
    }
    if since is not None:
        out["events"] = hub.since(since, limit=500)
    return out


async def failure_summaries(state: ServerState) -> None:
    """Every telemetry_interval seconds: a ``supervisor_failures`` event when requests failed
    since the last one (runs until cancelled)."""
    reported = 0
    while True:
        await asyncio.sleep(state.config.telemetry_interval)
        sup = state.supervisor
        if sup is not None and sup.failures != reported:
            reported = sup.failures
            emit_failures(state)


def emit_failures(state: ServerState) -> None:
    sup = state.supervisor
    if sup is None:
        return
    summary = sup.failure_summary()
    events.emit(
        "supervisor_failures",
        outcome="ok" if summary["total"] == 0 else "error",
        summary=summary,
    )


@telemetry_router.get(
    "/telemetry/stats",
    responses=responses(401),
    summary="Server, supervisor and request statistics (what `bitnet dashboard` shows)",
)
async def stats(
    request: Request,
    state: State,
    since: Annotated[
        int | None, Query(ge=0, le=2**62, description="also return the events after this seq")
    ] = None,
) -> JSONResponse:
    return JSONResponse(server_stats(state, request.app.state.metrics, since))


@telemetry_router.get(
    "/telemetry/events",
    response_class=Response,
    responses={
        200: {
            "description": "server-sent events (one per telemetry record, `id` its seq), or with "
            "follow=false a JSON list of the kept records",
            "content": {
                "text/event-stream": {
                    "schema": {  # one event
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "description": "the record's seq"},
                            "event": {"type": "string", "description": "the record's event"},
                            "data": {"type": "string", "description": "the record, as JSON"},
                        },
                        "required": ["data"],
                    }
                },
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            },
        },
        **responses(401),
    },
    summary="The telemetry stream (bitnet.telemetry/1)",
)
async def telemetry_events(
    request: Request,
    state: State,
    since: Annotated[
        int | None,
        Query(ge=0, le=2**62, description="replay the kept records after this seq first"),
    ] = None,
    follow: Annotated[bool, Query(description="false: the kept records as one JSON list")] = True,
    limit: Annotated[
        int, Query(ge=1, le=10000, description="most records replayed or listed")
    ] = 1000,
    timeout: Annotated[
        float | None,
        Query(gt=0, le=86400, description="end the stream after this many seconds (default never)"),
    ] = None,
) -> Response:
    hub = state.hub
    if not follow:
        return JSONResponse(hub.since(since or 0, limit=limit))
    last_id = request.headers.get("last-event-id", "")
    start = int(last_id) if last_id.isdigit() else since
    queue = hub.subscribe()

    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout

    async def stream() -> Any:
        try:
            sent = start if start is not None else hub.last_seq
            for rec in hub.since(sent, limit=limit) if start is not None else []:
                sent = rec["seq"]
                yield {
                    "id": str(rec["seq"]),
                    "event": rec["event"],
                    "data": json.dumps(rec, default=str),
                }
            while not state.draining or not queue.empty():
                wait = 1.0 if deadline is None else min(1.0, deadline - loop.time())
                if wait <= 0:
                    return  # the client's timeout: it reconnects with Last-Event-ID
                try:
                    rec = await asyncio.wait_for(queue.get(), timeout=wait)
                except asyncio.TimeoutError:
                    continue
                if rec["seq"] <= sent:
                    continue  # already replayed
                sent = rec["seq"]
                yield {
                    "id": str(rec["seq"]),
                    "event": rec["event"],
                    "data": json.dumps(rec, default=str),
                }
        finally:
            hub.unsubscribe(queue)

    return EventSourceResponse(stream(), ping=15)
