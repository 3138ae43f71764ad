"""setup_env.py / bitnet setup: every stage offline, reruns, changed inputs, interruption and
resume, --clean, and clear errors when no model can be had."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bitnet.deploy.bootstrap as B
from bitnet.testing import generate_model
from test_hf import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def boot(tmp_path: Path, source: Path, **kw) -> B.Bootstrapper:
    lines: list[str] = []
    b = B.Bootstrapper(
        model_dir=tmp_path / "models",
        cache_dir=tmp_path / "cache",
        source=source,
        echo=lines.append,
        **kw,
    )
    b.lines = lines  # type: ignore[attr-defined]
    return b


def ran(b: B.Bootstrapper) -> list[str]:
    return [line.split("]")[0][1:] for line in b.lines if "] running" in line]  # type: ignore[attr-defined]


def test_all_stages_from_a_checkpoint_folder_then_rerun_skips(tmp_path: Path):
    ckpt = tmp_path / "ckpt"
    write_checkpoint(ckpt, "packed", seed=11)
    b = boot(tmp_path, ckpt)
    state = b.run()
    assert ran(b) == list(B.STAGES)
    stages = state["stages"]
    converted = Path(stages["convert"]["outputs"]["path"])
    assert converted.parent == tmp_path / "models" and converted.name == "ckpt-tq2_0.gguf"
    assert stages["acquire"]["outputs"]["sha256"]["config.json"]
    assert stages["verify"]["outputs"]["architecture"] in ("bitnet-b1.58", "bitnet")
    assert stages["warmup"]["outputs"]["tokens"] > 0
    on_disk = json.loads((tmp_path / "cache" / "bootstrap-state.json").read_text())
    assert on_disk["schema"] == "bitnet.bootstrap/1" and set(on_disk["stages"]) == set(B.STAGES)

    again = boot(tmp_path, ckpt)
    again.run()
    assert ran(again) == []  # nothing redone
    assert all("up to date" in line for line in again.lines)  # type: ignore[attr-defined]


def test_the_head_becomes_q6_k_unless_kept(tmp_path: Path):
    from bitnet.formats.gguf import read_gguf

    source = generate_model(tmp_path / "m.gguf", seed=2)  # an F16 tied embedding/head
    b = boot(tmp_path, source)
    out = Path(b.run()["stages"]["convert"]["outputs"]["path"])
    assert {t.name: t.type for t in read_gguf(out).tensors}["token_embd.weight"] == 14  # Q6_K
    assert any("becomes Q6_K (--head keep keeps it" in line for line in b.lines)  # type: ignore[attr-defined]
    kept = boot(tmp_path / "k", source, head="keep")
    out = Path(kept.run()["stages"]["convert"]["outputs"]["path"])
    assert {t.name: t.type for t in read_gguf(out).tensors}["token_embd.weight"] == 1  # F16
    with pytest.raises(B.BootstrapError, match="--head must be q6_k or keep"):
        boot(tmp_path, source, head="q8_0")


def test_changed_input_redoes_that_stage_and_the_later_ones(tmp_path: Path):
    model = generate_model(tmp_path / "src.gguf", seed=12)
    b = boot(tmp_path, model)
    b.run()
    generate_model(model, seed=13)  # new weights at the same path
    again = boot(tmp_path, model)
    again.run()
    assert ran(again) == ["acquire", "convert", "verify", "warmup"]
    other_type = boot(tmp_path, model, ternary_type="tq1_0")
    other_type.run()
    assert ran(other_type) == ["convert", "verify", "warmup"]


def test_deleted_output_is_rebuilt(tmp_path: Path):
    model = generate_model(tmp_path / "src.gguf", seed=14)
    b = boot(tmp_path, model)
    state = b.run()
    Path(state["stages"]["convert"]["outputs"]["path"]).unlink()
    again = boot(tmp_path, model)
    again.run()
    assert ran(again) == ["convert", "verify", "warmup"]


def test_interrupted_run_resumes_at_the_interrupted_stage(tmp_path: Path, monkeypatch):
    model = generate_model(tmp_path / "src.gguf", seed=15)

    def interrupted(self, inputs, prev):
        if inputs is None:
            return {"sha256": prev["convert"]["sha256"]}
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(B.Bootstrapper, "_stage_verify", interrupted)
        b = boot(tmp_path, model)
        with pytest.raises(KeyboardInterrupt):
            b.run()
    state = json.loads((tmp_path / "cache" / "bootstrap-state.json").read_text())
    assert set(state["stages"]) == {"environment", "acquire", "convert"}
    resumed = boot(tmp_path, model)
    resumed.run()
    assert ran(resumed) == ["verify", "warmup"]


def test_clean_starts_over_and_removes_outputs(tmp_path: Path):
    model = generate_model(tmp_path / "src.gguf", seed=16)
    b = boot(tmp_path, model)
    converted = Path(b.run()["stages"]["convert"]["outputs"]["path"])
    fresh = boot(tmp_path, model)
    fresh.clean()
    assert not converted.exists() and not fresh.state_path.exists()
    assert model.exists()  # the user's file is never touched
    fresh.run()
    assert ran(fresh) == list(B.STAGES)


def test_corrupt_state_file_is_ignored(tmp_path: Path):
    model = generate_model(tmp_path / "src.gguf", seed=17)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "bootstrap-state.json").write_text("{not json")
    b = boot(tmp_path, model)
    b.run()
    assert ran(b) == list(B.STAGES)


def test_errors_are_clear(tmp_path: Path):
    with pytest.raises(B.BootstrapError, match="no such file"):
        boot(tmp_path, tmp_path / "missing.gguf").run()
    (tmp_path / "empty").mkdir()
    with pytest.raises(B.BootstrapError, match="neither a GGUF file"):
        boot(tmp_path, tmp_path / "empty").run()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(B.BootstrapError, match="cannot convert"):
        boot(tmp_path, bad).run()


def test_setup_env_script_offline_hub_failure_and_from(tmp_path: Path):
    """No network: the hub path fails with advice, not a traceback; --from works."""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    cmd = [sys.executable, str(ROOT / "setup_env.py"), "--model-dir", str(tmp_path / "m")]
    cmd += ["--cache-dir", str(tmp_path / "c")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert "cannot download microsoft/BitNet-b1.58-2B-4T" in proc.stderr
    assert "--from PATH" in proc.stderr and "Traceback" not in proc.stderr
    model = generate_model(tmp_path / "src.gguf", seed=18)
    proc = subprocess.run([*cmd, "--from", str(model)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "model ready at" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet", "setup", *cmd[2:], "--from", str(model), "--clean"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[environment] running" in proc.stdout
