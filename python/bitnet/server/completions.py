"""The completion endpoints' work: a generation through the supervisor, raced against the
client hanging up, answered in OpenAI's shapes (one JSON object, or server-sent events)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

from ..errors import DeadlineExceededError, QueueFullError, SupervisorClosedError
from ..model import GenerationResult
from ..options import SamplingOptions
from .metrics import Metrics
from .schemas import HTTPError, _Sampling, error_body
from .state import ServerState, model_id, ready_supervisor

__all__ = ["generate"]


def _sampling(body: _Sampling, tokens: list[int], n_ctx: int) -> dict[str, Any]:
    """The request's sampling settings, ``max_tokens`` defaulting to what fits the context."""
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
    # Checked now, so that a bad value is a 400 before the request waits for a slot.
    return SamplingOptions(**{**body.sampling(), "max_tokens": max_tokens}).to_dict()


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


async def generate(
    request: Request,
    state: ServerState,
    metrics: Metrics,
    endpoint: str,
    body: _Sampling,
    tokens: list[int],
    *,
    chat: bool,
) -> Response:
    sup = ready_supervisor(state)
    sampling = _sampling(body, tokens, sup.model.n_ctx)
    if body.n > 1:
        return await _choices(request, state, metrics, endpoint, body, tokens, sampling, chat=chat)
    t0 = time.perf_counter()
    items = sup.stream_with_result(tokens, **sampling)
    created = int(time.time())
    rid = ("chatcmpl-" if chat else "cmpl-") + request.state.request_id
    served = model_id(state.config)

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
        return JSONResponse(_full_response(rid, created, served, item, chat))
    first = item

    async def events() -> AsyncIterator[str]:
        outcome = "cancelled"
        try:
            if chat:
                yield json.dumps(
                    _chunk(rid, created, served, {"role": "assistant", "content": ""}, None, chat)
                )
            item = first
            while not isinstance(item, GenerationResult):
                delta = {"content": item} if chat else item
                yield json.dumps(_chunk(rid, created, served, delta, None, chat))
                item = await items.__anext__()
            finished(item)
            outcome = "done"
            yield json.dumps(
                _chunk(
                    rid,
                    created,
                    served,
                    {} if chat else "",
                    item.finish_reason,
                    chat,
                    usage=_usage(item),
                )
            )
            if body.include_usage:  # OpenAI's shape: a last chunk with no choices
                usage_chunk = _chunk(rid, created, served, "", None, chat, usage=_usage(item))
                usage_chunk["choices"] = []
                yield json.dumps(usage_chunk)
            yield "[DONE]"
        except DeadlineExceededError as exc:
            outcome = "timeout"
            yield json.dumps(error_body(str(exc), "timeout", 504))
        except Exception as exc:  # the status line is long gone: say it in the stream
            outcome = "error"
            logging.getLogger("bitnet.server").exception(
                "stream %s failed", request.state.request_id
            )
            yield json.dumps(error_body(f"{type(exc).__name__}: {exc}", "server_error", 500))
        finally:
            # Counted first: on a hang-up this runs in a cancelled task, whose awaits raise.
            if outcome != "done":
                metrics.requests.labels(endpoint, outcome).inc()
            await items.aclose()

    return EventSourceResponse(
        events(), ping=15, headers={"X-Request-ID": request.state.request_id}
    )


