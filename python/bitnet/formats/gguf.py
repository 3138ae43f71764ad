"""GGUF files at the byte level: a reader and a writer that also handle bitnet.cpp's I2_S.

Upstream ggml (and gguf-py) reject GGML type 36, the I2_S type of Microsoft's official
``ggml-model-i2_s.gguf``; everything that must read or write such files goes through here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .._native import _core
from ..errors import ModelLoadError, ModelTruncatedError

__all__ = [
    "BITNET_ARCHITECTURES",
    "I2_S",
    "SCALAR_FORMATS",
    "GgufFile",
    "KeyValue",
    "TensorInfo",
    "describe_tensor_type",
    "read_gguf",
    "read_tables",
    "tensor_nbytes",
    "write_gguf",
]

# The architectures BitNetEngine runs: the engine's own list (csrc/engine/bitnet_engine.cpp).
BITNET_ARCHITECTURES: tuple[str, ...] = tuple(_core.info.bitnet_architectures)
I2_S = 36  # bitnet.cpp's ternary type: n/4 bytes of 2-bit codes + a 32-byte tail (f32 scale)
I2_S_TAIL = 32
GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
# struct format of each scalar value type
SCALAR_FORMATS = {
    U8: "<B",
    I8: "<b",
    U16: "<H",
    I16: "<h",
    U32: "<I",
    I32: "<i",
    F32: "<f",
    BOOL: "<?",
    U64: "<Q",
    I64: "<q",
    F64: "<d",
}
_NUMPY = {
    U8: "<u1",
    I8: "<i1",
    U16: "<u2",
    I16: "<i2",
    U32: "<u4",
    I32: "<i4",
    F32: "<f4",
    BOOL: "?",
    U64: "<u8",
    I64: "<i8",
    F64: "<f8",
}


@dataclass
class KeyValue:
    type: int
    value: Any
    sub_type: int | None = None  # element type of an array


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    type: int
    offset: int  # absolute, in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class GgufFile:
    path: Path
    version: int
    kv: dict[str, KeyValue]
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int

    def value(self, key: str, default: Any = None) -> Any:
        kv = self.kv.get(key)
        return default if kv is None else kv.value

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def data(self, tensor: TensorInfo) -> np.ndarray:
        """The tensor's bytes (memory-mapped, read-only)."""
        return np.memmap(
            self.path, dtype=np.uint8, mode="r", offset=tensor.offset, shape=(tensor.nbytes,)
        )


def tensor_nbytes(ggml_type: int, shape: Iterable[int]) -> int:
    n = int(np.prod(list(shape), dtype=np.int64))
    if ggml_type == I2_S:
        return n // 4 + I2_S_TAIL
    import gguf

    try:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ValueError(f"unknown GGML tensor type {ggml_type}") from None
    if n % block:
        raise ValueError(
            f"{n} elements are not a whole number of type-{ggml_type} blocks of {block}"
        )
    return n // block * size


class _Reader:
    def __init__(self, f: BinaryIO, path: Path, size: int) -> None:
        self.f, self.path, self.size = f, path, size

    def read(self, n: int) -> bytes:
        # A damaged count must not make us allocate more than the file holds.
        if n > self.size - self.f.tell():
            raise ModelLoadError(
                f"'{self.path}' is truncated or damaged in its header (wanted {n} more bytes, "
                f"the file has {max(0, self.size - self.f.tell())} left)"
            )
        data = self.f.read(n)
        if len(data) != n:
            raise ModelLoadError(
                f"'{self.path}' is truncated in its header (wanted {n} more bytes)"
            )
        return data

    def scalar(self, t: int) -> Any:
        fmt = SCALAR_FORMATS[t]
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar(U64)
        if n > 1 << 30:
            raise ModelLoadError(f"'{self.path}' has a damaged header (a string of {n} bytes)")
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, t: int) -> KeyValue:
        if t == STRING:
            return KeyValue(t, self.string())
        if t == ARRAY:
            sub, n = self.scalar(U32), self.scalar(U64)
            if sub == STRING:
                return KeyValue(t, [self.string() for _ in range(n)], sub)
            if sub not in _NUMPY:
                raise ModelLoadError(f"'{self.path}' has an array of unknown type {sub}")
            dtype = np.dtype(_NUMPY[sub])
            return KeyValue(t, np.frombuffer(self.read(n * dtype.itemsize), dtype).tolist(), sub)
        if t not in SCALAR_FORMATS:
            raise ModelLoadError(f"'{self.path}' has a metadata value of unknown type {t}")
        return KeyValue(t, self.scalar(t))


