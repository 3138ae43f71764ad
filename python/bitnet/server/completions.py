"""The completion endpoints' work: a generation through the supervisor, raced against the
client hanging up, answered in OpenAI's shapes (one JSON object, or server-sent events)."""

from __future__ import annotations

import asyncio
import codecs
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
from ..model import GenerationResult, TokenLogprob
from ..options import SamplingOptions
from ..tools import CALL_CLOSE, CALL_OPEN, parse_tool_calls
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
    except _ClientGone:
        metrics.requests.labels(endpoint, "cancelled").inc()
        await items.aclose()
        return Response(status_code=499)  # nobody reads it; the access log records the status
    except Exception as exc:
        await items.aclose()
        raise _refusal(exc, state, metrics, endpoint) from None

    def finished(result: GenerationResult) -> None:
        _count_tokens(metrics, result)
        if result.timings.generation_decodes:
            metrics.speed.observe(result.timings.generation_tokens_per_second)
        metrics.requests.labels(
            endpoint, "ok" if result.finish_reason != "abort" else "abort"
        ).inc()

    if not body.stream:
        await items.aclose()
        finished(item)
        return JSONResponse(_full_response(rid, created, served, [item], body, chat))
    first = item
    choice = _Choice(body, chat)

    async def events() -> AsyncIterator[str]:
        outcome = "cancelled"
        try:
            for delta in choice.start():
                yield json.dumps(_chunk(rid, created, served, delta, chat))
            item = first
            while not isinstance(item, GenerationResult):
                for delta in choice.piece(item):
                    yield json.dumps(_chunk(rid, created, served, delta, chat))
                item = await items.__anext__()
            finished(item)
            outcome = "done"
            *deltas, last = choice.end(item)
            for delta in deltas:
                yield json.dumps(_chunk(rid, created, served, delta, chat))
            yield json.dumps(_chunk(rid, created, served, last, chat, usage=_usage(item)))
            if body.include_usage:
                yield json.dumps(_usage_chunk(rid, created, served, chat, _usage(item)))
            yield "[DONE]"
        except Exception as exc:  # the status line is long gone: say it in the stream
            outcome, event = _stream_failure(exc, request)
            yield event
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
    if body.stream:
        return await _streamed_choices(
            request, state, metrics, endpoint, body, tokens, sampling, chat=chat
        )
    sup = ready_supervisor(state)
    work = _all_or_none([sup.generate(tokens, **s) for s in _choice_sampling(sampling, body.n)])
    try:
        results: list[GenerationResult] = await _unless_disconnected(request, work)
    except _ClientGone:
        metrics.requests.labels(endpoint, "cancelled").inc()
        return Response(status_code=499)
    except Exception as exc:
        raise _refusal(exc, state, metrics, endpoint) from None
    for result in results:
        _count_tokens(metrics, result)
    metrics.requests.labels(endpoint, "ok").inc()
    rid = ("chatcmpl-" if chat else "cmpl-") + request.state.request_id
    return JSONResponse(
        _full_response(rid, int(time.time()), model_id(state.config), results, body, chat)
    )


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
    iterators = [sup.stream_with_result(tokens, **s) for s in _choice_sampling(sampling, body.n)]
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
        raise _refusal(first[2], state, metrics, endpoint)
    rid = ("chatcmpl-" if chat else "cmpl-") + request.state.request_id
    created, served = int(time.time()), model_id(state.config)

    async def events() -> AsyncIterator[str]:
        outcome = "cancelled"
        results: list[GenerationResult | None] = [None] * body.n
        choices = [_Choice(body, chat, i) for i in range(body.n)]
        try:
            for choice in choices:
                for delta in choice.start():
                    yield json.dumps(_chunk(rid, created, served, delta, chat))
            entry = first
            while True:
                i, item, exc = entry
                if exc is not None:
                    raise exc
                if isinstance(item, GenerationResult):
                    results[i] = item
                    _count_tokens(metrics, item)
                    for delta in choices[i].end(item):
                        yield json.dumps(_chunk(rid, created, served, delta, chat))
                    if all(r is not None for r in results):
                        break
                else:
                    for delta in choices[i].piece(item):
                        yield json.dumps(_chunk(rid, created, served, delta, chat))
                entry = await queue.get()
            outcome = "done"
            metrics.requests.labels(endpoint, "ok").inc()
            if body.include_usage:
                usage = _usage(*(r for r in results if r is not None))
                yield json.dumps(_usage_chunk(rid, created, served, chat, usage))
            yield "[DONE]"
        except Exception as exc:  # the status line is long gone: say it in the stream
            outcome, event = _stream_failure(exc, request)
            yield event
        finally:
            # Counted first: on a hang-up this runs in a cancelled task, whose awaits raise.
            if outcome != "done":
                metrics.requests.labels(endpoint, outcome).inc()
            await close()

    return EventSourceResponse(
        events(), ping=15, headers={"X-Request-ID": request.state.request_id}
    )


