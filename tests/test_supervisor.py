"""RuntimeSupervisor on the real engine: limits, queue, deadlines, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from bitnet.runtime import BitNetRuntime
from bitnet.runtime.supervisor import (
    DeadlineExceededError,
    QueueFullError,
    RuntimeSupervisor,
    SupervisorClosedError,
)

LONG = "the cat sat on the mat " * 350  # ~2800 tokens: long enough to be interrupted


@pytest.fixture
def runtime(tiny_relu2):
    return BitNetRuntime(tiny_relu2, threads=1, n_ctx=4096, n_batch=32)


async def wait_idle(sup: RuntimeSupervisor, limit: float) -> float:
    t0 = time.perf_counter()
    while sup.in_flight and time.perf_counter() - t0 < limit:
        await asyncio.sleep(0.002)
    return time.perf_counter() - t0


def test_generate_and_stream_agree(runtime):
    async def main():
        async with RuntimeSupervisor(runtime) as sup:
            result = await sup.generate("Hello", max_tokens=10, temperature=0)
            pieces = [p async for p in sup.stream("Hello", max_tokens=10, temperature=0)]
            assert "".join(pieces) == result.text
            await wait_idle(sup, limit=2.0)  # the worker thread hands the slot back just after
            stats = sup.stats()
            assert stats["outcomes"] == {"ok": 2}
            assert stats["latency_seconds"]["count"] == 2 and stats["in_flight"] == 0

    asyncio.run(main())


def test_concurrency_limit_holds_under_a_burst(runtime):
    async def main():
        async with RuntimeSupervisor(runtime, max_concurrency=2, max_queue=20) as sup:
            peak = 0

            async def watch():
                nonlocal peak
                while True:
                    peak = max(peak, sup.in_flight)
                    await asyncio.sleep(0.001)

            watcher = asyncio.create_task(watch())
            # Generations long enough (~10 ms each) that two running at once are seen by a
            # watcher polling every millisecond: 6 tokens took ~1 ms and the peak read 1 now and
            # then.
            results = await asyncio.gather(
                *(sup.generate(f"Hello {i}", max_tokens=64, temperature=0) for i in range(10))
            )
            watcher.cancel()
            assert len(results) == 10 and peak == 2
            assert sup.stats()["outcomes"] == {"ok": 10}

    asyncio.run(main())


def test_full_queue_rejects_at_once(runtime):
    async def main():
        async with RuntimeSupervisor(runtime, max_concurrency=1, max_queue=2) as sup:
            tasks = [asyncio.create_task(sup.generate(LONG, max_tokens=2)) for _ in range(6)]
            await asyncio.sleep(0)
            t0 = time.perf_counter()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            kinds = [type(r).__name__ for r in results]
            assert kinds.count("QueueFullError") == 3, kinds
            assert kinds.count("GenerationResult") == 3, kinds
            rejected = [r for r in results if isinstance(r, QueueFullError)]
            assert "max_queue=2" in str(rejected[0])
            assert time.perf_counter() - t0 > 0  # rejections did not wait for the others
            assert sup.stats()["outcomes"]["rejected"] == 3

    asyncio.run(main())


def test_deadline_stops_a_long_prompt_and_frees_the_slot(runtime):
    async def main():
        async with RuntimeSupervisor(runtime, max_concurrency=1) as sup:
            t0 = time.perf_counter()
            full = await sup.generate(LONG, max_tokens=1)
            full_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            with pytest.raises(DeadlineExceededError, match="deadline"):
                await sup.generate("x " + LONG, max_tokens=1, timeout=full_s / 5)
            raised = time.perf_counter() - t0
            freed = await wait_idle(sup, limit=full_s)
            assert raised < full_s / 5 + 0.5
            assert freed < full_s / 2  # the native work stopped long before it would have ended
            stats = sup.stats()
            assert stats["outcomes"]["timeout"] == 1 and stats["in_flight"] == 0
            assert stats["recent_failures"][-1]["kind"] == "DeadlineExceededError"
            # The slot works again.
            assert (await sup.generate("Hi", max_tokens=2, temperature=0)).usage.completion_tokens
            assert full.finish_reason in ("stop", "length")

    asyncio.run(main())


def test_cancelling_the_task_cancels_the_generation(runtime):
    async def main():
        async with RuntimeSupervisor(runtime) as sup:
            task = asyncio.create_task(sup.generate(LONG, max_tokens=5))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await wait_idle(sup, limit=5.0) < 2.0
            assert sup.stats()["outcomes"]["cancelled"] == 1

    asyncio.run(main())


def test_leaving_a_stream_early_cancels_it(runtime):
    async def main():
        async with RuntimeSupervisor(runtime) as sup:
            async with contextlib.aclosing(sup.stream("Hello", max_tokens=200, temperature=0)) as s:
                async for _piece in s:
                    break
            assert await wait_idle(sup, limit=5.0) < 2.0
            assert sup.stats()["outcomes"] == {"cancelled": 1}

    asyncio.run(main())


def test_bad_arguments_release_the_slot(runtime):
    async def main():
        async with RuntimeSupervisor(runtime) as sup:
            with pytest.raises(ValueError, match="temperature"):
                await sup.generate("Hi", temperature=-1)
            assert (await sup.generate("Hi", max_tokens=1)).usage.prompt_tokens > 0
            assert sup.stats()["outcomes"] == {"error:ValueError": 1, "ok": 1}

    asyncio.run(main())


def test_shutdown_drains_then_cancels(runtime):
    async def main():
        sup = await RuntimeSupervisor(runtime, max_concurrency=1, max_queue=4).start()
        short = asyncio.create_task(sup.generate("Hello", max_tokens=4))
        await asyncio.sleep(0)
        await sup.shutdown(grace=30)  # finishes the short request
        assert (await short).usage.completion_tokens >= 1
        assert sup.state == "closed"
        with pytest.raises(SupervisorClosedError):
            await sup.generate("Hi")

        sup = await RuntimeSupervisor(runtime, max_concurrency=1, max_queue=4).start()
        long = asyncio.create_task(sup.generate(LONG, max_tokens=500))
        queued = asyncio.create_task(sup.generate("Hello", max_tokens=4))
        await asyncio.sleep(0.05)
        assert sup.queued == 1
        t0 = time.perf_counter()
        await sup.shutdown(grace=0.05)  # too short: the running request is cancelled
        assert time.perf_counter() - t0 < 2.0
        assert (await long).finish_reason == "abort"
        with pytest.raises(SupervisorClosedError, match=r"draining|closed"):
            await queued  # never started: refused

    asyncio.run(main())


def test_supervisor_argument_errors(runtime):
    with pytest.raises(ValueError, match="max_concurrency"):
        RuntimeSupervisor(runtime, max_concurrency=0)
    with pytest.raises(ValueError, match="max_concurrency must be an integer from 1 to 256"):
        RuntimeSupervisor(runtime, max_concurrency=257)
    with pytest.raises(ValueError, match="max_queue"):
        RuntimeSupervisor(runtime, max_queue=-1)
    with pytest.raises(ValueError, match="timeout"):
        RuntimeSupervisor(runtime, timeout=0)


def test_queue_bound_holds_for_a_burst_in_one_loop_turn(runtime):
    """12 requests created in the same event-loop turn: 2 run, 2 wait, 8 are refused."""

    async def main():
        async with RuntimeSupervisor(runtime, max_concurrency=2, max_queue=2) as sup:
            results = await asyncio.gather(
                *(sup.generate(LONG, max_tokens=1, temperature=0) for _ in range(12)),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, QueueFullError)]
            done = [r for r in results if not isinstance(r, BaseException)]
            assert (len(done), len(refused)) == (4, 8), results
            assert sup.stats()["outcomes"]["rejected"] == 8

    asyncio.run(main())


def test_a_slot_freed_while_others_wait_goes_to_the_first_waiter(runtime):
    async def main():
        async with RuntimeSupervisor(runtime, max_concurrency=1, max_queue=3) as sup:
            order: list[int] = []

            async def one(i: int) -> None:
                await sup.generate("Hello", max_tokens=2, temperature=0)
                order.append(i)

            await asyncio.gather(*(one(i) for i in range(4)))
            assert order == [0, 1, 2, 3]
            assert sup.queued == 0

    asyncio.run(main())


def test_a_waiter_that_times_out_leaves_the_queue(runtime):
    async def main():
        async with RuntimeSupervisor(runtime, max_concurrency=1, max_queue=1) as sup:
            long = asyncio.create_task(sup.generate(LONG, max_tokens=200, temperature=0))
            await asyncio.sleep(0.05)
            with pytest.raises(DeadlineExceededError, match="waited for a slot"):
                await sup.generate("Hello", max_tokens=1, timeout=0.05)
            assert sup.queued == 0
            # The place it left is free again: another request may wait.
            waiting = asyncio.create_task(sup.generate("Hello", max_tokens=1, temperature=0))
            await asyncio.sleep(0.01)
            assert sup.queued == 1
            long.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await long
            assert (await waiting).finish_reason in ("stop", "length")

    asyncio.run(main())


def test_closing_a_stream_after_its_result_counts_as_ok(runtime):
    """What the HTTP server does: read up to the result, then close the stream."""

    async def main():
        async with RuntimeSupervisor(runtime) as sup:
            items = sup.stream_with_result("Hello", max_tokens=3, temperature=0)
            async for item in items:
                if not isinstance(item, str):
                    break
            await items.aclose()
            await wait_idle(sup, limit=2.0)
            assert sup.stats()["outcomes"] == {"ok": 1}

    asyncio.run(main())


def test_slots_are_sequences_of_one_model_on_every_core(tiny_relu2):
    from bitnet.cpu import CpuTopology

    topology = CpuTopology(
        logical_cpus=8, available_cpus=8, physical_cores=4, cgroup_cpu_limit=None
    )
    # The one model decodes every slot's sequence together: all cores, n_seq = slots.
    sup = RuntimeSupervisor(tiny_relu2, max_concurrency=3, topology=topology)
    assert (sup.runtime.threads, sup.runtime.threads_batch, sup.runtime.n_seq) == (4, 4, 3)
    runtime = BitNetRuntime(tiny_relu2, topology=topology)
    assert RuntimeSupervisor(runtime, max_concurrency=8).runtime.n_seq == 8
    explicit = RuntimeSupervisor(tiny_relu2, max_concurrency=2, threads=4, topology=topology)
    assert explicit.runtime.threads == 4 and not explicit.runtime.warnings
    with pytest.raises(ValueError, match="n_seq=2 is fewer than the 3 generations"):
        RuntimeSupervisor(tiny_relu2, max_concurrency=3, n_seq=2)

    async def main() -> None:
        async with RuntimeSupervisor(tiny_relu2, max_concurrency=3, n_ctx=128) as sup:
            assert sup.model.n_seq == 3
            results = await asyncio.gather(
                *(sup.generate(f"p{i}", max_tokens=6, temperature=0) for i in range(5))
            )
            assert all(r.usage.completion_tokens >= 1 for r in results)
            batching = sup.stats()["batching"]
            assert batching["max_active"] >= 2 and batching["batches"] > 0

    asyncio.run(main())
