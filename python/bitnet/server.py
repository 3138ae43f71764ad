"""An OpenAI-compatible HTTP server (FastAPI + uvicorn) in front of RuntimeSupervisor.

``bitnet serve --model m.gguf`` (or ``run_inference_server.py``) serves
``/v1/completions``, ``/v1/chat/completions`` (streamed as server-sent events or not),
``/v1/models``, ``/tokenize``, ``/detokenize``, ``/health``, ``/ready`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import json
import logging
import math
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .cpu import MAX_THREADS
from .errors import ListenError
from .model import MAX_INT32, MAX_REPEAT_PENALTY, GenerationResult
from .runtime import BitNetRuntime, checked_int
from .supervisor import (
    DeadlineExceededError,
    QueueFullError,
    RuntimeSupervisor,
    SupervisorClosedError,
)

__all__ = ["ServerConfig", "create_app", "listen_socket", "serve"]

ACCESS_LOGGER = logging.getLogger("bitnet.access")
OPEN_PATHS = frozenset({"/health", "/ready"})


@dataclass
class ServerConfig:
    model: str
    host: str = "127.0.0.1"
    port: int = 8080
    parallel: int = 1
    queue: int = 16
    batch_size: int = 512
    ctx_size: int = 4096
    threads: int | str = "auto"
    threads_batch: int | str | None = None
    kernels: Literal["auto", "bitnet", "ggml"] = "auto"
    timeout: float | None = None
    api_keys: list[str] = field(default_factory=list)
    max_body_bytes: int = 1 << 20
    cors_origins: list[str] = field(default_factory=list)
    grace: float = 30.0
    retry_after: int = 1
    model_alias: str | None = None

    def __post_init__(self) -> None:
        """Refuse settings the server would misbehave with (ValueError naming the flag)."""
        checked_int("--port", self.port, 1, 65535)
        checked_int("--parallel", self.parallel, 1, MAX_THREADS)  # a slot has >= 1 thread
        checked_int("--queue", self.queue, 0, 1 << 20)
        checked_int("--max-body-bytes", self.max_body_bytes, 1, 1 << 40)
        checked_int("retry_after", self.retry_after, 0, 86400)
        if self.timeout is not None:
            _check_float("--timeout", self.timeout, minimum=0.0, open_minimum=True)
        _check_float("--grace", self.grace, minimum=0.0)


def _check_float(flag: str, value: object, *, minimum: float, open_minimum: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (open_minimum and value == minimum):
        bound = f"> {minimum:g}" if open_minimum else f">= {minimum:g}"
        raise ValueError(f"{flag} must be a finite number {bound} seconds, got {value!r}")


# -- request and response shapes --------------------------------------------------------------


# Requests are validated strictly: "5" is not a number and 1.5 is not an integer (a client that
# sends them learns it from a 422). JSON Schema, which the OpenAPI document speaks, counts 2.0
# as an integer, so integer fields take it, as the document promises.
_STRICT = ConfigDict(extra="ignore", strict=True)


def _integral_float(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _integer(low: int, high: int) -> Any:
    """An int in [low, high]; the bounds come first so that the document states them."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_integral_float)]


Integer = Annotated[int, BeforeValidator(_integral_float)]


class _Sampling(BaseModel):
    model_config = _STRICT

    model: str | None = Field(
        default=None,
        description="the served model's id (GET /v1/models), its file name or stem, or --alias",
    )
    max_tokens: _integer(0, MAX_INT32) | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=100.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: _integer(0, MAX_INT32) = 40
    min_p: float = Field(default=0.05, ge=0.0, le=1.0, allow_inf_nan=False)
    repeat_penalty: float = Field(default=1.0, gt=0.0, le=MAX_REPEAT_PENALTY, allow_inf_nan=False)
    stop: str | list[str] | None = None
    # Any integer: the low 32 bits seed the sampler (as for Model.generate).
    seed: Integer | None = None
    stream: bool = False
    n: _integer(1, 1) = Field(default=1, description="only n=1 is supported")


class CompletionRequest(_Sampling):
    # "" is a prompt (generation starts from BOS, as OpenAI's API allows); [] is not. The text is
    # not constrained here: text that is not valid Unicode gets its own 400 when tokenized.
    prompt: str | Annotated[list[Integer], Field(min_length=1)]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class TokenizeRequest(BaseModel):
    model_config = _STRICT

    content: str
    add_special: bool = True


class DetokenizeRequest(BaseModel):
    model_config = _STRICT

    tokens: list[Integer]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int | str | None = None


