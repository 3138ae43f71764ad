"""bitnet.kernels: every SIMD path equals the scalar reference exactly; numpy API checks."""

from __future__ import annotations

import os

import numpy as np
import pytest

import bitnet.kernels as K
from bitnet._native import _core

SIMD = [name for name in K.available_kernels() if name != "scalar"]


def numpy_dot(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The oracle: exact integer products in numpy."""
    return q.astype(np.int64) @ values.astype(np.int64).T


def pack_i2s(values: np.ndarray) -> np.ndarray:
    """The test's own I2_S packer: per 128 weights 32 bytes, byte j = codes of j, 32+j, 64+j,
    96+j from the high bits down, code = w + 1."""
    rows, k = values.shape
    codes = (values.astype(np.int64) + 1).reshape(rows, k // 128, 4, 32)
    packed = (codes[:, :, 0] << 6) | (codes[:, :, 1] << 4) | (codes[:, :, 2] << 2) | codes[:, :, 3]
    return packed.reshape(rows, k // 4).astype(np.uint8)


def pack_tq2(values: np.ndarray, d: float) -> np.ndarray:
    """The test's own TQ2_0 packer (ggml's block_tq2_0): per 256 weights qs[64] then fp16 d;
    qs[32 * j + m] holds weight 128 * j + 32 * n + m at bits 2n."""
    rows, k = values.shape
    codes = (values.astype(np.int64) + 1).reshape(rows, k // 256, 2, 4, 32)
    qs = sum(codes[:, :, :, n] << (2 * n) for n in range(4)).reshape(rows, k // 256, 64)
    scale = np.full((rows, k // 256, 1), np.float16(d)).view(np.uint8).reshape(rows, k // 256, 2)
    return np.concatenate([qs.astype(np.uint8), scale], axis=2).reshape(rows, -1)


@pytest.mark.parametrize("layout", ["i2_s", "tq2_0"])
@pytest.mark.parametrize("kernel", ["scalar", *SIMD])
@pytest.mark.parametrize(
    ("rows", "k", "n", "case"),
    [
        (1, 256, 1, "random"),
        (7, 256, 3, "random"),
        (33, 2560, 1, "random"),
        (33, 2560, 5, "random"),
        (5, 768, 2, "all+1"),
        (5, 768, 2, "all-1"),
        (3, 1280, 3, "extreme"),
        (6, 256, 2, "zeros"),
        (9, 6912, 4, "random"),
        (4, 4096 + 256, 1, "extreme"),  # long rows: 16-bit partial sums flushed in time
        # batches of >= 4 tokens run over unpacked codes in chunks of 2048 weights
        (11, 4352, 7, "extreme"),
        (6, 2560, 9, "all-1"),
        (13, 2048, 4, "all+1"),
    ],
)
def test_kernels_are_exact(layout, kernel, rows, k, n, case):
    rng = np.random.default_rng(rows * k + n)
    if case == "all+1":
        values = np.ones((rows, k), np.int8)
    elif case == "all-1":
        values = -np.ones((rows, k), np.int8)
    elif case == "zeros":
        values = np.zeros((rows, k), np.int8)
    else:
        values = rng.integers(-1, 2, (rows, k)).astype(np.int8)
    if case in ("all+1", "all-1", "extreme"):
        q = np.where(rng.random((n, k)) < 0.5, 127, -127).astype(np.int8)
        if case == "extreme":
            q[:, : k // 2] = 127
            values[:, : k // 2] = 1
    else:
        q = rng.integers(-127, 128, (n, k)).astype(np.int8)
    data = pack_i2s(values) if layout == "i2_s" else pack_tq2(values, 0.5)
    scales = np.resize(np.array([1.0, 0.25, 2.0, 0.5, 4.0], np.float32), n)
    sums = q.astype(np.int32).sum(axis=1, dtype=np.int32)
    y = _core.kernels.ternary_gemm(data, k, layout, 0.5, q, scales, sums, 2, kernel)
    want = numpy_dot(values, q).astype(np.float64) * 0.5 * scales[:, None]
    np.testing.assert_array_equal(y, want.astype(np.float32))


@pytest.mark.parametrize("kernel", ["scalar", *SIMD])
def test_batch_paths_agree(kernel):
    """A batch forced over packed codes and over unpacked codes gives the oracle's exact sums."""
    rng = np.random.default_rng(11)
    values = rng.integers(-1, 2, (10, 2560)).astype(np.int8)
    q = rng.integers(-127, 128, (6, 2560)).astype(np.int8)
    sums = q.astype(np.int32).sum(axis=1, dtype=np.int32)
    ones = np.ones(6, np.float32)
    want = numpy_dot(values, q).astype(np.float32)
    data = pack_tq2(values, 1.0)
    for path in ("auto", "packed", "unpacked"):
        y = _core.kernels.ternary_gemm(data, 2560, "tq2_0", 1.0, q, ones, sums, 2, kernel, path)
        np.testing.assert_array_equal(y, want)
    # The multi-token kernel (decode steps of several sequences), where the kernel has one, at
    # every token count around its chunk of 8, on both layouts.
    i2s = pack_i2s(values)
    for n in (1, 2, 3, 5, 7, 8, 9, 16, 17):
        qn = rng.integers(-127, 128, (n, 2560)).astype(np.int8)
        sn = qn.astype(np.int32).sum(axis=1, dtype=np.int32)
        want_n = numpy_dot(values, qn).astype(np.float32)
        ones_n = np.ones(n, np.float32)
        try:
            y = _core.kernels.ternary_gemm(
                data, 2560, "tq2_0", 1.0, qn, ones_n, sn, 2, kernel, "multi"
            )
        except ValueError as exc:
            assert "no multi-token path" in str(exc)
            break
        np.testing.assert_array_equal(y, want_n)
        y = _core.kernels.ternary_gemm(data, 2560, "tq2_0", 1.0, qn, ones_n, sn, 2, kernel, "auto")
        np.testing.assert_array_equal(y, want_n)
        y = _core.kernels.ternary_gemm(i2s, 2560, "i2_s", 1.0, qn, ones_n, sn, 1, kernel, "multi")
        np.testing.assert_array_equal(y, want_n)
    # Whole row ranges on the tile unit (AMX), where the kernel has them: numpy's exact sums for
    # row and token counts around its 32 x 32 blocks, on both layouts.
    for rows, n in ((10, 17), (32, 32), (45, 70)):
        v = rng.integers(-1, 2, (rows, 2560)).astype(np.int8)
        qn = rng.integers(-127, 128, (n, 2560)).astype(np.int8)
        sn = qn.astype(np.int32).sum(axis=1, dtype=np.int32)
        want_n = numpy_dot(v, qn).astype(np.float32)
        ones_n = np.ones(n, np.float32)
        for layout, packed in (("tq2_0", pack_tq2(v, 1.0)), ("i2_s", pack_i2s(v))):
            try:
                y = _core.kernels.ternary_gemm(
                    packed, 2560, layout, 1.0, qn, ones_n, sn, 2, kernel, "rows"
                )
            except ValueError as exc:
                assert "no row-block (AMX) path" in str(exc)
                break
            np.testing.assert_array_equal(y, want_n)
    with pytest.raises(ValueError, match="batch_path must be"):
        _core.kernels.ternary_gemm(data, 2560, "tq2_0", 1.0, q, ones, sums, 2, kernel, "fast")


