"""Ternary kernels from numpy: absmean weight quantization, int8 activations, GEMV/GEMM.

>>> import numpy as np, bitnet.kernels as K
>>> packed = K.quantize_weights(np.random.randn(6912, 2560).astype(np.float32))
>>> y = K.matmul(packed, np.random.randn(2560).astype(np.float32))   # (6912,), GIL released

Weights are packed in bitnet.cpp's I2_S layout (2-bit codes, 128 weights per 32 bytes) with
one float scale per matrix. Activations are quantized to int8 per row (absmax); the dot
products are exact integer sums, chosen at run time from the CPU's features (AVX2, else a
portable scalar loop).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ._native import _core
from .convert import i2s_pack, i2s_unpack

__all__ = [
    "PackedTernary",
    "cpu_features",
    "dequantize",
    "kernel_name",
    "matmul",
    "pack",
    "quantize_activations",
    "quantize_weights",
    "unpack",
]

BLOCK = 128


@dataclass(frozen=True)
class PackedTernary:
    """A ternary matrix: ``data`` uint8 (rows, k/4) in the I2_S layout, times ``scale``."""

    data: np.ndarray
    scale: float
    shape: tuple[int, int]
    layout: str = "i2_s"


def _float_matrix(w: np.ndarray, name: str) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {w.dtype}")
    if w.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, k), got shape {w.shape}")
    if w.shape[1] % BLOCK:
        raise ValueError(f"{name} has k={w.shape[1]}, which is not a multiple of {BLOCK}")
    return np.ascontiguousarray(w)


def pack(values: np.ndarray, scale: float, layout: Literal["i2_s"] = "i2_s") -> PackedTernary:
    """Pack int8 values in {-1, 0, 1} of shape (rows, k) with one scale."""
    if layout != "i2_s":
        raise ValueError(f"layout must be 'i2_s', got {layout!r}")
    values = np.asarray(values)
    if values.dtype != np.int8 or values.ndim != 2:
        raise TypeError("values must be a 2-D int8 array")
    if values.shape[1] % BLOCK:
        raise ValueError(f"k={values.shape[1]} is not a multiple of {BLOCK}")
    if values.size and (values.min() < -1 or values.max() > 1):
        raise ValueError("values must be -1, 0 or 1")
    rows, k = values.shape
    data = i2s_pack(values, scale)[:-32].reshape(rows, k // 4)
    return PackedTernary(data, float(scale), (rows, k))


def unpack(packed: PackedTernary) -> tuple[np.ndarray, float]:
    """(int8 values (rows, k), scale)."""
    rows, k = packed.shape
    tail = np.zeros(32, dtype=np.uint8)
    values, _ = i2s_unpack(np.concatenate([packed.data.reshape(-1), tail]), rows * k)
    return values.reshape(rows, k), packed.scale


def quantize_weights(w: np.ndarray, layout: Literal["i2_s"] = "i2_s") -> PackedTernary:
    """BitNet b1.58 absmean quantization: scale = mean|w|, values = clamp(round(w/scale))."""
    w = _float_matrix(w, "w")
    scale = max(float(np.abs(w).mean()), 1e-5)
    values = np.clip(np.rint(w / scale), -1, 1).astype(np.int8)
    return pack(values, scale, layout)


def dequantize(packed: PackedTernary) -> np.ndarray:
    """float32 {-scale, 0, +scale} matrix."""
    values, scale = unpack(packed)
    return values.astype(np.float32) * np.float32(scale)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row absmax int8 quantization of float32 (k,) or (n, k): (int8 (n, k), scales (n,)),
    with x ~= q * scale."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32, got {x.dtype}")
    x2 = np.atleast_2d(x)
    if x2.ndim != 2:
        raise ValueError(f"x must be (k,) or (n, k), got shape {x.shape}")
    absmax = np.abs(x2).max(axis=1)
    scales = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(x2 / scales[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q), scales


def matmul(
    packed: PackedTernary,
    x: np.ndarray,
    *,
    n_threads: int | None = None,
    kernel: Literal["auto", "scalar", "avx2"] = "auto",
) -> np.ndarray:
    """packed @ x for float32 x of shape (k,) -> (rows,), or (n, k) -> (n, rows)."""
    if not isinstance(packed, PackedTernary):
        raise TypeError("packed must come from quantize_weights() or pack()")
    k = packed.shape[1]
    x = np.asarray(x)
    if x.shape[-1] != k or x.ndim not in (1, 2):
        raise ValueError(f"x has shape {x.shape}; expected ({k},) or (n, {k})")
    if n_threads is None:
        n_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
    q, scales = quantize_activations(x)
    data = np.ascontiguousarray(packed.data, dtype=np.uint8)
    y = _core.ternary_gemm(data, k, packed.scale, q, scales, n_threads, kernel)
    return y[0] if x.ndim == 1 else y


def kernel_name() -> str:
    """The kernel matmul runs on this CPU (e.g. ``"i2s-avx2"``)."""
    return str(_core.kernel_name())


def cpu_features() -> dict[str, bool]:
    """Instruction sets that matter to the kernels, as detected at run time."""
    from .runtime import cpu_flags

    flags = cpu_flags()
    return {
        "avx2": bool(_core.cpu_has_avx2()),
        "avx512f": "avx512f" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "neon": "asimd" in flags,
    }
