"""Property-based tests (hypothesis): any value given to a public argument either works or
raises an ordinary exception; none reaches native code unchecked (which would crash the test
run itself) and none is silently taken for something else."""

from __future__ import annotations

import contextlib
import io
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bitnet
from bitnet import cli

# What an argument may legitimately raise: the caller's mistake, said as such.
ORDINARY = (TypeError, ValueError, OverflowError, bitnet.BitNetError)

# "ci": the same 300 examples per test on every run (deterministic); a wider random search:
# BITNET_HYPOTHESIS=deep python -m pytest tests/test_properties.py
for _name, _count, _fixed in (("ci", 300, True), ("deep", 5000, False)):
    settings.register_profile(
        _name,
        max_examples=_count,
        derandomize=_fixed,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
settings.load_profile(os.environ.get("BITNET_HYPOTHESIS", "ci"))


# Text including lone surrogates (category Cs), which hypothesis leaves out by default.
texts = st.text(st.characters(codec=None, categories=None), max_size=40)
huge_ints = st.sampled_from([2**31 - 1, 2**31, 2**32, 2**63, 2**64, -(2**31), -(2**63), 10**30])
ints = st.one_of(st.integers(-5, 300), huge_ints)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-45, 1e38, 1e300]),
)
anything = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    floats,
    texts,
    st.binary(max_size=8),
    st.lists(st.integers(-3, 400), max_size=4),
    st.builds(np.int64, st.integers(-(2**63), 2**63 - 1)),
    st.builds(np.float32, st.floats(width=32)),
    st.just(object()),
)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly values of the right kind, sometimes anything at all."""
    return st.one_of(strategy, strategy, anything)


sampling = st.fixed_dictionaries(
    {},
    optional={
        "max_tokens": maybe(ints),
        "temperature": maybe(floats),
        "top_p": maybe(floats),
        "top_k": maybe(ints),
        "min_p": maybe(floats),
        "repeat_penalty": maybe(floats),
        "stop": maybe(st.one_of(texts, st.lists(texts, max_size=3))),
        "seed": maybe(ints),
    },
)
prompts = maybe(st.one_of(texts, st.lists(st.integers(-3, 400), max_size=8)))


@pytest.fixture(scope="module")
def model(tiny_relu2):
    with bitnet.Model(tiny_relu2, n_ctx=64, n_threads=1) as m:
        yield m


def _call(f, *args, **kwargs):
    try:
        return f(*args, **kwargs)
    except ORDINARY:
        return None


@given(prompt=prompts, kwargs=sampling)
def test_generate_and_stream(model, prompt, kwargs):
    result = _call(model.generate, prompt, **kwargs)
    if result is not None:
        assert result.finish_reason in ("stop", "length", "abort")
        assert len(result.tokens) <= model.n_ctx
        temperature = kwargs.get("temperature", 0.8)
        assert isinstance(temperature, int | float | np.number) and math.isfinite(temperature)
    stream = _call(model.stream, prompt, **kwargs)
    if stream is not None:
        with stream:
            text = "".join(stream)
        assert stream.result is not None and stream.result.text == text


@given(
    messages=maybe(
        st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system", "assistant", "x"]), "content": texts}
            ),
            max_size=3,
        )
    ),
    kwargs=sampling,
)
def test_chat(model, messages, kwargs):
    _call(model.chat, messages, **kwargs)


@given(text=maybe(texts), add_bos=anything, special=anything, tokens=maybe(st.lists(ints)))
def test_tokenize_detokenize_logits(model, text, add_bos, special, tokens):
    ids = _call(model.tokenize, text, add_bos=add_bos, special=special)
    if ids is not None:
        assert all(0 <= t < model.n_vocab for t in ids)
    _call(model.detokenize, tokens, special=special)
    logits = _call(model.logits, tokens)
    if logits is not None:
        assert logits.shape == (len(tokens), model.n_vocab)


@given(
    kwargs=st.fixed_dictionaries(
        {},
        optional={
            "n_ctx": maybe(st.integers(-2, 300)),
            "n_threads": maybe(st.integers(-2, 4)),
            "n_threads_batch": maybe(st.integers(-2, 4)),
            "n_batch": maybe(st.integers(-2, 300)),
            "seed": maybe(ints),
            "use_mmap": anything,
            "engine": maybe(st.sampled_from(["auto", "bitnet", "llama"])),
            "kernels": maybe(st.sampled_from(["auto", "bitnet", "ggml"])),
        },
    )
)
def test_model_constructor(tiny_relu2, kwargs):
    m = _call(bitnet.Model, tiny_relu2, **kwargs)
    if m is not None:
        with m:
            result = _call(m.generate, "Hi", max_tokens=2, temperature=0)  # n_ctx may be tiny
            assert result is None or result.usage.completion_tokens <= 2


@given(
    options=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "-n",
                    "--top-k",
                    "--temperature",
                    "--top-p",
                    "--min-p",
                    "--repeat-penalty",
                    "--seed",
                    "--batch-size",
                    "--threads",
                    "--threads-batch",
                    "--stop",
                    "--prompt",
                    "--kernels",
                    "--engine",
                ]
            ),
            st.one_of(
                st.integers(-(2**70), 2**70).map(str),
                st.sampled_from(["auto", "nan", "inf", "-inf", "1e400", "0", "", "bitnet"]),
                texts,
            ),
        ),
        max_size=4,
    ),
    ctx=st.one_of(st.integers(-3, 256).map(str), st.sampled_from(["", "x", "1e3", "2**40"])),
)
def test_run_options(tiny_relu2, options, ctx):
    argv = ["run", "-m", str(tiny_relu2), "-p", "Hi", "-n", "2"]
    for flag, value in options:
        argv += [flag, value]
    # Last, so that it holds: -n may ask for anything, but only up to a small context.
    argv += ["--ctx-size", ctx]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse: a value that is not of the option's type
            code = exc.code
    assert code in (cli.EXIT_OK, cli.EXIT_USAGE), (argv, code, err.getvalue())
    if code == cli.EXIT_USAGE:
        assert "error:" in err.getvalue() and "Traceback" not in err.getvalue()


@given(
    rows=st.integers(0, 9),
    k=st.sampled_from([0, 1, 64, 100, 128, 256, 384, 512]),
    extra=st.sampled_from([0, 0, 0, 1, -1, 7]),
    layout=maybe(st.sampled_from(["i2_s", "tq2_0"])),
    scale=maybe(floats),
    n_tokens=st.integers(0, 6),
    x_extra=st.sampled_from([0, 0, 1]),
    x_fill=st.floats(width=32),
    n_threads=maybe(st.one_of(st.none(), ints)),
    kernel=maybe(st.sampled_from(["auto", "scalar", "avx2", "avx512vnni", "neon", "x"])),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_matmul(
    rows, k, extra, layout, scale, n_tokens, x_extra, x_fill, n_threads, kernel, seed
):
    """The numpy kernel API with packed matrices of any shape (also ones it did not make)."""
    from bitnet import kernels

    rng = np.random.default_rng(seed)
    width = max(0, k // 4 + extra)
    data = rng.integers(0, 256, size=(rows, width), dtype=np.uint8)
    packed = kernels.PackedTernary(data, scale, (rows, k), layout)
    x = np.full((n_tokens, k + x_extra), x_fill, dtype=np.float32)
    y = _call(kernels.matmul, packed, x, n_threads=n_threads, kernel=kernel)
    if y is not None:
        assert y.shape == (n_tokens, rows)
    w = np.full((rows, k + x_extra), x_fill, dtype=np.float32)
    _call(kernels.quantize_weights, w, layout=layout)
    _call(kernels.quantize_activations, x)