def test_i2s_kernel_takes_odd_group_counts():
    rng = np.random.default_rng(5)
    values = rng.integers(-1, 2, (5, 384)).astype(np.int8)  # 3 groups of 128
    for n in (2, 5):  # over packed codes and, for batches, over unpacked codes
        q = rng.integers(-127, 128, (n, 384)).astype(np.int8)
        sums = q.astype(np.int32).sum(axis=1, dtype=np.int32)
        for kernel in ["scalar", *SIMD]:
            ones = np.ones(n, np.float32)
            y = _core.kernels.ternary_gemm(
                pack_i2s(values), 384, "i2_s", 1.0, q, ones, sums, 1, kernel
            )
            np.testing.assert_array_equal(y, numpy_dot(values, q).astype(np.float32))


def test_layout_conversion_round_trips():
    rng = np.random.default_rng(6)
    values = rng.integers(-1, 2, (3, 512)).astype(np.int8)
    i2s = K.pack(values, 0.3)
    np.testing.assert_array_equal(i2s.data, pack_i2s(values))
    tq2 = K.convert_layout(i2s, "tq2_0")
    np.testing.assert_array_equal(tq2.data, pack_tq2(values, 0.3))
    assert tq2.scale == float(np.float16(0.3))
    back = K.convert_layout(tq2, "i2_s")
    np.testing.assert_array_equal(back.data, i2s.data)
    np.testing.assert_array_equal(K.unpack(tq2)[0], values)
    np.testing.assert_array_equal(K.pack(values, 0.3, layout="tq2_0").data, tq2.data)


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


