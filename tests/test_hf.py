"""Hugging Face checkpoint folders -> GGUF, for each layout, against a numpy forward of the
checkpoint's own weights. The checkpoints (safetensors, config.json, tokenizer.json) are
written here by hand."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import bitnet
from bitnet.formats.convert import convert
from bitnet.testing import (
    SHAPES,
    ReferenceModel,
    TernaryWeight,
    build_vocabulary,
    synthetic_weights,
)

PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time, 1 2 3!"


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (round to nearest even) as uint16."""
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def pack_microsoft(values: np.ndarray) -> np.ndarray:
    """Four rows per byte: plane i (bits 2i..2i+1) holds rows i*R..(i+1)*R, code = value + 1."""
    r = values.shape[0] // 4
    codes = (values + 1).astype(np.uint8)
    return codes[:r] | codes[r : 2 * r] << 2 | codes[2 * r : 3 * r] << 4 | codes[3 * r :] << 6


def absmean(w: np.ndarray) -> np.ndarray:
    scale = max(float(np.abs(w).mean()), 1e-5)
    return np.clip(np.round(w / scale), -1, 1) * scale


def write_checkpoint(folder: Path, layout: str, seed: int) -> dict[str, np.ndarray]:
    """Returns the weights the checkpoint means (for the reference), by GGUF name."""
    shape, vocab = SHAPES["tiny"], build_vocabulary()
    folder.mkdir()
    microsoft = layout in ("packed", "bf16")
    config = {
        "architectures": ["BitNetForCausalLM" if microsoft else "BitnetForCausalLM"],
        "hidden_size": shape.n_embd,
        "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head,
        "num_key_value_heads": shape.n_head_kv,
        "intermediate_size": shape.n_ff,
        "vocab_size": len(vocab.tokens),
        "max_position_embeddings": shape.n_ctx_train,
        "rope_theta": shape.rope_freq_base,
        "rms_norm_eps": shape.rms_eps,
        "hidden_act": "relu2" if microsoft else "silu",
        "bos_token_id": vocab.bos_id,
        "eos_token_id": [vocab.eos_id, vocab.eot_id],
        "tie_word_embeddings": True,
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(
        json.dumps(
            {
                "model": {
                    "type": "BPE",
                    "vocab": {t: i for i, t in enumerate(vocab.tokens[:-3])},
                    "merges": [m.split(" ") for m in vocab.merges],
                },
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}]},
                "added_tokens": [
                    {"id": i, "content": vocab.tokens[i], "special": True}
                    for i in range(len(vocab.tokens) - 3, len(vocab.tokens))
                ],
            }
        )
    )
    hf_linear = {
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    sub = {
        "attn_sub_norm": "self_attn.attn_sub_norm" if microsoft else "self_attn.inner_attn_ln",
        "ffn_sub_norm": "mlp.ffn_sub_norm" if microsoft else "mlp.ffn_layernorm",
    }
    norms = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", **sub}
    rng = np.random.default_rng(seed)
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    meant: dict[str, np.ndarray] = {}
    for name, w in synthetic_weights(shape, vocab, seed=seed):
        if name == "token_embd.weight":
            tensors["model.embed_tokens.weight"] = ("F16", w)
            meant[name] = w.astype(np.float32)
        elif name == "output_norm.weight":
            tensors["model.norm.weight"] = ("F32", w)
            meant[name] = w
        else:
            _, layer, kind, _ = name.split(".")
            prefix = f"model.layers.{layer}."
            if isinstance(w, TernaryWeight):
                hf = prefix + hf_linear[kind]
                if layout == "packed":
                    tensors[hf + ".weight"] = ("U8", pack_microsoft(w.values))
                    tensors[hf + ".weight_scale"] = (
                        "F32",
                        np.array([1.0 / w.scale], dtype=np.float32),
                    )
                    meant[name] = w.dense()
                else:  # float master weights around the ternary ones
                    master = w.dense() * (1 + 0.3 * rng.standard_normal(w.values.shape)).astype(
                        np.float32
                    )
                    if layout == "bf16":
                        bits = bf16(master)
                        tensors[hf + ".weight"] = ("BF16", bits)
                        master = from_bf16(bits)
                    else:
                        tensors[hf + ".weight"] = ("F32", master)
                    meant[name] = absmean(master)
            else:
                tensors[prefix + norms[kind] + ".weight"] = ("F32", w)
                meant[name] = w
    write_safetensors(folder / "model.safetensors", tensors)
    return meant


@pytest.mark.parametrize(
    ("layout", "activation", "ternary"),
    [
        ("packed", "relu2", "tq2_0"),
        ("packed", "relu2", "i2_s"),
        ("bf16", "relu2", "tq2_0"),
        ("bf16", "relu2", "i2_s"),
        ("1bitllm", "silu", "tq2_0"),
        ("1bitllm", "silu", "tq1_0"),
    ],
)
def test_checkpoint_to_gguf_matches_the_checkpoint(
    tmp_path: Path, monkeypatch, layout, activation, ternary
):
    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path / "cache"))
    meant = write_checkpoint(tmp_path / "ckpt", layout, seed=11)
    out = convert(tmp_path / "ckpt", tmp_path / "out.gguf", type=ternary)
    # i2s_head="keep": the exact head, as the file has it (the default would make it Q6_K).
    with bitnet.Model(out, n_ctx=256, i2s_head="keep") as model:
        tokens = model.tokenize(PROMPT)
        got = model.logits(tokens)
        assert model.metadata["tokenizer.ggml.pre"] == "llama-bpe"
        assert model._native.is_end_of_generation(
            model.tokenize("<|eot_id|>", add_bos=False, special=True)[0]
        )
    want = ReferenceModel(SHAPES["tiny"], meant.items(), activation).logits(tokens)
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    assert err < 0.04, err


def test_bad_checkpoints(tmp_path: Path):
    write_checkpoint(tmp_path / "ckpt", "packed", seed=1)
    st = tmp_path / "ckpt" / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    with pytest.raises(bitnet.ModelLoadError, match="truncated"):
        convert(tmp_path / "ckpt", tmp_path / "x.gguf")
    st.write_bytes(data)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(bitnet.ModelLoadError, match=r"lacks tensor 'model\.layers\.2"):
        convert(tmp_path / "ckpt", tmp_path / "x.gguf")
    (tmp_path / "ckpt" / "config.json").write_text(
        json.dumps({**config, "architectures": ["GPT2LMHeadModel"]})
    )
    with pytest.raises(bitnet.ModelLoadError, match="GPT2LMHeadModel"):
        convert(tmp_path / "ckpt", tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.tmp").exists()
    assert st.read_bytes() == data
