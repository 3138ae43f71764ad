"""A GGUF fuzzer: damaged variants of real model files, loaded in crash-isolated children.

Each mutant is one model file as a damaged download, a buggy converter or a hostile upload
could produce it: flipped bits, truncation, chopped ranges, swapped or duplicated metadata keys
and tokens, arrays of the wrong type or length, huge counts, tensor offsets, shapes and types
out of range, hyper-parameters and special-token ids out of range. A :class:`LoadWorker` child
process loads them one after another (``bitnet.Model``, then a short generation when it loads);
a child that dies (a signal, an ``abort()``) or stops answering is a crash or a hang of the
file that was being loaded, and is replaced by a fresh child.

    python benchmarks/fuzz_gguf.py -n 5000      # the large corpus, with a report
    tests/test_fuzz.py                           # a few hundred of them in CI

The GGUF layout is parsed and written here by its own code (not bitnet's readers, which are
among what is being tested).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# The GGUF value types and their struct formats: the file format's own numbering.
from ..formats.gguf import ARRAY, BOOL, F32, I32, SCALAR_FORMATS, STRING, U8, U32, U64

__all__ = [
    "MUTATIONS",
    "FuzzResult",
    "GgufLayout",
    "LoadWorker",
    "Mutant",
    "base_models",
    "mutants",
    "run_corpus",
    "set_value",
]


class LayoutError(ValueError):
    """The bytes are not a GGUF file this parser can take apart (only for the base files)."""


@dataclass
class KV:
    key: bytes
    vtype: int
    payload: bytes  # the serialized value, without key and type

    def array_header(self) -> tuple[int, int] | None:
        """(element type, count) of an array value."""
        if self.vtype != ARRAY:
            return None
        return struct.unpack_from("<IQ", self.payload)  # type: ignore[return-value]


@dataclass
class Tensor:
    name: bytes
    dims: list[int]
    ttype: int
    offset: int


@dataclass
class GgufLayout:
    """A GGUF file taken apart into its pieces, which can be changed and written back."""

    version: int
    kvs: list[KV]
    tensors: list[Tensor]
    data: bytes
    alignment: int = 32
    n_kv_override: int | None = None
    n_tensors_override: int | None = None

    @classmethod
    def parse(cls, blob: bytes) -> GgufLayout:
        if blob[:4] != b"GGUF":
            raise LayoutError("no GGUF magic")
        pos = 4
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", blob, pos)
        pos += 20

        def string(at: int) -> tuple[bytes, int]:
            (n,) = struct.unpack_from("<Q", blob, at)
            return blob[at + 8 : at + 8 + n], at + 8 + n

        def value_end(vtype: int, at: int) -> int:
            if vtype == STRING:
                return string(at)[1]
            if vtype == ARRAY:
                sub, n = struct.unpack_from("<IQ", blob, at)
                at += 12
                for _ in range(n):
                    at = value_end(sub, at)
                return at
            if vtype not in SCALAR_FORMATS:
                raise LayoutError(f"unknown value type {vtype}")
            return at + struct.calcsize(SCALAR_FORMATS[vtype])

        kvs = []
        alignment = 32
        for _ in range(n_kv):
            key, pos = string(pos)
            (vtype,) = struct.unpack_from("<I", blob, pos)
            pos += 4
            end = value_end(vtype, pos)
            kvs.append(KV(key, vtype, blob[pos:end]))
            if key == b"general.alignment":
                (alignment,) = struct.unpack_from("<I", blob, pos)
            pos = end
        tensors = []
        for _ in range(n_tensors):
            name, pos = string(pos)
            (n_dims,) = struct.unpack_from("<I", blob, pos)
            dims = list(struct.unpack_from(f"<{n_dims}Q", blob, pos + 4))
            pos += 4 + 8 * n_dims
            ttype, offset = struct.unpack_from("<IQ", blob, pos)
            pos += 12
            tensors.append(Tensor(name, dims, ttype, offset))
        pos += -pos % alignment
        return cls(version, kvs, tensors, blob[pos:], alignment)

    def metadata_end(self) -> int:
        """Bytes before the tensor data (header, metadata, tensor table, padding)."""
        return len(self.to_bytes()) - len(self.data)

    def to_bytes(self) -> bytes:
        out = bytearray(b"GGUF")
        n_tensors = len(self.tensors)
        if self.n_tensors_override is not None:
            n_tensors = self.n_tensors_override
        n_kv = len(self.kvs) if self.n_kv_override is None else self.n_kv_override
        out += struct.pack("<IQQ", self.version, n_tensors, n_kv)
        for kv in self.kvs:
            out += struct.pack("<Q", len(kv.key)) + kv.key + struct.pack("<I", kv.vtype)
            out += kv.payload
        for t in self.tensors:
            out += struct.pack("<Q", len(t.name)) + t.name
            out += struct.pack("<I", len(t.dims)) + struct.pack(f"<{len(t.dims)}Q", *t.dims)
            out += struct.pack("<IQ", t.ttype, t.offset)
        out += b"\0" * (-len(out) % max(1, self.alignment))
        return bytes(out + self.data)

    def find(self, key: str) -> int | None:
        for i, kv in enumerate(self.kvs):
            if kv.key == key.encode():
                return i
        return None

    def strings(self, key: str) -> list[bytes]:
        """The items of a string-array value."""
        i = self.find(key)
        if i is None:
            return []
        payload = self.kvs[i].payload
        sub, n = struct.unpack_from("<IQ", payload)
        if sub != STRING:
            return []
        items, pos = [], 12
        for _ in range(n):
            (size,) = struct.unpack_from("<Q", payload, pos)
            items.append(payload[pos + 8 : pos + 8 + size])
            pos += 8 + size
        return items


# -- value encoders ---------------------------------------------------------------------------


def encode_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def encode_scalar(vtype: int, value: Any) -> bytes:
    return struct.pack(SCALAR_FORMATS[vtype], value)


def encode_array(sub: int, items: list[Any], count: int | None = None) -> bytes:
    head = struct.pack("<IQ", sub, len(items) if count is None else count)
    if sub == STRING:
        return head + b"".join(encode_string(i) for i in items)
    return head + b"".join(encode_scalar(sub, i) for i in items)


# -- mutations --------------------------------------------------------------------------------

HUGE = (0xFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 1 << 40, 1 << 31, 1 << 32)
_INT_KEYS = (
    "block_count",
    "embedding_length",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "context_length",
    "rope.dimension_count",
    "vocab_size",
    "expert_count",
    "expert_used_count",
    "nextn_predict_layers",
)
_FLOAT_KEYS = (
    "rope.freq_base",
    "rope.scaling.factor",
    "attention.layer_norm_rms_epsilon",
    "attention.layer_norm_epsilon",
)
_TOKEN_ID_KEYS = (
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.seperator_token_id",
)
_STRING_VALUES = {
    "general.architecture": ["llama", "bitnet", "bitnet-b1.58", "bitnet-25", "gpt2", "", "x" * 300],
    "tokenizer.ggml.model": ["llama", "gpt2", "bert", "t5", "rwkv", "none", "no_vocab", "plamo2"],
    "tokenizer.ggml.pre": ["default", "llama-bpe", "qwen2", "gpt-2", "deepseek-llm", "?"],
    "bitnet.hidden_activation": ["relu2", "silu", "gelu", ""],
    "bitnet.rope.scaling.type": ["none", "linear", "yarn", "longrope", "dynamic", ""],
}
_ODD_VALUES = (0, 1, -1, 3, 7, 255, 65537, -(1 << 31), (1 << 31) - 1)
_ODD_FLOATS = (0.0, -1.0, float("nan"), float("inf"), 1e38, 1e-45)


def _arch(layout: GgufLayout) -> str:
    i = layout.find("general.architecture")
    if i is None:
        return "bitnet"
    return layout.kvs[i].payload[8:].decode("utf-8", "replace")


def set_value(layout: GgufLayout, key: str, vtype: int, payload: bytes) -> None:
    """Replace the value of ``key`` (or add the key) with an encoded ``payload``."""
    i = layout.find(key)
    kv = KV(key.encode(), vtype, payload)
    if i is None:
        layout.kvs.append(kv)
    else:
        layout.kvs[i] = kv


def _bit_flips(blob: bytes, rng: random.Random, end: int) -> bytes:
    data = bytearray(blob)
    for _ in range(rng.randint(1, 8)):
        # Mostly in the header, metadata and tensor table, where a flip changes meaning.
        at = rng.randrange(end) if rng.random() < 0.9 else rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
    return bytes(data)


def _truncate(blob: bytes, rng: random.Random, end: int) -> bytes:
    cut = rng.choice(
        [rng.randrange(0, min(64, len(blob))), rng.randrange(end), rng.randrange(len(blob))]
    )
    return blob[:cut]


def _chop(blob: bytes, rng: random.Random, end: int) -> bytes:
    a = rng.randrange(end)
    b = min(len(blob), a + rng.choice([1, 2, 4, 8, 13, 64, 500]))
    return blob[:a] + blob[b:]


def _swap_keys(layout: GgufLayout, rng: random.Random) -> None:
    i, j = rng.sample(range(len(layout.kvs)), 2)
    layout.kvs[i].key, layout.kvs[j].key = layout.kvs[j].key, layout.kvs[i].key


def _duplicate_key(layout: GgufLayout, rng: random.Random) -> None:
    kv = rng.choice(layout.kvs)
    layout.kvs.insert(rng.randrange(len(layout.kvs) + 1), replace(kv))


def _duplicate_token(layout: GgufLayout, rng: random.Random) -> None:
    tokens = layout.strings("tokenizer.ggml.tokens")
    if len(tokens) < 2:
        return
    i, j = rng.sample(range(len(tokens)), 2)
    choice = rng.random()
    if choice < 0.6:
        tokens[j] = tokens[i]
    elif choice < 0.8:
        tokens[j] = b""  # llama.cpp renames an empty token to "[EMPTY_j]"
    else:
        tokens[j] = b"[EMPTY_%d]" % i
        tokens[i] = b""
    set_value(layout, "tokenizer.ggml.tokens", ARRAY, encode_array(STRING, tokens))


def _array_type(layout: GgufLayout, rng: random.Random) -> None:
    arrays = [i for i, kv in enumerate(layout.kvs) if kv.vtype == ARRAY]
    kv = layout.kvs[rng.choice(arrays)]
    _, count = struct.unpack_from("<IQ", kv.payload)
    sub = rng.choice([U8, I32, F32, STRING, U64, BOOL, ARRAY, 13, 99])
    if sub in (ARRAY, 13, 99):  # nested or unknown element type, the items as they were
        kv.payload = struct.pack("<IQ", sub, count) + kv.payload[12:]
    elif sub == STRING:
        kv.payload = encode_array(STRING, [b"%d" % k for k in range(min(count, 4096))])
    else:
        kv.payload = encode_array(sub, [0] * min(count, 4096))


def _array_length(layout: GgufLayout, rng: random.Random) -> None:
    arrays = [i for i, kv in enumerate(layout.kvs) if kv.vtype == ARRAY]
    kv = layout.kvs[rng.choice(arrays)]
    sub, count = struct.unpack_from("<IQ", kv.payload)
    if rng.random() < 0.5 and sub != STRING and sub in SCALAR_FORMATS:
        # A well-formed array with fewer or more items (scores/types shorter than tokens).
        size = struct.calcsize(SCALAR_FORMATS[sub])
        new = max(0, count + rng.choice([-count, -1, 1, 7]))
        items = kv.payload[12 : 12 + size * min(new, count)] + b"\0" * size * max(0, new - count)
        kv.payload = struct.pack("<IQ", sub, new) + items
    elif rng.random() < 0.5 and sub == STRING:
        items = layout.strings(kv.key.decode())
        keep = rng.randrange(len(items) + 1) if items else 0
        kv.payload = encode_array(STRING, items[:keep])
    else:  # only the count changes: the rest of the file is read out of step
        new = max(0, count + rng.choice([-1, 1, 1000]))
        kv.payload = struct.pack("<IQ", sub, new) + kv.payload[12:]


def _huge_count(layout: GgufLayout, rng: random.Random) -> None:
    what = rng.randrange(5)
    if what == 0:
        layout.n_kv_override = rng.choice(HUGE)
    elif what == 1:
        layout.n_tensors_override = rng.choice(HUGE)
    elif what == 2:
        arrays = [kv for kv in layout.kvs if kv.vtype == ARRAY]
        kv = rng.choice(arrays)
        sub, _ = struct.unpack_from("<IQ", kv.payload)
        kv.payload = struct.pack("<IQ", sub, rng.choice(HUGE)) + kv.payload[12:]
    elif what == 3:
        strings = [kv for kv in layout.kvs if kv.vtype == STRING]
        kv = rng.choice(strings)
        kv.payload = struct.pack("<Q", rng.choice(HUGE)) + kv.payload[8:]
    else:
        t = rng.choice(layout.tensors)
        t.dims[rng.randrange(len(t.dims))] = rng.choice(HUGE)


def _tensor_offset(layout: GgufLayout, rng: random.Random) -> None:
    t = rng.choice(layout.tensors)
    t.offset = rng.choice(
        [
            *HUGE,
            len(layout.data),
            len(layout.data) - 1,
            t.offset + 1,
            rng.choice(layout.tensors).offset,
        ]
    )


def _tensor_shape(layout: GgufLayout, rng: random.Random) -> None:
    t = rng.choice(layout.tensors)
    choice = rng.randrange(5)
    if choice == 0:
        t.dims = t.dims[::-1]
    elif choice == 1:
        t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 2, 255, 256, 512])
    elif choice == 2:
        t.dims = [*t.dims, rng.choice([1, 2])]
    elif choice == 3:
        t.dims = t.dims[:1]
    else:
        t.dims = [1] * rng.choice([5, 8, 64])  # more dimensions than ggml has


def _tensor_type(layout: GgufLayout, rng: random.Random) -> None:
    t = rng.choice(layout.tensors)
    t.ttype = rng.choice([0, 1, 2, 8, 10, 14, 16, 30, 34, 35, 36, 39, 40, 99, 1 << 31])


def _tensor_name(layout: GgufLayout, rng: random.Random) -> None:
    i = rng.randrange(len(layout.tensors))
    if rng.random() < 0.5:
        del layout.tensors[i]
    else:
        layout.tensors[i].name = rng.choice(layout.tensors).name  # a duplicate name


def _kv_value(layout: GgufLayout, rng: random.Random) -> None:
    arch = _arch(layout)
    kind = rng.randrange(6)
    if kind == 0:
        key = f"{arch}.{rng.choice(_INT_KEYS)}"
        if rng.random() < 0.5:
            set_value(layout, key, U32, encode_scalar(U32, rng.choice(_ODD_VALUES) & 0xFFFFFFFF))
        else:  # a per-layer array, as some architectures allow
            n = rng.choice([0, 1, 2, 3, 1000])
            set_value(layout, key, ARRAY, encode_array(I32, [rng.choice(_ODD_VALUES)] * n))
    elif kind == 1:
        key = f"{arch}.{rng.choice(_FLOAT_KEYS)}"
        set_value(layout, key, F32, encode_scalar(F32, rng.choice(_ODD_FLOATS)))
    elif kind == 2:
        key = rng.choice(_TOKEN_ID_KEYS)
        set_value(layout, key, U32, encode_scalar(U32, rng.choice((HUGE[0], 0, 1, 5, 10_000_000))))
    elif kind == 3:
        key = rng.choice(list(_STRING_VALUES))
        value = rng.choice(_STRING_VALUES[key]).encode()
        set_value(layout, key.replace("bitnet.", f"{arch}."), STRING, encode_string(value))
    elif kind == 4:
        n = len(layout.strings("tokenizer.ggml.tokens"))
        values = [rng.choice([-7, 0, 1, 2, 3, 4, 5, 6, 99]) for _ in range(n)]
        set_value(layout, "tokenizer.ggml.token_type", ARRAY, encode_array(I32, values))
    else:
        merges = layout.strings("tokenizer.ggml.merges")
        if merges:
            i = rng.randrange(len(merges))
            merges[i] = rng.choice([b"", b" ", b"a", b"a b c", b"\xff\xfe", merges[i] + b" x"])
            set_value(layout, "tokenizer.ggml.merges", ARRAY, encode_array(STRING, merges))


def _remove_key(layout: GgufLayout, rng: random.Random) -> None:
    del layout.kvs[rng.randrange(len(layout.kvs))]


_BYTE_MUTATIONS: dict[str, Callable[[bytes, random.Random, int], bytes]] = {
    "bit_flip": _bit_flips,
    "truncate": _truncate,
    "chop": _chop,
}
_LAYOUT_MUTATIONS: dict[str, Callable[[GgufLayout, random.Random], None]] = {
    "swap_keys": _swap_keys,
    "duplicate_key": _duplicate_key,
    "duplicate_token": _duplicate_token,
    "array_type": _array_type,
    "array_length": _array_length,
    "huge_count": _huge_count,
    "tensor_offset": _tensor_offset,
    "tensor_shape": _tensor_shape,
    "tensor_type": _tensor_type,
    "tensor_name": _tensor_name,
    "kv_value": _kv_value,
    "remove_key": _remove_key,
}
MUTATIONS = (*_BYTE_MUTATIONS, *_LAYOUT_MUTATIONS)


@dataclass(frozen=True)
class Mutant:
    """One damaged file: where it came from and what was done to it."""

    base: str
    mutations: tuple[str, ...]
    seed: int
    data: bytes

    @property
    def label(self) -> str:
        return f"{self.base}:{'+'.join(self.mutations)}:{self.seed}"


def mutate(blob: bytes, rng: random.Random, kinds: tuple[str, ...]) -> bytes:
    """Apply the mutations ``kinds`` to a GGUF file's bytes (structure-aware ones first)."""
    layout = GgufLayout.parse(blob)
    structural = [k for k in kinds if k in _LAYOUT_MUTATIONS]
    for kind in structural:
        # An earlier mutation can leave nothing for a later one to work on (an array already
        # made unreadable, no tensors left): that one is then skipped.
        with contextlib.suppress(struct.error, ValueError, IndexError, KeyError):
            _LAYOUT_MUTATIONS[kind](layout, rng)
    out = layout.to_bytes() if structural else blob
    for kind in kinds:
        if kind in _BYTE_MUTATIONS and len(out) > 1:  # a truncation may have left nothing
            out = _BYTE_MUTATIONS[kind](out, rng, max(1, min(len(out), layout.metadata_end())))
    return out


