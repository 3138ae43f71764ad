"""Snapshots and their drift, and the dashboard driven headless (Textual's pilot) against a real
server on loopback, a recorded telemetry file and two real snapshots; one run in a real
terminal (tmux), read from the screen as a person would."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bitnet.cli import main
from bitnet.dashboard import DashboardApp, LiveSource, ReplaySource, period_summary, release_rows
from bitnet.snapshot import compare_snapshots, load_snapshot, take_snapshot
from bitnet.telemetry import read_telemetry
from bitnet.testing import generate_model
from bitnet.testing.server import ServerProcess

SIZE = (160, 48)


def cells(table: Any) -> list[list[str]]:
    """A DataTable's rows as plain text (what a person reads)."""
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def text(app: DashboardApp, selector: str) -> str:
    return str(app.query_one(selector).content)


# -- snapshots --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_snapshots(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A reference device and the same device after drift: one model's bytes changed, one model
    gone, and another bitnet version (the second snapshot as another build would write it)."""
    root = tmp_path_factory.mktemp("fleet")
    models = root / "models"
    models.mkdir()
    generate_model(models / "chat.gguf", seed=1)
    (models / "sub").mkdir()
    generate_model(models / "sub" / "code.gguf", seed=2)
    cache = root / "cache"
    cache.mkdir()
    (cache / "bootstrap-state.json").write_text(
        json.dumps(
            {
                "schema": "bitnet.bootstrap/1",
                "stages": {"verify": {"outputs": {"sha256": "a" * 64}, "finished_at": "x"}},
            }
        )
    )
    before = root / "before.json"
    assert (
        main(["snapshot", "--model", str(models), "--cache-dir", str(cache), "-o", str(before)])
        == 0
    )
    data = bytearray((models / "chat.gguf").read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor: same size, other bytes
    (models / "chat.gguf").write_bytes(bytes(data))
    (models / "sub" / "code.gguf").unlink()
    after = root / "after.json"
    import os

    os.environ["BITNET_FLEET_ROLE"] = "canary"  # a setting that changed on the device
    try:
        snap = take_snapshot([models], cache_dir=cache)
    finally:
        del os.environ["BITNET_FLEET_ROLE"]
    snap["versions"]["bitnet"] = "9.9.9"
    after.write_text(json.dumps(snap))
    return before, after, models


def test_snapshot_contents(two_snapshots):
    before, after, models = two_snapshots
    snap = load_snapshot(before)
    assert snap["schema"] == "bitnet.snapshot/1"
    assert [m["name"] for m in snap["models"]] == ["chat.gguf", "sub/code.gguf"]
    import hashlib

    chat = snap["models"][0]
    assert chat["size_bytes"] > 0 and len(chat["sha256"]) == 64
    assert snap["versions"]["llama_cpp"].startswith("llama-cpp-python==")
    assert snap["bootstrap"]["state"]["stages"]["verify"]["outputs"]["sha256"] == "a" * 64
    assert snap["diagnostics"]["schema"] == "bitnet.diagnostics/1"
    assert "devices" in snap["accelerators"] and snap["cpu"]["arch"]
    assert snap["metrics"] is None
    # The checksums are the files' (computed here independently): the later snapshot has the
    # changed file's, the earlier one not.
    now = hashlib.sha256((models / "chat.gguf").read_bytes()).hexdigest()
    assert load_snapshot(after)["models"][0]["sha256"] == now != chat["sha256"]


def test_compare_finds_checksum_version_and_missing(two_snapshots):
    before, after, _ = two_snapshots
    drift = compare_snapshots(load_snapshot(before), load_snapshot(after))
    found = {(d.kind, d.key, d.severity) for d in drift}
    assert ("checksum", "chat.gguf", "error") in found
    assert ("missing_model", "sub/code.gguf", "error") in found
    assert ("version", "bitnet", "warning") in found
    assert ("setting", "env.BITNET_FLEET_ROLE", "warning") in found
    assert not any(d.kind == "size" for d in drift)  # same size, other bytes
    assert drift[0].severity == "error"
    assert compare_snapshots(load_snapshot(before), load_snapshot(before)) == []


def test_snapshot_cli_compare(two_snapshots, capsys):
    before, after, _ = two_snapshots
    assert main(["snapshot", "--compare", str(before), str(after)]) == 5
    out = capsys.readouterr().out
    assert "checksum" in out and "chat.gguf" in out and "missing_model" in out and "9.9.9" in out
    assert "2 error" in out
    assert main(["snapshot", "--compare", str(before), str(before), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_snapshot_errors(tmp_path: Path, capsys):
    assert main(["snapshot", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "bitnet snapshot -o" in capsys.readouterr().err
    (tmp_path / "x.json").write_text('{"schema": "bitnet.diagnostics/1"}')
    assert main(["snapshot", "--compare", str(tmp_path / "x.json"), str(tmp_path / "x.json")]) == 2
    assert "is not a bitnet.snapshot/1 document" in capsys.readouterr().err
    assert main(["snapshot", "--model", str(tmp_path / "none.gguf")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_dashboard_offline_shows_the_drift(two_snapshots, tmp_path: Path):
    before, after, _ = two_snapshots

    async def drive() -> None:
        app = DashboardApp(
            "offline", snapshot=load_snapshot(before), compare=load_snapshot(after), theme="release"
        )
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            models = cells(app.query_one("#models"))
            assert [r[0] for r in models] == ["chat.gguf", "sub/code.gguf"]
            assert models[0][3] == "CHECKSUM MISMATCH" and models[1][3] == "MISSING"
            drift = cells(app.query_one("#drift"))
            assert drift[0][:3] == ["error", "checksum", "chat.gguf"]
            assert any(r[1] == "version" and r[4] == "9.9.9" for r in drift)
            facts = text(app, "#facts")
            assert "drift vs" in facts and "2 error, 2 warning" in facts
            assert app.query_one("#release").display  # the release theme shows the table
            app.save_screenshot("offline.svg", str(tmp_path))
            await pilot.press("t")  # next theme: bitnet
            await pilot.pause()
            assert app.theme == "bitnet" and not app.query_one("#release").display

    asyncio.run(drive())
    assert (tmp_path / "offline.svg").read_text().startswith("<svg")


# -- periods ----------------------------------------------------------------------------------


def _ev(t: str, outcome: str = "ok", ms: float = 100.0, tokens: int = 10, **kw: Any) -> dict:
    return {
        "event": "supervised_generation",
        "time": f"2026-12-01T10:00:{t}+00:00",
        "outcome": outcome,
        "duration_ms": ms,
        "completion_tokens": tokens if outcome == "ok" else None,
        **kw,
    }


def test_period_summary_and_release_rows():
    before = [_ev("00", ms=100), _ev("01", ms=300), _ev("02", "timeout", 5000)]
    after = [_ev("10", ms=200), _ev("11", ms=200), _ev("12", ms=200), _ev("13", ms=400)]
    a, b = period_summary(before, 10.0), period_summary(after, 10.0)
    assert (a["requests"], a["failures"], a["errors"], a["tokens"]) == (3, 1, {"timeout": 1}, 20)
    assert a["error_rate"] == round(1 / 3, 4) and a["latency_p50"] == 0.3
    assert (b["requests"], b["failures"], b["tokens"], b["latency_p50"]) == (4, 0, 40, 0.2)
    assert b["requests_per_second"] == 0.4 and b["tokens_per_second"] == 4.0
    rows = {r[0]: r for r in release_rows(a, b)}
    assert rows["failures"][1:] == (1, 0, "-1 (-100.0%)", "better")
    assert rows["latency p50 (s)"][4] == "better" and rows["tokens/s (all requests)"][4] == "better"
    assert rows["errors timeout"][1:] == (1, 0, "-1", "better")
    # Plain generation events count only where no supervised ones exist (bitnet run).
    plain = [{**_ev("00"), "event": "generation"}]
    assert period_summary(plain)["requests"] == 1
    assert period_summary([*plain, _ev("01")])["requests"] == 1


# -- a real server: live and replayed -----------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_relu2):
    srv = ServerProcess(tiny_relu2, "-t", "1", "--parallel", "2", "--api-key", "k")
    yield srv
    srv.stop()


def _traffic(url: str) -> None:
    auth = {"Authorization": "Bearer k"}
    for _ in range(3):
        r = httpx.post(
            url + "/v1/completions", json={"prompt": "hi", "max_tokens": 5}, headers=auth
        )
        assert r.status_code == 200
    r = httpx.post(url + "/v1/completions", json={"prompt": [99999], "max_tokens": 1}, headers=auth)
    assert r.status_code == 400


@contextlib.contextmanager
def _foreign_server() -> Any:
    """A web server that is not bitnet: HTML at every path but /404/..., which is a 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 404 if self.path.startswith("/404") else 200
            body = b"<html>hello</html>"
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_dashboard_live_against_a_server(served, tmp_path: Path):
    srv = served

    async def drive() -> None:
        source = LiveSource(srv.url, "k")
        app = DashboardApp("live", source=source, refresh_seconds=0.2, theme="release", period=30)
        async with app.run_test(size=SIZE) as pilot:
            while app.frame is None:
                await pilot.pause(0.05)
            assert app.frame.status == "ready"
            assert text(app, "#status").startswith("READY")
            assert text(app, "#slots") == "0 busy of 2"
            assert text(app, "#queue") == "0 waiting of 16"
            await asyncio.to_thread(_traffic, srv.url)
            seen = app.refreshes
            while app.refreshes < seen + 2:  # two refreshes after the traffic: rates too
                await pilot.pause(0.05)
            frame = app.frame
            assert frame.totals["requests"] >= 4 and frame.totals["failures"] >= 1
            assert frame.errors.get("error:ValueError", 0) >= 1
            assert [r[0] for r in cells(app.query_one("#errors"))][:1] == ["error:ValueError"]
            events = [r[2] for r in cells(app.query_one("#events"))]
            assert "supervised_generation" in events and "server_ready" in events
            failures = cells(app.query_one("#failures"))
            assert failures and failures[0][1:3] == ["error", "ValueError"]
            release = {r[0]: r for r in cells(app.query_one("#release"))}
            assert int(release["requests"][2]) >= 4  # the current period
            assert text(app, "#latency").count(" s") == 2
            app.save_screenshot("live.svg", str(tmp_path))
        source.close()
        # Without the key: the dashboard says what to do.
        anon = LiveSource(srv.url)
        assert anon.poll().status == "unauthorized"
        anon.close()
        # Something else at the address: a clear status, not a crash.
        with _foreign_server() as url:
            for path, reason in (
                ("/404", "is this the URL of a bitnet serve"),
                ("", "not a bitnet server"),
            ):
                foreign = LiveSource(url + path)
                frame = foreign.poll()
                assert frame.status == "error" and reason in (frame.reason or ""), frame.reason
                foreign.close()
        gone = LiveSource("http://127.0.0.1:9")
        assert gone.poll().status == "unreachable"
        gone.close()

    asyncio.run(drive())