class ErrorResponse(BaseModel):
    """Every error, in the shape OpenAI's API and client libraries use."""

    error: ErrorDetail


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        headers: dict[str, str] | None = None,
        *,
        code: int | str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}
        self.code = status if code is None else code
        self.param = param


def _error_body(
    message: str, kind: str, code: int | str, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the error statuses a route can answer with."""
    reasons = {
        400: "invalid request (bad JSON, text that is not valid Unicode, a prompt too long)",
        401: "missing or invalid API key (only when keys are configured)",
        404: "unknown model name (code model_not_found)",
        411: "a POST body without Content-Length",
        413: "the request body is larger than --max-body-bytes",
        422: "a field of the wrong type or out of range",
        503: "loading, draining, or the queue is full (see Retry-After)",
        504: "the request's deadline passed before anything was sent",
    }
    return {code: {"model": ErrorResponse, "description": reasons[code]} for code in statuses}


_POST_ERRORS = (400, 401, 411, 413, 422, 503)
# With "stream": true the answer is server-sent events (chunks, then "data: [DONE]").
_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the completion (JSON), or with stream=true server-sent events",
        "content": {
            "application/json": {},
            "text/event-stream": {
                "schema": {  # one event
                    "type": "object",
                    "properties": {
                        "event": {"type": "string"},
                        "data": {"type": "string", "description": "a JSON chunk, or [DONE]"},
                    },
                    "required": ["data"],
                }
            },
        },
    }
}


# -- metrics ----------------------------------------------------------------------------------


class _Metrics:
    def __init__(self, state: _State) -> None:
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
        queue.set_function(lambda: state.supervisor.queued if state.supervisor else 0)
        in_flight = Gauge("bitnet_in_flight", "Generations running", registry=r)
        in_flight.set_function(lambda: state.supervisor.in_flight if state.supervisor else 0)


@dataclass
class _State:
    config: ServerConfig
    supervisor: RuntimeSupervisor | None = None
    loading_error: str | None = None
    draining: bool = False
    uvicorn_server: Any = None


# -- the application --------------------------------------------------------------------------


def create_app(config: ServerConfig) -> FastAPI:
    """The ASGI app; the model loads in the background after startup (``/health`` is 503 until
    then)."""
    state = _State(config)
    metrics = _Metrics(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(_load(state))
        with contextlib.suppress(NotImplementedError):  # no signal handlers off the main thread
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: asyncio.ensure_future(_drain_and_exit(state))
            )
        yield
        loader.cancel()
        if state.supervisor is not None:
            await state.supervisor.shutdown(grace=config.grace)

    app = FastAPI(
        title="bitnet", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.bitnet = state
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    app.add_middleware(_Guard, config=config)

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, exc: HTTPError) -> JSONResponse:
        return JSONResponse(
            _error_body(exc.message, exc.kind, exc.code, exc.param), exc.status, exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
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
            _error_body(message, "invalid_request_error", exc.status_code),
            exc.status_code,
            dict(exc.headers or {}),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        invalid_json = [e for e in errors if e.get("type") == "json_invalid"]
        if invalid_json:
            reason = invalid_json[0].get("ctx", {}).get("error")
            message = "the request body is not valid JSON" + (f" ({reason})" if reason else "")
            return JSONResponse(_error_body(message, "invalid_request_error", 400), 400)
        fields = [".".join(str(p) for p in e["loc"][1:]) for e in errors]
        detail = "; ".join(
            f"{f or 'body'}: {e['msg']}" for f, e in zip(fields, errors, strict=True)
        )
        param = (fields[0] or None) if fields else None
        return JSONResponse(_error_body(detail, "invalid_request_error", 422, param), 422)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        # Our library raises ValueError only for bad input (a lone surrogate in the text, a
        # token id outside the vocabulary, ...): the request is at fault, not the server.
        return JSONResponse(_error_body(str(exc), "invalid_request_error", 400), 400)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("bitnet.server").exception("request %s failed", request.state.request_id)
        return JSONResponse(_error_body("internal error", "server_error", 500), 500)

    @app.get("/health", responses={503: {"description": "loading, or the model failed to load"}})
    async def health() -> JSONResponse:
        if state.loading_error:
            return JSONResponse({"status": "error", "error": state.loading_error}, 503)
        if state.supervisor is None:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/ready", responses={503: {"description": "loading, draining or the queue is full"}})
    async def ready() -> JSONResponse:
        sup = state.supervisor
        if sup is None:
            return JSONResponse({"ready": False, "reason": "loading"}, 503)
        if state.draining or sup.state != "running":
            return JSONResponse({"ready": False, "reason": "draining"}, 503)
        if sup.queued >= sup.max_queue and sup.in_flight >= sup.max_concurrency:
            return JSONResponse({"ready": False, "reason": "queue full"}, 503)
        return JSONResponse({"ready": True})

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition",
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            },
            **_responses(401),
        },
    )
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", responses=_responses(401))
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": _model_id(config), "object": "model", "created": 0, "owned_by": "bitnet"}
            ],
        }

    @app.post("/tokenize", responses=_responses(*_POST_ERRORS))
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        model = _supervisor(state).model
        return {"tokens": model.tokenize(body.content, add_bos=body.add_special, special=True)}

    @app.post("/detokenize", responses=_responses(*_POST_ERRORS))
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        model = _supervisor(state).model
        return {"content": model.detokenize(body.tokens)}

    @app.post("/v1/completions", responses={**_STREAMED, **_responses(*_POST_ERRORS, 404, 504)})
    async def completions(body: CompletionRequest, request: Request) -> Response:
        _check_model_name(config, body.model)
        sup = _supervisor(state)
        tokens = (
            sup.model.tokenize(body.prompt, special=True)
            if isinstance(body.prompt, str)
            else list(body.prompt)
        )
        return await _generate(request, state, metrics, "completions", body, tokens, chat=False)

    @app.post(
        "/v1/chat/completions", responses={**_STREAMED, **_responses(*_POST_ERRORS, 404, 504)}
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        _check_model_name(config, body.model)
        sup = _supervisor(state)
        tokens = sup.model._chat_prompt([m.model_dump() for m in body.messages])
        return await _generate(request, state, metrics, "chat", body, tokens, chat=True)

    return app


def _model_names(config: ServerConfig) -> set[str]:
    """The names a request's ``model`` may use for the one model this server serves."""
    from pathlib import Path

    path = Path(config.model)
    names = {path.name, path.stem}
    if config.model_alias:
        names.add(config.model_alias)
    return names


def _check_model_name(config: ServerConfig, name: str | None) -> None:
    if name is None or name in _model_names(config):
        return
    raise HTTPError(
        404,
        f"The model `{name}` does not exist: this server serves `{_model_id(config)}` "
        "(see GET /v1/models)",
        "invalid_request_error",
        code="model_not_found",
        param="model",
    )


def _version() -> str:
    from . import __version__

    return __version__


def _model_id(config: ServerConfig) -> str:
    from pathlib import Path

    return config.model_alias or Path(config.model).name


class _Guard:
    """Pure ASGI middleware (streams pass through untouched): request ids, API keys, body size
    limit, JSON access log lines."""

    def __init__(self, app: Any, config: ServerConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        t0 = time.perf_counter()
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        early = _check_auth(request, self.config) or _check_size(request, self.config)
        try:
            await (early or self.app)(scope, receive, send_with_id)
        finally:
            ACCESS_LOGGER.info(
                "%s %s %s",
                request.method,
                request.url.path,
                status,
                extra={
                    "bitnet_event": {
                        "event": "http_request",
                        "request_id": request_id,
                        "method": request.method,
                        "path": request.url.path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
                        "client": request.client.host if request.client else None,
                    }
                },
            )


def _check_auth(request: Request, config: ServerConfig) -> Response | None:
    if not config.api_keys or request.url.path in OPEN_PATHS or request.method == "OPTIONS":
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    # Every key is compared, each in constant time, so timing reveals nothing about which matched.
    matched = False
    for key in config.api_keys:
        matched |= hmac.compare_digest(token.strip().encode(), key.encode())
    if scheme.lower() == "bearer" and matched:
        return None
    return JSONResponse(
        _error_body(
            "missing or invalid API key (Authorization: Bearer <key>)", "authentication_error", 401
        ),
        401,
        {"WWW-Authenticate": "Bearer"},
    )


def _check_size(request: Request, config: ServerConfig) -> Response | None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
        return JSONResponse(
            _error_body(
                f"the request body has {length} bytes; the limit is {config.max_body_bytes}",
                "invalid_request_error",
                413,
            ),
            413,
        )
    if (
        length is None
        and request.method == "POST"
        and "chunked" in request.headers.get("transfer-encoding", "")
    ):
        return JSONResponse(
            _error_body(
                "send a Content-Length header (chunked bodies are not accepted)",
                "invalid_request_error",
                411,
            ),
            411,
        )
    return None


def _supervisor(state: _State) -> RuntimeSupervisor:
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


async def _load(state: _State) -> None:
    c = state.config
    try:
        runtime = BitNetRuntime(
            c.model,
            threads=c.threads,
            threads_batch=c.threads_batch,
            n_ctx=c.ctx_size,
            n_batch=c.batch_size,
            kernels=c.kernels,
            slots=c.parallel,
        )
        sup = RuntimeSupervisor(
            runtime, max_concurrency=c.parallel, max_queue=c.queue, timeout=c.timeout
        )
        await sup.start()
        state.supervisor = sup
    except Exception as exc:
        state.loading_error = f"{type(exc).__name__}: {exc}"
        logging.getLogger("bitnet.server").error("model load failed: %s", state.loading_error)


async def _drain_and_exit(state: _State) -> None:
    """SIGTERM: readiness goes 503 at once, running requests get up to `grace` seconds, then
    uvicorn exits (code 0)."""
    if state.draining:
        return
    state.draining = True
    logging.getLogger("bitnet.server").info("SIGTERM: draining for up to %s s", state.config.grace)
    if state.supervisor is not None:
        await state.supervisor.shutdown(grace=state.config.grace)
    if state.uvicorn_server is not None:
        state.uvicorn_server.should_exit = True


def _sampling(body: _Sampling, tokens: list[int], n_ctx: int) -> dict[str, Any]:
    room = n_ctx - len(tokens)
    if room < 1:
        raise HTTPError(
            400,
            f"the prompt has {len(tokens)} tokens but the context holds {n_ctx}; "
            "shorten the prompt",
            "invalid_request_error",
        )
    max_tokens = room if body.max_tokens is None else body.max_tokens
    if max_tokens > room:
        raise HTTPError(
            400,
            f"max_tokens={max_tokens} plus the prompt's {len(tokens)} tokens is more "
            f"than the context of {n_ctx} tokens; ask for at most {room}",
            "invalid_request_error",
        )
    return {
        "max_tokens": max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repeat_penalty": body.repeat_penalty,
        "stop": body.stop,
        "seed": body.seed,
    }


class _ClientGone(Exception):
    """The client closed its connection before the answer was ready."""


async def _until_disconnected(request: Request) -> None:
    """Returns as soon as the client closes the connection.

    After the body has been read, the server's ``receive`` waits until the connection is lost
    (or the response is complete) and then says ``http.disconnect``: no polling interval.
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_disconnected(request: Request, work: Any) -> Any:
    """Await ``work`` (a coroutine); if the client goes away first, cancel it (which cancels
    the generation and frees its slot) and raise _ClientGone."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler itself was cancelled (shutdown)
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task  # the supervisor has cancelled the native work when this returns
    raise _ClientGone


async def _generate(
    request: Request,
    state: _State,
    metrics: _Metrics,
    endpoint: str,
    body: _Sampling,
    tokens: list[int],
    *,
    chat: bool,
) -> Response:
    sup = _supervisor(state)
    sampling = _sampling(body, tokens, sup.model.n_ctx)
    t0 = time.perf_counter()
    items = sup.stream_with_result(tokens, **sampling)
    created = int(time.time())
    rid = ("chatcmpl-" if chat else "cmpl-") + request.state.request_id
    model_id = _model_id(state.config)

    async def first_item() -> Any:
        # A non-streamed answer waits for the result; a stream only for its first piece, so
        # that an error before anything was sent can still be an HTTP status.
        item = await items.__anext__()
        metrics.ttft.observe(time.perf_counter() - t0)
        while not body.stream and not isinstance(item, GenerationResult):
            item = await items.__anext__()
        return item

    try:
        item = await _unless_disconnected(request, first_item())
    except (QueueFullError, SupervisorClosedError) as exc:
        await items.aclose()
        metrics.requests.labels(endpoint, "rejected").inc()
        raise HTTPError(
            503, str(exc), "unavailable", {"Retry-After": str(state.config.retry_after)}
        ) from None
    except DeadlineExceededError as exc:
        await items.aclose()
        metrics.requests.labels(endpoint, "timeout").inc()
        raise HTTPError(504, str(exc), "timeout") from None
    except ValueError as exc:
        await items.aclose()
        metrics.requests.labels(endpoint, "error").inc()
        raise HTTPError(400, str(exc), "invalid_request_error") from None
    except _ClientGone:
        metrics.requests.labels(endpoint, "cancelled").inc()
        await items.aclose()
        return Response(status_code=499)  # nobody reads it; the access log records the status

    def finished(result: GenerationResult) -> None:
        metrics.prompt_tokens.inc(result.timings.prompt_tokens_evaluated)
        metrics.generated_tokens.inc(result.usage.completion_tokens)
        if result.timings.generation_decodes:
            metrics.speed.observe(result.timings.generation_tokens_per_second)
        metrics.requests.labels(
            endpoint, "ok" if result.finish_reason != "abort" else "abort"
        ).inc()

    if not body.stream:
        await items.aclose()
        finished(item)
        return JSONResponse(_full_response(rid, created, model_id, item, chat))
    first = item

    async def events() -> AsyncIterator[str]:
        outcome = "cancelled"
        try:
            if chat:
                yield json.dumps(
                    _chunk(rid, created, model_id, {"role": "assistant", "content": ""}, None, chat)
                )
            item = first
            while not isinstance(item, GenerationResult):
                delta = {"content": item} if chat else item
                yield json.dumps(_chunk(rid, created, model_id, delta, None, chat))
                item = await items.__anext__()
            finished(item)
            outcome = "done"
            yield json.dumps(
                _chunk(
                    rid,
                    created,
                    model_id,
                    {} if chat else "",
                    item.finish_reason,
                    chat,
                    usage=_usage(item),
                )
            )
            yield "[DONE]"
        except DeadlineExceededError as exc:
            outcome = "timeout"
            yield json.dumps(_error_body(str(exc), "timeout", 504))
        except Exception as exc:  # the status line is long gone: say it in the stream
            outcome = "error"
            logging.getLogger("bitnet.server").exception(
                "stream %s failed", request.state.request_id
            )
            yield json.dumps(_error_body(f"{type(exc).__name__}: {exc}", "server_error", 500))
        finally:
            await items.aclose()
            if outcome != "done":
                metrics.requests.labels(endpoint, outcome).inc()

    return EventSourceResponse(
        events(), ping=15, headers={"X-Request-ID": request.state.request_id}
    )


def _usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "total_tokens": result.usage.total_tokens,
    }


def _full_response(
    rid: str, created: int, model: str, result: GenerationResult, chat: bool
) -> dict[str, Any]:
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "finish_reason": _finish(result),
            "logprobs": None,
        }
        kind = "chat.completion"
    else:
        choice = {
            "index": 0,
            "text": result.text,
            "finish_reason": _finish(result),
            "logprobs": None,
        }
        kind = "text_completion"
    return {
        "id": rid,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": _usage(result),
    }


