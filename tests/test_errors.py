"""Bad input gets a clear error naming the problem; nothing crashes or hangs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import bitnet
from bitnet.testing import generate_model


def test_missing_file(tmp_path: Path):
    with pytest.raises(bitnet.ModelLoadError, match="does not exist") as info:
        bitnet.Model(tmp_path / "nope.gguf")
    assert isinstance(info.value, OSError)


def test_not_a_gguf(tmp_path: Path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a model" * 10)
    with pytest.raises(bitnet.ModelLoadError, match="not a GGUF file"):
        bitnet.Model(path)


def test_directory(tmp_path: Path):
    with pytest.raises(bitnet.ModelLoadError):
        bitnet.Model(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, tiny_relu2: Path, keep: float):
    data = tiny_relu2.read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(bitnet.ModelLoadError, match=r"truncated|damaged"):
        bitnet.Model(path)
    assert tiny_relu2.read_bytes() == data  # the input is never modified


def test_truncated_header(tmp_path: Path, tiny_relu2: Path):
    path = tmp_path / "header.gguf"
    path.write_bytes(tiny_relu2.read_bytes()[:100])
    with pytest.raises(bitnet.ModelLoadError, match="damaged or truncated"):
        bitnet.Model(path)


def test_unsupported_architecture(tmp_path: Path):
    import gguf
    import numpy as np

    path = tmp_path / "foreign.gguf"
    w = gguf.GGUFWriter(str(path), "not-a-real-arch")
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(bitnet.ModelLoadError, match="could not load"):
        bitnet.Model(path)
    with pytest.raises(bitnet.ModelLoadError, match="architecture 'not-a-real-arch'"):
        bitnet.Model(path, engine="bitnet")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_threads": 0}, "n_threads must be 'auto' or an integer from 1 to 512, got 0"),
        ({"n_threads_batch": -1}, "n_threads_batch must be 'auto' or an integer from 1"),
        ({"n_ctx": 0}, "n_ctx must be an integer from 16 to 16777216, got 0"),
        ({"n_batch": 0}, "n_batch must be an integer from 1"),
        ({"n_ctx": 10**12}, "n_ctx must be an integer from 16 to 16777216, got 1000000000000"),
        ({"n_threads": 5000}, "n_threads must be 'auto' or an integer from 1 to 512, got 5000"),
        ({"engine": "gpu"}, "engine must be"),
        ({"seed": "x"}, "seed must be an integer"),
    ],
)
def test_bad_model_arguments(tiny_relu2, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bitnet.Model(tiny_relu2, **kwargs)


def test_prompt_longer_than_context(tiny_relu2):
    with bitnet.Model(tiny_relu2, n_ctx=32) as m:
        prompt = m.tokenize("the cat sat on the mat " * 20)
        with pytest.raises(
            ValueError, match=rf"prompt has {len(prompt)} tokens but the context holds 32"
        ):
            m.generate(prompt)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -3}, "top_k"),
        ({"min_p": 2.0}, "min_p"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_bad_sampling_arguments(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.generate("Hi", **kwargs)


def test_bad_token_ids(tiny_model):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny_model.logits([1, 2, 10**6])
    with pytest.raises(TypeError):
        tiny_model.logits("text")


def test_closed_model(tiny_relu2):
    m = bitnet.Model(tiny_relu2, n_ctx=64)
    m.close()
    with pytest.raises(bitnet.EngineError, match="closed"):
        m.generate("Hi")


def test_native_logs_go_to_python_logging(tiny_relu2, caplog):
    with caplog.at_level(logging.DEBUG, logger="bitnet.native"):
        bitnet.Model(tiny_relu2, n_ctx=64, engine="llama").close()
    assert any(r.name == "bitnet.native" for r in caplog.records)


def _overcommits_always() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1"
    except OSError:
        return False


@pytest.mark.skipif(_overcommits_always(), reason="the kernel grants any allocation (overcommit=1)")
def test_kv_cache_too_large_for_memory(tmp_path: Path):
    # 64 layers x 16M positions x 1 KiB: 1 TiB of KV cache, more than any test machine has.
    path = generate_model(tmp_path / "deep.gguf", n_layer=64)
    with pytest.raises(bitnet.EngineError, match=r"cannot allocate the KV cache .* lower n_ctx"):
        bitnet.Model(path, n_ctx=1 << 24)