@pytest.mark.slow
def test_live_source_follows_a_server_restart(tiny_relu2):
    """A restarted server numbers its records from 1 again: the dashboard notices and reads
    the new server's records instead of waiting for the old numbers to come back."""
    first = ServerProcess(tiny_relu2, "-t", "1", "--api-key", "k")
    source = LiveSource(first.url, "k")
    try:
        _traffic(first.url)
        before = source.poll()
        assert before.totals["requests"] == 4 and source._seq >= 6
    finally:
        first.stop()
    second = ServerProcess(tiny_relu2, "-t", "1", "--api-key", "k")
    try:
        source._client.base_url = httpx.URL(second.url)  # the same address, a new process
        after = source.poll()
        assert source.restarts == 1 and after.status == "ready"
        assert after.totals["requests"] == 0 and after.request_rate is None
        seqs = [e["seq"] for e in after.events if e.get("event") == "server_start"]
        assert seqs[-1] == 1  # the new server's records arrived
    finally:
        source.close()
        second.stop()


@pytest.mark.slow
def test_dashboard_replays_the_servers_telemetry(tiny_relu2, tmp_path: Path):
    sink = tmp_path / "t.jsonl"
    srv = ServerProcess(tiny_relu2, "-t", "1", "--api-key", "k", "--telemetry-file", str(sink))
    _traffic(srv.url)
    assert srv.stop() == 0
    deadline = time.monotonic() + 5
    while "server_stop" not in sink.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    records = list(read_telemetry(sink))

    async def drive() -> None:
        source = ReplaySource(sink)
        app = DashboardApp("replay", source=source, theme="release", period=None)
        async with app.run_test(size=SIZE) as pilot:
            while app.frame is None:
                await pilot.pause(0.05)
            assert text(app, "#status").startswith("STOPPED")
            assert app.frame.totals == {"requests": 4, "failures": 1, "generated_tokens": 15}
            assert cells(app.query_one("#errors")) == [["error:ValueError", "1"]]
            shown = [int(r[0]) for r in cells(app.query_one("#events"))]
            assert shown == [r["seq"] for r in reversed(records)]
            assert [r[1] for r in cells(app.query_one("#failures"))] == ["error"]
            release = {r[0]: r for r in cells(app.query_one("#release"))}
            assert int(release["requests"][1]) + int(release["requests"][2]) == 4
        # Midway through the recording: the server had started but nothing was served yet.
        ready = next(r for r in records if r["event"] == "server_ready")
        from bitnet.dashboard.sources import event_time

        early = source.frame_at(event_time(ready))
        assert early.status == "ready" and early.totals["requests"] == 0

    asyncio.run(drive())