def _refusal(exc: BaseException, state: ServerState, metrics: Metrics, endpoint: str) -> Any:
    """What a generation that failed before anything was sent answers: its HTTP error
    (counted), or the exception itself when it has no status of its own."""
    if isinstance(exc, QueueFullError | SupervisorClosedError):
        metrics.requests.labels(endpoint, "rejected").inc()
        headers = {"Retry-After": str(state.config.retry_after)}
        return HTTPError(503, str(exc), "unavailable", headers)
    if isinstance(exc, DeadlineExceededError):
        metrics.requests.labels(endpoint, "timeout").inc()
        return HTTPError(504, str(exc), "timeout")
    if isinstance(exc, ValueError):
        metrics.requests.labels(endpoint, "error").inc()
        return HTTPError(400, str(exc), "invalid_request_error")
    return exc


def _stream_failure(exc: Exception, request: Request) -> tuple[str, str]:
    """(outcome, error event) of a stream that failed after its status line was sent."""
    if isinstance(exc, DeadlineExceededError):
        return "timeout", json.dumps(error_body(str(exc), "timeout", 504))
    logging.getLogger("bitnet.server").exception("stream %s failed", request.state.request_id)
    return "error", json.dumps(error_body(f"{type(exc).__name__}: {exc}", "server_error", 500))


