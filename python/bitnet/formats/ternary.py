"""Ternary weight layouts at the bit level: bitnet.cpp's I2_S packing, in numpy.

The one definition of I2_S packing shared by the converter, the checkpoint reader and
``bitnet.kernels``; TQ2_0/TQ1_0 packing is ggml's (``_core.gguf.quantize_rows``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["I2S_BLOCK", "i2s_pack", "i2s_unpack"]

I2S_BLOCK = 128  # weights per I2_S block (32 bytes of 2-bit codes)


def i2s_unpack(data: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """(ternary int8 values, scale) of an I2_S tensor of ``n`` weights (DESIGN.md layout:
    blocks of 128 weights in 32 bytes, byte j holding weights j, 32+j, 64+j, 96+j from the high
    bits down; code = weight + 1; a float32 scale in the first 4 bytes of the 32-byte tail)."""
    if n % 128:
        raise ValueError(f"I2_S needs a multiple of 128 weights, got {n}")
    codes = np.asarray(data[: n // 4], dtype=np.uint8).reshape(-1, 32)
    planes = [(codes >> shift) & 3 for shift in (6, 4, 2, 0)]
    values = np.concatenate(planes, axis=1).reshape(n).astype(np.int8) - 1
    if (values > 1).any():
        raise ValueError("I2_S data holds code 3, which is not a ternary value")
    scale = float(np.frombuffer(bytes(data[n // 4 : n // 4 + 4]), dtype="<f4")[0])
    return values, scale


def i2s_pack(values: np.ndarray, scale: float) -> np.ndarray:
    """Inverse of :func:`i2s_unpack` (tail padding written as zeros)."""
    values = np.asarray(values, dtype=np.int8).reshape(-1)
    if values.size % 128:
        raise ValueError(f"I2_S needs a multiple of 128 weights, got {values.size}")
    codes = (values + 1).astype(np.uint8).reshape(-1, 4, 32)
    packed = (codes[:, 0] << 6) | (codes[:, 1] << 4) | (codes[:, 2] << 2) | codes[:, 3]
    tail = np.zeros(32, dtype=np.uint8)
    tail[:4] = np.frombuffer(np.float32(scale).tobytes(), dtype=np.uint8)
    return np.concatenate([packed.reshape(-1), tail])