@pytest.mark.slow
def test_dashboard_in_a_real_terminal(two_snapshots, tmp_path: Path):
    """`bitnet dashboard --offline` in tmux: the screen a person sees, then q quits."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("needs tmux (Debian: apt-get install tmux)")
    before, after, _ = two_snapshots
    session = f"bitnet-dash-{time.monotonic_ns()}"
    done = tmp_path / "exit-code"
    command = (
        f"{sys.executable} -m bitnet dashboard --offline {before} --compare {after}; "
        f"echo $? > {done}"
    )
    env = {"TERM": "xterm-256color"}
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "48", command],
        check=True,
        env={**__import__("os").environ, **env},
    )
    try:
        screen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if "CHECKSUM MISMATCH" in screen:
                break
            time.sleep(0.2)
        assert "CHECKSUM MISMATCH" in screen, screen
        assert "MISSING" in screen and "drift vs" in screen and "sub/code.gguf" in screen
        subprocess.run([tmux, "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert done.read_text().strip() == "0"
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)


def test_dashboard_cli_refuses_bad_arguments(tmp_path: Path, capsys):
    assert main(["dashboard"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main(["dashboard", "--compare", "x.json", "http://127.0.0.1:1"]) == 2
    assert "--compare needs --offline" in capsys.readouterr().err
    assert main(["dashboard", "localhost:8080"]) == 2
    assert "http://" in capsys.readouterr().err
    assert main(["dashboard", "--replay", str(tmp_path / "none.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    keyfile = tmp_path / "keys"
    keyfile.write_text("# no keys yet\n")
    assert main(["dashboard", "http://127.0.0.1:1", "--api-key-file", str(keyfile)]) == 2
    assert "has no key in it" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["dashboard", "--replay", str(empty)]) == 2
    assert "no telemetry records" in capsys.readouterr().err
