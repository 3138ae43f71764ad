"""Ternary kernels from numpy: absmean weight quantization, int8 activations, GEMV/GEMM.

>>> import numpy as np, bitnet.kernels as K
>>> packed = K.quantize_weights(np.random.randn(6912, 2560).astype(np.float32))
>>> y = K.matmul(packed, np.random.randn(2560).astype(np.float32))   # (6912,), GIL released

Weights are 2-bit codes in one of two layouts that share a 128-weight group (32 bytes, byte j
holding weights j, 32+j, 64+j, 96+j):

- ``"i2_s"``: bitnet.cpp's I2_S, groups back to back, high bits first, one scale per matrix;
- ``"tq2_0"``: ggml's TQ2_0 blocks (256 weights, 64 bytes of codes, low bits first, then an
  fp16 scale), the layout BitNetEngine reads straight from the memory-mapped file.

Activations are quantized to int8 per row (absmax); the dot products are exact integer sums.
The implementation is chosen at run time from the CPU's features (AVX-512 VNNI, AVX2, NEON, else
a portable scalar loop); ``available_kernels()`` lists what this CPU can run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ._native import _core
from .cpu import cpu_flags, thread_count
from .formats.ternary import i2s_pack, i2s_unpack

__all__ = [
    "PackedTernary",
    "available_kernels",
    "convert_layout",
    "cpu_features",
    "dequantize",
    "kernel_name",
    "matmul",
    "pack",
    "quantize_activations",
    "quantize_weights",
    "unpack",
]

Layout = Literal["i2_s", "tq2_0"]
KernelName = Literal["auto", "scalar", "avx2", "avx512vnni", "amx", "neon"]
BLOCK = {"i2_s": 128, "tq2_0": 256}  # k must be a multiple of this


@dataclass(frozen=True)
class PackedTernary:
    """A ternary matrix of ``shape`` (rows, k): ``data`` uint8 rows in ``layout``, times ``scale``.

    For ``"tq2_0"`` the scale is also stored (as fp16) in every block, and ``scale`` is that
    fp16 value.
    """

    data: np.ndarray
    scale: float
    shape: tuple[int, int]
    layout: Layout = "i2_s"


def _check_layout(layout: str) -> None:
    if layout not in BLOCK:
        raise ValueError(f"layout must be 'i2_s' or 'tq2_0', got {layout!r}")


def _check_k(k: int, layout: str, name: str) -> None:
    if k % BLOCK[layout]:
        raise ValueError(
            f"{name} has k={k}, which is not a multiple of {BLOCK[layout]} "
            f"(the {layout} block size)"
        )


def _float_matrix(w: np.ndarray, name: str, layout: str) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {w.dtype}")
    if w.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, k), got shape {w.shape}")
    _check_k(w.shape[1], layout, name)
    return np.ascontiguousarray(w)


def pack(values: np.ndarray, scale: float, layout: Layout = "i2_s") -> PackedTernary:
    """Pack int8 values in {-1, 0, 1} of shape (rows, k) with one scale."""
    _check_layout(layout)
    if isinstance(scale, bool) or not isinstance(scale, int | float | np.number):
        raise TypeError(f"scale must be a number, got {type(scale).__name__}")
    if not np.isfinite(scale) or abs(float(scale)) > float(np.finfo(np.float32).max):
        raise ValueError(f"scale must be a finite float32 (|scale| <= 3.4e38), got {scale!r}")
    values = np.asarray(values)
    if values.dtype != np.int8 or values.ndim != 2:
        raise TypeError("values must be a 2-D int8 array")
    _check_k(values.shape[1], layout, "values")
    if values.size and (values.min() < -1 or values.max() > 1):
        raise ValueError("values must be -1, 0 or 1")
    rows, k = values.shape
    data = i2s_pack(values, scale)[:-32].reshape(rows, k // 4)
    packed = PackedTernary(data, float(scale), (rows, k))
    return packed if layout == "i2_s" else convert_layout(packed, "tq2_0")


def convert_layout(packed: PackedTernary, layout: Layout) -> PackedTernary:
    """The same matrix in another layout (I2_S <-> TQ2_0; the codes are kept exactly, and
    the scale becomes fp16 in TQ2_0)."""
    _check_layout(layout)
    if packed.layout == layout:
        return packed
    rows, k = packed.shape
    _check_k(k, "tq2_0", "the matrix")
    if layout == "tq2_0":
        if not abs(packed.scale) <= float(np.finfo(np.float16).max):
            raise ValueError(
                f"scale {packed.scale!r} does not fit TQ2_0's float16 scale (largest 65504); "
                "keep this matrix in i2_s"
            )
        d = np.float16(packed.scale)
        data = _core.kernels.i2s_to_tq2(
            np.ascontiguousarray(packed.data), k, int(d.view(np.uint16))
        )
        return PackedTernary(data, float(d), (rows, k), "tq2_0")
    data = _core.kernels.tq2_to_i2s(np.ascontiguousarray(packed.data), k)
    return PackedTernary(data, packed.scale, (rows, k), "i2_s")


def unpack(packed: PackedTernary) -> tuple[np.ndarray, float]:
    """(int8 values (rows, k), scale)."""
    packed = convert_layout(packed, "i2_s")
    rows, k = packed.shape
    tail = np.zeros(32, dtype=np.uint8)
    values, _ = i2s_unpack(np.concatenate([packed.data.reshape(-1), tail]), rows * k)
    return values.reshape(rows, k), packed.scale


def quantize_weights(w: np.ndarray, layout: Layout = "i2_s") -> PackedTernary:
    """BitNet b1.58 absmean quantization: scale = mean|w|, values = clamp(round(w/scale))."""
    _check_layout(layout)
    w = _float_matrix(w, "w", layout)
    if w.size == 0:
        raise ValueError(f"w is empty (shape {w.shape}); it needs at least one row and column")
    if not np.isfinite(w).all():
        raise ValueError("w has NaN or infinite values; ternary quantization needs finite weights")
    # Summed in float64: the float32 sum of weights near float32's limit would overflow.
    scale = max(float(np.abs(w).mean(dtype=np.float64)), 1e-5)
    values = np.clip(np.rint(w / scale), -1, 1).astype(np.int8)
    return pack(values, scale, layout)


def dequantize(packed: PackedTernary) -> np.ndarray:
    """float32 {-scale, 0, +scale} matrix."""
    values, scale = unpack(packed)
    return values.astype(np.float32) * np.float32(scale)


def _activations(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32, got {x.dtype}")
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be (k,) or (n, k), got shape {x.shape}")
    return np.ascontiguousarray(np.atleast_2d(x))


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row absmax int8 quantization of float32 (k,) or (n, k): (int8 (n, k), scales (n,)),
    with x ~= q * scale and q in [-127, 127] (the engine's own routine)."""
    q, scales, _ = _core.kernels.quantize_activations(_activations(x))
    return q, scales


