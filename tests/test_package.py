"""Package surface: version, build info, metadata, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_metadata_matches_the_gguf_package(tiny_relu2):
    """Our native reader against gguf-py's independent one, key by key."""
    import gguf

    from bitnet._native import _core

    ours = _core.gguf.read_metadata(str(tiny_relu2))
    reader = gguf.GGUFReader(tiny_relu2)
    theirs = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if isinstance(value, float):
            assert ours[key] == pytest.approx(value, rel=1e-6), key
        else:
            assert ours[key] == value, key


def test_metadata_of_a_bad_file(tmp_path: Path):
    from bitnet._native import _core

    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF" + b"\xff" * 40)
    with pytest.raises(bitnet.ModelLoadError, match="damaged or truncated"):
        _core.gguf.read_metadata(str(path))


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
        [
            sys.executable,
            "-m",
            "bitnet",
            "generate-model",
            str(tmp_path / "m.gguf"),
            "--layers",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--layers must be from 1 to 1024, got 0" in proc.stderr


def test_import_failure_explains_the_fix():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'bitnet._core':\n"
        "            raise ImportError('libllama.so.0: cannot open shared object file')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import bitnet\n"  # light: the extension loads on first use
        "bitnet.Model\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "NativeExtensionError" in proc.stderr
    assert "libllama.so.0" in proc.stderr and "pip install ." in proc.stderr


def _stub_names(path: Path) -> dict[str, set[str]]:
    """Module-level names ("") and each class's methods and properties, from a .pyi file."""
    import ast

    names: dict[str, set[str]] = {"": set()}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            names[""].add(node.name)
            names[node.name] = {
                n.name for n in node.body if isinstance(n, ast.FunctionDef) and n.name != "__init__"
            }
        elif isinstance(node, ast.FunctionDef):
            names[""].add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[""].add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            names[""].update(a.asname or a.name for a in node.names)
    return names


def test_stubs_match_the_extension():
    """python/bitnet/_core/*.pyi name exactly what bitnet._core and each of its submodules
    have (stubs go stale otherwise)."""
    import types

    from bitnet._native import _core

    def public(obj: object) -> set[str]:
        return {n for n in vars(obj) if not (n.startswith("_") and n.endswith("_"))}

    stubs = Path(bitnet.__file__).parent / "_core"
    top = _stub_names(stubs / "__init__.pyi")
    assert public(_core) | {"__version__"} == top[""]
    submodules = {n for n in public(_core) if isinstance(getattr(_core, n), types.ModuleType)}
    assert {p.stem for p in stubs.glob("*.pyi")} - {"__init__"} == submodules
    for name in submodules:
        stub = _stub_names(stubs / f"{name}.pyi")
        module = getattr(_core, name)
        assert public(module) == stub[""], name
        for cls in stub.keys() - {""}:
            assert public(getattr(module, cls)) == stub[cls], f"{name}.{cls}"


def test_sampling_parameters_are_the_options():
    """options.py and the C++ binding name the same sampling parameters, so a parameter added
    to one and not the other fails here (and at the first generation)."""
    from bitnet._native import _core
    from bitnet.options import SamplingOptions

    native = set(SamplingOptions().native(seed=0))
    assert set(_core.model.SAMPLING_PARAMETERS) == native
    # Every option reaches the engine, json_schema as the grammar made from it.
    assert {f.name for f, _ in SamplingOptions.options()} - native == {"json_schema"}
