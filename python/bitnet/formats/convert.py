"""Conversions between BitNet GGUF layouts, and loading of Microsoft's official I2_S files.

- I2_S (bitnet.cpp, arch ``bitnet-b1.58``/``bitnet-25``, GGML type 36) -> the project's format
  (arch ``bitnet`` with ``bitnet.hidden_activation``, ternary tensors in TQ2_0 or TQ1_0,
  ``tokenizer.ggml.pre`` filled in), with the embedding kept as it is, made F16 or quantized
  (q8_0, q6_k, q4_0).
- the project's format -> I2_S, a file bitnet.cpp accepts (also with a quantized embedding, as
  bitnet.cpp's ``llama-quantize --token-embedding-type q6_k`` writes them).

I2_S -> TQ2_0 is lossless apart from rounding each tensor's scale to float16.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import ModelLoadError
from .gguf import (
    BITNET_ARCHITECTURES,
    I2_S,
    STRING,
    U32,
    GgufFile,
    KeyValue,
    TensorInfo,
    read_gguf,
    write_gguf,
)
from .hf import hf_checkpoint_tensors
from .ternary import i2s_pack, i2s_unpack

__all__ = ["EMBEDDING_TYPES", "HEAD_TENSORS", "convert", "has_float_head"]

log = logging.getLogger("bitnet.convert")

TernaryType = Literal["tq2_0", "tq1_0", "i2_s"]
EmbeddingType = Literal["keep", "f16", "q8_0", "q6_k", "q4_0"]
EMBEDDING_TYPES: tuple[str, ...] = ("keep", "f16", "q8_0", "q6_k", "q4_0")
_TYPE_IDS = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q8_0": 8,
    "q6_k": 14,
    "tq1_0": 34,
    "tq2_0": 35,
    "i2_s": I2_S,
}
_TERNARY_IDS = {34, 35, I2_S}
# The embedding and the output head (tied to it when there is no output.weight): what
# embedding_type converts.
HEAD_TENSORS = ("token_embd.weight", "output.weight")
_FILE_TYPES = {"tq1_0": 36, "tq2_0": 37, "i2_s": 40}


# -- tensors -----------------------------------------------------------------------------------


def _dequantize(src: GgufFile, t: TensorInfo) -> np.ndarray:
    """float32 rows (rows, row length) of any tensor type."""
    data = src.data(t)
    rows = t.n_elements // t.shape[0]
    if t.type == I2_S:
        values, scale = i2s_unpack(data, t.n_elements)
        return (values.astype(np.float32) * np.float32(scale)).reshape(rows, t.shape[0])
    import gguf

    qtype = gguf.GGMLQuantizationType(t.type)
    if qtype == gguf.GGMLQuantizationType.F32:
        return np.frombuffer(data, dtype="<f4").reshape(rows, t.shape[0])
    if qtype == gguf.GGMLQuantizationType.F16:
        return np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(rows, t.shape[0])
    return gguf.quants.dequantize(np.asarray(data).reshape(rows, -1), qtype).reshape(
        rows, t.shape[0]
    )


def _ternary(src: GgufFile, t: TensorInfo) -> tuple[np.ndarray, float]:
    """Ternary values and one scale for a ternary tensor of any layout."""
    if t.type == I2_S:
        return i2s_unpack(src.data(t), t.n_elements)
    w = _dequantize(src, t)
    scale = float(np.abs(w).max())
    values = np.sign(w).astype(np.int8)
    nonzero = np.abs(w[w != 0])
    if nonzero.size and not np.allclose(nonzero, scale, rtol=1e-3):
        log.warning(
            "tensor %s has different block scales; I2_S keeps one (%g), as bitnet.cpp does",
            t.name,
            scale,
        )
    return values.reshape(-1), scale


def _quantize(rows: np.ndarray, type_name: str) -> np.ndarray:
    from .._native import _core

    return _core.gguf.quantize_rows(np.ascontiguousarray(rows, dtype=np.float32), type_name)


def has_float_head(src: GgufFile) -> bool:
    """Whether the embedding/output head is F32 or F16 (what a Q6_K conversion would shrink)."""
    return any(t.name in HEAD_TENSORS and t.type in (0, 1) for t in src.tensors)


# -- metadata ----------------------------------------------------------------------------------


def _target_kv(src: GgufFile | _Header, ternary: TernaryType) -> dict[str, KeyValue]:
    arch = str(src.value("general.architecture", ""))
    if arch not in BITNET_ARCHITECTURES:
        raise ModelLoadError(
            f"'{src.path}' has architecture '{arch}'; bitnet convert handles "
            f"{', '.join(BITNET_ARCHITECTURES)}"
        )
    activation = src.value(f"{arch}.hidden_activation", "silu" if arch == "bitnet" else "relu2")
    if not isinstance(activation, str):
        raise ModelLoadError(
            f"'{src.path}' has a damaged '{arch}.hidden_activation' (a {type(activation).__name__}"
            ", not a name such as 'relu2')"
        )
    to_arch = "bitnet-b1.58" if ternary == "i2_s" else "bitnet"
    if ternary == "i2_s" and activation != "relu2":
        raise ValueError(
            f"'{src.path}' uses a {activation} FFN; I2_S files (arch bitnet-b1.58) "
            "mean relu² to bitnet.cpp, so this model cannot be written as I2_S"
        )
    out: dict[str, KeyValue] = {}
    for key, kv in src.kv.items():
        if key == "general.alignment" or key == f"{arch}.hidden_activation":
            continue
        if key.startswith(arch + "."):
            key = to_arch + key[len(arch) :]
        out[key] = kv
    out["general.architecture"] = KeyValue(STRING, to_arch)
    out["general.file_type"] = KeyValue(U32, _FILE_TYPES[ternary])
    if to_arch == "bitnet":
        out["bitnet.hidden_activation"] = KeyValue(STRING, activation)
    if "tokenizer.ggml.pre" not in out and src.value("tokenizer.ggml.model") == "gpt2":
        out["tokenizer.ggml.pre"] = KeyValue(STRING, "llama-bpe")  # the Llama-3 tokenizer
    return out


# -- conversion --------------------------------------------------------------------------------


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    type: TernaryType = "tq2_0",
    embedding_type: EmbeddingType = "keep",
    progress: bool = False,
) -> Path:
    """Convert a BitNet GGUF (official I2_S or the project's format) or a Hugging Face
    checkpoint folder (see :mod:`bitnet.hf`) to ``type``.

    ``embedding_type`` is the type of ``token_embd``/``output`` (the output head): ``keep``
    leaves them as the source has them (a checkpoint's become F16), the others convert them.

    The output is written to ``dst + ".tmp"`` and renamed when complete; ``src`` is never
    modified. Returns the output path.
    """
    if type not in ("tq2_0", "tq1_0", "i2_s"):
        raise ValueError(f"type must be tq2_0, tq1_0 or i2_s, got {type!r}")
    if embedding_type not in EMBEDDING_TYPES:
        raise ValueError(
            f"embedding_type must be {', '.join(EMBEDDING_TYPES)}, got {embedding_type!r}"
        )
    dst = Path(dst)
    if dst.resolve() == Path(src).resolve():
        raise ValueError("the output must not overwrite the input")
    tensors: list[tuple[str, tuple[int, ...], int, Callable[[], Any]]] = []
    if Path(src).is_dir():
        names = {v: k for k, v in _TYPE_IDS.items()}
        kv, tensors = hf_checkpoint_tensors(
            Path(src),
            _TYPE_IDS[type],
            lambda rows, t: _quantize(rows, names[t]),
            1 if embedding_type in ("keep", "f16") else _TYPE_IDS[embedding_type],
        )
        if type == "i2_s":
            kv = _target_kv(_Header(Path(src), kv), "i2_s")
        else:
            kv["general.file_type"] = KeyValue(U32, _FILE_TYPES[type])
        source_path = Path(src)
    else:
        source = read_gguf(src)
        kv = _target_kv(source, type)
        for t in source.tensors:
            tensors.append((t.name, t.shape, *_plan_tensor(source, t, type, embedding_type)))
        source_path = source.path
    tmp = dst.with_name(dst.name + ".tmp")
    bar = _progress(len(tensors), progress)
    t0 = time.perf_counter()

    def counted(make: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            out = make()
            bar()
            return out

        return run

    try:
        write_gguf(tmp, kv, [(n, s, ty, counted(make)) for n, s, ty, make in tensors])
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info(
        "converted %s -> %s (%s, embedding %s) in %.1f s",
        source_path,
        dst,
        type,
        embedding_type,
        time.perf_counter() - t0,
    )
    return dst


class _Header:
    """The metadata part of a GgufFile, for checkpoints converted straight to I2_S."""

    def __init__(self, path: Path, kv: dict[str, KeyValue]) -> None:
        self.path, self.kv = path, kv

    def value(self, key: str, default: Any = None) -> Any:
        kv = self.kv.get(key)
        return default if kv is None else kv.value


def _plan_tensor(
    src: GgufFile, t: TensorInfo, ternary: TernaryType, embedding: EmbeddingType
) -> tuple[int, Callable[[], Any]]:
    rows = t.n_elements // t.shape[0]
    if t.type in _TERNARY_IDS:
        if ternary == "i2_s":
            return I2_S, lambda: i2s_pack(*_ternary(src, t))
        if t.type == I2_S:

            def from_i2s() -> np.ndarray:
                values, scale = i2s_unpack(src.data(t), t.n_elements)
                dense = values.astype(np.float32).reshape(rows, t.shape[0]) * np.float32(scale)
                return _quantize(dense, ternary)

            return _TYPE_IDS[ternary], from_i2s
        if t.type == _TYPE_IDS[ternary]:
            return t.type, lambda: src.data(t)
        return _TYPE_IDS[ternary], lambda: _quantize(_dequantize(src, t), ternary)
    if t.name in HEAD_TENSORS and embedding != "keep":
        if t.type == _TYPE_IDS[embedding]:
            return t.type, lambda: src.data(t)
        if embedding == "f16":
            return 1, lambda: _dequantize(src, t).astype("<f2")
        return _TYPE_IDS[embedding], lambda: _quantize(_dequantize(src, t), embedding)
    return t.type, lambda: src.data(t)


def _progress(total: int, enabled: bool) -> Callable[[], None]:
    if not enabled:
        return lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="tensor", desc="converting", leave=False)
    return lambda: bar.update(1)
