"""bitnet.Model: load a GGUF file and generate, stream, chat, tokenize and score with it."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._native import _core
from .chat import render_chat
from .cpu import thread_count
from .errors import EngineError, ModelLoadError
from .formats.cache import loadable_path
from .formats.gguf import read_tables
from .options import LoadOptions, SamplingOptions, is_int, takes_options

__all__ = [
    "GenerationResult",
    "Model",
    "TextPiece",
    "TextStream",
    "Timings",
    "TokenLogprob",
    "Usage",
]

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
class TokenLogprob:
    """A generated token's log-probability under the model (``logprobs=k``).

    ``logprob`` is the log-softmax of the logits the sampler was given (before temperature,
    top-k/top-p and penalties, after nothing), so it says how likely the model found the token
    whatever the sampling settings. ``top`` holds the ``k`` most likely tokens at that position,
    most likely first (their own ``top`` is empty). ``bytes`` are the token's raw bytes (part of
    a UTF-8 character for some tokens); ``text`` decodes them, with U+FFFD for an incomplete
    character.
    """

    token: int
    text: str
    bytes: bytes
    logprob: float
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    """What :meth:`Model.generate` and :meth:`Model.chat` return.

    ``logprobs`` (with ``logprobs=k``, else None) has one entry per token of ``text``: a token a
    stop string cut off has none.
    """

    text: str
    tokens: list[int]
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    logprobs: tuple[TokenLogprob, ...] | None = None


class TextPiece(str):
    """A piece of streamed text; ``logprobs`` holds the entries of the tokens whose text starts
    in it (with ``logprobs=k``, else None)."""

    logprobs: tuple[TokenLogprob, ...] | None = None


def _logprob_entries(raw: Any) -> tuple[TokenLogprob, ...]:
    """The native (token, bytes, logprob, top) tuples as TokenLogprobs."""
    return tuple(
        TokenLogprob(
            token,
            data.decode("utf-8", "replace"),
            data,
            logprob,
            tuple(TokenLogprob(t, d.decode("utf-8", "replace"), d, lp) for t, d, lp in top),
        )
        for token, data, logprob, top in raw
    )


class Model:
    """A BitNet b1.58 (or any llama.cpp-supported) GGUF model, run in-process.

    Arguments:
        path: the ``.gguf`` file.
        options: a :class:`bitnet.options.LoadOptions`; its fields can also be given as
            keywords, which override it (listed below). ``n_threads="auto"``/None is one thread
            per physical core this process may use (its affinity mask and cgroup quota), the
            policy of ``bitnet.runtime.cpu``. ``kernels`` says what runs BitNetEngine's ternary
            matmuls (see ``bitnet.kernels.kernel_name()``; ``Model.kernels`` says what was
            chosen); libllama always uses ggml's.

    A Model may be shared between threads and asyncio tasks, and its generations run
    concurrently: the model holds ``n_seq`` sequences (LoadOptions.n_seq; 4 on BitNetEngine by
    default) and one native scheduler thread decodes the next token of every running sequence
    in the same pass over the weights (continuous batching), reading long prompts in small
    chunks meanwhile. More calls than sequences wait for a free one. With ``temperature=0`` a
    generation's tokens do not depend on what runs beside it, and with a ``seed`` neither does
    its sampling. ``close()`` (or a ``with`` block) frees the native memory.

    Example:
        >>> with bitnet.Model("tiny.gguf") as m:
        ...     print(m.generate("Hello", max_tokens=16, seed=0).text)
    """

    @takes_options(LoadOptions)
    def __init__(
        self,
        path: str | os.PathLike[str],
        options: LoadOptions | None = None,
        **overrides: Any,
    ) -> None:
        self._core: Any = None
        path = os.fspath(path)
        opts: LoadOptions = LoadOptions.build(options, **overrides)
        n_threads = thread_count(opts.n_threads, name="n_threads")
        n_threads_batch = (
            n_threads
            if opts.n_threads_batch is None
            else thread_count(opts.n_threads_batch, name="n_threads_batch")
        )
        self.options = dataclasses.replace(
            opts, n_threads=n_threads, n_threads_batch=n_threads_batch
        )
        if not os.path.exists(path):
            raise ModelLoadError(
                f"model file '{path}' does not exist (check the path; a test model can be made "
                "with `python -m bitnet generate-model PATH`)"
            )
        self.path = path
        self.seed = self.options.seed
        self.n_threads = n_threads
        self.n_threads_batch = n_threads_batch
        native_options = self.options.to_dict()
        del native_options["seed"]  # a Python-side default of the sampling calls
        head = native_options.pop("i2s_head")  # how the cached conversion of an I2_S file is made
        # ggml cannot read bitnet.cpp's I2_S type: such a file runs as a cached TQ2_0 conversion,
        # found before the native loader sees the original (which it would log as an error).
        self._core = _core.model.Model(str(loadable_path(path, head)), **native_options)
        self._metadata: dict[str, Any] | None = None
        if self.options.n_gpu_layers:
            from .accelerators import backend_choice, detect_accelerators

            choice = backend_choice(self.engine, self.options.n_gpu_layers, detect_accelerators())
            if choice.warning:
                _log.warning("%s: %s", path, choice.warning)
        if (self.options.kernels == "bitnet" and not self.kernels.startswith("bitnet")) or (
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
    def n_seq(self) -> int:
        """Sequences generated together (each with its own ``n_ctx`` of KV cache)."""
        return int(self._native.n_seq)

    def batching_stats(self) -> dict[str, int]:
        """The scheduler's counters: ``batches`` and ``batch_tokens`` run, ``aborted_batches``
        (cancelled, or a long prompt chunk stopped to let a new request in), prompt tokens
        ``reused_tokens`` from a cache (``copied_tokens`` of them from another running
        sequence), ``max_active`` sequences in one batch, and ``active``/``queued`` now."""
        return dict(self._native.scheduler_stats())

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
            if not is_int(t):
                raise TypeError(f"token ids must be integers, got {t!r}")
            ids.append(int(t))
        n_vocab = self.n_vocab
        for t in ids:
            if not 0 <= t < n_vocab:
                raise ValueError(f"token id {t} is outside the vocabulary [0, {n_vocab})")
        return ids

    # -- generation -------------------------------------------------------------------------

    @takes_options(SamplingOptions)
    def generate(
        self, prompt: Prompt, options: SamplingOptions | None = None, **overrides: Any
    ) -> GenerationResult:
        """Complete ``prompt`` (text, or token ids used as they are).

        Generation ends at an end-of-generation token (EOS, ``<|eot_id|>``), at a ``stop``
        string (not included in the text), after ``max_tokens`` tokens, or when the context is
        full. ``temperature=0`` is greedy decoding. The sampling settings come as keywords or
        as a :class:`bitnet.options.SamplingOptions` (keywords override it).
        """
        opts = SamplingOptions.build(options, **overrides)
        gen = self._start(self._prompt_tokens(prompt), opts)
        try:
            gen.run()
        finally:
            gen.close()
        return _result(gen, opts)

    @takes_options(SamplingOptions)
    def generate_batch(
        self, prompts: Sequence[Prompt], options: SamplingOptions | None = None, **overrides: Any
    ) -> list[GenerationResult]:
        """:meth:`generate` for every prompt, run together (results in the same order).

        All prompts are submitted at once; ``n_seq`` of them decode together and the rest
        start as sequences finish. Each result is what ``generate(prompt, ...)`` alone returns
        with the same settings: greedy tokens are identical, and a given ``seed`` seeds every
        prompt's sampling as it would alone. An invalid prompt raises before any starts.
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(
                f"prompts must be a list of prompts (texts or token lists), not "
                f"{type(prompts).__name__}"
            )
        opts = SamplingOptions.build(options, **overrides)
        tokens = [self._prompt_tokens(p) for p in prompts]
        gens: list[Any] = []
        try:
            gens = [self._start(t, opts) for t in tokens]
            for gen in gens:
                gen.run()
        finally:
            for gen in gens:
                gen.close()
        return [_result(gen, opts) for gen in gens]

    @takes_options(SamplingOptions)
    def stream(
        self, prompt: Prompt, options: SamplingOptions | None = None, **overrides: Any
    ) -> TextStream:
        """Like :meth:`generate`, yielding text pieces as they become final.

        Pieces are whole UTF-8 characters; text that could be the start of a stop string is
        held back until it is known not to be one. Breaking out of the loop ends the generation;
        the returned :class:`TextStream` also has ``result`` and a thread-safe ``cancel()``.
        """
        opts = SamplingOptions.build(options, **overrides)
        return TextStream(self._start(self._prompt_tokens(prompt), opts), opts)

    @takes_options(SamplingOptions)
    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        options: SamplingOptions | None = None,
        **overrides: Any,
    ) -> GenerationResult:
        """Generate the assistant's reply to ``messages`` (``[{"role": ..., "content": ...}]``)."""
        return self.generate(self.chat_tokens(messages), options, **overrides)

    @takes_options(SamplingOptions)
    def stream_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        options: SamplingOptions | None = None,
        **overrides: Any,
    ) -> TextStream:
        """Stream the assistant's reply to ``messages``."""
        return self.stream(self.chat_tokens(messages), options, **overrides)

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt text :meth:`chat` sends for ``messages``."""
        native = self._native
        return render_chat(
            messages,
            native.chat_template or None,
            bos_token=self._token_text(native.bos),
            eos_token=self._token_text(native.eos),
        )

    def chat_tokens(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """The prompt tokens :meth:`chat` sends for ``messages`` (special tokens parsed)."""
        text = self.chat_prompt(messages)
        bos_text = self._token_text(self._native.bos)
        # The template writes BOS itself when it wants one.
        add_bos = not (bos_text and text.startswith(bos_text))
        return self.tokenize(text, add_bos=add_bos, special=True)

    def _token_text(self, token: int) -> str:
        """Text of a special token such as BOS ("" when the vocabulary has none)."""
        return self.detokenize([token], special=True) if token >= 0 else ""

    def _prompt_tokens(self, prompt: Prompt) -> list[int]:
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
        return tokens

    def _start(self, tokens: list[int], options: SamplingOptions) -> Any:
        """Submit checked prompt tokens (from :meth:`_prompt_tokens`) to the scheduler."""
        native = self._native
        seed = options.seed
        if seed is None:
            seed = self.seed if self.seed is not None else random.getrandbits(32)
        return native.start(tokens, options.native(seed))

    def abort(self) -> None:
        """End every running and waiting generation and ``logits()`` call of this model (finish
        reason "abort"); safe from any thread."""
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


class TextStream(Iterator[str]):
    """What :meth:`Model.stream` returns: an iterator of text pieces (:class:`TextPiece`, a str
    that also carries the pieces' ``logprobs``).

    The generation runs from the moment ``stream()`` returns (on the model's scheduler, beside
    the model's other generations); iterating hands out its text. ``result`` holds the
    :class:`GenerationResult` once the stream has ended; ``cancel()`` may be called from any
    thread (also before iteration starts) and ends it with finish_reason ``"abort"`` by the end
    of the running batch. Leaving the loop early, ``close()`` or dropping the stream ends it and
    frees its sequence.
    """

    def __init__(self, generator: Any, options: SamplingOptions) -> None:
        self._gen = generator
        self._options = options

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> TextPiece:
        gen = self._gen
        try:
            while not gen.done:
                piece = gen.step()
                if piece:
                    out = TextPiece(piece)
                    if self._options.logprobs is not None:
                        out.logprobs = _logprob_entries(gen.take_logprobs())
                    return out
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
        return _result(self._gen, self._options) if self._gen.done else None

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(gen: Any, options: SamplingOptions) -> GenerationResult:
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
        logprobs=None if options.logprobs is None else _logprob_entries(gen.logprobs),
    )
