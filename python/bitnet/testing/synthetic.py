"""Real-format BitNet GGUF files with random ternary weights, for tests and benchmarks.

The shapes are real (``"2b4t"`` is microsoft/BitNet-b1.58-2B-4T exactly); the weights are
random, so the text is nonsense but every code path and every byte of memory traffic is real.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from .vocab import TokenType, Vocabulary, build_vocabulary

__all__ = [
    "SHAPES",
    "ModelShape",
    "TernaryWeight",
    "generate_model",
    "synthetic_weights",
]

Activation = Literal["relu2", "silu"]
TernaryType = Literal["tq2_0", "tq1_0"]


@dataclass(frozen=True)
class ModelShape:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int
    rope_freq_base: float
    rms_eps: float
    n_vocab: int | None  # None: just the small byte-level BPE vocabulary

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(256, 2, 4, 2, 512, 4096, 10000.0, 1e-5, None),
    "2b4t": ModelShape(2560, 30, 20, 5, 6912, 4096, 500000.0, 1e-5, 128256),
}

BITNET_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
    "{% if message['role'] == 'system' %}System: {{ message['content'] }}<|eot_id|>"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}<|eot_id|>"
    "{% else %}Assistant: {{ message['content'] }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)


@dataclass(frozen=True)
class TernaryWeight:
    """``values`` in {-1, 0, 1} (int8, shape (out, in)) times one float16-exact ``scale``."""

    values: np.ndarray
    scale: float

    def dense(self) -> np.ndarray:
        return self.values.astype(np.float32) * np.float32(self.scale)


def _ternary(rng: np.random.Generator, rows: int, cols: int) -> TernaryWeight:
    values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
    # Unit-variance outputs for unit-RMS inputs (2/3 of the weights are non-zero); rounded to a
    # float16 value so that TQ2_0/TQ1_0 block scales store it exactly.
    scale = float(np.float16(1.0 / np.sqrt(cols * 2.0 / 3.0)))
    return TernaryWeight(values, scale)


def _norm(rng: np.random.Generator, n: int) -> np.ndarray:
    return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)


def _embedding(rng: np.random.Generator, vocab: Vocabulary, n_embd: int) -> np.ndarray:
    n_vocab = len(vocab.tokens)
    out = np.empty((n_vocab, n_embd), dtype=np.float16)
    for start in range(0, n_vocab, 8192):  # bounded float32 temporaries for large vocabularies
        stop = min(start + 8192, n_vocab)
        rows = 0.1 * rng.standard_normal((stop - start, n_embd), dtype=np.float32)
        out[start:stop] = rows.astype(np.float16)
    # Rows near zero give logits near zero: a random model then rarely picks a control token or
    # a byte that is not printable ASCII (which alone is not valid UTF-8), so its text prints.
    quiet = [b for b in range(256) if not 0x20 <= b < 0x7F]
    quiet += [i for i, t in enumerate(vocab.token_types) if t != TokenType.NORMAL]
    out[quiet] *= np.float16(0.05)
    return out


def synthetic_weights(
    shape: ModelShape,
    vocab: Vocabulary,
    seed: int = 0,
    tied: bool = True,
    sub_norms: bool = True,
) -> Iterator[tuple[str, TernaryWeight | np.ndarray]]:
    """Yields (GGUF tensor name, weight) in file order; the same seed gives the same weights.

    ``sub_norms=False`` leaves out ``attn_sub_norm``/``ffn_sub_norm``, as in llama-architecture
    ternary models (Falcon3-1.58bit, Llama3-8B-1.58).
    """
    rng = np.random.default_rng(seed)
    yield "token_embd.weight", _embedding(rng, vocab, shape.n_embd)
    yield "output_norm.weight", _norm(rng, shape.n_embd)
    if not tied:
        yield "output.weight", _embedding(rng, vocab, shape.n_embd)
    n_embd_kv = shape.head_dim * shape.n_head_kv
    for il in range(shape.n_layer):
        p = f"blk.{il}."
        yield p + "attn_norm.weight", _norm(rng, shape.n_embd)
        yield p + "attn_q.weight", _ternary(rng, shape.n_embd, shape.n_embd)
        yield p + "attn_k.weight", _ternary(rng, n_embd_kv, shape.n_embd)
        yield p + "attn_v.weight", _ternary(rng, n_embd_kv, shape.n_embd)
        if sub_norms:
            yield p + "attn_sub_norm.weight", _norm(rng, shape.n_embd)
        yield p + "attn_output.weight", _ternary(rng, shape.n_embd, shape.n_embd)
        yield p + "ffn_norm.weight", _norm(rng, shape.n_embd)
        yield p + "ffn_gate.weight", _ternary(rng, shape.n_ff, shape.n_embd)
        yield p + "ffn_up.weight", _ternary(rng, shape.n_ff, shape.n_embd)
        if sub_norms:
            yield p + "ffn_sub_norm.weight", _norm(rng, shape.n_ff)
        yield p + "ffn_down.weight", _ternary(rng, shape.n_embd, shape.n_ff)


def generate_model(
    path: str | os.PathLike[str],
    *,
    shape: str | ModelShape = "tiny",
    activation: Activation = "relu2",
    ternary_type: TernaryType = "tq2_0",
    seed: int = 0,
    tied: bool = True,
    chat_template: bool = True,
    eos_token_id: int | None = None,
    n_layer: int | None = None,
    architecture: Literal["bitnet", "llama"] = "bitnet",
) -> Path:
    """Write a BitNet GGUF (arch ``bitnet``, the project's own format) with random weights.

    Arguments:
        path: output file; written to ``path + ".tmp"`` and renamed when complete.
        shape: ``"tiny"`` (hidden 256, 2 layers, ~350 tokens) or ``"2b4t"`` (BitNet b1.58
            2B-4T's exact shapes), or a :class:`ModelShape`.
        activation: FFN activation recorded in ``bitnet.hidden_activation``.
        ternary_type: ggml type of the ternary matrices.
        seed: weights seed; the same arguments always give the same file.
        tied: no ``output.weight``; the head reuses ``token_embd.weight`` (as in 2B-4T).
        chat_template: store BitNet's chat template in ``tokenizer.chat_template``.
        eos_token_id: declare another token as EOS (tests of end-of-generation handling).
        n_layer: override the number of layers (smaller benchmark files).
        architecture: ``"llama"`` writes a llama-architecture ternary model instead (no
            sub-norms, SiLU, llama's interleaved RoPE), which libllama runs (engine "llama").
    """
    import gguf

    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}")
        shape = SHAPES[shape]
    if n_layer is not None:
        if n_layer < 1:
            raise ValueError(f"n_layer must be >= 1, got {n_layer}")
        shape = replace(shape, n_layer=n_layer)
    if activation not in ("relu2", "silu"):
        raise ValueError(f"activation must be 'relu2' or 'silu', got {activation!r}")
    qtypes = {"tq2_0": gguf.GGMLQuantizationType.TQ2_0, "tq1_0": gguf.GGMLQuantizationType.TQ1_0}
    if ternary_type not in qtypes:
        raise ValueError(f"ternary_type must be one of {sorted(qtypes)}, got {ternary_type!r}")
    qtype = qtypes[ternary_type]
    vocab = build_vocabulary(shape.n_vocab)
    n_vocab = len(vocab.tokens)

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if architecture not in ("bitnet", "llama"):
        raise ValueError(f"architecture must be 'bitnet' or 'llama', got {architecture!r}")
    if architecture == "llama" and activation != "silu":
        raise ValueError("llama-architecture models use SiLU: pass activation='silu'")
    arch = architecture
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_name(
        f"bitnet-synthetic-{'custom' if shape not in SHAPES.values() else _shape_name(shape)}"
    )
    writer.add_file_type(
        gguf.LlamaFileType.MOSTLY_TQ2_0
        if ternary_type == "tq2_0"
        else gguf.LlamaFileType.MOSTLY_TQ1_0
    )
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_freq_base)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    if arch == "bitnet":
        writer.add_string(f"{arch}.hidden_activation", activation)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id if eos_token_id is None else eos_token_id)
    writer.add_eot_token_id(vocab.eot_id)
    writer.add_add_bos_token(True)
    if chat_template:
        writer.add_chat_template(BITNET_CHAT_TEMPLATE)

    weights = synthetic_weights(shape, vocab, seed=seed, tied=tied, sub_norms=arch == "bitnet")
    for name, weight in weights:
        if isinstance(weight, TernaryWeight):
            packed = gguf.quants.quantize(weight.dense(), qtype)
            writer.add_tensor(name, packed, raw_dtype=qtype)
        else:
            writer.add_tensor(name, weight)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


def _shape_name(shape: ModelShape) -> str:
    return next(name for name, s in SHAPES.items() if s == shape)