@pytest.mark.parametrize("k", [128, 2560, 6912, 100, 37])
def test_simd_activation_quantization_equals_scalar(k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((4, k)).astype(np.float32) * np.float32(3)
    x[1] = 0.0
    x[2, : k // 2] = 127.0  # ties and extremes
    x[3] = np.round(rng.standard_normal(k) * 50).astype(np.float32) + np.float32(0.5)
    simd = _core.kernels.quantize_activations(x)
    scalar = _core.kernels.quantize_activations(x, False)
    for a, b in zip(simd, scalar, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(simd[2], simd[0].astype(np.int32).sum(axis=1))


def test_activation_quantization():
    rng = np.random.default_rng(7)
    magnitudes = np.array([[1], [10], [1e-3], [100], [3]], np.float32)
    x = rng.standard_normal((5, 2560)).astype(np.float32) * magnitudes
    q, s = K.quantize_activations(x)
    absmax = np.abs(x).max(axis=1)
    np.testing.assert_allclose(s, absmax / 127, rtol=1e-6)
    want = np.clip(np.rint(x / s[:, None]), -127, 127)  # numpy oracle, half to even like the engine
    assert np.abs(q.astype(np.int64) - want).max() <= 1  # a tie may round differently in float32
    assert (q == want).mean() > 0.999
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
        K.matmul(packed, np.ones(128, np.float32), kernel="sse9")
    for name in {"avx2", "avx512vnni", "neon"} - set(K.available_kernels()):
        with pytest.raises(ValueError, match="cannot run"):
            K.matmul(packed, np.ones(128, np.float32), kernel=name)
    with pytest.raises(ValueError, match="not a multiple of 256"):
        K.quantize_weights(np.ones((2, 128), np.float32), layout="tq2_0")
    with pytest.raises(ValueError, match="layout must be"):
        K.quantize_weights(np.ones((2, 128), np.float32), layout="i2")
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        K.pack(np.full((1, 128), 2, np.int8), 1.0)
    assert K.kernel_name() in K.available_kernels()
    assert K.cpu_features()["avx2"] == ("avx2" in K.available_kernels())


@pytest.mark.parametrize("cap", ["scalar", "avx2", "nonsense"])
def test_max_isa_caps_the_kernel_auto_picks(cap):
    import subprocess
    import sys

    code = "import bitnet.kernels as K; print(K.kernel_name(), ' '.join(K.available_kernels()))"
    env = {**os.environ, "BITNET_MAX_ISA": cap}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    name, *available = out.stdout.split()
    if cap == "nonsense" or cap not in available:
        assert name == K.kernel_name()  # ignored: the fastest runs
    else:
        assert name == cap


def test_threads_calling_at_once():
    """Callers take turns on the kernels' pool: jobs of different thread counts (so workers sit
    some jobs out), back to back (workers still polling) and after pauses (workers asleep)."""
    import threading
    import time

    rng = np.random.default_rng(3)
    packed = K.quantize_weights(rng.standard_normal((512, 1024)).astype(np.float32))
    x = rng.standard_normal((2, 1024)).astype(np.float32)
    want = K.matmul(packed, x, n_threads=1)
    results, errors = [], []

    def call(n_threads: int) -> None:
        try:
            for i in range(40):
                results.append(K.matmul(packed, x, n_threads=n_threads))
                if i % 10 == 9:
                    time.sleep(0.002)  # longer than the workers poll: they go to sleep
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(1 + i % 4,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 240
    assert all(np.array_equal(r, want) for r in results)


def test_ggml_tq2_path_agrees_with_ours():
    """ggml's TQ2_0 matmul (Q8_K activations) and ours (per-row int8) on the same bytes: both
    approximate the float product within their activation rounding."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((96, 512)).astype(np.float32)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    packed = K.quantize_weights(w, layout="tq2_0")
    want = x @ K.dequantize(packed).T
    ours = K.matmul(packed, x, n_threads=2)
    ggml = _core.bench.GgmlTernaryMatmul(packed.data, 512).run(x, 2)
    for got in (ours, ggml):
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02


def test_memory_bandwidth_probe():
    assert _core.bench.memory_read_bandwidth(1 << 24, 1, 1) > 0.1
    with pytest.raises(ValueError, match="1 MiB"):
        _core.bench.memory_read_bandwidth(10, 1, 1)


# ---- the Q6_K head kernel ---------------------------------------------------------------------


def q6k_blocks(rng: np.random.Generator, rows: int, k: int, scales: np.ndarray) -> np.ndarray:
    """Random Q6_K rows (any bytes are a valid block) whose fp16 d are taken from ``scales``."""
    nb = k // 256
    raw = rng.integers(0, 256, size=(rows, nb, 210), dtype=np.uint8)
    d = rng.choice(scales, size=(rows, nb)).astype(np.float16)
    raw[:, :, 208:210] = d.view(np.uint8).reshape(rows, nb, 2)
    return raw.reshape(rows, nb * 210)


def q8_per_block(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-256 absmax int8 quantization in numpy: (q (n, k) int64, d (n, k/256) float32)."""
    blocks = x.reshape(x.shape[0], -1, 256).astype(np.float32)
    absmax = np.abs(blocks).max(axis=2)
    d = np.where(absmax > 0, absmax / np.float32(127), np.float32(1)).astype(np.float32)
    inv = (np.float32(1) / d).astype(np.float32)
    q = np.clip(np.rint(blocks * inv[:, :, None]), -127, 127).astype(np.int64)
    return q.reshape(x.shape), d


@pytest.mark.parametrize("kernel", ["scalar", "avx2"])
@pytest.mark.parametrize(("rows", "k"), [(1, 256), (37, 512), (70, 2560)])
def test_q6k_head_kernel_against_gguf_dequantization(kernel, rows, k):
    """Our Q6_K kernel equals gguf's (independent) dequantization times the per-block int8
    activations, computed in float64, up to float32 rounding; scales include subnormal fp16
    values, zero and negatives, activations an all-zero block and extremes."""
    if kernel == "avx2" and not _core.kernels.cpu_has_avx2():
        pytest.skip("no AVX2 on this CPU")
    from gguf import GGMLQuantizationType, quants

    rng = np.random.default_rng(rows + k)
    scales = np.array([3e-7, 2e-5, 6e-5, 1e-3, -4e-3, 0.0, 0.5], dtype=np.float32)
    w = q6k_blocks(rng, rows, k, scales)
    deq = quants.dequantize(w, GGMLQuantizationType.Q6_K).reshape(rows, k).astype(np.float64)
    x = rng.standard_normal((3, k)).astype(np.float32)
    x[1, :256] = 0.0
    x[2, ::7] = 1e4
    q, d = q8_per_block(x)
    nb = k // 256
    want = np.zeros((3, rows))
    for b in range(nb):
        cols = slice(256 * b, 256 * b + 256)
        want += d[:, b : b + 1].astype(np.float64) * (q[:, cols] @ deq[:, cols].T)
    got = _core.kernels.q6k_matmul(w, k, x, kernel)
    assert got.shape == (3, rows) and got.dtype == np.float32
    scale = np.abs(want).max() + 1e-30
    assert np.abs(got - want).max() / scale < 1e-5


def test_q6k_head_kernel_validation():
    w = np.zeros((4, 210), dtype=np.uint8)
    with pytest.raises(ValueError, match="multiple of 256"):
        _core.kernels.q6k_matmul(w, 100, np.zeros((1, 100), np.float32), "scalar")
    with pytest.raises(ValueError, match=r"\(rows, 420\)"):
        _core.kernels.q6k_matmul(w, 512, np.zeros((1, 512), np.float32), "scalar")
    with pytest.raises(ValueError, match="x must be"):
        _core.kernels.q6k_matmul(w, 256, np.zeros((1, 512), np.float32), "scalar")
    with pytest.raises(ValueError, match="kernel must be"):
        _core.kernels.q6k_matmul(w, 256, np.zeros((1, 256), np.float32), "neon")


def test_native_gemv_timer_for_the_benchmark():
    """bench_kernels.py's C++ timing loop: one time per pass for each runner, inputs checked."""
    rng = np.random.default_rng(1)
    packed = K.quantize_weights(rng.standard_normal((64, 512)).astype(np.float32), layout="tq2_0")
    x = rng.standard_normal(512).astype(np.float32)
    i2s = K.convert_layout(packed, "i2_s")
    for items, layout in (
        ([packed.data, packed.data], "tq2_0"),
        ([i2s.data], "i2_s"),
        ([_core.bench.GgmlTernaryMatmul(packed.data, 512)], "ggml"),
    ):
        times = _core.bench.time_gemv(items, 512, layout, 1.0, x, 2, 3)
        assert len(times) == 3 and all(t > 0 for t in times)
    with pytest.raises(ValueError, match=r"\(rows, 128\)"):
        _core.bench.time_gemv([packed.data], 512, "i2_s", 1.0, x, 1, 1)
    with pytest.raises(ValueError, match="x must be"):
        _core.bench.time_gemv([i2s.data], 512, "i2_s", 1.0, x[:256], 1, 1)
    with pytest.raises(ValueError, match="need repeats from 1"):
        _core.bench.time_gemv([i2s.data], 512, "i2_s", 1.0, x, 1, 0)


def test_scales_at_float32s_limit():
    """Weights near float32's largest value quantize without overflow (the mean is summed in
    float64), and a scale float32 cannot hold is refused instead of becoming inf."""
    w = np.full((2, 128), 3.4e38, dtype=np.float32)
    packed = K.quantize_weights(w)
    assert np.isfinite(packed.scale) and packed.scale > 3e38
    with pytest.raises(ValueError, match="finite float32"):
        K.pack(np.zeros((1, 128), np.int8), 1e300)