def _choice_sampling(sampling: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The settings of each of n choices: with a seed, choice i uses seed + i."""
    seed = sampling.get("seed")
    return [{**sampling, "seed": None if seed is None else seed + i} for i in range(n)]


def _count_tokens(metrics: Metrics, result: GenerationResult) -> None:
    metrics.prompt_tokens.inc(result.timings.prompt_tokens_evaluated)
    metrics.generated_tokens.inc(result.usage.completion_tokens)


def _usage(*results: GenerationResult) -> dict[str, int]:
    """Usage of one result, or of the choices of one request (one prompt, every completion)."""
    prompt = results[0].usage.prompt_tokens
    completion = sum(r.usage.completion_tokens for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _usage_chunk(rid: str, created: int, model: str, chat: bool, usage: dict[str, int]) -> Any:
    """stream_options.include_usage: OpenAI's last chunk, with no choices."""
    out = _chunk(rid, created, model, None, chat, usage=usage)
    out["choices"] = []
    return out


def _full_response(
    rid: str,
    created: int,
    model: str,
    results: list[GenerationResult],
    body: _Sampling,
    chat: bool,
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [_Choice(body, chat, i).full(r) for i, r in enumerate(results)],
        "usage": _usage(*results),
    }


def _chunk(
    rid: str,
    created: int,
    model: str,
    choice: dict[str, Any] | None,
    chat: bool,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [] if choice is None else [choice],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def _finish(result: GenerationResult) -> str:
    # OpenAI knows "stop" and "length"; an aborted generation ended early, like a stop.
    return "length" if result.finish_reason == "length" else "stop"


class _Choice:
    """One choice of a response: the choice objects of its stream's chunks as its pieces come
    (text or tool calls, with their logprobs), or the whole choice from its result."""

    def __init__(self, body: _Sampling, chat: bool, index: int = 0) -> None:
        self.chat, self.index = chat, index
        requested = getattr(body, "logprobs", None)  # chat: a bool; completions: a count
        self.logprobs = requested is not None and requested is not False
        self.tool_mode = body.tool_mode
        self.held = ""  # tool mode: text not yet known to be plain text or calls
        self.mode: str | None = None if self.tool_mode else "text"
        self.calls = 0
        self.entries: list[TokenLogprob] = []  # logprobs not yet sent
        self.offsets = _TextOffsets()  # completions: where each token's text starts

    # -- the stream

    def start(self) -> list[dict[str, Any]]:
        return [self._delta({"role": "assistant", "content": ""})] if self.chat else []

    def piece(self, piece: str) -> list[dict[str, Any]]:
        self.entries += getattr(piece, "logprobs", None) or ()
        if not self.chat:
            return [self._text(piece)]
        if self.mode == "text":
            return [self._delta({"content": piece})]
        self.held += piece
        return self._read_held(final=False)

    def end(self, result: GenerationResult) -> list[dict[str, Any]]:
        """The last chunks' choices; the last one says why it finished."""
        out: list[dict[str, Any]] = []
        if self.chat:
            out = self._read_held(final=True)
            if self.held:  # calls cut short: what was generated is not lost
                out.append(self._delta({"content": self.held}))
                self.held = ""
        finish = _finish(result)
        if self.mode == "calls" and finish == "stop":
            finish = "tool_calls"
        last = self._delta({}) if self.chat else self._text("")
        last["finish_reason"] = finish
        return [*out, last]

    def _read_held(self, final: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.mode is None:
            start = self.held.lstrip()
            if start.startswith(CALL_OPEN):
                self.mode = "calls"
            elif final or not CALL_OPEN.startswith(start):
                self.mode, text, self.held = "text", self.held, ""
                return [self._delta({"content": text})] if text else []
        if self.mode == "calls":
            while (end := self.held.find(CALL_CLOSE)) >= 0:
                cut = end + len(CALL_CLOSE)
                block, self.held = self.held[:cut], self.held[cut:]
                for call in parse_tool_calls(block) or []:
                    tool_call = {"index": self.calls, **call.to_openai()}
                    out.append(self._delta({"tool_calls": [tool_call]}))
                    self.calls += 1
            if self.held.strip() == "":
                self.held = "" if final else self.held
        return out

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        logprobs = None
        if self.logprobs:
            logprobs = {"content": [_chat_logprob(e) for e in self.entries], "refusal": None}
            self.entries = []
        return {"index": self.index, "delta": delta, "finish_reason": None, "logprobs": logprobs}

    def _text(self, text: str) -> dict[str, Any]:
        logprobs = None
        if self.logprobs:
            logprobs = _completion_logprobs(self.entries, self.offsets)
            self.entries = []
        return {"index": self.index, "text": text, "finish_reason": None, "logprobs": logprobs}

    # -- a whole response

    def full(self, result: GenerationResult) -> dict[str, Any]:
        finish = _finish(result)
        entries = list(result.logprobs or ())
        if not self.chat:
            return {
                "index": self.index,
                "text": result.text,
                "finish_reason": finish,
                "logprobs": _completion_logprobs(entries, _TextOffsets())
                if self.logprobs
                else None,
            }
        message: dict[str, Any] = {"role": "assistant", "content": result.text}
        calls = parse_tool_calls(result.text) if self.tool_mode else None
        if calls:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [c.to_openai() for c in calls],
            }
            finish = "tool_calls" if finish == "stop" else finish
        logprobs = None
        if self.logprobs:
            logprobs = {"content": [_chat_logprob(e) for e in entries], "refusal": None}
        return {
            "index": self.index,
            "message": message,
            "finish_reason": finish,
            "logprobs": logprobs,
        }


def _chat_logprob(entry: TokenLogprob) -> dict[str, Any]:
    """A token of chat's ``logprobs.content``."""
    return {
        "token": entry.text,
        "logprob": entry.logprob,
        "bytes": list(entry.bytes),
        "top_logprobs": [
            {"token": t.text, "logprob": t.logprob, "bytes": list(t.bytes)} for t in entry.top
        ],
    }


class _TextOffsets:
    """Where each token's text starts, in characters of the generated text: its bytes decoded
    as the stream decodes them (a character split between tokens counts where it ends)."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.chars = 0

    def add(self, data: bytes) -> int:
        """The offset of a token with these bytes, which then count as text before the next."""
        start = self.chars
        self.chars += len(self.decoder.decode(data))
        return start


def _completion_logprobs(entries: list[TokenLogprob], offsets: _TextOffsets) -> dict[str, Any]:
    """The legacy completions' ``logprobs`` of these tokens (the next ones of the text)."""
    return {
        "tokens": [e.text for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.text: t.logprob for t in e.top} for e in entries],
        "text_offset": [offsets.add(e.bytes) for e in entries],
    }
