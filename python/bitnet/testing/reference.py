"""A plain numpy forward pass of the BitNet b1.58 block: the oracle the engines are tested against.

It is written from the architecture's definition (DESIGN.md), in float64, with none of the
engine's code: RMSNorm, NEOX RoPE, causal GQA attention, attn_sub_norm, relu² or SiLU gated FFN,
ffn_sub_norm, tied or separate head.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .synthetic import ModelShape, TernaryWeight

__all__ = ["ReferenceModel"]


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def _rope(x: np.ndarray, positions: np.ndarray, base: float, neox: bool) -> np.ndarray:
    """x: (tokens, heads, head_dim). Rotates pairs of elements by position-dependent angles.

    NEOX pairs element i with element i + head_dim/2 (BitNet); the original (llama) form pairs
    elements 2i and 2i+1.
    """
    half = x.shape[-1] // 2
    inv_freq = base ** (-np.arange(half, dtype=np.float64) * 2.0 / x.shape[-1])
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]  # (tokens, half)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    if neox:
        first, second = x[..., :half], x[..., half:]
    else:
        first, second = x[..., 0::2], x[..., 1::2]
    rotated_first, rotated_second = first * cos - second * sin, first * sin + second * cos
    if neox:
        return np.concatenate([rotated_first, rotated_second], axis=-1)
    out = np.empty_like(x, dtype=np.float64)
    out[..., 0::2], out[..., 1::2] = rotated_first, rotated_second
    return out


class ReferenceModel:
    """Float64 BitNet forward pass over the weights of :func:`synthetic_weights`."""

    def __init__(
        self,
        shape: ModelShape,
        weights: Iterable[tuple[str, TernaryWeight | np.ndarray]],
        activation: str,
        rope: str = "neox",
    ) -> None:
        if rope not in ("neox", "normal"):
            raise ValueError(f"rope must be 'neox' or 'normal', got {rope!r}")
        self.shape = shape
        self.activation = activation
        self.neox = rope == "neox"
        self.w: dict[str, np.ndarray] = {}
        for name, value in weights:
            dense = value.dense() if isinstance(value, TernaryWeight) else value
            self.w[name] = np.asarray(dense, dtype=np.float64)

    def _act(self, gate: np.ndarray) -> np.ndarray:
        if self.activation == "relu2":
            return np.maximum(gate, 0.0) ** 2
        return gate / (1.0 + np.exp(-gate))

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """(len(tokens), n_vocab) logits for ``tokens`` at positions 0..n-1."""
        s, w = self.shape, self.w
        eps, hd = s.rms_eps, s.head_dim
        group = s.n_head // s.n_head_kv
        n = len(tokens)
        pos = np.arange(n)
        causal = np.triu(np.full((n, n), -np.inf), k=1)
        x = w["token_embd.weight"][np.asarray(tokens)]
        for il in range(s.n_layer):
            p = f"blk.{il}."
            h = _rms_norm(x, w[p + "attn_norm.weight"], eps)
            q = (h @ w[p + "attn_q.weight"].T).reshape(n, s.n_head, hd)
            k = (h @ w[p + "attn_k.weight"].T).reshape(n, s.n_head_kv, hd)
            q = _rope(q, pos, s.rope_freq_base, self.neox)
            k = _rope(k, pos, s.rope_freq_base, self.neox)
            v = (h @ w[p + "attn_v.weight"].T).reshape(n, s.n_head_kv, hd)
            heads = []
            for head in range(s.n_head):
                kv = head // group
                scores = q[:, head, :] @ k[:, kv, :].T / np.sqrt(hd) + causal
                scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
                heads.append((scores / scores.sum(axis=-1, keepdims=True)) @ v[:, kv, :])
            attn = np.concatenate(heads, axis=-1)
            if p + "attn_sub_norm.weight" in w:
                attn = _rms_norm(attn, w[p + "attn_sub_norm.weight"], eps)
            x = x + attn @ w[p + "attn_output.weight"].T
            h = _rms_norm(x, w[p + "ffn_norm.weight"], eps)
            ffn = self._act(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)
            if p + "ffn_sub_norm.weight" in w:
                ffn = _rms_norm(ffn, w[p + "ffn_sub_norm.weight"], eps)
            x = x + ffn @ w[p + "ffn_down.weight"].T
        head = w.get("output.weight", w["token_embd.weight"])
        return _rms_norm(x, w["output_norm.weight"], eps) @ head.T