def mutants(bases: dict[str, bytes], count: int, seed: int = 0) -> Iterator[Mutant]:
    """``count`` mutants of the base files, deterministic for a seed; one to three mutations
    each, every kind equally often."""
    rng = random.Random(seed)
    names = sorted(bases)
    for i in range(count):
        base = names[i % len(names)]
        kinds = [MUTATIONS[(i // len(names)) % len(MUTATIONS)]]
        kinds += rng.sample(MUTATIONS, rng.choice([0, 0, 1, 2]))
        mutant_seed = rng.randrange(1 << 32)
        data = mutate(bases[base], random.Random(mutant_seed), tuple(kinds))
        yield Mutant(base, tuple(kinds), mutant_seed, data)


def base_models(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Write the files the mutants start from; returns {name: {"path", "engine"}}.

    A one-layer BitNet model in the project's format (BitNetEngine, libllama's vocabulary;
    and once more on libllama's own graph), the same in bitnet.cpp's I2_S layout (bitnet's own
    reader and converter), and a llama architecture model (all of libllama's loader).
    """
    from ..formats.convert import convert
    from .synthetic import generate_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bitnet = generate_model(folder / "base-bitnet.gguf", n_layer=1, seed=11)
    i2s = folder / "base-i2s.gguf"
    if not i2s.exists():
        convert(bitnet, i2s, type="i2_s")
    llama = generate_model(
        folder / "base-llama.gguf", n_layer=1, seed=12, architecture="llama", activation="silu"
    )
    return {
        "bitnet": {"path": bitnet, "engine": "auto"},
        "bitnet-on-libllama": {"path": bitnet, "engine": "llama"},
        "i2s": {"path": i2s, "engine": "auto"},
        "llama": {"path": llama, "engine": "llama"},
    }


# -- crash-isolated loading -------------------------------------------------------------------

# The child: loads each file it is given, runs what a first user would, answers one JSON line.
_CHILD = r"""
import json, os, sys, resource
limit = int(os.environ.get("BITNET_FUZZ_MEMORY", "0"))
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
os.environ.setdefault("BITNET_CACHE_DIR", sys.argv[1])
import logging
logging.getLogger("bitnet").setLevel(logging.CRITICAL)
import bitnet
print("@@fuzz " + json.dumps({"ready": True}), flush=True)
def use(m):
    m.tokenize("Hello, world!")
    r = m.generate("Hello", max_tokens=3, temperature=0.7, seed=1)
    m.detokenize(r.tokens)
    m.logits(r.tokens[:1] or [0])

for line in sys.stdin:
    job = json.loads(line)
    out = {"path": job["path"]}
    try:
        m = bitnet.Model(job["path"], n_ctx=64, n_threads=1, engine=job["engine"])
    except Exception as exc:
        out.update(outcome="refused", error=type(exc).__name__, message=str(exc)[:300])
    else:
        out["outcome"] = "loaded"
        # A damaged file that loads must still fail only as ordinary exceptions.
        for step in (use, lambda m: m.chat_prompt([{"role": "user", "content": "hi"}])):
            try:
                step(m)
            except (bitnet.EngineError, ValueError) as exc:
                out.setdefault("use_errors", []).append(f"{type(exc).__name__}: {str(exc)[:200]}")
            except Exception as exc:
                out.update(error=type(exc).__name__, message=str(exc)[:300])
        m.close()
    print("@@fuzz " + json.dumps(out), flush=True)
"""


class LoadWorker:
    """A child process that loads model files one at a time; see the module docstring."""

    def __init__(self, cache_dir: str | os.PathLike[str], memory_limit: int = 4 << 30) -> None:
        self.cache_dir = str(cache_dir)
        self.memory_limit = memory_limit
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        # No backtrace on an abort: ggml would attach gdb to print one, which takes seconds.
        env = dict(os.environ, BITNET_FUZZ_MEMORY=str(self.memory_limit), GGML_NO_BACKTRACE="1")
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, self.cache_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        answer = _answer(proc, 60.0)
        if not (isinstance(answer, dict) and answer.get("ready")):
            proc.kill()
            raise RuntimeError(f"the fuzz worker did not start ({answer})")
        return proc

    def load(self, path: str, engine: str, timeout: float) -> dict[str, Any]:
        """Load ``path`` in the child: its JSON answer, or {"outcome": "crash"/"hang", ...}."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"path": path, "engine": engine}) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        answer = _answer(proc, timeout)
        if isinstance(answer, dict):
            return answer
        self.close(kill=answer == "timeout")
        if answer == "timeout":
            return {"path": path, "outcome": "hang", "error": f"no answer in {timeout} s"}
        code = proc.returncode
        name = signal.Signals(-code).name if code < 0 else f"exit {code}"
        return {"path": path, "outcome": "crash", "error": name}

    def close(self, *, kill: bool = False) -> None:
        """Stop the child (killed when asked, or when it does not end at once) and close its
        pipes."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        if kill:
            proc.kill()
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _answer(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any] | str:
    """The child's next answer line (other output, e.g. from native code, is skipped), or
    ``"eof"`` when its output ended (it died), or ``"timeout"`` after ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return "timeout"
        line = proc.stdout.readline()
        if not line:
            return "eof"
        if line.startswith("@@fuzz "):
            answer: dict[str, Any] = json.loads(line[7:])
            return answer


@dataclass
class FuzzResult:
    """What a corpus run found."""

    files: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    by_mutation: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)  # crashes and hangs
    # Loaded files whose use then failed with an ordinary exception, by exception class.
    use_errors: Counter[str] = field(default_factory=Counter)
    # Files refused with another exception than ModelLoadError: the first few of each kind.
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def crashes(self) -> int:
        return self.outcomes["crash"] + self.outcomes["hang"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "use_errors": dict(self.use_errors),
            "by_mutation": {k: dict(v) for k, v in sorted(self.by_mutation.items())},
            "failures": self.failures,
            "unexpected": self.unexpected,
            "seconds": round(self.seconds, 1),
        }


def run_corpus(
    folder: str | os.PathLike[str],
    count: int,
    *,
    seed: int = 0,
    timeout: float = 30.0,
    keep_failures: str | os.PathLike[str] | None = None,
    progress: Callable[[int, FuzzResult], None] | None = None,
) -> FuzzResult:
    """Make ``count`` mutants of :func:`base_models` in ``folder`` and load each in a worker.
    Files that crashed or hung are copied to ``keep_failures`` (when given) to reproduce."""
    folder = Path(folder)
    bases = base_models(folder / "bases")
    blobs = {name: Path(info["path"]).read_bytes() for name, info in bases.items()}
    worker = LoadWorker(folder / "cache")
    result = FuzzResult()
    path = folder / "mutant.gguf"
    t0 = time.perf_counter()
    try:
        for mutant in mutants(blobs, count, seed):
            path.write_bytes(mutant.data)
            answer = worker.load(str(path), bases[mutant.base]["engine"], timeout)
            outcome = answer["outcome"]
            result.files += 1
            result.outcomes[outcome] += 1
            if answer.get("error"):
                result.errors[answer["error"]] += 1
            for use_error in answer.get("use_errors", []):
                result.use_errors[use_error.split(":", 1)[0]] += 1
            for kind in mutant.mutations:
                result.by_mutation.setdefault(kind, Counter())[outcome] += 1
            error = answer.get("error")
            unexpected = outcome in ("refused", "loaded") and error not in (None, "ModelLoadError")
            if unexpected and sum(u["error"] == error for u in result.unexpected) < 5:
                result.unexpected.append({"mutant": mutant.label, **answer})
            if outcome in ("crash", "hang"):
                failure = {"mutant": mutant.label, **answer}
                if keep_failures is not None:
                    kept = Path(keep_failures) / f"{mutant.label.replace(':', '-')}.gguf"
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    kept.write_bytes(mutant.data)
                    failure["file"] = str(kept)
                result.failures.append(failure)
            if progress is not None:
                progress(result.files, result)
            # Each I2_S mutant is converted once into the cache: do not keep thousands.
            for converted in (folder / "cache" / "converted").glob("*.gguf"):
                converted.unlink()
    finally:
        worker.close()
        result.seconds = time.perf_counter() - t0
    return result
