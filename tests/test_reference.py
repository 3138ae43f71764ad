"""Engine logits against the independent numpy forward pass (bitnet.testing.reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bitnet
import bitnet.kernels as K
from bitnet.testing import (
    SHAPES,
    ReferenceModel,
    build_vocabulary,
    generate_model,
    synthetic_weights,
)

PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time, 1 2 3!"

# The engine rounds activations to int8 per 256-block before each ternary matmul (ggml's Q8_K),
# rounds the final hidden state to f16 for the f16 head, and keeps K/V in f16; the reference is
# float64. Measured relative L2 error is ~0.5-1.5%; 4% leaves room without hiding a wrong graph
# (a wrong activation, RoPE mode or head grouping gives 30% and more).
REL_L2_TOLERANCE = 0.04


def reference_logits(activation: str, seed: int, tokens: list[int], **kw) -> np.ndarray:
    shape = SHAPES["tiny"]
    weights = synthetic_weights(shape, build_vocabulary(), seed=seed, **kw)
    return ReferenceModel(shape, weights, activation).logits(tokens)


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("kernels", ["ggml", "bitnet"])
@pytest.mark.parametrize(
    ("fixture", "activation", "seed"), [("tiny_relu2", "relu2", 3), ("tiny_silu", "silu", 4)]
)
def test_bitnet_engine_matches_reference(request, fixture, activation, seed, kernels):
    path = request.getfixturevalue(fixture)
    with bitnet.Model(path, n_ctx=256, engine="bitnet", kernels=kernels) as model:
        assert model.kernels == ("ggml" if kernels == "ggml" else f"bitnet:{K.kernel_name()}")
        tokens = model.tokenize(PROMPT)
        got = model.logits(tokens)
        n_vocab = model.n_vocab
    want = reference_logits(activation, seed, tokens)
    assert got.dtype == np.float32
    assert got.shape == want.shape == (len(tokens), n_vocab)
    err = rel_l2(got, want)
    print(f"{activation}: max abs diff {np.abs(got - want).max():.4f}, rel L2 {err:.4f}")
    assert err < REL_L2_TOLERANCE
    assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() >= 0.9


def test_wrong_activation_is_detected(tiny_relu2):
    """The tolerance is tight enough to tell relu² from SiLU."""
    with bitnet.Model(tiny_relu2, n_ctx=256) as model:
        tokens = model.tokenize(PROMPT)
        got = model.logits(tokens)
    assert rel_l2(got, reference_logits("silu", 3, tokens)) > 4 * REL_L2_TOLERANCE


def test_llama_engine_runs_silu_file_like_reference(tiny_silu):
    """libllama's bitnet graph (SiLU) agrees with the reference on a SiLU file."""
    with bitnet.Model(tiny_silu, n_ctx=256, engine="llama") as model:
        assert model.engine == "llama"
        tokens = model.tokenize(PROMPT)
        got = model.logits(tokens)
    assert rel_l2(got, reference_logits("silu", 4, tokens)) < REL_L2_TOLERANCE


def test_our_kernels_in_batches_and_steps(tiny_relu2):
    """kernels='bitnet': chunked prompts, the last-token path and token-by-token decoding agree
    with one big batch (only the activation rounding of each step differs)."""
    with (
        bitnet.Model(tiny_relu2, n_ctx=256, n_batch=3, kernels="bitnet") as small,
        bitnet.Model(tiny_relu2, n_ctx=256, kernels="bitnet") as big,
    ):
        tokens = big.tokenize(PROMPT)
        # Our matmuls give the same numbers at any batch size (per-token scales, integer sums);
        # only ggml's attention sums in another order.
        np.testing.assert_allclose(small.logits(tokens), big.logits(tokens), rtol=0, atol=2e-3)
        want = int(np.argmax(big.logits(tokens)[-1]))
        assert big.generate(tokens, max_tokens=1, temperature=0).tokens == [want]


def test_tq1_0_stays_on_ggml_with_a_warning(tmp_path: Path, caplog):
    path = generate_model(tmp_path / "tq1.gguf", seed=5, ternary_type="tq1_0")
    with bitnet.Model(path, n_ctx=64, kernels="bitnet") as model:
        assert model.kernels == "ggml"
    assert "TQ2_0" in caplog.text


def test_kernels_argument_is_checked(tiny_relu2, tmp_path: Path):
    with pytest.raises(ValueError, match="kernels must be"):
        bitnet.Model(tiny_relu2, kernels="fast")  # type: ignore[arg-type]
    llama_file = generate_model(
        tmp_path / "llama.gguf", architecture="llama", activation="silu", seed=6
    )
    with pytest.raises(ValueError, match="kernels='bitnet' needs BitNetEngine"):
        bitnet.Model(llama_file, n_ctx=64, kernels="bitnet")


