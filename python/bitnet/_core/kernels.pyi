"""bitnet._core.kernels (csrc/bindings/register_kernels.cpp): the ternary kernels."""

from typing import Literal

import numpy as np
import numpy.typing as npt

def kernel_name() -> str: ...
def available_kernels() -> list[str]: ...
def cpu_has_avx2() -> bool: ...
def quantize_activations(
    x: npt.NDArray[np.float32], simd: bool = True
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32], npt.NDArray[np.int32]]: ...
def ternary_gemm(
    weights: npt.NDArray[np.uint8],
    k: int,
    layout: str,
    w_scale: float,
    xq: npt.NDArray[np.int8],
    x_scale: npt.NDArray[np.float32],
    x_sum: npt.NDArray[np.int32],
    n_threads: int,
    kernel: str,
    batch_path: Literal["auto", "packed", "unpacked", "multi", "rows"] = "auto",
) -> npt.NDArray[np.float32]: ...
def q6k_matmul(
    weights: npt.NDArray[np.uint8],
    k: int,
    x: npt.NDArray[np.float32],
    kernel: Literal["scalar", "avx2"],
) -> npt.NDArray[np.float32]: ...
def i2s_to_tq2(rows: npt.NDArray[np.uint8], k: int, d_fp16: int) -> npt.NDArray[np.uint8]: ...
def tq2_to_i2s(rows: npt.NDArray[np.uint8], k: int) -> npt.NDArray[np.uint8]: ...
