"""Generation: determinism, seeds, stop strings, EOS, streaming, chat, abort, threads."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bitnet
from bitnet.testing import generate_model


def test_readme_example(tiny_relu2):
    m = bitnet.Model(tiny_relu2)
    result = m.generate("Hello", max_tokens=16, seed=0)
    assert isinstance(result.text, str)
    assert result.finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens == len(m.tokenize("Hello"))
    assert result.usage.completion_tokens == len(result.tokens) <= 16
    m.close()


def test_greedy_is_deterministic(tiny_model):
    a = tiny_model.generate("The cat", max_tokens=24, temperature=0)
    b = tiny_model.generate("The cat", max_tokens=24, temperature=0)
    assert a.tokens == b.tokens and a.text == b.text
    assert a.finish_reason == "length" and len(a.tokens) == 24


def test_same_seed_same_text(tiny_model):
    kw = dict(max_tokens=32, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    a = tiny_model.generate("Once upon", seed=123, **kw)
    b = tiny_model.generate("Once upon", seed=123, **kw)
    c = [tiny_model.generate("Once upon", seed=s, **kw).tokens for s in range(5)]
    assert a.tokens == b.tokens
    assert len({tuple(t) for t in c}) > 1, "different seeds should sample differently"


def test_model_seed_is_the_default(tiny_relu2):
    with bitnet.Model(tiny_relu2, n_ctx=128, seed=7) as m:
        kw = dict(max_tokens=16, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
        assert m.generate("Hi", **kw).tokens == m.generate("Hi", seed=7, **kw).tokens


def test_prompt_cache_reuse_gives_same_result(tiny_model):
    first = tiny_model.generate("The quick brown fox", max_tokens=8, temperature=0)
    again = tiny_model.generate("The quick brown fox", max_tokens=8, temperature=0)
    assert again.timings.prompt_tokens_evaluated == 1  # the prefix came from the KV cache
    assert again.tokens == first.tokens


def test_stop_string_truncates_and_finishes(tiny_model):
    full = tiny_model.generate("The cat", max_tokens=24, temperature=0)
    assert len(full.text) > 4
    stop = full.text[3:6]
    cut = tiny_model.generate("The cat", max_tokens=24, temperature=0, stop=[stop, "\x00never"])
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]


def test_stream_concatenates_to_generate(tiny_model):
    full = tiny_model.generate("Hello world", max_tokens=20, temperature=0)
    pieces = list(tiny_model.stream("Hello world", max_tokens=20, temperature=0))
    assert "".join(pieces) == full.text
    assert all(pieces)


def test_stream_never_emits_stop_string_prefix(tiny_model):
    full = tiny_model.generate("The dog", max_tokens=24, temperature=0)
    stop = full.text[5:9]
    pieces = list(tiny_model.stream("The dog", max_tokens=24, temperature=0, stop=stop))
    text = "".join(pieces)
    assert text == full.text[: full.text.index(stop)]
    assert stop not in text


def test_breaking_a_stream_releases_the_model(tiny_model):
    for _piece in tiny_model.stream("Hello", max_tokens=50, temperature=0):
        break
    # A second call must not block or fail.
    assert tiny_model.generate("Hello", max_tokens=2, temperature=0).usage.completion_tokens >= 1


def test_call_during_an_open_stream_runs_alongside_it(tiny_model):
    # Both are sequences of the model's scheduler: the call does not wait for the stream (which
    # nobody iterates meanwhile), and neither changes the other's tokens.
    alone = tiny_model.generate("Hello", max_tokens=10, temperature=0)
    stream = tiny_model.stream("Hello", max_tokens=10, temperature=0)
    first = next(stream)
    other = tiny_model.generate("Hi", max_tokens=3, temperature=0)
    assert other.usage.completion_tokens == 3
    rest = "".join(stream)
    assert first + rest == alone.text
    assert stream.result is not None and stream.result.tokens == alone.tokens


def test_eos_stops_generation(tmp_path: Path, tiny_relu2):
    with bitnet.Model(tiny_relu2, n_ctx=128) as m:
        greedy = m.generate("Hello", max_tokens=8, temperature=0)
    assert greedy.finish_reason == "length"
    # Declare a later greedy token to be EOS: generation must stop right before it.
    k = next(i for i in range(1, 8) if greedy.tokens[i] not in greedy.tokens[:i])
    path = generate_model(
        tmp_path / "eos.gguf", activation="relu2", seed=3, eos_token_id=greedy.tokens[k]
    )
    with bitnet.Model(path, n_ctx=128) as m:
        out = m.generate("Hello", max_tokens=8, temperature=0)
    assert out.finish_reason == "stop"
    assert out.tokens == greedy.tokens[:k]


def test_eot_is_end_of_generation(tiny_model):
    native = tiny_model._native
    assert native.is_end_of_generation(native.eos)
    assert native.is_end_of_generation(
        tiny_model.tokenize("<|eot_id|>", add_bos=False, special=True)[0]
    )


def test_chat_uses_the_file_template(tiny_model):
    prompt = tiny_model.chat_prompt([{"role": "user", "content": "Hi"}])
    assert prompt == "<|begin_of_text|>User: Hi<|eot_id|>Assistant: "
    tokens = tiny_model.chat_tokens([{"role": "user", "content": "Hi"}])
    assert tokens.count(tiny_model._native.bos) == 1
    result = tiny_model.chat([{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0)
    assert result.usage.prompt_tokens == len(tokens)
    assert (
        "".join(
            tiny_model.stream_chat([{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0)
        )
        == result.text
    )


def test_chat_builtin_template_when_file_has_none(tmp_path: Path):
    path = generate_model(tmp_path / "notemplate.gguf", chat_template=False)
    with bitnet.Model(path, n_ctx=128) as m:
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        assert m.chat_prompt(messages) == (
            "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: "
        )
        with pytest.raises(ValueError, match="unknown role"):
            m.chat_prompt([{"role": "robot", "content": "x"}])


def test_tokenize_roundtrip(tiny_model):
    text = "Hello world! Ünïcödé and emoji 🦊 work."
    tokens = tiny_model.tokenize(text, add_bos=False)
    assert tiny_model.detokenize(tokens) == text
    assert tiny_model.tokenize(text)[0] == tiny_model._native.bos


def test_stream_pieces_are_whole_characters(tiny_model):
    # Byte-level tokens split multi-byte characters; pieces must never show U+FFFD for them.
    tokens = tiny_model.tokenize("🦊🦊 é", add_bos=False)
    assert len(tokens) > 3  # several byte tokens per character
    result = tiny_model.generate(tokens, max_tokens=1, temperature=0)
    assert "\ufffd" not in result.text


def test_abort_stops_a_long_prompt_quickly(tiny_relu2):
    with bitnet.Model(tiny_relu2, n_ctx=4096, n_batch=64, n_threads=1) as m:
        prompt = m.tokenize("the cat sat on the mat " * 400)[:4000]
        t0 = time.perf_counter()
        m.generate(prompt, max_tokens=1)
        full = time.perf_counter() - t0
        timer = threading.Timer(full / 4, m.abort)
        t0 = time.perf_counter()
        timer.start()
        result = m.generate(prompt[:1] + prompt[2:], max_tokens=50)  # no cached prefix
        elapsed = time.perf_counter() - t0
        timer.join()
    assert result.finish_reason == "abort"
    assert result.tokens == []
    assert elapsed < full  # stopped well before the whole prompt was processed


def test_threads_share_a_model(tiny_model):
    expected = tiny_model.generate("The cat", max_tokens=12, temperature=0).text
    results: list[str] = []
    errors: list[BaseException] = []

    def worker():
        try:
            for _ in range(3):
                results.append(tiny_model.generate("The cat", max_tokens=12, temperature=0).text)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [expected] * 12


def test_context_full_ends_with_length(tiny_relu2):
    with bitnet.Model(tiny_relu2, n_ctx=16) as m:
        prompt = m.tokenize("Hello there")
        result = m.generate(prompt, max_tokens=100, temperature=0)
    assert result.finish_reason == "length"
    assert len(prompt) + len(result.tokens) <= 16


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_utf8_assembly_never_splits_characters(chunk):
    from bitnet._native import _core

    text = "aé€🦊 Ünïcödé — 日本語 🦊🦊!"
    data = text.encode()
    pending, out = b"", []
    for i in range(0, len(data), chunk):
        piece, pending = _core.model._take_utf8(pending + data[i : i + chunk], False)
        out.append(piece)
    piece, pending = _core.model._take_utf8(pending, True)
    out.append(piece)
    assert "".join(out) == text and pending == b""
    assert all("\ufffd" not in p for p in out)


def test_utf8_assembly_replaces_invalid_bytes():
    from bitnet._native import _core

    assert _core.model._take_utf8(b"a\xffb\xe2\x82", False) == ("a\ufffdb", b"\xe2\x82")
    assert _core.model._take_utf8(b"\xe2\x82", True) == ("\ufffd\ufffd", b"")
    assert _core.model._take_utf8(b"\xe2(x", False) == ("\ufffd(x", b"")
    # Sequences Python's strict decoder rejects: a surrogate, overlong forms, > U+10FFFF.
    for bad in (
        b"\xed\xa0\x80",
        b"\xe0\x80\x80",
        b"\xf0\x80\x80\x80",
        b"\xf4\x90\x80\x80",
        b"\xc0\xaf",
    ):
        text, rest = _core.model._take_utf8(bad + b"!", False)
        assert rest == b"" and text.endswith("!") and set(text[:-1]) == {"\ufffd"}, bad


def test_utf8_assembly_on_random_bytes():
    from bitnet._native import _core

    rng = np.random.default_rng(0)
    for _ in range(300):
        data = rng.integers(0, 256, size=int(rng.integers(1, 12)), dtype=np.uint8).tobytes()
        text, rest = _core.model._take_utf8(data, True)
        assert rest == b""
        # Same characters as Python's decoder; only the number of U+FFFD per bad run differs.
        python = data.decode("utf-8", errors="replace")
        assert text.replace("\ufffd", "") == python.replace("\ufffd", ""), data
        assert ("\ufffd" in text) == ("\ufffd" in python), data


def test_top_k_1_is_greedy(tiny_model):
    greedy = tiny_model.generate("The cat", max_tokens=16, temperature=0)
    top1 = tiny_model.generate("The cat", max_tokens=16, temperature=1.0, top_k=1, seed=9)
    assert top1.tokens == greedy.tokens


def test_repeat_penalty_reduces_repetition(tiny_model):
    plain = tiny_model.generate("Hello", max_tokens=32, temperature=0)
    penalized = tiny_model.generate("Hello", max_tokens=32, temperature=0, repeat_penalty=3.0)
    assert len(set(penalized.tokens)) > len(set(plain.tokens))


def test_thread_count_does_not_change_logits(tiny_relu2):
    with (
        bitnet.Model(tiny_relu2, n_ctx=128, n_threads=1) as one,
        bitnet.Model(tiny_relu2, n_ctx=128, n_threads=2) as two,
    ):
        tokens = one.tokenize("The quick brown fox jumps over the lazy dog")
        np.testing.assert_array_equal(one.logits(tokens), two.logits(tokens))


def test_without_mmap_same_logits(tiny_relu2, tiny_model):
    with bitnet.Model(tiny_relu2, n_ctx=128, use_mmap=False) as m:
        tokens = m.tokenize("Hello world")
        np.testing.assert_array_equal(m.logits(tokens), tiny_model.logits(tokens))


def test_generate_accepts_token_ids(tiny_model):
    tokens = tiny_model.tokenize("The cat")
    assert (
        tiny_model.generate(tokens, max_tokens=8, temperature=0).tokens
        == tiny_model.generate("The cat", max_tokens=8, temperature=0).tokens
    )


SIGINT_SCRIPT = """
import os, signal, sys, threading, time
import bitnet

