"""bitnet._core.bench (csrc/bindings/register_bench.cpp): for benchmarks/ only."""

from typing import Literal

import numpy as np
import numpy.typing as npt

class GgmlTernaryMatmul:
    def __init__(self, weights: npt.NDArray[np.uint8], k: int) -> None: ...
    def run(self, x: npt.NDArray[np.float32], n_threads: int) -> npt.NDArray[np.float32]: ...

def time_gemv(
    matrices: list[npt.NDArray[np.uint8]] | list[GgmlTernaryMatmul],
    k: int,
    layout: Literal["i2_s", "tq2_0", "ggml"],
    scale: float,
    x: npt.NDArray[np.float32],
    n_threads: int,
    repeats: int,
) -> list[float]: ...
def memory_read_bandwidth(bytes: int, n_threads: int, repeats: int = 3) -> float: ...
