"""bitnet.Model: load a GGUF file and generate, stream, chat, tokenize and score with it."""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._native import _core
from .chat import render_chat
from .cpu import MAX_THREADS, default_threads
from .errors import EngineError, ModelLoadError

__all__ = ["GenerationResult", "Model", "TextStream", "Timings", "Usage", "validate_sampling"]

FinishReason = Literal["stop", "length", "abort"]
Prompt = str | Sequence[int]
_log = logging.getLogger("bitnet")


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Wall-clock times of one generation and the speeds they give.

    ``prompt_tokens_evaluated`` can be lower than the prompt length when a prefix was still in
    the KV cache from the previous call.
    """

    prompt_ms: float
    generation_ms: float
    prompt_tokens_evaluated: int
    generation_decodes: int

    @property
    def prompt_tokens_per_second(self) -> float:
        return _rate(self.prompt_tokens_evaluated, self.prompt_ms)

    @property
    def generation_tokens_per_second(self) -> float:
        return _rate(self.generation_decodes, self.generation_ms)


def _rate(count: int, ms: float) -> float:
    return count * 1000.0 / ms if ms > 0 else 0.0


@dataclass(frozen=True)
class GenerationResult:
    """What :meth:`Model.generate` and :meth:`Model.chat` return."""

    text: str
    tokens: list[int]
    finish_reason: FinishReason
    usage: Usage
    timings: Timings


# Beyond these the native sizes overflow long before memory runs out.
MAX_CONTEXT = 1 << 24
# Token counts and top_k are 32-bit ints in the engine.
MAX_INT32 = (1 << 31) - 1


def _positive_int(name: str, value: object, maximum: int) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value > maximum:
        raise ValueError(f"{name}={value} is larger than the supported maximum of {maximum}")
    return int(value)


class Model:
    """A BitNet b1.58 (or any llama.cpp-supported) GGUF model, run in-process.

    Arguments:
        path: the ``.gguf`` file.
        n_ctx: context size in tokens (KV cache size).
        n_threads: threads for generation (one token per step); default: one per physical
            core this process may use (its affinity mask and cgroup quota), the policy of
            ``BitNetRuntime(threads="auto")``.
        n_threads_batch: threads for prompt processing; default: ``n_threads``.
        n_batch: most prompt tokens processed in one step.
        seed: default sampling seed for calls that pass none (None: a fresh random seed each call).
        use_mmap: memory-map the weights instead of reading them into RAM.
        engine: ``"auto"`` (BitNetEngine for BitNet architectures, libllama for the rest),
            ``"bitnet"`` or ``"llama"``.
        kernels: what runs BitNetEngine's ternary matmuls: ``"auto"`` (our kernels when the CPU
            has a SIMD path for them, see ``bitnet.kernels.kernel_name()``), ``"bitnet"`` (ours,
            even the scalar fallback) or ``"ggml"`` (ggml's TQ2_0/TQ1_0 path). libllama always
            uses ggml's. ``Model.kernels`` says what was chosen.

    A Model may be shared between threads: its calls run one at a time. ``close()`` (or a
    ``with`` block) frees the native memory.

    Example:
        >>> with bitnet.Model("tiny.gguf") as m:
        ...     print(m.generate("Hello", max_tokens=16, seed=0).text)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_batch: int = 512,
        seed: int | None = None,
        use_mmap: bool = True,
        engine: Literal["auto", "bitnet", "llama"] = "auto",
        kernels: Literal["auto", "bitnet", "ggml"] = "auto",
    ) -> None:
        self._core: Any = None
        path = os.fspath(path)
        n_ctx = _positive_int("n_ctx", n_ctx, MAX_CONTEXT)
        n_batch = _positive_int("n_batch", n_batch, MAX_CONTEXT)
        if n_threads is None:
            n_threads = default_threads()
        n_threads = _positive_int("n_threads", n_threads, MAX_THREADS)
        if n_threads_batch is None:
            n_threads_batch = n_threads
        n_threads_batch = _positive_int("n_threads_batch", n_threads_batch, MAX_THREADS)
        if engine not in ("auto", "bitnet", "llama"):
            raise ValueError(f"engine must be 'auto', 'bitnet' or 'llama', got {engine!r}")
        if kernels not in ("auto", "bitnet", "ggml"):
            raise ValueError(f"kernels must be 'auto', 'bitnet' or 'ggml', got {kernels!r}")
        if seed is not None:
            seed = _seed(seed)
        if not os.path.exists(path):
            raise ModelLoadError(
                f"model file '{path}' does not exist (check the path; a test model can be made "
                "with `python -m bitnet generate-model PATH`)"
            )
        self.path = path
        self.seed = seed
        self.n_threads = n_threads
        self.n_threads_batch = n_threads_batch
        options = dict(
            engine=engine,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            use_mmap=use_mmap,
            kernels=kernels,
        )
        try:
            self._core = _core.Model(path, **options)
        except ModelLoadError:
            # ggml cannot read bitnet.cpp's I2_S type: run a cached TQ2_0 conversion instead.
            from .convert import loadable_path

            converted = loadable_path(path)
            if converted == Path(path):
                raise
            self._core = _core.Model(str(converted), **options)
        self._metadata: dict[str, Any] | None = None
        if (kernels == "bitnet" and not self.kernels.startswith("bitnet")) or (
            "ggml the rest" in self.kernels
        ):
            _log.warning(
                "%s: our kernels take only TQ2_0 tensors with one scale per row; %s",
                path,
                self.kernels,
            )

    # -- properties -------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return int(self._native.n_ctx)

    @property
    def n_vocab(self) -> int:
        return int(self._native.n_vocab)

    @property
    def engine(self) -> str:
        """``"bitnet"`` (our own graph) or ``"llama"`` (libllama)."""
        return str(self._native.engine)

    @property
    def kernels(self) -> str:
        """What runs the ternary matmuls: ``"bitnet:<impl>"`` (our kernels, e.g.
        ``"bitnet:avx2"``) or ``"ggml"``."""
        return str(self._native.kernels)

    @property
    def architecture(self) -> str:
        return str(self._native.architecture)

    @property
    def metadata(self) -> dict[str, Any]:
        """The GGUF key/value metadata (arrays as lists), read once on first use."""
        if self._metadata is None:
            from .convert import read_tables

            self._metadata = read_tables(self.path)[0]
        return self._metadata

    @property
    def _native(self) -> Any:
        if self._core is None:
            raise EngineError("this Model is closed")
        return self._core

    # -- tokens -----------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of ``text``; ``special=True`` parses control tokens such as ``<|eot_id|>``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return list(self._native.tokenize(text, add_bos=add_bos, special=special))

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        """Text of ``tokens`` (invalid UTF-8 becomes U+FFFD)."""
        data = self._native.detokenize(self._check_tokens(tokens), special=special)
        return data.decode("utf-8", errors="replace")

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits (float32, shape ``(len(tokens), n_vocab)``) of ``tokens`` from an empty cache."""
        return self._native.logits(self._check_tokens(tokens))

    def _check_tokens(self, tokens: Sequence[int]) -> list[int]:
        if isinstance(tokens, str | bytes) or not isinstance(tokens, Iterable):
            raise TypeError(f"tokens must be a sequence of token ids, not {type(tokens).__name__}")
        ids = []
        for t in tokens:
            if not _is_int(t):
                raise TypeError(f"token ids must be integers, got {t!r}")
            ids.append(int(t))
        n_vocab = self.n_vocab
        for t in ids:
            if not 0 <= t < n_vocab:
                raise ValueError(f"token id {t} is outside the vocabulary [0, {n_vocab})")
        return ids

    # -- generation -------------------------------------------------------------------------

    def generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> GenerationResult:
        """Complete ``prompt`` (text, or token ids used as they are).

        Generation ends at an end-of-generation token (EOS, ``<|eot_id|>``), at a ``stop``
        string (not included in the text), after ``max_tokens`` tokens, or when the context is
        full. ``temperature=0`` is greedy decoding.
        """
        gen = self._start(
            prompt, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop, seed
        )
        try:
            gen.run()
        finally:
            gen.close()
        return _result(gen)

    def stream(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> TextStream:
        """Like :meth:`generate`, yielding text pieces as they become final.

        Pieces are whole UTF-8 characters; text that could be the start of a stop string is
        held back until it is known not to be one. Breaking out of the loop ends the generation;
        the returned :class:`TextStream` also has ``result`` and a thread-safe ``cancel()``.
        """
        gen = self._start(
            prompt, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop, seed
        )
        return TextStream(gen)

    def chat(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> GenerationResult:
        """Generate the assistant's reply to ``messages`` (``[{"role": ..., "content": ...}]``)."""
        return self.generate(self._chat_prompt(messages), **kwargs)

    def stream_chat(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> TextStream:
        """Stream the assistant's reply to ``messages``."""
        return self.stream(self._chat_prompt(messages), **kwargs)

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt text :meth:`chat` sends for ``messages``."""
        native = self._native
        return render_chat(
            messages,
            native.chat_template or None,
            bos_token=self._token_text(native.bos),
            eos_token=self._token_text(native.eos),
        )

    def _chat_prompt(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        text = self.chat_prompt(messages)
        bos_text = self._token_text(self._native.bos)
        # The template writes BOS itself when it wants one.
        add_bos = not (bos_text and text.startswith(bos_text))
        return self.tokenize(text, add_bos=add_bos, special=True)

    def _token_text(self, token: int) -> str:
        """Text of a special token such as BOS ("" when the vocabulary has none)."""
        return self.detokenize([token], special=True) if token >= 0 else ""

    def _start(
        self,
        prompt: Prompt,
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        min_p: float,
        repeat_penalty: float,
        stop: str | Sequence[str] | None,
        seed: int | None,
    ) -> Any:
        native = self._native
        if isinstance(prompt, str):
            tokens = self.tokenize(prompt, add_bos=True, special=True)
        else:
            tokens = self._check_tokens(prompt)
        if not tokens:
            raise ValueError("the prompt is empty")
        if len(tokens) >= self.n_ctx:
            raise ValueError(
                f"the prompt has {len(tokens)} tokens but the context holds {self.n_ctx} "
                "(n_ctx), with at least one more needed to generate; shorten the prompt or "
                "load the model with a larger n_ctx"
            )
        stops = validate_sampling(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            stop=stop,
        )
        if seed is None:
            seed = self.seed if self.seed is not None else random.getrandbits(32)
        return native.start(
            tokens,
            max_tokens=int(max_tokens),
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            min_p=float(min_p),
            repeat_penalty=float(repeat_penalty),
            repeat_last_n=64,
            seed=_seed(seed),
            stop=stops,
        )

    def abort(self) -> None:
        """Stop the generation or ``logits()`` call running in another thread (finish "abort")."""
        self._native.abort()

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Free the native model; later calls raise :class:`bitnet.EngineError`."""
        self._core = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._core is None:
            return f"<bitnet.Model {self.__dict__.get('path', '?')!r} (closed)>"
        return (
            f"<bitnet.Model {self.path!r} arch={self.architecture} engine={self.engine} "
            f"n_ctx={self.n_ctx} n_vocab={self.n_vocab}>"
        )


def validate_sampling(
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    min_p: float,
    repeat_penalty: float,
    stop: str | Sequence[str] | None,
) -> list[str]:
    """Check sampling arguments (ValueError naming the value and the allowed range, TypeError
    for a value of the wrong type); returns the stop strings as a list."""
    if not _is_int(max_tokens) or not 0 <= max_tokens <= MAX_INT32:
        raise ValueError(f"max_tokens must be an integer from 0 to {MAX_INT32}, got {max_tokens!r}")
    if not 0.0 <= _number("temperature", temperature) <= 100.0:
        raise ValueError(f"temperature must be in [0, 100], got {temperature!r}")
    if not 0.0 < _number("top_p", top_p) <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not _is_int(top_k) or not 0 <= top_k <= MAX_INT32:
        raise ValueError(
            f"top_k must be an integer from 0 to {MAX_INT32} (0 disables it), got {top_k!r}"
        )
    if not 0.0 <= _number("min_p", min_p) <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {min_p!r}")
    if not 0.0 < _number("repeat_penalty", repeat_penalty) <= MAX_REPEAT_PENALTY:
        raise ValueError(
            f"repeat_penalty must be in (0, {MAX_REPEAT_PENALTY:g}] (1.0 disables it), "
            f"got {repeat_penalty!r}"
        )
    if stop is not None and not isinstance(stop, str | list | tuple):
        raise TypeError(f"stop must be a string or a list of strings, not {type(stop).__name__}")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError("stop must be a non-empty string or a list of non-empty strings")
    for s in stops:
        _core.check_text(s, "stop")
    return stops


# Larger penalties only push logits past float range; the engine takes floats.
MAX_REPEAT_PENALTY = 1e6


def _is_int(value: object) -> bool:
    return not isinstance(value, bool | np.bool_) and isinstance(value, int | np.integer)


def _number(name: str, value: object) -> float:
    """``value`` as a finite float; TypeError for non-numbers, ValueError for nan/inf."""
    if isinstance(value, bool | np.bool_ | str | bytes) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _seed(seed: object) -> int:
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return int(seed) & 0xFFFFFFFF


class TextStream(Iterator[str]):
    """What :meth:`Model.stream` returns: an iterator of text pieces.

    ``result`` holds the :class:`GenerationResult` once the stream has ended; ``cancel()`` may be
    called from any thread (also before iteration starts) and ends it with finish_reason
    ``"abort"`` within one graph node. Leaving the loop early, ``close()`` or dropping the stream
    releases the model.
    """

    def __init__(self, generator: Any) -> None:
        self._gen = generator

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        gen = self._gen
        try:
            while not gen.done:
                piece = gen.step()
                if piece:
                    return piece
        except BaseException:
            gen.close()
            raise
        raise StopIteration

    def cancel(self) -> None:
        """End the generation from any thread (finish_reason "abort")."""
        self._gen.cancel()

    def close(self) -> None:
        """End the generation now and release the model."""
        self._gen.close()

    @property
    def result(self) -> GenerationResult | None:
        """The whole generation's result once it has ended, else None."""
        return _result(self._gen) if self._gen.done else None

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(gen: Any) -> GenerationResult:
    return GenerationResult(
        text=gen.text,
        tokens=list(gen.tokens),
        finish_reason=gen.finish_reason,
        usage=Usage(prompt_tokens=gen.n_prompt, completion_tokens=len(gen.tokens)),
        timings=Timings(
            prompt_ms=gen.prompt_ms,
            generation_ms=gen.generation_ms,
            prompt_tokens_evaluated=gen.n_prompt_evaluated,
            generation_decodes=gen.n_generation_decodes,
        ),
    )
