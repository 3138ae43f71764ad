"""The real commands, in subprocesses: bitnet run/diagnose/bench and run_inference.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bitnet(
    *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bitnet", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_streams_text(tiny_relu2):
    proc = bitnet(
        "run", "-m", str(tiny_relu2), "-p", "Hello", "-n", "8", "--temperature", "0", "-t", "1"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n") and len(proc.stdout) > 1


def test_run_json(tiny_relu2):
    proc = bitnet("run", "-m", str(tiny_relu2), "-p", "Hello", "-n", "5", "--seed", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["finish_reason"] in ("stop", "length") and out["usage"]["completion_tokens"] <= 5
    assert set(out["timings"]) == {
        "prompt_ms",
        "generation_ms",
        "prompt_tokens_per_second",
        "generation_tokens_per_second",
    }


def test_run_inference_dry_run_and_diagnostics(tiny_relu2):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_inference.py"),
            "--model",
            str(tiny_relu2),
            "--prompt",
            "ping",
            "--dry-run",
            "--diagnostics",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "status: ok" in proc.stdout and "command      bitnet run --model" in proc.stdout
    assert "--prompt ping" in proc.stdout


def test_dry_run_json_and_problems(tmp_path: Path, tiny_relu2):
    proc = bitnet("run", "-m", str(tiny_relu2), "--dry-run", "--diagnostics", "--json", "-c", "512")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (
        out["ok"]
        and out["plan"]["n_ctx"] == 512
        and out["diagnostics"]["schema"] == "bitnet.diagnostics/1"
    )
    missing = tmp_path / "missing.gguf"
    proc = bitnet("run", "-m", str(missing), "--dry-run", "--diagnostics", "--json")
    assert proc.returncode == 5
    out = json.loads(proc.stdout)
    assert not out["ok"] and "does not exist" in out["plan"]["error"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-m", "{missing}", "-p", "hi"], 3, "does not exist"),
        (["-m", "{model}", "-p", "hi", "-t", "0"], 2, "threads must be 'auto' or an integer"),
        (["-m", "{model}", "-p", "hi", "--temperature", "-1"], 2, "temperature must be in"),
        (["-m", "{model}", "-p", "hi", "-c", "4"], 2, "must be an integer from 16"),
        (["-m", "{model}"], 2, "--prompt is required"),
    ],
)
def test_run_errors_and_exit_codes(tmp_path: Path, tiny_relu2, args, code, message):
    args = [a.format(missing=tmp_path / "x.gguf", model=tiny_relu2) for a in args]
    proc = bitnet("run", *args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_conversation_from_stdin(tiny_relu2):
    proc = bitnet(
        "run",
        "-m",
        str(tiny_relu2),
        "--conversation",
        "-n",
        "4",
        "--temperature",
        "0",
        stdin="Hi there\n\nHow are you?\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip("\n").split("\n")) == 2  # one reply per message


def test_log_format_json_writes_events(tiny_relu2):
    proc = bitnet("run", "-m", str(tiny_relu2), "-p", "Hi", "-n", "2", "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "model_load" in names and "generation" in names
    generation = next(e for e in events if e["event"] == "generation")
    assert generation["outcome"] == "ok" and generation["params"]["max_tokens"] == 2


def test_diagnose(tiny_relu2):
    proc = bitnet("diagnose", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] is None
    proc = bitnet("diagnose", "-m", str(tiny_relu2), "--sha256", "ab" * 32)
    assert proc.returncode == 5 and "model_checksum" in proc.stdout


def test_bench_json():
    proc = bitnet("bench", "-t", "1", "-p", "16", "-n", "4", "-r", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["rows"][0]
    assert row["threads"] == 1 and row["pp16"] > 0 and row["tg4"] > 0


def test_help_lists_commands_and_exit_codes():
    proc = bitnet("--help")
    for word in ("run", "diagnose", "bench", "generate-model", "exit codes", "130 interrupted"):
        assert word in proc.stdout
    proc = bitnet("run", "--help")
    for flag in (
        "--threads",
        "--ctx-size",
        "--dry-run",
        "--diagnostics",
        "--json",
        "--conversation",
        "--log-format",
        "--n-predict",
        "--seed",
    ):
        assert flag in proc.stdout


def test_ctrl_c_stops_generation_with_exit_130(tmp_path: Path):
    from bitnet.testing import generate_model

    deep = generate_model(tmp_path / "deep.gguf", n_layer=24)  # slow enough to interrupt
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bitnet",
            "run",
            "-m",
            str(deep),
            "-t",
            "1",
            "-p",
            "Hello",
            "-n",
            "3000",
            "--temperature",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.read(1)  # generating
    proc.send_signal(signal.SIGINT)
    t0 = time.perf_counter()
    out, err = proc.communicate(timeout=60)
    assert time.perf_counter() - t0 < 10
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_threads_auto_in_plan(tiny_relu2):
    proc = bitnet("run", "-m", str(tiny_relu2), "--dry-run", "--json")
    plan = json.loads(proc.stdout)["plan"]
    assert 1 <= plan["threads"] <= len(os.sched_getaffinity(0))