m = bitnet.Model(sys.argv[1], n_ctx=4096, n_batch=32, n_threads=1)
prompt = m.tokenize("the cat sat on the mat " * 400)[:4000]
t0 = time.perf_counter()
m.logits(prompt[:2000])
full = time.perf_counter() - t0
for call in ("logits", "generate", "stream"):
    prompt = prompt[1:] + prompt[:1]  # no cached prefix
    threading.Timer(full / 3, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.perf_counter()
    try:
        if call == "logits":
            m.logits(prompt[:2000])
        elif call == "generate":
            m.generate(prompt[:2000], max_tokens=50)
        else:
            list(m.stream(prompt[:2000], max_tokens=50))
        print(call, "finished")
    except KeyboardInterrupt:
        print(call, "interrupted", round((time.perf_counter() - t0) / full, 2))
print("usable", m.generate("Hi", max_tokens=2, temperature=0).usage.completion_tokens)
"""


def test_ctrl_c_interrupts_native_work(tiny_relu2):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", SIGINT_SCRIPT, str(tiny_relu2)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    for call in ("logits", "generate", "stream"):
        line = next(x for x in lines if x.startswith(call))
        assert "interrupted" in line, proc.stdout
        assert float(line.split()[-1]) < 0.9, proc.stdout  # well before the work would end
    assert "usable 2" in proc.stdout


def test_stream_result_and_cancel(tiny_model):
    stream = tiny_model.stream("Hello", max_tokens=6, temperature=0)
    assert stream.result is None
    text = "".join(stream)
    assert stream.result is not None and stream.result.text == text
    assert stream.result.finish_reason in ("stop", "length")

    full = tiny_model.generate("Hello", max_tokens=400, temperature=0)
    cancelled = tiny_model.stream("Hello", max_tokens=400, temperature=0)
    # Before the first step: the generation (running since stream() returned) ends at the
    # scheduler's next look, with what it had made so far.
    cancelled.cancel()
    text = "".join(cancelled)
    assert full.text.startswith(text)
    if full.finish_reason == "length":
        assert cancelled.result.finish_reason == "abort"
    assert tiny_model.generate("Hi", max_tokens=2, temperature=0).usage.completion_tokens >= 1


def test_cancel_from_another_thread_stops_a_long_prompt(tiny_relu2):
    with bitnet.Model(tiny_relu2, n_ctx=4096, n_batch=32, n_threads=1) as m:
        prompt = m.tokenize("the cat sat on the mat " * 400)[:4000]
        t0 = time.perf_counter()
        m.logits(prompt[:3000])
        full = time.perf_counter() - t0
        stream = m.stream(prompt[1:3001], max_tokens=10)
        timer = threading.Timer(full / 4, stream.cancel)
        timer.start()
        t0 = time.perf_counter()
        assert list(stream) == []
        elapsed = time.perf_counter() - t0
        timer.join()
    assert stream.result.finish_reason == "abort"
    assert elapsed < full * 0.9


@pytest.mark.parametrize(
    ("presence", "frequency", "last_n"),
    [(1.5, 0.0, 64), (0.0, 0.7, 64), (0.8, 0.5, 6), (-1.0, 0.0, 64)],
)
def test_presence_and_frequency_penalties_follow_their_definition(
    tiny_model, presence, frequency, last_n
):
    """Greedy decoding with the penalties, redone in numpy from logits(): at each step the
    logit of every token among the last `last_n` (prompt included) loses `presence` once and
    `frequency` per occurrence. Batch invariance makes logits() the logits generation saw."""
    prompt = tiny_model.tokenize("Hello world, hello hello")
    got = tiny_model.generate(
        prompt,
        max_tokens=12,
        temperature=0,
        presence_penalty=presence,
        frequency_penalty=frequency,
        repeat_last_n=last_n,
    )
    tokens = list(prompt)
    want: list[int] = []
    for _ in range(len(got.tokens)):
        logits = tiny_model.logits(tokens)[-1].astype(np.float64)
        counts = np.bincount(tokens[-last_n:], minlength=tiny_model.n_vocab)
        logits -= counts * frequency + (counts > 0) * presence
        token = int(np.argmax(logits))
        want.append(token)
        tokens.append(token)
    assert got.tokens == want
    plain = tiny_model.generate(prompt, max_tokens=12, temperature=0).tokens
    assert plain != want or presence == frequency == 0


def test_penalties_are_range_checked(tiny_model):
    with pytest.raises(ValueError, match="presence_penalty must be in \\[-2, 2\\]"):
        tiny_model.generate("x", presence_penalty=2.5)
    with pytest.raises(ValueError, match="frequency_penalty must be in \\[-2, 2\\]"):
        tiny_model.generate("x", frequency_penalty=-3)
    with pytest.raises(ValueError, match="frequency_penalty must be a finite number"):
        tiny_model.generate("x", frequency_penalty=float("nan"))


def test_logit_bias_follows_its_definition(tiny_model):
    """Greedy decoding with logit_bias, redone in numpy from logits(): the biases are added to
    the logits before the argmax; -100 bans the first greedy token, 100 forces a token."""
    prompt = tiny_model.tokenize("Hello world")
    plain = tiny_model.generate(prompt, max_tokens=8, temperature=0).tokens
    bias = {plain[0]: -100.0, 7: 3.5, "11": -2}
    got = tiny_model.generate(prompt, max_tokens=8, temperature=0, logit_bias=bias).tokens
    tokens, want = list(prompt), []
    add = np.zeros(tiny_model.n_vocab)
    add[plain[0]], add[7], add[11] = -100.0, 3.5, -2.0
    for _ in range(len(got)):
        token = int(np.argmax(tiny_model.logits(tokens)[-1].astype(np.float64) + add))
        want.append(token)
        tokens.append(token)
    assert got == want and plain[0] not in got
    forced = tiny_model.generate(
        prompt, max_tokens=4, temperature=0.9, seed=3, logit_bias={42: 100}
    )
    assert forced.tokens == [42] * 4


@pytest.mark.parametrize(
    ("bias", "error", "match"),
    [
        ({10**6: 1}, ValueError, "outside the vocabulary"),
        ({1: 101}, ValueError, "must be in \\[-100, 100\\]"),
        ({"x": 1}, ValueError, "token ids"),
        ({-1: 1}, ValueError, "token ids"),
        ([1, 2], TypeError, "must map token ids to numbers"),
    ],
)
def test_logit_bias_is_checked(tiny_model, bias, error, match):
    with pytest.raises(error, match=match):
        tiny_model.generate("x", max_tokens=2, logit_bias=bias)


@pytest.mark.slow
def test_loading_does_not_hold_the_weights_twice(tmp_path):
    """Each source tensor's pages are dropped as soon as it is repacked: the load's peak memory
    stays near what the loaded model settles at, not that plus the file's ternary weights."""
    from bitnet.testing import ModelShape, generate_model

    shape = ModelShape(1024, 12, 8, 2, 2816, 512, 10000.0, 1e-5, None)
    path = generate_model(tmp_path / "mid.gguf", shape=shape, seed=1)
    ternary_mib = 12 * (2 * 1024 * 1024 + 2 * 1024 * 256 + 3 * 1024 * 2816) / 4 / 2**20
    code = f"""
import bitnet
def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024
hwm0, rss0 = status()
m = bitnet.Model({str(path)!r}, n_ctx=64, kernels="bitnet", n_threads=1)
hwm, rss = status()
print(max(hwm - max(hwm0, rss0), 0), rss - rss0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, settled = map(float, out.stdout.split())
    assert settled > 0.8 * ternary_mib  # the arena holds the repacked weights
    assert peak < settled + 0.4 * ternary_mib, (peak, settled, ternary_mib)
