"""The one definition of every sampling and load setting: its name, type, default, range and help.

:class:`SamplingOptions` (what one generation does) and :class:`LoadOptions` (how a model is
loaded) are frozen dataclasses whose fields carry an :class:`Option` describing them. Everything
else is derived from these two classes:

- ``Model.generate``/``stream``/``chat``/``stream_chat`` take the sampling fields as keyword
  arguments (or a ``SamplingOptions``), ``Model(...)`` the load fields;
- the command line's flags (``bitnet.cli.flags.add_arguments``), with their defaults and help;
- the HTTP server's request fields (``bitnet.server.schemas``), with their JSON Schema bounds;
- the native call (:meth:`SamplingOptions.native`), which ``_core`` checks key by key against
  the C++ ``SamplingParams``.

Adding a sampling parameter means a field here, a member of ``SamplingParams`` in
``csrc/model/sampler.h`` and its line in ``csrc/bindings/register_model.cpp``.

>>> SamplingOptions(temperature=0).temperature
0.0
>>> SamplingOptions(top_p=2)
Traceback (most recent call last):
ValueError: top_p must be in (0, 1], got 2
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "MAX_CONTEXT",
    "MAX_INT32",
    "MAX_LOGIT_BIAS",
    "MAX_REPEAT_PENALTY",
    "MAX_SEQUENCES",
    "MAX_STOP_LENGTH",
    "MAX_STOP_STRINGS",
    "MAX_THREADS",
    "LoadOptions",
    "Option",
    "SamplingOptions",
    "check_threads",
    "checked_int",
    "cli_default",
    "flags_of",
    "is_int",
    "server_default",
    "takes_options",
]

# Token counts and top_k are 32-bit ints in the engine.
MAX_INT32 = (1 << 31) - 1
# Beyond this the native sizes overflow long before memory runs out.
MAX_CONTEXT = 1 << 24
# ggml's thread pools hold at most GGML_MAX_N_THREADS (512) threads; beyond it they abort.
MAX_THREADS = 512
# Sequences one model generates together (libllama's LLAMA_MAX_SEQ; our engine takes as many).
MAX_SEQUENCES = 256
# Every generated token is compared with every stop string: bounds that keep that cheap.
MAX_STOP_STRINGS = 64
MAX_STOP_LENGTH = 1024
# Larger penalties only push logits past float range; the engine takes floats.
MAX_REPEAT_PENALTY = 1e6

Kind = Literal[
    "int",
    "float",
    "bool",
    "choice",
    "texts",
    "seed",
    "threads",
    "bias",
    "grammar",
    "schema",
    "count",
]
# OpenAI's bounds of a logit_bias value.
MAX_LOGIT_BIAS = 100.0
_SAME: Any = object()  # "the same default as the library's"


@dataclass(frozen=True)
class Option:
    """How one setting is checked and offered.

    ``kind``: ``int`` / ``float`` (in ``[low, high]``, ``low`` excluded when ``low_open``),
    ``bool``, ``choice`` (one of ``choices``), ``texts`` (a string or a list of non-empty
    strings, kept as a tuple), ``seed`` (any integer or None; its low 32 bits are used),
    ``threads`` (``"auto"``/None or a count from 1 to MAX_THREADS), ``bias`` (a mapping of
    token id -> a number in [-100, 100], ids also as decimal text, kept as sorted pairs),
    ``grammar`` (GBNF text or None), ``schema`` (a JSON Schema as a mapping or JSON text, or
    None; kept as a dict) or ``count`` (None or an int in ``[low, high]``).
    ``flags``: the command line's spelling (default ``--name-with-dashes``; empty: not on the
    command line).
    ``cli_default``/``server_default``: where the command line or the OpenAI-compatible server
    start from another value (None for the server's ``max_tokens``: whatever fits the context).
    """

    kind: Kind
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    flags: tuple[str, ...] | None = None
    cli_default: Any = _SAME
    server_default: Any = _SAME
    server_field: bool = True  # False: the server's endpoints spell it their own way

    def check(self, name: str, value: Any) -> Any:
        """``value`` as this option's type, or TypeError/ValueError naming ``name``."""
        return _CHECKS[self.kind](self, name, value)

    def range_text(self) -> str:
        """The allowed values in words, for help texts and errors."""
        if self.kind == "choice":
            return ", ".join(self.choices)
        if self.kind == "float":
            return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.kind in ("int", "count"):
            return f"{int(self.low or 0)} to {int(self.high or 0)}"
        if self.kind == "threads":
            return f"'auto' or 1 to {MAX_THREADS}"
        if self.kind == "bias":
            return f"token id -> -{MAX_LOGIT_BIAS:g} to {MAX_LOGIT_BIAS:g}"
        return ""


def option(default: Any, kind: Kind, help: str, **spec: Any) -> Any:
    """A dataclass field described by an :class:`Option`."""
    return field(default=default, metadata={"option": Option(kind, help, **spec)})


class _Options:
    """What SamplingOptions and LoadOptions share: checking on construction, and the table of
    their fields for the CLI, the server and the docs."""

    def __post_init__(self) -> None:
        for f, opt in self.options():
            object.__setattr__(self, f.name, opt.check(f.name, getattr(self, f.name)))

    @classmethod
    def options(cls) -> Iterator[tuple[dataclasses.Field[Any], Option]]:
        """(field, Option) of every setting, in declaration order."""
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            yield f, f.metadata["option"]

    @classmethod
    def build(cls, options: Any = None, /, **overrides: Any) -> Any:
        """``options`` (an instance, or None for the defaults) with ``overrides`` applied, checked.
        An unknown keyword is a TypeError naming it and the known ones."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(
                f"unknown {cls.__name__} argument{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; known: {', '.join(sorted(names))}"
            )
        if options is None:
            return cls(**overrides)
        if not isinstance(options, cls):
            raise TypeError(f"options must be a {cls.__name__}, not {type(options).__name__}")
        return dataclasses.replace(options, **overrides) if overrides else options

    @classmethod
    def with_flags(cls, **values: Any) -> Any:
        """Like ``cls(**values)``, with errors naming the command-line flag too (``n_ctx
        (--ctx-size) must be ...``): for settings that came from a command line or a config."""
        checked = {}
        for f, opt in cls.options():
            if f.name in values:
                long_flags = [flag for flag in flags_of(f, opt) if flag.startswith("--")]
                label = f"{f.name} ({long_flags[0]})" if long_flags else f.name
                checked[f.name] = opt.check(label, values.pop(f.name))
        return cls.build(**checked, **values)

    @classmethod
    def describe(cls, indent: int = 0) -> str:
        """The fields as a docstring's ``Arguments:`` list (name, default, range, help)."""
        pad = " " * indent
        lines = [f"{pad}Arguments (:class:`bitnet.options.{cls.__name__}`):"]
        for f, opt in cls.options():
            bounds = f", {opt.range_text()}" if opt.range_text() else ""
            lines.append(f"{pad}    {f.name} (default {f.default!r}{bounds}): {opt.help}.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def cli_args(self) -> list[str]:
        """The command-line flags that reproduce the values that differ from the CLI defaults."""
        out: list[str] = []
        for f, opt in self.options():
            value, default = getattr(self, f.name), cli_default(f, opt)
            flag = flags_of(f, opt)
            if not flag or value == default or value is None:
                continue
            if opt.kind == "bool":
                out.append(flag[-1])
            elif opt.kind == "texts":
                for text in value:
                    out += [flag[-1], text]
            elif opt.kind == "bias":
                for token, bias in value:
                    out += [flag[-1], f"{token}={bias:g}"]
            elif opt.kind == "schema":
                out += [flag[-1], json.dumps(value)]
            else:
                out += [flag[-1], str(value)]
        return out


@dataclass(frozen=True, kw_only=True)
class SamplingOptions(_Options):
    """What one generation does: ``Model.generate(prompt, **fields)`` or
    ``Model.generate(prompt, SamplingOptions(...))``. Values are checked when built."""

    max_tokens: int = option(
        256,
        "int",
        "most tokens to generate (a full context also ends the generation)",
        low=0,
        high=MAX_INT32,
        flags=("-n", "--n-predict", "--max-tokens"),
        cli_default=128,
        server_default=None,
    )
    temperature: float = option(
        0.8,
        "float",
        "sampling temperature; 0 is greedy decoding",
        low=0.0,
        high=100.0,
        flags=("--temperature", "--temp"),
        server_default=1.0,
    )
    top_p: float = option(
        0.95,
        "float",
        "nucleus sampling: keep the most likely tokens up to this probability mass (1 disables)",
        low=0.0,
        high=1.0,
        low_open=True,
        server_default=1.0,
    )
    top_k: int = option(
        40, "int", "keep the k most likely tokens (0 disables)", low=0, high=MAX_INT32
    )
    min_p: float = option(
        0.05,
        "float",
        "drop tokens less likely than min_p times the most likely one (0 disables)",
        low=0.0,
        high=1.0,
    )
    repeat_penalty: float = option(
        1.0,
        "float",
        "penalty on tokens seen in the last repeat_last_n tokens (1 disables)",
        low=0.0,
        high=MAX_REPEAT_PENALTY,
        low_open=True,
    )
    presence_penalty: float = option(
        0.0,
        "float",
        "subtracted from the logit of every token seen in the last repeat_last_n tokens "
        "(prompt included), as OpenAI's presence_penalty (0 disables)",
        low=-2.0,
        high=2.0,
    )
    frequency_penalty: float = option(
        0.0,
        "float",
        "subtracted from a token's logit once per time it appears in the last repeat_last_n "
        "tokens (prompt included), as OpenAI's frequency_penalty (0 disables)",
        low=-2.0,
        high=2.0,
    )
    repeat_last_n: int = option(
        64,
        "int",
        "how many recent tokens repeat_penalty, presence_penalty and frequency_penalty look at",
        low=0,
        high=MAX_CONTEXT,
    )
    logit_bias: tuple[tuple[int, float], ...] = option(
        (),
        "bias",
        "added to the logits of the given token ids before sampling, as OpenAI's logit_bias "
        "(-100 all but bans a token, 100 all but forces it)",
        flags=("--logit-bias",),
    )
    stop: tuple[str, ...] = option(
        (),
        "texts",
        "strings that end the generation (not included in the text); at most 64 (OpenAI "
        "takes 4), each up to 1024 characters",
        high=MAX_STOP_STRINGS,
        flags=("--stop",),
    )
    seed: int | None = option(
        None,
        "seed",
        "sampling seed (repeatable output); none: the model's seed, else a random one",
        flags=("-s", "--seed"),
    )
    grammar: str | None = option(
        None,
        "grammar",
        "a GBNF grammar (llama.cpp's format, with a root rule) every token must continue; the "
        "generation ends only where it is complete (or at max_tokens, unfinished)",
        flags=("--grammar",),
    )
    json_schema: Mapping[str, Any] | None = option(
        None,
        "schema",
        "a JSON Schema the text must validate against (a grammar made from it; "
        '{"type": "object"} is JSON mode); cut by max_tokens, it is an unfinished document '
        "and finish_reason is length",
        flags=("--json-schema",),
    )
    logprobs: int | None = option(
        None,
        "count",
        "report each generated token's log-probability and this many most likely alternatives "
        "(GenerationResult.logprobs; None: off)",
        low=0,
        high=20,
        flags=("--logprobs",),
        server_field=False,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grammar is not None and self.json_schema is not None:
            raise ValueError("give grammar or json_schema, not both")

    def native(self, seed: int) -> dict[str, Any]:
        """The params of ``_core.model.Model.start``: every field, the seed as 32 bits, a
        json_schema as the grammar made from it."""
        params = {
            **self.to_dict(),
            "seed": seed & 0xFFFFFFFF,
            "stop": list(self.stop),
            "logit_bias": [list(pair) for pair in self.logit_bias],
        }
        schema = params.pop("json_schema")
        if schema is not None:
            from .grammar import json_schema_grammar

            params["grammar"] = json_schema_grammar(schema)
        return params


@dataclass(frozen=True, kw_only=True)
class LoadOptions(_Options):
    """How a model is loaded: ``Model(path, **fields)``. Values are checked when built."""

    n_ctx: int = option(
        4096,
        "int",
        "context size in tokens (the KV cache holds this many)",
        low=16,
        high=MAX_CONTEXT,
        flags=("-c", "--ctx-size"),
    )
    n_batch: int = option(
        512,
        "int",
        "most prompt tokens processed in one step",
        low=1,
        high=MAX_CONTEXT,
        flags=("-b", "--batch-size"),
    )
    n_threads: int | str | None = option(
        None,
        "threads",
        "generation threads: 'auto' (None) is one per physical core this process may use, "
        "divided between the generations that run at once",
        flags=("-t", "--threads"),
        cli_default="auto",
    )
    n_threads_batch: int | str | None = option(
        None,
        "threads",
        "prompt-processing threads (default: as many as for generation)",
        flags=("--threads-batch",),
    )
    engine: Literal["auto", "bitnet", "llama"] = option(
        "auto",
        "choice",
        "auto: BitNetEngine for BitNet architectures, libllama for the rest",
        choices=("auto", "bitnet", "llama"),
    )
    kernels: Literal["auto", "bitnet", "ggml"] = option(
        "auto",
        "choice",
        "BitNetEngine's ternary matmuls: auto (ours where the CPU has a SIMD path for them, "
        "else ggml's), bitnet (ours, even the scalar fallback) or ggml",
        choices=("auto", "bitnet", "ggml"),
    )
    i2s_head: Literal["q6_k", "keep"] = option(
        "q6_k",
        "choice",
        "how a bitnet.cpp I2_S file's F16 embedding/output head runs: q6_k (a cached conversion "
        "to Q6_K, as llama.cpp's quantizer defaults to; near-lossless, 2.6x fewer bytes read per "
        "token) or keep (F16, exact)",
        choices=("q6_k", "keep"),
    )
    use_mmap: bool = option(
        True,
        "bool",
        "memory-map the weights instead of reading them into memory",
        flags=("--no-mmap",),
    )
    n_gpu_layers: int = option(
        0,
        "int",
        "layers libllama offloads to a GPU (engine llama, when the linked llama.cpp was built "
        "with a GPU backend; BitNet models always run on the CPU engine); the plan says which "
        "backend runs and why",
        low=0,
        high=100000,
        flags=("-ngl", "--n-gpu-layers"),
    )
    n_seq: int = option(
        0,
        "int",
        "sequences the model generates together (continuous batching: concurrent calls share "
        "each pass over the weights; each sequence has its own n_ctx); 0: 4 on BitNetEngine, "
        "1 on libllama",
        low=0,
        high=MAX_SEQUENCES,
        flags=(),
    )
    seed: int | None = option(
        None,
        "seed",
        "default sampling seed of calls that pass none (None: a fresh random seed each call)",
        flags=(),
    )


# -- checks ---------------------------------------------------------------------------------


def is_int(value: object) -> bool:
    """An integer that is not a bool (numpy integers included)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def checked_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int if it is an integer (not a bool) in [low, high], else ValueError
    naming ``name`` and the range (also used for the server's and the CLI's settings)."""
    if not is_int(value) or not low <= value <= high:  # type: ignore[operator]
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def _check_int(opt: Option, name: str, value: Any) -> int:
    return checked_int(name, value, int(opt.low or 0), int(opt.high or 0))


def _check_float(opt: Option, name: str, value: Any) -> float:
    if isinstance(value, bool | str | bytes) or type(value).__name__ == "bool_":
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    low, high = float(opt.low or 0.0), float(opt.high or 0.0)
    if number < low or (opt.low_open and number == low) or number > high:
        raise ValueError(f"{name} must be in {opt.range_text()}, got {value!r}")
    return number


def _check_bool(opt: Option, name: str, value: Any) -> bool:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}")
    return bool(value)


def _check_choice(opt: Option, name: str, value: Any) -> str:
    if value not in opt.choices or not isinstance(value, str):
        allowed = ", ".join(repr(c) for c in opt.choices[:-1]) + f" or {opt.choices[-1]!r}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def _check_texts(opt: Option, name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, str | list | tuple):
        raise TypeError(f"{name} must be a string or a list of strings, not {type(value).__name__}")
    texts = (value,) if isinstance(value, str) else tuple(value)
    if any(not isinstance(s, str) or not s for s in texts):
        raise ValueError(f"{name} must be a non-empty string or a list of non-empty strings")
    if opt.high is not None and len(texts) > opt.high:
        raise ValueError(f"{name} has {len(texts)} strings; at most {int(opt.high)} are allowed")
    if any(len(s) > MAX_STOP_LENGTH for s in texts):
        raise ValueError(f"{name} strings may be at most {MAX_STOP_LENGTH} characters long")
    from ._native import _core

    for s in texts:
        _core.model.check_text(s, name)  # refuses lone surrogates, naming where
    return texts


def _check_bias(opt: Option, name: str, value: Any) -> tuple[tuple[int, float], ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list | tuple) and all(
        isinstance(p, list | tuple) and len(p) == 2 for p in value
    ):
        items = [tuple(p) for p in value]
    else:
        raise TypeError(
            f"{name} must map token ids to numbers, e.g. {{15043: -100}}, "
            f"not {type(value).__name__}"
        )
    out: dict[int, float] = {}
    for key, bias in items:
        if isinstance(key, str) and key.strip().isdigit():
            key = int(key)
        if not is_int(key) or not 0 <= key <= MAX_INT32:
            raise ValueError(f"{name} keys must be token ids (integers >= 0), got {key!r}")
        out[int(key)] = _check_float(
            Option("float", "", low=-MAX_LOGIT_BIAS, high=MAX_LOGIT_BIAS),
            f"{name}[{key}]",
            bias,
        )
    if len(out) > 1024:
        raise ValueError(f"{name} has {len(out)} entries; at most 1024 are allowed")
    return tuple(sorted(out.items()))


def _check_grammar(opt: Option, name: str, value: Any) -> str | None:
    if value is None:
        return None
    from .grammar import check_grammar

    check_grammar(value, name)
    from ._native import _core

    _core.model.check_text(value, name)  # refuses lone surrogates, naming where
    return value


def _check_schema(opt: Option, name: str, value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    from .grammar import json_schema_grammar

    json_schema_grammar(value, name)  # refuses what cannot be enforced, naming where
    return json.loads(value) if isinstance(value, str) else json.loads(json.dumps(value))


def _check_count(opt: Option, name: str, value: Any) -> int | None:
    return None if value is None else _check_int(opt, name, value)


def _check_seed(opt: Option, name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not is_int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def check_threads(name: str, value: Any) -> int | str | None:
    """None, ``"auto"``, or a thread count from 1 to MAX_THREADS (its decimal text too)."""
    if value is None or value == "auto":
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not is_int(value) or not 1 <= value <= MAX_THREADS:
        raise ValueError(
            f"{name} must be 'auto' or an integer from 1 to {MAX_THREADS}, got {value!r}; "
            "'auto' uses one thread per physical core this process may use"
        )
    return int(value)


def _check_threads(opt: Option, name: str, value: Any) -> int | str | None:
    return check_threads(name, value)


_CHECKS = {
    "int": _check_int,
    "float": _check_float,
    "bool": _check_bool,
    "choice": _check_choice,
    "texts": _check_texts,
    "seed": _check_seed,
    "threads": _check_threads,
    "bias": _check_bias,
    "grammar": _check_grammar,
    "schema": _check_schema,
    "count": _check_count,
}


# -- the command line -----------------------------------------------------------------------


def flags_of(f: dataclasses.Field[Any], opt: Option) -> tuple[str, ...]:
    """The command-line flags of a field (default ``--name-with-dashes``; empty: none)."""
    return opt.flags if opt.flags is not None else ("--" + f.name.replace("_", "-"),)


def cli_default(f: dataclasses.Field[Any], opt: Option) -> Any:
    """The command line's default of a field."""
    return f.default if opt.cli_default is _SAME else opt.cli_default


def server_default(f: dataclasses.Field[Any], opt: Option) -> Any:
    """The HTTP server's default of a field (OpenAI's, where it differs)."""
    return f.default if opt.server_default is _SAME else opt.server_default


def takes_options(options: type[_Options]) -> Callable[[F], F]:
    """Marks a method whose ``**overrides`` are the fields of ``options``: ``help()``,
    ``inspect.signature`` and editors that read them show each field with its default, and the
    docstring lists them."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        params += [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type
            )
            for f, _ in options.options()
        ]
        func.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        func.__doc__ = (func.__doc__ or "").rstrip() + "\n\n" + options.describe(indent=8)
        return func

    return decorate