def read_gguf(path: str | os.PathLike[str]) -> GgufFile:
    """Parse a GGUF file's header, metadata and tensor table (I2_S included); checks that
    every tensor lies inside the file. Raises ModelLoadError naming the file and the problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
        f = path.open("rb")
    except OSError as exc:
        raise ModelLoadError(f"cannot open '{path}': {exc.strerror or exc}") from exc
    with f:
        r = _Reader(f, path, size)
        if f.read(4) != GGUF_MAGIC:
            raise ModelLoadError(
                f"'{path}' is not a GGUF file (its first bytes are not the GGUF magic)"
            )
        version = r.scalar(U32)
        if version not in (2, 3):
            raise ModelLoadError(
                f"'{path}' is GGUF version {version}; versions 2 and 3 are supported"
            )
        n_tensors, n_kv = r.scalar(U64), r.scalar(U64)
        if n_tensors > 1 << 24 or n_kv > 1 << 24:
            raise ModelLoadError(
                f"'{path}' has a damaged header ({n_tensors} tensors, {n_kv} keys)"
            )
        kv: dict[str, KeyValue] = {}
        for _ in range(n_kv):
            key = r.string()
            kv[key] = r.value(r.scalar(U32))
        infos = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.scalar(U32)
            if n_dims > 4:
                raise ModelLoadError(f"'{path}': tensor '{name}' has {n_dims} dimensions")
            shape = tuple(r.scalar(U64) for _ in range(n_dims))
            ggml_type, offset = r.scalar(U32), r.scalar(U64)
            infos.append((name, shape, ggml_type, offset))
        alignment = (
            kv["general.alignment"].value if "general.alignment" in kv else DEFAULT_ALIGNMENT
        )
        if (
            not isinstance(alignment, int)
            or isinstance(alignment, bool)
            or alignment < 1
            or alignment & (alignment - 1)
        ):
            raise ModelLoadError(
                f"'{path}' has an invalid general.alignment ({alignment!r}; "
                "it must be a power of 2)"
            )
        data_offset = -(-f.tell() // alignment) * alignment
    tensors = []
    for name, shape, ggml_type, offset in infos:
        try:
            nbytes = tensor_nbytes(ggml_type, shape)
        except ValueError as exc:
            raise ModelLoadError(f"'{path}': tensor '{name}': {exc}") from None
        tensors.append(TensorInfo(name, shape, ggml_type, data_offset + offset, nbytes))
    end = max((t.offset + t.nbytes for t in tensors), default=data_offset)
    if end > size:
        raise ModelTruncatedError(
            f"'{path}' is truncated: its tensors end at byte {end} but the file has {size}; "
            "re-download or re-generate it"
        )
    return GgufFile(path, version, kv, tensors, alignment, data_offset)


def _pack_value(kv: KeyValue) -> bytes:
    def string(s: str) -> bytes:
        data = s.encode("utf-8")
        return struct.pack("<Q", len(data)) + data

    if kv.type == STRING:
        return string(kv.value)
    if kv.type == ARRAY:
        assert kv.sub_type is not None
        head = struct.pack("<IQ", kv.sub_type, len(kv.value))
        if kv.sub_type == STRING:
            return head + b"".join(string(s) for s in kv.value)
        return head + np.asarray(kv.value, dtype=_NUMPY[kv.sub_type]).tobytes()
    return struct.pack(SCALAR_FORMATS[kv.type], kv.value)


def write_gguf(
    path: str | os.PathLike[str],
    kv: dict[str, KeyValue],
    tensors: Iterable[tuple[str, tuple[int, ...], int, Any]],
    *,
    alignment: int = DEFAULT_ALIGNMENT,
) -> None:
    """Write a GGUF v3 file. ``tensors``: (name, ggml shape, ggml type, data) where data is a
    bytes-like object or a zero-argument callable returning one (produced while writing, so a
    large conversion never holds every tensor in memory)."""
    tensors = list(tensors)
    with open(path, "wb") as f:
        f.write(GGUF_MAGIC + struct.pack("<IQQ", 3, len(tensors), len(kv)))
        for key, value in kv.items():
            data = key.encode("utf-8")
            f.write(
                struct.pack("<Q", len(data))
                + data
                + struct.pack("<I", value.type)
                + _pack_value(value)
            )
        offset = 0
        for name, shape, ggml_type, _ in tensors:
            data = name.encode("utf-8")
            f.write(struct.pack("<Q", len(data)) + data + struct.pack("<I", len(shape)))
            f.write(struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<IQ", ggml_type, offset))
            offset += -(-tensor_nbytes(ggml_type, shape) // alignment) * alignment
        f.write(b"\0" * (-f.tell() % alignment))
        for name, shape, ggml_type, data in tensors:
            blob = data() if callable(data) else data
            blob = memoryview(np.ascontiguousarray(blob)).cast("B")
            if len(blob) != tensor_nbytes(ggml_type, shape):
                raise ValueError(
                    f"tensor '{name}': {len(blob)} bytes, expected "
                    f"{tensor_nbytes(ggml_type, shape)}"
                )
            f.write(blob)
            f.write(b"\0" * (-f.tell() % alignment))


def read_tables(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metadata, tensor table) of a GGUF file, I2_S files included: the key/value pairs as
    plain values, and per tensor its name, type name, shape, data offset and size. Raises
    ModelLoadError with the reason."""
    g = read_gguf(path)
    tensors = [
        {
            "name": t.name,
            "type": describe_tensor_type(t.type),
            "shape": list(t.shape),
            "offset": t.offset,
            "nbytes": t.nbytes,
        }
        for t in g.tensors
    ]
    return {k: kv.value for k, kv in g.kv.items()}, tensors


def describe_tensor_type(ggml_type: int) -> str:
    if ggml_type == I2_S:
        return "i2_s"
    import gguf

    try:
        return gguf.GGMLQuantizationType(ggml_type).name.lower()
    except ValueError:
        return f"type{ggml_type}"
