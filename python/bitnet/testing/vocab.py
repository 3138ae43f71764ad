"""A small byte-level BPE vocabulary (GPT-2 byte mapping, Llama-3 special tokens).

The merges are learned on a fixed English text, so the vocabulary is the same on every run and
ordinary words tokenize into a few tokens each, as with a real tokenizer.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass

__all__ = ["BOS", "EOS", "EOT", "TokenType", "Vocabulary", "build_vocabulary", "byte_to_unicode"]

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
EOT = "<|eot_id|>"

_CORPUS = """
Hello world. Hello there! The quick brown fox jumps over the lazy dog.
BitNet b1.58 is a ternary language model: every weight is -1, 0 or +1.
User: What is the capital of France? Assistant: The capital of France is Paris.
It runs on the CPU, in the same process, with the weights mapped from the file.
One, two, three, four, five. The cat sat on the mat and the dog sat on the log.
Once upon a time there was a little model that wanted to think fast.
"""

# Split like GPT-2 pre-tokenization: words keep their leading space.
_WORDS = re.compile(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+")


class TokenType:
    """GGUF ``tokenizer.ggml.token_type`` values."""

    NORMAL = 1
    CONTROL = 3
    UNUSED = 5
    BYTE = 6


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@dataclass(frozen=True)
class Vocabulary:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    eot_id: int


def _learn_merges(n_merges: int) -> list[tuple[str, str]]:
    b2u = byte_to_unicode()
    words = Counter("".join(b2u[b] for b in w.encode()) for w in _WORDS.findall(_CORPUS))
    split = {w: list(w) for w in words}
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, parts in split.items():
            for a, b in itertools.pairwise(parts):
                pairs[(a, b)] += words[w]
        if not pairs:
            break
        # Most frequent first; ties broken by the pair itself so the result never varies.
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, parts in split.items():
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            split[w] = merged
    return merges


def build_vocabulary(n_vocab: int | None = None, n_merges: int = 96) -> Vocabulary:
    """256 byte tokens, ``n_merges`` merges, then BOS/EOS/EOT.

    With ``n_vocab`` (e.g. 128256 for Llama-3 shapes) the table is padded with unused tokens and
    the special tokens sit at Llama-3's ids (128000, 128001, 128009) when they fit.
    """
    b2u = byte_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    types = [TokenType.NORMAL] * 256
    merges = _learn_merges(n_merges)
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
            types.append(TokenType.NORMAL)
    merge_strings = [f"{a} {b}" for a, b in merges]
    if n_vocab is None:
        bos, eos, eot = len(tokens), len(tokens) + 1, len(tokens) + 2
        tokens += [BOS, EOS, EOT]
        types += [TokenType.CONTROL] * 3
        return Vocabulary(tokens, types, merge_strings, bos, eos, eot)

    llama3 = n_vocab >= 128256
    bos, eos, eot = (128000, 128001, 128009) if llama3 else (n_vocab - 3, n_vocab - 2, n_vocab - 1)
    if n_vocab < len(tokens) + 3:
        raise ValueError(f"n_vocab={n_vocab} is too small for {len(tokens) + 3} base tokens")
    first_special = 128000 if llama3 else n_vocab - 3
    while len(tokens) < first_special:
        tokens.append(f"<unused_{len(tokens)}>")
        types.append(TokenType.UNUSED)
    special = {bos: BOS, eos: EOS, eot: EOT}
    for i in range(first_special, n_vocab):
        tokens.append(special.get(i, f"<|reserved_special_token_{i - first_special}|>"))
        types.append(TokenType.CONTROL)
    return Vocabulary(tokens, types, merge_strings, bos, eos, eot)
