"""Package surface: version, build info, metadata, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bitnet


def test_version_and_build_info():
    info = bitnet.build_info()
    assert bitnet.__version__ == info["version"]
    assert "llama-cpp-python==0.3.36" in info["llama_cpp"] or info["llama_cpp"].startswith(
        "source:"
    )
    assert info["ggml_version"]


def test_metadata(tiny_model):
    meta = tiny_model.metadata
    assert meta["general.architecture"] == "bitnet"
    assert meta["bitnet.hidden_activation"] == "relu2"
    assert meta["bitnet.embedding_length"] == 256
    assert meta["tokenizer.ggml.pre"] == "llama-bpe"
    assert len(meta["tokenizer.ggml.tokens"]) == tiny_model.n_vocab


def test_cli_generate_model(tmp_path: Path):
    out = tmp_path / "cli.gguf"
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet", "generate-model", str(out), "--activation", "silu"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote" in proc.stdout
    with bitnet.Model(out, n_ctx=64) as m:
        assert m.metadata["bitnet.hidden_activation"] == "silu"
        result = m.generate("Hi", max_tokens=4, temperature=0)
        assert 1 <= result.usage.completion_tokens <= 4
    assert not out.with_name(out.name + ".tmp").exists()


def test_cli_reports_bad_output_path(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet", "generate-model", str(tmp_path / "no" / "dir" / "m.gguf")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "generate-model: error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet", "generate-model", str(tmp_path / "m.gguf"), "--layers", "0"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "n_layer must be >= 1" in proc.stderr
