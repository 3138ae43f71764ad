"""The real commands, in subprocesses: bitnet run/diagnose/bench and run_inference.py."""

from __future__ import annotations

import json
import os
import re
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


def test_run_structured_output_and_logprobs(tmp_path: Path, tiny_relu2):
    schema = {"type": "object", "properties": {"n": {"enum": [1, 2]}}, "required": ["n"]}
    (tmp_path / "s.json").write_text(json.dumps(schema))
    model = ("-m", str(tiny_relu2), "-t", "1", "--seed", "1")
    proc = bitnet(
        "run", *model, "-p", "x", "-n", "40", "--json-schema", f"@{tmp_path / 's.json'}", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["finish_reason"] == "stop" and json.loads(out["text"])["n"] in (1, 2)
    proc = bitnet("run", *model, "-p", "x", "--grammar", 'root ::= "yes" | "no"')
    assert proc.returncode == 0 and proc.stdout.strip() in ("yes", "no"), proc.stderr
    proc = bitnet("run", *model, "-p", "x", "-n", "3", "--logprobs", "2", "--json")
    entries = json.loads(proc.stdout)["logprobs"]
    assert len(entries) == 3 and all(len(e["top"]) == 2 and e["logprob"] <= 0 for e in entries)
    proc = bitnet("run", *model, "-p", "x", "-n", "3", "--logprobs", "1")
    assert proc.returncode == 0 and "logprob   token" in proc.stderr
    for flags, message in [
        (("--grammar", "root ::= ("), "not valid GBNF"),
        (("--json-schema", '{"type": "number", "minimum": 0}'), "on integers only"),
        (("--json-schema", "@/nonexistent.json"), "cannot read"),
    ]:
        proc = bitnet("run", *model, "-p", "x", *flags)
        assert proc.returncode == 2 and message in proc.stderr, (flags, proc.stderr)


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
        (["-m", "{model}", "-p", "hi", "-t", "0"], 2, "(--threads) must be 'auto' or an integer"),
        (
            ["-m", "{model}", "-p", "hi", "--temperature", "-1"],
            2,
            "temperature (--temperature) must be in",
        ),
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
    for word in ("run", "diagnose", "bench", "generate-model", "exit codes"):
        assert word in proc.stdout
    assert re.search(r"130 +interrupted", proc.stdout)
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "1000000000000"], "top_k (--top-k) must be an integer from 0 to 2147483647"),
        (["-n", "2147483648"], "max_tokens (--n-predict) must be an integer from 0 to 2147483647"),
        (["--repeat-penalty", "inf"], "repeat_penalty (--repeat-penalty) must be a finite number"),
        (["--temperature", "nan"], "temperature (--temperature) must be a finite number"),
        (["--stop", os.fsdecode(b"\xff")], "stop (--stop) is not valid Unicode"),
        (["-p", os.fsdecode(b"caf\xe9")], "--prompt is not valid Unicode: it has a lone surrogate"),
    ],
)
def test_out_of_range_and_undecodable_arguments_exit_2(tiny_relu2, args, message):
    base = ["run", "-m", str(tiny_relu2), "-t", "1"]
    proc = bitnet(*base, *(["-p", "hi"] if "-p" not in args else []), *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_undecodable_prompt_names_the_byte(tiny_relu2):
    proc = bitnet("run", "-m", str(tiny_relu2), "-p", os.fsdecode(b"caf\xe9"))
    assert "the byte 0xE9 of input that was not UTF-8" in proc.stderr


def test_a_conversation_skips_a_line_that_is_not_utf8(tiny_relu2):
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet", "run", "-m", str(tiny_relu2), "--conversation", "-n", "3"],
        input=b"caf\xe9\nHello\n",
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"not UTF-8 text (byte 0xe9 at 3); it was not sent" in proc.stderr
    assert len(proc.stdout.strip(b"\n").split(b"\n")) == 1  # one reply: to "Hello"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "--n-gen must be an integer from 1"),
        (["-r", "0"], "--repeats must be an integer from 1"),
        (["-p", "0"], "--n-prompt must be an integer from 1"),
        (["-t", "0"], "--threads must be an integer from 1 to 512"),
    ],
)
def test_bench_refuses_empty_runs(tiny_relu2, args, message):
    proc = bitnet("bench", "-m", str(tiny_relu2), *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_output_closed_early_stops_quietly_with_141(tiny_relu2):
    args = ["run", "-m", str(tiny_relu2), "-t", "1", "-p", "Hi", "-n", "3000", "--temp", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bitnet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.read(10)  # what `| head -c 10` reads, then it exits
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_dry_run_reports_a_truncated_model(tmp_path: Path, tiny_relu2):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_relu2.read_bytes()[:-4096])
    proc = bitnet("run", "-m", str(cut), "--dry-run")
    assert proc.returncode == 5 and "is truncated" in proc.stdout, (proc.stdout, proc.stderr)


def test_run_checks_the_expected_sha256(tiny_relu2):
    proc = bitnet("run", "-m", str(tiny_relu2), "-p", "hi", "-n", "1", "--sha256", "0" * 64)
    assert proc.returncode == 3 and "sha256 of" in proc.stderr and "expected 000" in proc.stderr


def test_generate_model_does_not_overwrite_without_force(tmp_path: Path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"precious")
    proc = bitnet("generate-model", str(path))
    assert proc.returncode == 2 and "exists; pass --force" in proc.stderr
    assert path.read_bytes() == b"precious"
    assert bitnet("generate-model", str(path), "--force").returncode == 0
    assert path.read_bytes()[:4] == b"GGUF"


def test_ctrl_c_while_the_extension_loads_exits_130_quietly(tiny_relu2):
    code = (
        "import sys, importlib.abc\n"
        "class Interrupt(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'bitnet._core':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from bitnet.cli import main\n"
        f"sys.exit(main(['run', '-m', {str(tiny_relu2)!r}, '-p', 'hi']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 130, proc.stderr
    assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--queue", "-1", "--queue must be an integer from 0"),
        ("--timeout", "-1", "--timeout must be a finite number > 0"),
        ("--max-body-bytes", "-1", "--max-body-bytes must be an integer from 1"),
        ("--grace", "-5", "--grace must be a finite number >= 0"),
        ("--parallel", "0", "--parallel must be an integer from 1"),
        ("--port", "70000", "--port must be an integer from 1 to 65535"),
    ],
)
def test_serve_refuses_bad_settings(tiny_relu2, flag, value, message):
    proc = bitnet("serve", "-m", str(tiny_relu2), flag, value, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_serve_on_a_busy_port_exits_2_before_loading(tiny_relu2):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = bitnet("serve", "-m", str(tiny_relu2), "--port", str(port), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "choose another --port" in proc.stderr and "Traceback" not in proc.stderr
