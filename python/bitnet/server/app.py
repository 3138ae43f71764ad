"""The HTTP application: routes on an APIRouter, the state they share as a dependency, and
the error handlers that give every failure OpenAI's shape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import events
from ..telemetry import TelemetryHub
from ..version import version
from .completions import generate
from .guard import Guard
from .metrics import Metrics
from .schemas import (
    POST_ERRORS,
    STREAMED,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    HTTPError,
    TokenizeRequest,
    error_body,
    responses,
)
from .settings import ServerConfig
from .state import (
    ServerState,
    check_model_name,
    drain_and_exit,
    load,
    model_id,
    readiness,
    ready_supervisor,
)
from .telemetry import emit_failures, failure_summaries, telemetry_router

__all__ = ["create_app", "router"]


def _server_state(request: Request) -> ServerState:
    return request.app.state.bitnet


State = Annotated[ServerState, Depends(_server_state)]
router = APIRouter()


def create_app(config: ServerConfig) -> FastAPI:
    """The ASGI app; the model loads in the background after startup (``/health`` is 503 until
    then)."""
    state = ServerState(config, hub=TelemetryHub(sink=config.telemetry_file))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.hub.attach()
        state.started = time.monotonic()
        events.emit(
            "server_start",
            outcome="ok",
            version=version(),
            model=config.model,
            host=config.host,
            port=config.port,
            parallel=config.parallel,
            queue=config.queue,
        )
        loader = asyncio.create_task(load(state))
        summaries = asyncio.create_task(failure_summaries(state))
        with contextlib.suppress(NotImplementedError):  # no signal handlers off the main thread
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: asyncio.ensure_future(drain_and_exit(state))
            )
        try:
            yield
        finally:
            loader.cancel()
            summaries.cancel()
            if state.supervisor is not None:
                await state.supervisor.shutdown(grace=config.grace)
                emit_failures(state)
            events.emit(
                "server_stop",
                outcome="ok",
                uptime_seconds=round(time.monotonic() - state.started, 3),
                requests=state.supervisor.stats()["outcomes"] if state.supervisor else {},
            )
            state.hub.detach()

    app = FastAPI(
        title="bitnet", version=version(), lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.bitnet = state
    app.state.metrics = Metrics(
        queued=lambda: state.supervisor.queued if state.supervisor else 0,
        in_flight=lambda: state.supervisor.in_flight if state.supervisor else 0,
    )
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(Guard, config=config)
    for exc_class, handler in _HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    app.include_router(router)
    app.include_router(telemetry_router)
    return app


# -- errors -----------------------------------------------------------------------------------

_HANDLERS: dict[Any, Callable[..., Any]] = {}


def _handles(exc_class: Any) -> Callable[[Any], Any]:
    def register(handler: Any) -> Any:
        _HANDLERS[exc_class] = handler
        return handler

    return register


@_handles(HTTPError)
async def http_error(request: Request, exc: HTTPError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.message, exc.kind, exc.code, exc.param), exc.status, exc.headers
    )


@_handles(StarletteHTTPException)
async def starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Unknown paths and methods, in the same shape as every other error.
    if exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed for {request.url.path}"
    elif exc.status_code == 400:  # FastAPI could not decode the body at all
        message = "the request body is not valid JSON (send UTF-8 encoded JSON text)"
    else:
        message = str(exc.detail)
    return JSONResponse(
        error_body(message, "invalid_request_error", exc.status_code),
        exc.status_code,
        dict(exc.headers or {}),
    )


@_handles(RequestValidationError)
async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    invalid_json = [e for e in errors if e.get("type") == "json_invalid"]
    if invalid_json:
        reason = invalid_json[0].get("ctx", {}).get("error")
        message = "the request body is not valid JSON" + (f" ({reason})" if reason else "")
        return JSONResponse(error_body(message, "invalid_request_error", 400), 400)
    fields = [".".join(str(p) for p in e["loc"][1:]) for e in errors]
    detail = "; ".join(f"{f or 'body'}: {e['msg']}" for f, e in zip(fields, errors, strict=True))
    param = (fields[0] or None) if fields else None
    return JSONResponse(error_body(detail, "invalid_request_error", 422, param), 422)


@_handles(ValueError)
async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
    # Our library raises ValueError only for bad input (a lone surrogate in the text, a
    # token id outside the vocabulary, ...): the request is at fault, not the server.
    return JSONResponse(error_body(str(exc), "invalid_request_error", 400), 400)


@_handles(Exception)
async def internal(request: Request, exc: Exception) -> JSONResponse:
    logging.getLogger("bitnet.server").exception("request %s failed", request.state.request_id)
    return JSONResponse(error_body("internal error", "server_error", 500), 500)


# -- routes -----------------------------------------------------------------------------------


@router.get("/health", responses={503: {"description": "loading, or the model failed to load"}})
async def health(state: State) -> JSONResponse:
    if state.loading_error:
        return JSONResponse({"status": "error", "error": state.loading_error}, 503)
    if state.supervisor is None:
        return JSONResponse({"status": "loading"}, 503)
    return JSONResponse({"status": "ok"})


@router.get("/ready", responses={503: {"description": "loading, draining or the queue is full"}})
async def ready(state: State) -> JSONResponse:
    name, reason = readiness(state)
    if name == "ready":
        return JSONResponse({"ready": True})
    # A failed load reads as still loading here; GET /health carries its error.
    return JSONResponse({"ready": False, "reason": "loading" if name == "error" else reason}, 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition",
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
        },
        **responses(401),
    },
)
async def prometheus(request: Request) -> Response:
    metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models", responses=responses(401))
async def models(state: State) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": model_id(state.config), "object": "model", "created": 0, "owned_by": "bitnet"}
        ],
    }


@router.post("/tokenize", responses=responses(*POST_ERRORS))
async def tokenize(body: TokenizeRequest, state: State) -> dict[str, Any]:
    model = ready_supervisor(state).model
    return {"tokens": model.tokenize(body.content, add_bos=body.add_special, special=True)}


@router.post("/detokenize", responses=responses(*POST_ERRORS))
async def detokenize(body: DetokenizeRequest, state: State) -> dict[str, Any]:
    model = ready_supervisor(state).model
    return {"content": model.detokenize(body.tokens)}


@router.post("/v1/completions", responses={**STREAMED, **responses(*POST_ERRORS, 404, 504)})
async def completions(body: CompletionRequest, request: Request, state: State) -> Response:
    check_model_name(state.config, body.model)
    sup = ready_supervisor(state)
    tokens = (
        sup.model.tokenize(body.prompt, special=True)
        if isinstance(body.prompt, str)
        else list(body.prompt)
    )
    metrics = request.app.state.metrics
    return await generate(request, state, metrics, "completions", body, tokens, chat=False)


@router.post("/v1/chat/completions", responses={**STREAMED, **responses(*POST_ERRORS, 404, 504)})
async def chat_completions(body: ChatCompletionRequest, request: Request, state: State) -> Response:
    check_model_name(state.config, body.model)
    sup = ready_supervisor(state)
    tokens = sup.model.chat_tokens(body.turns())
    metrics = request.app.state.metrics
    return await generate(request, state, metrics, "chat", body, tokens, chat=True)