async def _all_or_none(coros: list[Any]) -> list[Any]:
    """Await every coroutine; when one fails (or this is cancelled), cancel the others first."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _choices(
    request: Request,
    state: ServerState,
    metrics: Metrics,
    endpoint: str,
    body: _Sampling,
    tokens: list[int],
    sampling: dict[str, Any],
    *,
    chat: bool,
) -> Response:
    """n > 1: the choices run as sequences of the model at once (they share its batches)."""
    parallel = state.config.parallel
    if body.n > parallel:
        raise HTTPError(
            400,
            f"n={body.n} is more than the {parallel} generations this server runs at once "
            f"(--parallel); ask for at most {parallel} choices",
            "invalid_request_error",
            param="n",
        )
    sup = ready_supervisor(state)
    seed = sampling.get("seed")
    if body.stream:
        return await _streamed_choices(
            request, state, metrics, endpoint, body, tokens, sampling, chat=chat
        )
    work = _all_or_none(
        [
            sup.generate(tokens, **{**sampling, "seed": None if seed is None else seed + i})
            for i in range(body.n)
        ]
    )
    try:
        results: list[GenerationResult] = await _unless_disconnected(request, work)
    except (QueueFullError, SupervisorClosedError) as exc:
        metrics.requests.labels(endpoint, "rejected").inc()
        raise HTTPError(
            503, str(exc), "unavailable", {"Retry-After": str(state.config.retry_after)}
        ) from None
    except DeadlineExceededError as exc:
        metrics.requests.labels(endpoint, "timeout").inc()
        raise HTTPError(504, str(exc), "timeout") from None
    except ValueError as exc:
        metrics.requests.labels(endpoint, "error").inc()
        raise HTTPError(400, str(exc), "invalid_request_error") from None
    except _ClientGone:
        metrics.requests.labels(endpoint, "cancelled").inc()
        return Response(status_code=499)
    for result in results:
        metrics.prompt_tokens.inc(result.timings.prompt_tokens_evaluated)
        metrics.generated_tokens.inc(result.usage.completion_tokens)
    metrics.requests.labels(endpoint, "ok").inc()
    rid = ("chatcmpl-" if chat else "cmpl-") + request.state.request_id
    out = _full_response(rid, int(time.time()), model_id(state.config), results[0], chat)
    out["choices"] = [
        {**_full_response(rid, 0, "", r, chat)["choices"][0], "index": i}
        for i, r in enumerate(results)
    ]
    completion = sum(r.usage.completion_tokens for r in results)
    prompt = results[0].usage.prompt_tokens
    out["usage"] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return JSONResponse(out)


async def _streamed_choices(
    request: Request,
    state: ServerState,
    metrics: Metrics,
    endpoint: str,
    body: _Sampling,
    tokens: list[int],
    sampling: dict[str, Any],
    *,
    chat: bool,
) -> Response:
    """n > 1 streamed: the choices' pieces interleaved as they come, each chunk with its index."""
    sup = ready_supervisor(state)
    seed = sampling.get("seed")
    iterators = [
        sup.stream_with_result(tokens, **{**sampling, "seed": None if seed is None else seed + i})
        for i in range(body.n)
    ]
    queue: asyncio.Queue[tuple[int, Any, BaseException | None]] = asyncio.Queue()

    async def pump(i: int, items: AsyncIterator[Any]) -> None:
        try:
            async for item in items:
                await queue.put((i, item, None))
        except BaseException as exc:  # handed to the stream (CancelledError included)
            await queue.put((i, None, exc))

    pumps = [asyncio.ensure_future(pump(i, it)) for i, it in enumerate(iterators)]

    async def close() -> None:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for items in iterators:
            await items.aclose()  # type: ignore[attr-defined]

    try:  # an error before anything was sent is still an HTTP status
        first = await _unless_disconnected(request, queue.get())
    except _ClientGone:
        await close()
        metrics.requests.labels(endpoint, "cancelled").inc()
        return Response(status_code=499)
    if first[2] is not None:
        await close()
        exc = first[2]
        if isinstance(exc, QueueFullError | SupervisorClosedError):
            metrics.requests.labels(endpoint, "rejected").inc()
            raise HTTPError(
                503, str(exc), "unavailable", {"Retry-After": str(state.config.retry_after)}
            )
        if isinstance(exc, ValueError):
            metrics.requests.labels(endpoint, "error").inc()
            raise HTTPError(400, str(exc), "invalid_request_error")
        raise exc
    rid = ("chatcmpl-" if chat else "cmpl-") + request.state.request_id
    created, served = int(time.time()), model_id(state.config)

    async def events() -> AsyncIterator[str]:
        outcome = "cancelled"
        results: list[GenerationResult | None] = [None] * body.n
        try:
            if chat:
                for i in range(body.n):
                    role = {"role": "assistant", "content": ""}
                    yield json.dumps(_chunk(rid, created, served, role, None, chat, index=i))
            entry = first
            while True:
                i, item, exc = entry
                if exc is not None:
                    raise exc
                if isinstance(item, GenerationResult):
                    results[i] = item
                    metrics.prompt_tokens.inc(item.timings.prompt_tokens_evaluated)
                    metrics.generated_tokens.inc(item.usage.completion_tokens)
                    end = {} if chat else ""
                    yield json.dumps(
                        _chunk(rid, created, served, end, item.finish_reason, chat, index=i)
                    )
                    if all(r is not None for r in results):
                        break
                else:
                    delta = {"content": item} if chat else item
                    yield json.dumps(_chunk(rid, created, served, delta, None, chat, index=i))
                entry = await queue.get()
            outcome = "done"
            metrics.requests.labels(endpoint, "ok").inc()
            if body.include_usage:
                done = [r for r in results if r is not None]
                completion = sum(r.usage.completion_tokens for r in done)
                prompt = done[0].usage.prompt_tokens
                usage = {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                }
                usage_chunk = _chunk(rid, created, served, "", None, chat, usage=usage)
                usage_chunk["choices"] = []
                yield json.dumps(usage_chunk)
            yield "[DONE]"
        except DeadlineExceededError as exc:
            outcome = "timeout"
            yield json.dumps(error_body(str(exc), "timeout", 504))
        except Exception as exc:  # the status line is long gone: say it in the stream
            outcome = "error"
            logging.getLogger("bitnet.server").exception(
                "stream %s failed", request.state.request_id
            )
            yield json.dumps(error_body(f"{type(exc).__name__}: {exc}", "server_error", 500))
        finally:
            # Counted first: on a hang-up this runs in a cancelled task, whose awaits raise.
            if outcome != "done":
                metrics.requests.labels(endpoint, outcome).inc()
            await close()

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
    index: int = 0,
) -> dict[str, Any]:
    finish_reason = None if finish is None else ("stop" if finish == "abort" else finish)
    if chat:
        choice: dict[str, Any] = {
            "index": index,
            "delta": delta,
            "finish_reason": finish_reason,
            "logprobs": None,
        }
        kind = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": delta, "finish_reason": finish_reason, "logprobs": None}
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
