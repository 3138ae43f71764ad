"""What a running server knows: its settings, its supervisor once the model has loaded, and
whether it is draining; plus the steps that change it (load, drain)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import events
from ..runtime.supervisor import RuntimeSupervisor
from ..telemetry import TelemetryHub
from .schemas import HTTPError
from .settings import ServerConfig

__all__ = ["ServerState"]


@dataclass
class ServerState:
    config: ServerConfig
    supervisor: RuntimeSupervisor | None = None
    loading_error: str | None = None
    draining: bool = False
    uvicorn_server: Any = None
    hub: TelemetryHub = field(default_factory=TelemetryHub)
    started: float = field(default_factory=time.monotonic)


def readiness(state: ServerState) -> tuple[str, str | None]:
    """(``loading`` | ``error`` | ``ready`` | ``busy`` | ``draining``, why not ready): what
    ``GET /ready`` and the telemetry stats both report."""
    sup = state.supervisor
    if state.loading_error:
        return "error", state.loading_error
    if sup is None:
        return "loading", "loading"
    if state.draining or sup.state != "running":
        return "draining", "draining"
    if sup.queued >= sup.max_queue and sup.in_flight >= sup.max_concurrency:
        return "busy", "queue full"
    return "ready", None


def ready_supervisor(state: ServerState) -> RuntimeSupervisor:
    if state.draining:
        raise HTTPError(503, "the server is shutting down", "unavailable", {"Retry-After": "5"})
    if state.supervisor is None:
        raise HTTPError(
            503,
            state.loading_error or "the model is still loading",
            "unavailable",
            {"Retry-After": str(state.config.retry_after)},
        )
    return state.supervisor


async def load(state: ServerState) -> None:
    c = state.config
    t0 = time.perf_counter()
    try:
        runtime = c.runtime()
        sup = RuntimeSupervisor(
            runtime, max_concurrency=c.parallel, max_queue=c.queue, timeout=c.timeout
        )
        await sup.start()
        state.supervisor = sup
        events.emit(
            "server_ready",
            outcome="ok",
            duration_ms=(time.perf_counter() - t0) * 1000,
            model=c.model,
            engine=sup.model.engine,
            kernels=sup.model.kernels,
        )
    except Exception as exc:
        state.loading_error = f"{type(exc).__name__}: {exc}"
        logging.getLogger("bitnet.server").error("model load failed: %s", state.loading_error)
        events.emit(
            "server_ready",
            outcome="error",
            duration_ms=(time.perf_counter() - t0) * 1000,
            error=exc,
            model=c.model,
        )


async def drain_and_exit(state: ServerState) -> None:
    """SIGTERM: readiness goes 503 at once, running requests get up to `grace` seconds, then
    uvicorn exits (code 0)."""
    if state.draining:
        return
    sup = state.supervisor
    events.emit(
        "server_drain",
        outcome="ok",
        grace_seconds=state.config.grace,
        in_flight=sup.in_flight if sup else 0,
        queued=sup.queued if sup else 0,
    )
    state.draining = True
    logging.getLogger("bitnet.server").info("SIGTERM: draining for up to %s s", state.config.grace)
    if state.supervisor is not None:
        await state.supervisor.shutdown(grace=state.config.grace)
    if state.uvicorn_server is not None:
        state.uvicorn_server.should_exit = True


def model_names(config: ServerConfig) -> set[str]:
    """The names a request's ``model`` may use for the one model this server serves."""
    path = Path(config.model)
    names = {path.name, path.stem}
    if config.model_alias:
        names.add(config.model_alias)
    return names


def check_model_name(config: ServerConfig, name: str | None) -> None:
    if name is None or name in model_names(config):
        return
    raise HTTPError(
        404,
        f"The model `{name}` does not exist: this server serves `{model_id(config)}` "
        "(see GET /v1/models)",
        "invalid_request_error",
        code="model_not_found",
        param="model",
    )


def model_id(config: ServerConfig) -> str:
    return config.model_alias or Path(config.model).name
