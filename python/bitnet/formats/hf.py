"""Hugging Face BitNet checkpoints (safetensors + config.json + tokenizer.json) -> GGUF.

Layouts:
- microsoft/bitnet-b1.58-2B-4T: ternary weights packed four to a byte in uint8 (plane i of
  a byte holds rows i*R..(i+1)*R, code - 1 = value) with an inverted per-tensor
  ``weight_scale`` (weight = value / weight_scale); ``attn_sub_norm``/``ffn_sub_norm``; relu².
- its bf16 master-weight variant and the 1bitLLM ``bitnet_b1_58-*`` models: float weights,
  quantized here like BitNet's training does (absmean: scale = mean|W|, value =
  clamp(round(W / scale), -1, 1)); 1bitLLM names its sub-norms ``inner_attn_ln`` /
  ``ffn_layernorm`` and uses SiLU.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from .gguf import ARRAY, F32, I2_S, I32, STRING, U32, KeyValue
from .ternary import i2s_pack

__all__ = ["SafetensorsFolder", "hf_checkpoint_tensors"]

_DTYPES = {"F32": "<f4", "F16": "<f2", "U8": "u1", "I8": "i1", "BF16": "<u2"}
_LINEAR = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_NORMS = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.attn_sub_norm": "attn_sub_norm",
    "self_attn.inner_attn_ln": "attn_sub_norm",
    "mlp.ffn_sub_norm": "ffn_sub_norm",
    "mlp.ffn_layernorm": "ffn_sub_norm",
}


class SafetensorsFolder:
    """The tensors of every ``*.safetensors`` file in a folder, read lazily (memory-mapped)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index: dict[str, tuple[Path, str, tuple[int, ...], int, int]] = {}
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise ModelLoadError(f"'{folder}' has no *.safetensors files")
        for path in files:
            with path.open("rb") as f:
                head = f.read(8)
                if len(head) != 8:
                    raise ModelLoadError(f"'{path}' is truncated (no safetensors header)")
                (n,) = struct.unpack("<Q", head)
                try:
                    header = json.loads(f.read(n))
                except ValueError as exc:
                    raise ModelLoadError(
                        f"'{path}' has a damaged safetensors header: {exc}"
                    ) from None
            size = path.stat().st_size
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                start, end = info["data_offsets"]
                if 8 + n + end > size:
                    raise ModelLoadError(
                        f"'{path}' is truncated: tensor '{name}' ends past the file"
                    )
                if info["dtype"] not in _DTYPES:
                    raise ModelLoadError(
                        f"'{path}': tensor '{name}' has unsupported dtype {info['dtype']}"
                    )
                self.index[name] = (
                    path,
                    info["dtype"],
                    tuple(info["shape"]),
                    8 + n + start,
                    end - start,
                )

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 (or uint8 for packed weights)."""
        if name not in self.index:
            raise ModelLoadError(f"checkpoint '{self.folder}' lacks tensor '{name}'")
        path, dtype, shape, offset, nbytes = self.index[name]
        raw = np.memmap(
            path,
            dtype=_DTYPES[dtype],
            mode="r",
            offset=offset,
            shape=(nbytes // np.dtype(_DTYPES[dtype]).itemsize,),
        )
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        if dtype in ("U8", "I8"):
            return np.asarray(raw).reshape(shape)
        return np.asarray(raw, dtype=np.float32).reshape(shape)


def _ternary(st: SafetensorsFolder, name: str) -> tuple[np.ndarray, float]:
    """(int8 values of shape (out, in), scale) of one linear layer."""
    w = st.get(name + ".weight")
    if name + ".weight_scale" in st:
        if w.dtype != np.uint8:
            raise ModelLoadError(f"'{name}.weight' has a weight_scale but is not packed uint8")
        planes = [((w >> (2 * i)) & 3).astype(np.int8) - 1 for i in range(4)]
        values = np.concatenate(planes, axis=0)
        inverse = float(np.asarray(st.get(name + ".weight_scale")).reshape(-1)[0])
        return values, 1.0 / inverse
    scale = max(float(np.abs(w).mean()), 1e-5)
    return np.clip(np.round(w / scale), -1, 1).astype(np.int8), scale


def _read_json(folder: Path, name: str, required: bool) -> dict[str, Any]:
    path = folder / name
    if not path.exists():
        if required:
            raise ModelLoadError(f"checkpoint '{folder}' lacks {name}")
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ModelLoadError(f"'{path}' is not valid JSON: {exc}") from None


def _vocabulary(folder: Path, config: dict[str, Any], n_vocab: int) -> dict[str, KeyValue]:
    tok = _read_json(folder, "tokenizer.json", required=True)
    model = tok.get("model", {})
    pre = json.dumps(tok.get("pre_tokenizer") or {})
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise ModelLoadError(
            f"'{folder}/tokenizer.json' is not a byte-level BPE tokenizer (Llama-3 / GPT-2 style); "
            "other tokenizers are not converted yet"
        )
    tokens: list[str | None] = [None] * n_vocab
    types = [1] * n_vocab
    for text, i in model["vocab"].items():
        if i < n_vocab:
            tokens[i] = text
    for added in tok.get("added_tokens", []):
        if added["id"] < n_vocab:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = 3 if added.get("special") else 4
    for i, text in enumerate(tokens):
        if text is None:
            tokens[i], types[i] = f"<|unused_{i}|>", 5
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    eos = config.get("eos_token_id")
    eos_ids = eos if isinstance(eos, list) else [eos]
    kv = {
        "tokenizer.ggml.model": KeyValue(STRING, "gpt2"),
        "tokenizer.ggml.pre": KeyValue(STRING, "llama-bpe"),
        "tokenizer.ggml.tokens": KeyValue(ARRAY, tokens, STRING),
        "tokenizer.ggml.token_type": KeyValue(ARRAY, types, I32),
        "tokenizer.ggml.merges": KeyValue(ARRAY, merges, STRING),
    }
    if config.get("bos_token_id") is not None:
        kv["tokenizer.ggml.bos_token_id"] = KeyValue(U32, int(config["bos_token_id"]))
    if eos_ids and eos_ids[0] is not None:
        kv["tokenizer.ggml.eos_token_id"] = KeyValue(U32, int(eos_ids[0]))
    if "<|eot_id|>" in tokens:
        kv["tokenizer.ggml.eot_token_id"] = KeyValue(U32, tokens.index("<|eot_id|>"))
    template = _read_json(folder, "tokenizer_config.json", required=False).get("chat_template")
    if isinstance(template, str):
        kv["tokenizer.chat_template"] = KeyValue(STRING, template)
    return kv


def hf_checkpoint_tensors(
    folder: Path,
    ternary_type: int,
    quantize: Callable[[np.ndarray, int], Any],
    embedding_type: int,
) -> tuple[dict[str, KeyValue], list[tuple[str, tuple[int, ...], int, Callable[[], Any]]]]:
    """GGUF metadata and tensor plan (arch ``bitnet``) for a checkpoint folder.
    ``quantize(rows, ggml_type)`` produces the bytes of a tensor in a ggml type."""
    config = _read_json(folder, "config.json", required=True)
    archs = config.get("architectures") or ["?"]
    if archs[0] not in ("BitNetForCausalLM", "BitnetForCausalLM"):
        raise ModelLoadError(
            f"'{folder}' holds a {archs[0]} checkpoint; bitnet converts "
            "BitNetForCausalLM (microsoft) and BitnetForCausalLM (1bitLLM)"
        )
    try:
        n_embd = int(config["hidden_size"])
        n_layer = int(config["num_hidden_layers"])
        n_head = int(config["num_attention_heads"])
        n_ff = int(config["intermediate_size"])
        n_vocab = int(config["vocab_size"])
    except KeyError as exc:
        raise ModelLoadError(f"'{folder}/config.json' lacks {exc}") from None
    n_head_kv = int(config.get("num_key_value_heads", n_head))
    act = config.get("hidden_act", "silu")
    act = (
        "relu2" if act in ("relu2", "relu_squared") else "silu" if act in ("silu", "swish") else act
    )
    if act not in ("relu2", "silu"):
        raise ModelLoadError(f"'{folder}' uses activation '{act}'; bitnet runs relu2 and silu")
    st = SafetensorsFolder(folder)
    kv: dict[str, KeyValue] = {
        "general.architecture": KeyValue(STRING, "bitnet"),
        "general.name": KeyValue(STRING, folder.name),
        "bitnet.vocab_size": KeyValue(U32, n_vocab),
        "bitnet.context_length": KeyValue(U32, int(config.get("max_position_embeddings", 4096))),
        "bitnet.embedding_length": KeyValue(U32, n_embd),
        "bitnet.block_count": KeyValue(U32, n_layer),
        "bitnet.feed_forward_length": KeyValue(U32, n_ff),
        "bitnet.attention.head_count": KeyValue(U32, n_head),
        "bitnet.attention.head_count_kv": KeyValue(U32, n_head_kv),
        "bitnet.rope.dimension_count": KeyValue(U32, n_embd // n_head),
        "bitnet.rope.freq_base": KeyValue(F32, float(config.get("rope_theta", 10000.0))),
        "bitnet.attention.layer_norm_rms_epsilon": KeyValue(
            F32, float(config.get("rms_norm_eps", 1e-5))
        ),
        "bitnet.hidden_activation": KeyValue(STRING, act),
    }
    kv.update(_vocabulary(folder, config, n_vocab))

    plan: list[tuple[str, tuple[int, ...], int, Callable[[], Any]]] = []

    def dense(gguf_name: str, hf_name: str, rows: int, cols: int, ggml_type: int) -> None:
        def make() -> Any:
            w = st.get(hf_name)
            if w.shape != ((rows, cols) if rows > 1 else (cols,)):
                raise ModelLoadError(
                    f"'{folder}': tensor '{hf_name}' has shape {w.shape}, "
                    f"expected {(rows, cols) if rows > 1 else (cols,)}"
                )
            if ggml_type == 0:
                return w.astype("<f4")
            if ggml_type == 1:
                return w.astype("<f2")
            return quantize(w.reshape(rows, cols), ggml_type)

        if hf_name not in st:
            raise ModelLoadError(f"checkpoint '{folder}' lacks tensor '{hf_name}'")
        plan.append((gguf_name, (cols, rows) if rows > 1 else (cols,), ggml_type, make))

    dense("token_embd.weight", "model.embed_tokens.weight", n_vocab, n_embd, embedding_type)
    dense("output_norm.weight", "model.norm.weight", 1, n_embd, 0)
    if "lm_head.weight" in st and not config.get("tie_word_embeddings", False):
        dense("output.weight", "lm_head.weight", n_vocab, n_embd, embedding_type)
    head_dim = n_embd // n_head
    shapes = {
        "attn_q": (n_embd, n_embd),
        "attn_k": (head_dim * n_head_kv, n_embd),
        "attn_v": (head_dim * n_head_kv, n_embd),
        "attn_output": (n_embd, n_embd),
        "ffn_gate": (n_ff, n_embd),
        "ffn_up": (n_ff, n_embd),
        "ffn_down": (n_embd, n_ff),
    }
    for il in range(n_layer):
        hf, gg = f"model.layers.{il}.", f"blk.{il}."
        for hf_norm, gg_norm in _NORMS.items():
            if hf + hf_norm + ".weight" in st:
                size = n_ff if gg_norm == "ffn_sub_norm" else n_embd
                dense(gg + gg_norm + ".weight", hf + hf_norm + ".weight", 1, size, 0)
        for hf_lin, gg_lin in _LINEAR.items():
            name = hf + hf_lin
            if name + ".weight" not in st:
                raise ModelLoadError(f"checkpoint '{folder}' lacks tensor '{name}.weight'")
            rows, cols = shapes[gg_lin]

            def make(name: str = name, rows: int = rows, cols: int = cols) -> Any:
                values, scale = _ternary(st, name)
                if values.shape != (rows, cols):
                    raise ModelLoadError(
                        f"'{folder}': '{name}.weight' unpacks to {values.shape}, "
                        f"expected {(rows, cols)}"
                    )
                if ternary_type == I2_S:
                    return i2s_pack(values, scale)
                return quantize(values.astype(np.float32) * np.float32(scale), ternary_type)

            plan.append((gg + gg_lin + ".weight", (cols, rows), ternary_type, make))
    for gg_name in ("attn_norm", "ffn_norm"):
        if not any(p[0] == f"blk.0.{gg_name}.weight" for p in plan):
            raise ModelLoadError(f"checkpoint '{folder}' lacks the layer norms of block 0")
    return kv, plan


def is_checkpoint_folder(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").exists()
