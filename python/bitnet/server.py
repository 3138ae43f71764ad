"""An OpenAI-compatible HTTP server (FastAPI + uvicorn) in front of RuntimeSupervisor.

``bitnet serve --model m.gguf`` (or ``run_inference_server.py``) serves
``/v1/completions``, ``/v1/chat/completions`` (streamed as server-sent events or not),
``/v1/models``, ``/tokenize``, ``/detokenize``, ``/health``, ``/ready`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from .model import GenerationResult
from .runtime import BitNetRuntime
from .supervisor import (
    DeadlineExceededError,
    QueueFullError,
    RuntimeSupervisor,
    SupervisorClosedError,
)

__all__ = ["ServerConfig", "create_app", "serve"]

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


# -- request and response shapes --------------------------------------------------------------


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float = Field(default=1.0, ge=0.0, le=100.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.0, gt=0.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1, description="only n=1 is supported")


class CompletionRequest(_Sampling):
    prompt: str | list[int] = Field(min_length=1)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class TokenizeRequest(BaseModel):
    content: str
    add_special: bool = True


class DetokenizeRequest(BaseModel):
    tokens: list[int]


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def _error_body(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


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
        return JSONResponse(_error_body(exc.message, exc.kind, exc.status), exc.status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(
                _error_body("the request body is not valid JSON", "invalid_request_error", 400), 400
            )
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors
        )
        return JSONResponse(_error_body(detail, "invalid_request_error", 422), 422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("bitnet.server").exception("request %s failed", request.state.request_id)
        return JSONResponse(_error_body("internal error", "server_error", 500), 500)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.loading_error:
            return JSONResponse({"status": "error", "error": state.loading_error}, 503)
        if state.supervisor is None:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> JSONResponse:
        sup = state.supervisor
        if sup is None:
            return JSONResponse({"ready": False, "reason": "loading"}, 503)
        if state.draining or sup.state != "running":
            return JSONResponse({"ready": False, "reason": "draining"}, 503)
        if sup.queued >= sup.max_queue and sup.in_flight >= sup.max_concurrency:
            return JSONResponse({"ready": False, "reason": "queue full"}, 503)
        return JSONResponse({"ready": True})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": _model_id(config), "object": "model", "created": 0, "owned_by": "bitnet"}
            ],
        }

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        model = _supervisor(state).model
        return {"tokens": model.tokenize(body.content, add_bos=body.add_special, special=True)}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        model = _supervisor(state).model
        try:
            return {"content": model.detokenize(body.tokens)}
        except ValueError as exc:
            raise HTTPError(400, str(exc), "invalid_request_error") from None

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        sup = _supervisor(state)
        tokens = (
            sup.model.tokenize(body.prompt, special=True)
            if isinstance(body.prompt, str)
            else list(body.prompt)
        )
        return await _generate(request, state, metrics, "completions", body, tokens, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        sup = _supervisor(state)
        try:
            tokens = sup.model._chat_prompt([m.model_dump() for m in body.messages])
        except ValueError as exc:
            raise HTTPError(400, str(exc), "invalid_request_error") from None
        return await _generate(request, state, metrics, "chat", body, tokens, chat=True)

    return app


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


async def _next_item(items: AsyncIterator[Any], request: Request) -> Any:
    """The next item, abandoned (cancelling the generation) if the client goes away first."""
    task = asyncio.ensure_future(items.__anext__())
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.1)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise asyncio.CancelledError


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
    try:
        # A non-streamed answer waits for the result; a stream only for its first piece, so
        # that an error before anything was sent can still be an HTTP status.
        item = await _next_item(items, request)
        metrics.ttft.observe(time.perf_counter() - t0)
        while not body.stream and not isinstance(item, GenerationResult):
            item = await _next_item(items, request)
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
    except asyncio.CancelledError:
        metrics.requests.labels(endpoint, "cancelled").inc()
        await items.aclose()
        return Response(status_code=499)

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


def serve(config: ServerConfig, *, log_format: str = "json", log_level: str = "info") -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code (0 after a clean drain)."""
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
    server.run()
    return 0
