"""The telemetry stream: numbering, kept records, subscribers across threads, the JSON-lines
sink and its reader; and the server's /telemetry routes on a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from bitnet import events
from bitnet.telemetry import TELEMETRY_SCHEMA, TelemetryHub, read_telemetry
from bitnet.testing.server import ServerProcess


def test_hub_numbers_keeps_and_writes(tmp_path: Path):
    sink = tmp_path / "t.jsonl"
    with TelemetryHub(capacity=3, sink=sink) as hub:
        for i in range(5):
            events.emit("unit", outcome="ok" if i % 2 == 0 else "error", n=i)
        logging_record = {"event": "not-through-logging"}
        hub.publish(logging_record)
    assert hub.last_seq == 6
    assert [r["seq"] for r in hub.since(0)] == [4, 5, 6]  # capacity 3
    assert [r["seq"] for r in hub.since(4)] == [5, 6]
    assert hub.since(0, limit=1)[0]["seq"] == 6
    lines = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert all(r["schema"] == TELEMETRY_SCHEMA for r in lines)
    assert lines[1]["outcome"] == "error" and lines[1]["n"] == 1 and lines[1]["event"] == "unit"
    # Detached: later events are not recorded.
    events.emit("unit", outcome="ok")
    assert hub.last_seq == 6
    assert list(read_telemetry(sink)) == lines


def test_subscribers_get_events_from_other_threads():
    async def main() -> list[int]:
        with TelemetryHub() as hub:
            queue = hub.subscribe()
            threads = [
                threading.Thread(target=events.emit, args=("worker",), kwargs={"outcome": "ok"})
                for _ in range(8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            got = [(await asyncio.wait_for(queue.get(), 5))["seq"] for _ in range(8)]
            hub.unsubscribe(queue)
            assert hub.subscribers == 0
            return got

    assert sorted(asyncio.run(main())) == list(range(1, 9))


def test_a_full_subscriber_queue_drops_and_counts():
    async def main() -> tuple[int, int]:
        with TelemetryHub() as hub:
            queue = hub.subscribe(maxsize=2)
            for _ in range(5):
                events.emit("burst", outcome="ok")
            await asyncio.sleep(0.05)
            return queue.qsize(), hub.dropped

    assert asyncio.run(main()) == (2, 3)


def test_read_telemetry_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="--telemetry-file"):
        list(read_telemetry(tmp_path / "none.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"event": "a", "seq": 1}\nnot json\n{"event": "b"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON line"):
        list(read_telemetry(bad))
    cut = tmp_path / "cut.jsonl"
    cut.write_text('{"event": "a", "seq": 1}\n{"event": "b", "se')  # killed mid-line
    assert [r["event"] for r in read_telemetry(cut)] == ["a"]
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"level": "info"}\n')
    with pytest.raises(ValueError, match="not a bitnet event"):
        list(read_telemetry(foreign))
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        list(read_telemetry(binary))
    with pytest.raises(ValueError, match="cannot write the telemetry file"):
        TelemetryHub(sink=tmp_path / "no-such-dir" / "t.jsonl")


@pytest.mark.slow
def test_server_telemetry_routes(tiny_relu2, tmp_path: Path):
    """Lifecycle events, supervisor failures, the SSE stream and the stats document, on a real
    server with an API key, and the same records in its --telemetry-file."""
    sink = tmp_path / "server.jsonl"
    srv = ServerProcess(
        tiny_relu2,
        "-t",
        "1",
        "--parallel",
        "2",
        "--api-key",
        "k",
        "--timeout",
        "5",
        "--telemetry-file",
        str(sink),
        "--telemetry-interval",
        "0.2",
    )
    auth = {"Authorization": "Bearer k"}
    try:
        assert httpx.get(srv.url + "/telemetry/stats").status_code == 401
        assert httpx.get(srv.url + "/telemetry/events?follow=false").status_code == 401
        streamed: list[dict] = []
        listening = threading.Event()

        def listen() -> None:
            with httpx.stream(
                "GET", srv.url + "/telemetry/events?since=0", headers=auth, timeout=20
            ) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                listening.set()
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        streamed.append(json.loads(line[5:]))
                    if any(e["event"] == "supervisor_failures" for e in streamed):
                        return

        reader = threading.Thread(target=listen)
        reader.start()
        assert listening.wait(10)
        ok = httpx.post(
            srv.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 4}, headers=auth
        )
        assert ok.status_code == 200
        # A token id outside the vocabulary fails inside the supervisor (kind error:ValueError).
        bad_token = httpx.post(
            srv.url + "/v1/completions", json={"prompt": [99999], "max_tokens": 1}, headers=auth
        )
        assert bad_token.status_code == 400 and "outside the vocabulary" in bad_token.text
        reader.join(20)
        assert not reader.is_alive()
        names = [e["event"] for e in streamed]
        for name in ("server_start", "model_load", "server_ready", "supervised_generation"):
            assert name in names
        assert [e["seq"] for e in streamed] == sorted(e["seq"] for e in streamed)
        summary = next(e for e in streamed if e["event"] == "supervisor_failures")["summary"]
        assert summary["total"] == 1 and summary["by_kind"] == {"error:ValueError": 1}
        assert summary["last"]["kind"] == "ValueError"
        ok_gen = next(
            e for e in streamed if e["event"] == "supervised_generation" and e["outcome"] == "ok"
        )
        assert ok_gen["completion_tokens"] == 4 and ok_gen["prompt_tokens"] > 0

        stats = httpx.get(srv.url + "/telemetry/stats?since=0", headers=auth).json()
        assert stats["schema"] == "bitnet.telemetry.stats/1"
        assert stats["server"]["status"] == "ready" and stats["server"]["parallel"] == 2
        assert stats["supervisor"]["outcomes"] == {"ok": 1, "error:ValueError": 1}
        assert stats["failures"]["by_kind"] == {"error:ValueError": 1}
        assert stats["tokens"]["generated"] == 4 and stats["requests"]["completions"]["ok"] == 1
        assert stats["telemetry"]["last_seq"] == stats["events"][-1]["seq"]
        listed = httpx.get(srv.url + "/telemetry/events?follow=false&since=2", headers=auth).json()
        assert listed[0]["seq"] == 3 and listed == stats["events"][2 : 2 + len(listed)]
        # A stream with a timeout ends by itself, after replaying what was asked for.
        t0 = time.monotonic()
        ended = httpx.get(srv.url + "/telemetry/events?since=0&timeout=0.3", headers=auth)
        assert ended.status_code == 200 and time.monotonic() - t0 < 5
        ids = [int(line[3:]) for line in ended.text.splitlines() if line.startswith("id:")]
        assert ids[:3] == [1, 2, 3]
        bad = httpx.get(srv.url + "/telemetry/events?since=-1", headers=auth)
        assert bad.status_code == 422
    finally:
        assert srv.stop() == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "server_stop" not in sink.read_text():
        time.sleep(0.05)
    recorded = list(read_telemetry(sink))
    assert [r["event"] for r in recorded][-3:] == [
        "server_drain",
        "supervisor_failures",
        "server_stop",
    ]
    assert [r["seq"] for r in recorded] == list(range(1, len(recorded) + 1))


def test_serve_refuses_an_unwritable_telemetry_file(tiny_relu2, tmp_path: Path, capsys):
    from bitnet.cli import main
    from bitnet.testing.server import _free_port

    where = tmp_path / "no-such-dir" / "t.jsonl"
    args = ["serve", "-m", str(tiny_relu2), "--port", str(_free_port())]
    assert main([*args, "--telemetry-file", str(where)]) == 2
    assert "cannot write the telemetry file" in capsys.readouterr().err
    assert main(["serve", "-m", str(tiny_relu2), "--telemetry-interval", "0"]) == 2
    assert "--telemetry-interval must be" in capsys.readouterr().err
