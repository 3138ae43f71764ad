"""Damaged and hostile model files: never a crash or a hang, always a ModelLoadError naming why.

Every load runs in a child process (bitnet.testing.fuzz.LoadWorker): an abort() inside
libllama or ggml kills the child, not the test run, and is counted as a crash.
``benchmarks/fuzz_gguf.py`` runs the same on a corpus of thousands.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
from pathlib import Path

import pytest

from bitnet.testing import generate_model
from bitnet.testing.fuzz import (
    ARRAY,
    F32,
    I32,
    STRING,
    U32,
    GgufLayout,
    LoadWorker,
    encode_array,
    encode_scalar,
    encode_string,
    run_corpus,
    set_value,
)

pytestmark = pytest.mark.slow  # child processes


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> LoadWorker:
    w = LoadWorker(tmp_path_factory.mktemp("fuzz-cache"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> GgufLayout:
    path = generate_model(tmp_path_factory.mktemp("fuzz") / "base.gguf", n_layer=1, seed=5)
    return GgufLayout.parse(path.read_bytes())


def test_a_corpus_of_mutants_never_crashes(tmp_path: Path):
    result = run_corpus(tmp_path, 480, seed=2026, keep_failures=tmp_path / "failures")
    report = result.to_dict()
    assert result.files == 480
    assert result.crashes == 0, report["failures"]
    assert not result.unexpected, report["unexpected"]  # every refusal is a ModelLoadError
    assert result.outcomes["refused"] > 300 and result.outcomes["loaded"] > 0, report
    assert set(result.by_mutation) == {
        "bit_flip",
        "truncate",
        "chop",
        "swap_keys",
        "duplicate_key",
        "duplicate_token",
        "array_type",
        "array_length",
        "huge_count",
        "tensor_offset",
        "tensor_shape",
        "tensor_type",
        "tensor_name",
        "kv_value",
        "remove_key",
    }


def test_the_worker_reports_hangs_and_crashes(worker: LoadWorker, tmp_path: Path, base):
    """The harness itself: a child that stops answering is a hang, one that dies a crash."""
    fifo = tmp_path / "nobody-writes.gguf"
    os.mkfifo(fifo)  # opening it blocks until a writer comes: a load that never returns
    assert worker.load(str(fifo), "auto", 1.0)["outcome"] == "hang"
    ok = tmp_path / "ok.gguf"
    ok.write_bytes(base.to_bytes())
    assert worker.load(str(ok), "auto", 60)["outcome"] == "loaded"  # a fresh child
    child = worker.proc
    assert child is not None
    killer = threading.Timer(0.5, lambda: os.kill(child.pid, signal.SIGABRT))
    killer.start()
    answer = worker.load(str(fifo), "auto", 60)
    killer.join()
    assert (answer["outcome"], answer["error"]) == ("crash", "SIGABRT")
    assert worker.load(str(ok), "auto", 60)["outcome"] == "loaded"


def _variant(base: GgufLayout, tmp_path: Path, name: str, edit) -> str:
    layout = GgufLayout.parse(base.to_bytes())
    edit(layout)
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(layout.to_bytes())
    return str(path)


def _duplicate_token(layout: GgufLayout) -> None:
    tokens = layout.strings("tokenizer.ggml.tokens")
    tokens[300] = tokens[299]
    set_value(layout, "tokenizer.ggml.tokens", ARRAY, encode_array(STRING, tokens))


def _byte_token_in_wordpiece(layout: GgufLayout) -> None:
    n = len(layout.strings("tokenizer.ggml.tokens"))
    set_value(layout, "tokenizer.ggml.model", STRING, encode_string(b"bert"))
    set_value(layout, "tokenizer.ggml.token_type", ARRAY, encode_array(I32, [1] * (n - 1) + [6]))


def _bos_it_does_not_have(layout: GgufLayout) -> None:
    n = len(layout.strings("tokenizer.ggml.tokens"))
    layout.kvs = [kv for kv in layout.kvs if kv.key != b"tokenizer.ggml.bos_token_id"]
    # BPE's default BOS is id 11; without it in range and with add_bos, libllama asserts.
    tokens = layout.strings("tokenizer.ggml.tokens")[:11]
    set_value(layout, "tokenizer.ggml.tokens", ARRAY, encode_array(STRING, tokens))
    set_value(layout, "tokenizer.ggml.add_bos_token", 7, struct.pack("<?", True))
    assert n > 11


def _negative_epsilon(layout: GgufLayout) -> None:
    set_value(layout, "bitnet.attention.layer_norm_rms_epsilon", F32, encode_scalar(F32, -1))


def _odd_rope_dimensions(layout: GgufLayout) -> None:
    set_value(layout, "bitnet.rope.dimension_count", U32, encode_scalar(U32, 63))


@pytest.mark.parametrize(
    ("name", "edit", "engine", "message"),
    [
        ("duplicate-token", _duplicate_token, "auto", "tokens 299 and 300 are both"),
        ("duplicate-token-llama", _duplicate_token, "llama", "tokens 299 and 300 are both"),
        ("wordpiece-byte", _byte_token_in_wordpiece, "auto", "a byte token, which a WordPiece"),
        ("bos", _bos_it_does_not_have, "auto", "adds a BOS token to every prompt but"),
        (
            "eps",
            _negative_epsilon,
            "auto",
            "layer_norm_rms_epsilon' (-1",
        ),
        (
            "eps-llama",
            _negative_epsilon,
            "llama",
            "'bitnet.attention.layer_norm_rms_epsilon': value -1 is outside",
        ),
        (
            "odd-rope",
            _odd_rope_dimensions,
            "auto",
            "odd rope.dimension_count (63)",
        ),
        (
            "odd-rope-llama",
            _odd_rope_dimensions,
            "llama",
            "rope.dimension_count': odd",
        ),
        (
            "layers-llama",
            lambda g: set_value(g, "bitnet.block_count", U32, encode_scalar(U32, 4096)),
            "llama",
            "'bitnet.block_count': value 4096 is outside [1, 512]",
        ),
        (
            "layers",
            lambda g: set_value(g, "bitnet.block_count", U32, encode_scalar(U32, 4000)),
            "auto",
            "says it has 4000 layers (block_count) but holds only",
        ),
        (
            "i32-norm",
            lambda g: setattr(
                g.tensors[[t.name for t in g.tensors].index(b"output_norm.weight")], "ttype", 26
            ),
            "auto",
            "'output_norm.weight' has type i32, which BitNetEngine needs as f32",
        ),
    ],
)
def test_what_libllama_and_ggml_abort_on_is_a_model_load_error(
    worker, base, tmp_path, name, edit, engine, message
):
    path = _variant(base, tmp_path, name, edit)
    answer = worker.load(path, engine, 60)
    assert answer["outcome"] == "refused", answer
    assert answer["error"] == "ModelLoadError" and message in answer["message"], answer