def _chunk(
    rid: str,
    created: int,
    model: str,
    delta: Any,
    finish: str | None,
    chat: bool,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    finish_reason = None if finish is None else ("stop" if finish == "abort" else finish)
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "finish_reason": finish_reason,
            "logprobs": None,
        }
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": delta, "finish_reason": finish_reason, "logprobs": None}
        kind = "text_completion"
    out: dict[str, Any] = {
        "id": rid,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [choice],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def _finish(result: GenerationResult) -> str:
    # OpenAI knows "stop" and "length"; an aborted generation ended early, like a stop.
    return "length" if result.finish_reason == "length" else "stop"


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or ListenError saying why not and what
    to change. Binding before the model loads makes a busy port fail at once."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ListenError(f"cannot listen on {where}: {exc}; check --host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            hint = "another process uses this port: choose another --port or stop that process"
        elif exc.errno == errno.EACCES:
            hint = "ports below 1024 need privileges: choose a --port from 1024 up"
        else:
            hint = "check --host and --port"
        raise ListenError(f"cannot listen on {where}: {exc.strerror}; {hint}") from None
    return sock


def serve(
    config: ServerConfig,
    *,
    log_format: str = "json",
    log_level: str = "info",
    sock: socket.socket | None = None,
) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code (0 after a clean drain).
    ``sock``: an already listening socket (see :func:`listen_socket`); default: bind one for
    ``config.host``/``config.port`` (ListenError when that fails)."""
    import uvicorn

    from .events import JsonLinesFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLinesFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    for name in ("bitnet.access", "bitnet.server", "bitnet.events"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(log_level.upper())
        logger.propagate = False
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(config.grace) + 5,
            lifespan="on",
        )
    )
    app.state.bitnet.uvicorn_server = server
    if sock is None:
        sock = listen_socket(config.host, config.port)
    with sock:
        server.run(sockets=[sock])
    return 0
