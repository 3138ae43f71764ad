"""RuntimeSupervisor: run generations from asyncio with limits, a bounded queue and deadlines.

One :class:`bitnet.Model` holds ``max_concurrency`` sequences (``n_seq``): its scheduler
decodes every running generation in the same batches, on one thread pool and one copy of the
weights, so concurrent requests share each pass over the weights instead of competing for the
cores. A slot is one of those sequences. Waiting for text happens on worker threads, so the
event loop never blocks. A request waits for a free slot in a bounded queue; a full queue
rejects at once. A deadline or a cancelled awaiting task cancels the native work (also
mid-prompt, without disturbing the other sequences) and the slot comes back as soon as the
scheduler has let the sequence go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .. import events
from ..errors import DeadlineExceededError, QueueFullError, SupervisorClosedError
from ..model import GenerationResult, Model, TextStream
from ..options import MAX_SEQUENCES
from .runtime import BitNetRuntime

__all__ = [
    "DeadlineExceededError",
    "QueueFullError",
    "RuntimeSupervisor",
    "SupervisorClosedError",
]


@dataclass
class _Failure:
    time: float
    outcome: str
    kind: str
    message: str


class RuntimeSupervisor:
    """Serve generations of one model to many asyncio tasks.

    Arguments:
        runtime: a :class:`BitNetRuntime` (or a model path, with ``runtime_options``).
        max_concurrency: generations running at once (sequences of the one model, decoded
            together).
        max_queue: requests that may wait for a slot; one more raises QueueFullError at once.
        timeout: default per-request deadline in seconds (queue wait included); None: none.
        failure_history: how many recent failures ``stats()`` keeps.

    Use ``async with RuntimeSupervisor(...) as sup:`` (or ``await sup.start()`` and
    ``await sup.shutdown()``).
    """

    def __init__(
        self,
        runtime: BitNetRuntime | str,
        *,
        max_concurrency: int = 1,
        max_queue: int = 8,
        timeout: float | None = None,
        failure_history: int = 20,
        **runtime_options: Any,
    ) -> None:
        if (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or not 1 <= max_concurrency <= MAX_SEQUENCES
        ):
            raise ValueError(
                f"max_concurrency must be an integer from 1 to {MAX_SEQUENCES} (sequences of "
                f"one model), got {max_concurrency!r}"
            )
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise ValueError(f"max_queue must be an integer >= 0, got {max_queue!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        # The one model holds a sequence per slot and uses every core for all of them.
        self.runtime = (
            runtime.for_slots(max_concurrency)
            if isinstance(runtime, BitNetRuntime)
            else BitNetRuntime(runtime, slots=max_concurrency, **runtime_options)
        )
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.timeout = timeout
        self._model: Model | None = None
        self._free: list[int] = []  # slot numbers
        # Requests waiting for a slot, first come first served. Admission counts this deque at
        # the moment a request arrives, so the bound holds however many arrive in one
        # event-loop turn.
        self._waiters: collections.deque[asyncio.Future[int]] = collections.deque()
        self._executor: ThreadPoolExecutor | None = None
        self._active: set[TextStream] = set()
        self._idle: asyncio.Event | None = None
        self._state = "new"  # new -> running -> draining -> closed
        self._outcomes: collections.Counter[str] = collections.Counter()
        self._failures: collections.deque[_Failure] = collections.deque(maxlen=failure_history)
        self._latencies: collections.deque[float] = collections.deque(maxlen=1000)
        self._speeds: collections.deque[float] = collections.deque(maxlen=1000)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> RuntimeSupervisor:
        """Load the model (on a worker thread), with a sequence per slot."""
        if self._state != "new":
            raise SupervisorClosedError(f"start() on a supervisor that is {self._state}")
        self._executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="bitnet")
        loop = asyncio.get_running_loop()
        self._model = await loop.run_in_executor(self._executor, self.runtime.load)
        self._free = list(range(self.max_concurrency))
        self._idle = asyncio.Event()
        self._idle.set()
        self._state = "running"
        return self

    async def __aenter__(self) -> RuntimeSupervisor:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def state(self) -> str:
        return self._state

    @property
    def in_flight(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def model(self) -> Model:
        """The loaded model, for tokenizer and chat-template work (generations go through the
        supervisor, which bounds them)."""
        if self._model is None:
            raise SupervisorClosedError(f"the supervisor is {self._state}; no model is loaded")
        return self._model

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop taking requests, let running ones finish for up to ``grace`` seconds, cancel
        the rest, wait for their worker threads to stop, and free the model."""
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        self._state = "draining"
        assert self._idle is not None
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        except asyncio.TimeoutError:
            for stream in list(self._active):
                stream.cancel()
            await self._idle.wait()  # cancelled work stops within one graph node
        self._state = "closed"
        if self._model is not None:
            self._model.close()
            self._model = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # -- requests ---------------------------------------------------------------------------

    async def generate(
        self, prompt: str | Sequence[int], *, timeout: float | None = None, **sampling: Any
    ) -> GenerationResult:
        """Generate to the end; raises QueueFullError, DeadlineExceededError,
        SupervisorClosedError, or what the model raises for bad arguments."""
        result: GenerationResult | None = None
        async with contextlib.aclosing(
            self.stream_with_result(prompt, timeout=timeout, **sampling)
        ) as items:
            async for item in items:
                if isinstance(item, GenerationResult):
                    result = item
        assert result is not None
        return result

    async def stream(
        self, prompt: str | Sequence[int], *, timeout: float | None = None, **sampling: Any
    ) -> AsyncIterator[str]:
        """Yield text pieces as they are generated (same errors as :meth:`generate`).
        Leaving the loop early (closing the stream), or cancelling the task, cancels the
        generation."""
        async with contextlib.aclosing(
            self.stream_with_result(prompt, timeout=timeout, **sampling)
        ) as items:
            async for item in items:
                if isinstance(item, str):
                    yield item

    async def stream_with_result(
        self, prompt: str | Sequence[int], *, timeout: float | None = None, **sampling: Any
    ) -> AsyncIterator[str | GenerationResult]:
        """Like :meth:`stream`, then a last item: the :class:`GenerationResult` (finish reason,
        usage, timings). Close it (``contextlib.aclosing``) when leaving early."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else loop.time() + timeout
        slot = await self._acquire(deadline, t0)
        assert self._model is not None
        try:
            text_stream = self._model.stream(prompt, **sampling)
        except BaseException as exc:
            self._release(slot)
            self._record("error", t0, exc)
            raise
        self._active.add(text_stream)
        assert self._idle is not None
        self._idle.clear()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def work() -> None:
            try:
                for piece in text_stream:
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
                loop.call_soon_threadsafe(queue.put_nowait, ("done", text_stream.result))
            except BaseException as exc:  # handed to the awaiting task
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        worker = loop.run_in_executor(self._executor, work)
        # The slot is free again only once the native work has really stopped.
        worker.add_done_callback(lambda _: self._finish(slot, text_stream))
        outcome, error = "ok", None
        usage: dict[str, Any] = {}  # the event's token counts and speed, once it ended
        ended = False  # the generation ended by itself; closing us afterwards cancels nothing
        try:
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise asyncio.TimeoutError
                kind, value = await asyncio.wait_for(queue.get(), remaining)
                if kind == "piece":
                    yield value
                elif kind == "done":
                    ended = True
                    if value.finish_reason == "abort":
                        outcome = "abort"
                    self._speeds.append(value.timings.generation_tokens_per_second)
                    usage = {
                        "prompt_tokens": value.usage.prompt_tokens,
                        "completion_tokens": value.usage.completion_tokens,
                        "tokens_per_second": round(value.timings.generation_tokens_per_second, 2),
                    }
                    yield value
                    return
                else:
                    outcome, error = "error", value
                    raise value
        except asyncio.TimeoutError:
            text_stream.cancel()
            outcome = "timeout"
            error = DeadlineExceededError(f"the request's deadline of {timeout} s passed")
            raise error from None
        except (asyncio.CancelledError, GeneratorExit):
            if not ended:
                text_stream.cancel()
                outcome = "cancelled"
            raise
        finally:
            text_stream.cancel()  # no-op when it ended by itself
            self._record(outcome, t0, error, **usage)

    # -- slots ------------------------------------------------------------------------------

    async def _acquire(self, deadline: float | None, t0: float) -> int:
        if self._state != "running":
            raise self._refuse_closed(t0)
        if self._free and not self._waiters:
            return self._free.pop()
        if len(self._waiters) >= self.max_queue:
            error = QueueFullError(
                f"all {self.max_concurrency} slots are busy and {len(self._waiters)} requests "
                f"are waiting (max_queue={self.max_queue}); retry later"
            )
            self._record("rejected", t0, error)
            raise error
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiters.append(waiter)
        try:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            slot = await asyncio.wait_for(asyncio.shield(waiter), remaining)
        except asyncio.TimeoutError:
            self._abandon(waiter)
            error = DeadlineExceededError(
                "the request's deadline passed while it waited for a slot"
            )
            self._record("timeout", t0, error)
            raise error from None
        except BaseException:
            self._abandon(waiter)
            raise
        if self._state != "running":
            # Shutdown began while this request waited: it never started, so it is refused.
            self._release(slot)
            raise self._refuse_closed(t0)
        return slot

    def _abandon(self, waiter: asyncio.Future[int]) -> None:
        """A waiter gave up: leave the queue, and pass on a slot it was handed meanwhile."""
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if waiter.done() and not waiter.cancelled():
            self._release(waiter.result())
        else:
            waiter.cancel()

    def _refuse_closed(self, t0: float) -> SupervisorClosedError:
        error = SupervisorClosedError(f"the supervisor is {self._state}; not taking requests")
        self._record("rejected", t0, error)
        return error

    def _release(self, slot: int) -> None:
        """Hand a free slot to the longest-waiting request, else keep it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)

    def _finish(self, slot: int, text_stream: TextStream) -> None:
        self._active.discard(text_stream)
        self._release(slot)
        if not self._active and self._idle is not None:
            self._idle.set()

    # -- statistics -------------------------------------------------------------------------

    def _record(self, outcome: str, t0: float, error: BaseException | None, **fields: Any) -> None:
        key = outcome if outcome != "error" or error is None else f"error:{type(error).__name__}"
        self._outcomes[key] += 1
        duration = time.perf_counter() - t0
        if outcome in ("ok", "abort"):
            self._latencies.append(duration)
        else:
            self._failures.append(
                _Failure(
                    time.time(),
                    outcome,
                    type(error).__name__ if error else "",
                    str(error) if error else "",
                )
            )
        events.emit(
            "supervised_generation",
            outcome=outcome,
            duration_ms=duration * 1000,
            error=error,
            in_flight=len(self._active),
            queued=len(self._waiters),
            **fields,
        )

    @property
    def failures(self) -> int:
        """Requests that ended in a failure (any outcome but ok and abort) since start."""
        return sum(n for key, n in self._outcomes.items() if key not in ("ok", "abort"))

    def failure_summary(self) -> dict[str, Any]:
        """What failed since start: the total, counts by kind (``timeout``, ``rejected``,
        ``cancelled``, ``error:<exception class>``), and the most recent failure."""
        by_kind = {k: n for k, n in sorted(self._outcomes.items()) if k not in ("ok", "abort")}
        last = self._failures[-1] if self._failures else None
        return {
            "total": sum(by_kind.values()),
            "by_kind": by_kind,
            "requests": sum(self._outcomes.values()),
            "last": vars(last) if last else None,
        }

    def stats(self) -> dict[str, Any]:
        """Counts by outcome, recent failures, latency and speed statistics, current load."""
        lat = sorted(self._latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 4) if lat else None

        return {
            "state": self._state,
            "max_concurrency": self.max_concurrency,
            "batching": self._model.batching_stats() if self._model is not None else None,
            "max_queue": self.max_queue,
            "in_flight": len(self._active),
            "queued": len(self._waiters),
            "outcomes": dict(self._outcomes),
            "recent_failures": [vars(f) for f in self._failures],
            "latency_seconds": {
                "count": len(lat),
                "p50": pct(0.5),
                "p95": pct(0.95),
                "max": round(lat[-1], 4) if lat else None,
            },
            "generation_tokens_per_second": {
                "mean": round(statistics.fmean(self._speeds), 2) if self._speeds else None,
                "median": round(statistics.median(self._speeds), 2) if self._speeds else None,
            },
        }
