"""bitnet.kernels: every SIMD path equals the scalar reference exactly; numpy API checks."""

from __future__ import annotations

import numpy as np
import pytest

import bitnet.kernels as K
from bitnet._native import _core

SIMD = ["avx2"] if _core.cpu_has_avx2() else []


def numpy_dot(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The oracle: exact integer products in numpy."""
    return q.astype(np.int64) @ values.astype(np.int64).T


@pytest.mark.parametrize("kernel", ["scalar", *SIMD])
@pytest.mark.parametrize(
    ("rows", "k", "case"),
    [
        (1, 128, "random"),
        (7, 256, "random"),
        (33, 2560, "random"),
        (5, 640, "all+1"),
        (5, 640, "all-1"),
        (3, 1280, "extreme"),
        (6, 128, "zeros"),
    ],
)
def test_kernels_are_exact(kernel, rows, k, case):
    rng = np.random.default_rng(rows * k)
    if case == "all+1":
        values = np.ones((rows, k), np.int8)
    elif case == "all-1":
        values = -np.ones((rows, k), np.int8)
    elif case == "zeros":
        values = np.zeros((rows, k), np.int8)
    else:
        values = rng.integers(-1, 2, (rows, k)).astype(np.int8)
    if case in ("all+1", "all-1", "extreme"):
        q = np.where(rng.random((3, k)) < 0.5, 127, -127).astype(np.int8)
    else:
        q = rng.integers(-127, 128, (3, k)).astype(np.int8)
    packed = K.pack(values, 0.5)
    scales = np.array([1.0, 0.25, 2.0], np.float32)
    y = _core.ternary_gemm(packed.data, k, 0.5, q, scales, 2, kernel)
    want = numpy_dot(values, q) * 0.5 * scales[:, None]
    np.testing.assert_array_equal(y, want.astype(np.float32))


def test_matmul_against_numpy():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((300, 512)).astype(np.float32)
    x = rng.standard_normal((4, 512)).astype(np.float32)
    packed = K.quantize_weights(w)
    dense = K.dequantize(packed)
    assert set(np.unique(dense / packed.scale)) <= {-1.0, 0.0, 1.0}
    assert packed.scale == pytest.approx(np.abs(w).mean(), rel=1e-6)
    want = x @ dense.T
    got = K.matmul(packed, x, n_threads=2)
    assert got.shape == (4, 300)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02  # int8 activation rounding
    np.testing.assert_array_equal(K.matmul(packed, x[0], n_threads=1), got[0])


def test_pack_round_trip_and_layout():
    rng = np.random.default_rng(2)
    values = rng.integers(-1, 2, (4, 256)).astype(np.int8)
    packed = K.pack(values, 0.75)
    back, scale = K.unpack(packed)
    np.testing.assert_array_equal(back, values)
    assert scale == 0.75 and packed.data.shape == (4, 64)
    # byte j of a block: weights j, 32+j, 64+j, 96+j, high bits first, code = w + 1
    byte = int(packed.data[0, 5])
    assert [(byte >> s & 3) - 1 for s in (6, 4, 2, 0)] == [values[0, i] for i in (5, 37, 69, 101)]


def test_activation_quantization():
    x = np.array([[0.0, 1.0, -2.0, 0.5] * 32], np.float32)
    q, s = K.quantize_activations(x)
    assert q.dtype == np.int8 and s[0] == pytest.approx(2.0 / 127)
    np.testing.assert_allclose(q * s[:, None], x, atol=s[0] / 2 + 1e-7)
    q0, s0 = K.quantize_activations(np.zeros(128, np.float32))
    assert not q0.any() and s0[0] == 1.0


def test_validation():
    packed = K.quantize_weights(np.ones((2, 128), np.float32))
    with pytest.raises(ValueError, match="not a multiple of 128"):
        K.quantize_weights(np.ones((2, 100), np.float32))
    with pytest.raises(TypeError, match="float32"):
        K.quantize_weights(np.ones((2, 128)))
    with pytest.raises(ValueError, match=r"expected \(128,\)"):
        K.matmul(packed, np.ones(64, np.float32))
    with pytest.raises(TypeError, match="float32"):
        K.matmul(packed, np.ones(128))
    with pytest.raises(ValueError, match="n_threads"):
        K.matmul(packed, np.ones(128, np.float32), n_threads=0)
    with pytest.raises(ValueError, match="kernel must be"):
        K.matmul(packed, np.ones(128, np.float32), kernel="neon")
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        K.pack(np.full((1, 128), 2, np.int8), 1.0)
    assert K.kernel_name() in ("i2s-avx2", "i2s-scalar")
    assert K.cpu_features()["avx2"] == bool(SIMD)


def test_threads_calling_at_once():
    import threading

    rng = np.random.default_rng(3)
    packed = K.quantize_weights(rng.standard_normal((512, 1024)).astype(np.float32))
    x = rng.standard_normal((2, 1024)).astype(np.float32)
    want = K.matmul(packed, x, n_threads=1)
    results, errors = [], []

    def call() -> None:
        try:
            for _ in range(20):
                results.append(K.matmul(packed, x, n_threads=2))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 80
    assert all(np.array_equal(r, want) for r in results)
