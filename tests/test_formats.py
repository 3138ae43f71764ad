"""Official I2_S files and conversions. The I2_S files here come from this test's own writer,
byte by byte as DESIGN.md describes, independent of bitnet.formats."""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bitnet
from bitnet.testing import (
    SHAPES,
    ReferenceModel,
    TernaryWeight,
    build_vocabulary,
    synthetic_weights,
)

TOLERANCE = 0.04  # relative L2, as in test_reference.py
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time, 1 2 3!"


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _kv(key: str, kind: str, value) -> bytes:
    out = _str(key)
    if kind == "str":
        return out + struct.pack("<I", 8) + _str(value)
    if kind == "u32":
        return out + struct.pack("<II", 4, value)
    if kind == "f32":
        return out + struct.pack("<If", 6, value)
    if kind == "strs":
        return out + struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_str(v) for v in value)
    if kind == "i32s":
        return out + struct.pack("<IIQ", 9, 5, len(value)) + struct.pack(f"<{len(value)}i", *value)
    raise AssertionError(kind)


def i2s_bytes(values: np.ndarray, scale: float, rng: np.random.Generator) -> bytes:
    """DESIGN.md: per block of 128, byte j = codes of elements j, 32+j, 64+j, 96+j (high bits
    first), code = w + 1; then a 32-byte tail: f32 scale + 28 padding bytes (random here, as
    they are not always zero in real files)."""
    flat = values.reshape(-1).astype(np.int64) + 1
    out = bytearray()
    for start in range(0, flat.size, 128):
        block = flat[start : start + 128]
        for j in range(32):
            out.append(int(block[j] << 6 | block[32 + j] << 4 | block[64 + j] << 2 | block[96 + j]))
    return (
        bytes(out) + struct.pack("<f", scale) + rng.integers(0, 256, 28, dtype=np.uint8).tobytes()
    )