def matmul(
    packed: PackedTernary,
    x: np.ndarray,
    *,
    n_threads: int | None = None,
    kernel: KernelName = "auto",
) -> np.ndarray:
    """packed @ x for float32 x of shape (k,) -> (rows,), or (n, k) -> (n, rows).

    ``n_threads`` defaults to the CPUs this process may use; the GIL is released meanwhile.
    ``kernel`` forces one implementation (tests and benchmarks compare them).
    """
    if not isinstance(packed, PackedTernary):
        raise TypeError("packed must come from quantize_weights() or pack()")
    k = packed.shape[1]
    x = np.asarray(x)
    if x.ndim not in (1, 2) or x.shape[-1] != k:
        raise ValueError(f"x has shape {x.shape}; expected ({k},) or (n, {k})")
    threads = thread_count(n_threads, name="n_threads")
    q, scales, sums = _core.kernels.quantize_activations(_activations(x))
    data = np.ascontiguousarray(packed.data, dtype=np.uint8)
    y = _core.kernels.ternary_gemm(
        data, k, packed.layout, packed.scale, q, scales, sums, threads, kernel
    )
    return y[0] if x.ndim == 1 else y


def kernel_name() -> str:
    """The kernel matmul and the engine run on this CPU: ``amx`` (AVX-512 VNNI, with AMX-INT8 tiles
    for batches), ``avx512vnni``, ``avx2``, ``neon`` or ``scalar``."""
    return str(_core.kernels.kernel_name())


def available_kernels() -> list[str]:
    """Every kernel this CPU can run (``matmul(kernel=...)`` accepts these)."""
    return [str(name) for name in _core.kernels.available_kernels()]


def cpu_features() -> dict[str, bool]:
    """Instruction sets that matter to the kernels, as detected at run time."""
    flags = cpu_flags()
    return {
        "avx2": bool(_core.kernels.cpu_has_avx2()),
        "avx512f": "avx512f" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "neon": "asimd" in flags or "neon" in flags,
    }