def test_untied_head_and_tq1_0(tmp_path: Path):
    path = generate_model(tmp_path / "untied.gguf", seed=5, tied=False, ternary_type="tq1_0")
    with bitnet.Model(path, n_ctx=128) as model:
        tokens = model.tokenize("Hello world, the cat sat.")
        got = model.logits(tokens)
    assert rel_l2(got, reference_logits("relu2", 5, tokens, tied=False)) < REL_L2_TOLERANCE


def test_batched_prompt_equals_token_by_token(tiny_relu2):
    """n_batch chunking and the KV cache give the same logits as one big batch."""
    with (
        bitnet.Model(tiny_relu2, n_ctx=256, n_batch=5) as small,
        bitnet.Model(tiny_relu2, n_ctx=256) as big,
    ):
        tokens = big.tokenize(PROMPT)
        # Only summation order differs (ggml picks other matmul kernels for other batch sizes).
        np.testing.assert_allclose(small.logits(tokens), big.logits(tokens), rtol=0, atol=5e-2)


def test_last_token_path_matches_all_logits(tiny_relu2):
    """generate() computes only the last token's logits; they must equal logits()[-1]."""
    with bitnet.Model(tiny_relu2, n_ctx=256) as model:
        for text in ("Hello", PROMPT, "One, two, three, four"):
            tokens = model.tokenize(text)
            want = int(np.argmax(model.logits(tokens)[-1]))
            assert model.generate(tokens, max_tokens=1, temperature=0).tokens == [want]


def test_llama_architecture_file_runs_on_libllama(tmp_path: Path):
    """engine='auto' hands other architectures to libllama; its logits match the reference."""
    path = generate_model(tmp_path / "llama.gguf", architecture="llama", activation="silu", seed=6)
    with bitnet.Model(path, n_ctx=256) as model:
        assert (model.architecture, model.engine) == ("llama", "llama")
        tokens = model.tokenize(PROMPT)
        got = model.logits(tokens)
        assert model.generate("Hello", max_tokens=4, temperature=0).usage.completion_tokens >= 1
    shape = SHAPES["tiny"]
    weights = synthetic_weights(shape, build_vocabulary(), seed=6, sub_norms=False)
    want = ReferenceModel(shape, weights, "silu", rope="normal").logits(tokens)
    assert rel_l2(got, want) < REL_L2_TOLERANCE


def test_models_on_one_file_share_repacked_weights(tiny_relu2):
    """Engines of one process on the same file share the repacked ternary matrices: closing one
    leaves the other's intact."""
    first = bitnet.Model(tiny_relu2, n_ctx=64, kernels="bitnet")
    second = bitnet.Model(tiny_relu2, n_ctx=64, kernels="bitnet")
    tokens = first.tokenize(PROMPT)[:12]
    want = first.logits(tokens)
    np.testing.assert_array_equal(second.logits(tokens), want)
    first.close()
    np.testing.assert_array_equal(second.logits(tokens), want)
    second.close()


def test_rewritten_file_is_repacked_again(tmp_path: Path):
    """The share is keyed by the file's identity: a file replaced at the same path is not served
    from the weights of the old one."""
    path = tmp_path / "model.gguf"
    generate_model(path, seed=3)
    with bitnet.Model(path, n_ctx=64, kernels="bitnet") as old:
        tokens = old.tokenize(PROMPT)[:12]
        generate_model(tmp_path / "other.gguf", seed=8)
        (tmp_path / "other.gguf").replace(path)
        with bitnet.Model(path, n_ctx=64, kernels="bitnet") as new:
            got = new.logits(tokens)
    assert rel_l2(got, reference_logits("relu2", 8, tokens)) < REL_L2_TOLERANCE


@pytest.mark.parametrize("kernels", ["ggml", "bitnet"])
def test_q6_k_head_matches_reference(tmp_path: Path, kernels):
    """A Q6_K embedding/head (what the 2B-4T files carry): the reference runs on gguf's own
    dequantization of the file's head, so only the engine's activation rounding remains. With
    kernels='bitnet' on AVX2 the head runs on our Q6_K kernel."""
    import gguf

    from bitnet.formats.convert import convert

    src = generate_model(tmp_path / "f16.gguf", seed=3)
    path = convert(src, tmp_path / "q6_k.gguf", type="tq2_0", embedding_type="q6_k")
    head = next(t for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight")
    assert head.tensor_type == gguf.GGMLQuantizationType.Q6_K
    shape = SHAPES["tiny"]
    vocab = build_vocabulary()
    embd = gguf.quants.dequantize(head.data, head.tensor_type).reshape(len(vocab.tokens), -1)
    weights = [
        (name, embd if name == "token_embd.weight" else w)
        for name, w in synthetic_weights(shape, vocab, seed=3)
    ]
    with bitnet.Model(path, n_ctx=256, kernels=kernels) as model:
        tokens = model.tokenize(PROMPT)
        got = model.logits(tokens)
    want = ReferenceModel(shape, weights, "relu2").logits(tokens)
    assert rel_l2(got, want) < REL_L2_TOLERANCE
    assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() >= 0.9