def write_official_i2s(path: Path, seed: int, arch: str = "bitnet-b1.58") -> Path:
    shape, vocab = SHAPES["tiny"], build_vocabulary()
    rng = np.random.default_rng(100 + seed)
    kvs = [
        _kv("general.architecture", "str", arch),
        _kv("general.name", "str", "official-layout test"),
        _kv("general.file_type", "u32", 40),
        _kv(f"{arch}.vocab_size", "u32", len(vocab.tokens)),
        _kv(f"{arch}.context_length", "u32", shape.n_ctx_train),
        _kv(f"{arch}.embedding_length", "u32", shape.n_embd),
        _kv(f"{arch}.block_count", "u32", shape.n_layer),
        _kv(f"{arch}.feed_forward_length", "u32", shape.n_ff),
        _kv(f"{arch}.attention.head_count", "u32", shape.n_head),
        _kv(f"{arch}.attention.head_count_kv", "u32", shape.n_head_kv),
        _kv(f"{arch}.rope.freq_base", "f32", shape.rope_freq_base),
        _kv(f"{arch}.attention.layer_norm_rms_epsilon", "f32", shape.rms_eps),
        _kv("tokenizer.ggml.model", "str", "gpt2"),  # and no tokenizer.ggml.pre, like the real file
        _kv("tokenizer.ggml.tokens", "strs", vocab.tokens),
        _kv("tokenizer.ggml.token_type", "i32s", vocab.token_types),
        _kv("tokenizer.ggml.merges", "strs", vocab.merges),
        _kv("tokenizer.ggml.bos_token_id", "u32", vocab.bos_id),
        _kv("tokenizer.ggml.eos_token_id", "u32", vocab.eos_id),
    ]
    tensors = []
    for name, w in synthetic_weights(shape, vocab, seed=seed):
        if isinstance(w, TernaryWeight):
            tensors.append((name, w.values.shape, 36, i2s_bytes(w.values, w.scale, rng)))
        elif w.dtype == np.float16:
            tensors.append((name, w.shape, 1, w.astype("<f2").tobytes()))
        else:
            tensors.append((name, w.shape, 0, w.astype("<f4").tobytes()))
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    infos, offset, blobs = b"", 0, []
    for name, np_shape, ggml_type, blob in tensors:
        dims = tuple(reversed(np_shape))  # ggml order
        infos += _str(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        infos += struct.pack("<IQ", ggml_type, offset)
        padded = blob + b"\0" * (-len(blob) % 32)
        blobs.append(padded)
        offset += len(padded)
    head = header + infos
    path.write_bytes(head + b"\0" * (-len(head) % 32) + b"".join(blobs))
    return path


def reference(seed: int, tokens: list[int]) -> np.ndarray:
    shape = SHAPES["tiny"]
    return ReferenceModel(
        shape, synthetic_weights(shape, build_vocabulary(), seed=seed), "relu2"
    ).logits(tokens)


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "converted"


@pytest.fixture
def official(tmp_path: Path) -> Path:
    return write_official_i2s(tmp_path / "ggml-model-i2_s.gguf", seed=7)


def test_official_file_loads_as_downloaded(official: Path, cache: Path, caplog):
    digest = hashlib.sha256(official.read_bytes()).hexdigest()
    with caplog.at_level(logging.INFO, logger="bitnet"):
        with bitnet.Model(official, n_ctx=256) as model:
            assert model.engine == "bitnet" and model.architecture == "bitnet"
            assert model.metadata["general.architecture"] == "bitnet-b1.58"  # the user's file
            tokens = model.tokenize(PROMPT)
            got = model.logits(tokens)
            assert model.generate("Hello", max_tokens=4, temperature=0).usage.completion_tokens >= 1
        with bitnet.Model(official, n_ctx=256) as again:
            np.testing.assert_array_equal(again.logits(tokens), got)
        # The exact opt-out: the file's F16 head as it is.
        with bitnet.Model(official, n_ctx=256, i2s_head="keep") as exact:
            kept = exact.logits(tokens)
    # By default the F16 head runs as Q6_K: near the reference (this tiny model's 256-wide rows
    # quantize worse than 2B-4T's; docs/benchmarks.md has the 2B-4T figures).
    assert rel_l2(got, reference(7, tokens)) < 0.1
    assert rel_l2(kept, reference(7, tokens)) < TOLERANCE
    assert hashlib.sha256(official.read_bytes()).hexdigest() == digest  # never modified
    cached = sorted(cache.glob("*.gguf"))
    assert [p.name.rsplit("-", 1)[1] for p in cached] == ["keep.gguf", "q6_k.gguf"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "converting it once" in messages and "using the converted copy" in messages
    assert "with a Q6_K embedding/output head (i2s_head='keep'" in messages
    # The original never reaches ggml's loader, which would log its I2_S type as an error.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
    from bitnet.formats.gguf import read_gguf

    types = {t.name: t.type for t in read_gguf(cached[1]).tensors}
    assert types["token_embd.weight"] == 14  # Q6_K
    meta = bitnet.Model(cached[0], n_ctx=64).metadata
    assert meta["tokenizer.ggml.pre"] == "llama-bpe" and meta["bitnet.hidden_activation"] == "relu2"


def test_i2s_unpack_reads_the_documented_layout():
    from bitnet.formats.ternary import i2s_pack, i2s_unpack

    rng = np.random.default_rng(0)
    values = rng.integers(-1, 2, 256 * 3).astype(np.int8)
    data = np.frombuffer(i2s_bytes(values, 0.125, rng), dtype=np.uint8)
    got, scale = i2s_unpack(data, values.size)
    np.testing.assert_array_equal(got, values)
    assert scale == 0.125
    packed = i2s_pack(values, 0.125)
    assert packed[: values.size // 4 + 4].tobytes() == data[: values.size // 4 + 4].tobytes()
    with pytest.raises(ValueError, match="multiple of 128"):
        i2s_unpack(data, 100)


def test_round_trip_i2s_tq2_0_i2s(official: Path, tmp_path: Path):
    from bitnet.formats.convert import convert
    from bitnet.formats.gguf import read_gguf

    tq = convert(official, tmp_path / "tq2.gguf", type="tq2_0")
    back = convert(tq, tmp_path / "back.gguf", type="i2_s")
    a, b = read_gguf(official), read_gguf(back)
    assert b.value("general.architecture") == "bitnet-b1.58" and b.value("general.file_type") == 40
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert ta.type == tb.type and ta.shape == tb.shape
        da, db = a.data(ta), b.data(tb)
        if ta.type == 36:
            n = ta.n_elements // 4
            assert da[:n].tobytes() == db[:n].tobytes(), ta.name  # the codes
            scale_a = np.frombuffer(da[n : n + 4].tobytes(), "<f4")[0]
            scale_b = np.frombuffer(db[n : n + 4].tobytes(), "<f4")[0]
            assert scale_b == np.float32(np.float16(scale_a))  # the documented rounding
        else:
            assert da.tobytes() == db.tobytes(), ta.name


@pytest.mark.parametrize(
    ("kind", "embedding", "tolerance"),
    [
        ("tq1_0", "f16", TOLERANCE),
        ("tq2_0", "q8_0", TOLERANCE),
        ("tq2_0", "q6_k", 0.1),
        ("tq2_0", "q4_0", 0.3),
    ],
)
def test_converted_files_match_the_reference(
    official: Path, tmp_path: Path, kind, embedding, tolerance
):
    from bitnet.formats.convert import convert

    out = convert(
        official, tmp_path / f"{kind}-{embedding}.gguf", type=kind, embedding_type=embedding
    )
    with bitnet.Model(out, n_ctx=256) as model:
        tokens = model.tokenize(PROMPT)
        err = rel_l2(model.logits(tokens), reference(7, tokens))
    assert err < tolerance, err
    assert not out.with_name(out.name + ".tmp").exists()


def test_i2s_files_with_a_quantized_embedding(official: Path, tmp_path: Path, cache: Path):
    """bitnet.cpp's `llama-quantize --token-embedding-type q6_k` writes I2_S files with a Q6_K
    embedding (ggml-model-i2_s-embed-q6_k.gguf): written here, read back, run as they are."""
    from bitnet.formats.convert import convert
    from bitnet.formats.gguf import read_gguf

    q6 = convert(official, tmp_path / "embed-q6_k.gguf", type="i2_s", embedding_type="q6_k")
    types = {t.name: t.type for t in read_gguf(q6).tensors}
    assert types["token_embd.weight"] == 14 and types["blk.0.attn_q.weight"] == 36
    assert read_gguf(q6).value("general.architecture") == "bitnet-b1.58"
    with bitnet.Model(q6, n_ctx=256) as model:  # a Q6_K head stays as it is
        tokens = model.tokenize(PROMPT)
        assert rel_l2(model.logits(tokens), reference(7, tokens)) < 0.1
    (converted,) = cache.glob("embed-q6_k-*.gguf")
    assert {t.name: t.type for t in read_gguf(converted).tensors}["token_embd.weight"] == 14
    # "f16" makes F16 of whatever the input has; "keep" keeps it.
    f16 = convert(q6, tmp_path / "f16.gguf", type="tq2_0", embedding_type="f16")
    assert {t.name: t.type for t in read_gguf(f16).tensors}["token_embd.weight"] == 1
    kept = convert(q6, tmp_path / "kept.gguf", type="tq2_0")
    assert {t.name: t.type for t in read_gguf(kept).tensors}["token_embd.weight"] == 14


def test_bad_files(tmp_path: Path, official: Path, cache: Path):
    data = official.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 5000])
    with pytest.raises(bitnet.ModelLoadError, match="truncated"):
        bitnet.Model(cut)
    foreign = tmp_path / "foreign.gguf"
    name = _str("blk.0.attn_q.weight")
    at = data.index(name) + len(name) + 4 + 2 * 8  # n_dims, then two dims, then the type
    assert struct.unpack("<I", data[at : at + 4])[0] == 36
    foreign.write_bytes(data[:at] + struct.pack("<I", 99) + data[at + 4 :])
    with pytest.raises(bitnet.ModelLoadError):
        bitnet.Model(foreign)
    from bitnet.formats.convert import convert
    from bitnet.formats.gguf import read_gguf

    with pytest.raises(bitnet.ModelLoadError, match="unknown GGML tensor type 99"):
        read_gguf(foreign)
    with pytest.raises(ValueError, match="must not overwrite the input"):
        convert(official, official)
    assert official.read_bytes() == data


def test_silu_model_cannot_become_i2s(tmp_path: Path, tiny_silu: Path):
    from bitnet.formats.convert import convert

    with pytest.raises(ValueError, match="cannot be written as I2_S"):
        convert(tiny_silu, tmp_path / "x.gguf", type="i2_s")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.tmp").exists()


def test_cli_inspect_and_convert(official: Path, tmp_path: Path):
    run = [sys.executable, "-m", "bitnet"]
    text = subprocess.run(
        [*run, "inspect", str(official)], capture_output=True, text=True, check=True
    ).stdout
    assert "architecture bitnet-b1.58" in text and "i2_s" in text
    info = json.loads(
        subprocess.run(
            [*run, "inspect", str(official), "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert info["metadata"]["general.file_type"] == 40
    assert {t["type"] for t in info["tensors"]} == {"i2_s", "f16", "f32"}
    out = tmp_path / "out.gguf"
    proc = subprocess.run(
        [*run, "convert", str(official), str(out), "--embedding-type", "q6_k"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stderr
    proc = subprocess.run(
        [*run, "convert", str(official), str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--force" in proc.stderr
    proc = subprocess.run(
        [*run, "convert", str(tmp_path), str(tmp_path / "y.gguf")], capture_output=True, text=True
    )
    assert proc.returncode == 3 and "lacks config.json" in proc.stderr


def test_diagnostics_of_an_official_file(official: Path):
    from bitnet.runtime import BitNetRuntime

    diag = BitNetRuntime(official).diagnostics()
    assert diag.ok and diag.model["tensor_types"]["i2_s"] == 14
    assert "cached conversion of I2_S" in diag.kernels["ternary"]


def test_older_bitnet_25_architecture(tmp_path: Path, cache: Path):
    path = write_official_i2s(tmp_path / "old.gguf", seed=8, arch="bitnet-25")
    with bitnet.Model(path, n_ctx=128, i2s_head="keep") as model:  # exact: the F16 head
        tokens = model.tokenize(PROMPT)
        assert rel_l2(model.logits(tokens), reference(8, tokens)) < TOLERANCE
        eot = model.tokenize("<|eot_id|>", add_bos=False, special=True)[0]
        assert model._native.is_end_of_generation(eot)
        assert model._native.is_end_of_generation(model._native.eos)
