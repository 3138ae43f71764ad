"""Command-line flags derived from bitnet.options: one flag per field of LoadOptions or
SamplingOptions, with the field's name as ``dest``, the command line's default and the Option's
help, range and default; and back from the parsed flags to the options object."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..options import cli_default, flags_of

__all__ = ["add_arguments", "from_arguments"]


def _threads_arg(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer, got {value!r}") from None


def _text_or_file(value: str) -> str:
    """A flag's text, or with a leading ``@`` the contents of that file (curl's convention)."""
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value[1:]!r}: {exc}") from None


_ARG_TYPES: Mapping[str, Any] = {
    "int": int,
    "float": float,
    "seed": int,
    "threads": _threads_arg,
    "count": int,
    "grammar": _text_or_file,
    "schema": _text_or_file,
}
_METAVARS: Mapping[str, str] = {"float": "X", "grammar": "GBNF", "schema": "JSON"}


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    options: type[Any],
    *,
    only: tuple[str, ...] | None = None,
) -> None:
    """Add a flag for each field of ``options`` (or the fields named in ``only``): dest the
    field's name, default the command line's, help the Option's with its range and default."""
    for f, opt in options.options():
        flags = flags_of(f, opt)
        if not flags or (only is not None and f.name not in only):
            continue
        default = cli_default(f, opt)
        help_text = opt.help
        if opt.range_text() and opt.kind != "choice":
            help_text += f"; {opt.range_text()}"
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
        if opt.kind == "bool":  # a flag that turns the default off (--no-mmap)
            kwargs["action"] = "store_false" if default else "store_true"
        elif opt.kind == "texts":
            kwargs.update(action="append", default=None, metavar="TEXT")
            kwargs["help"] += " (repeatable)"
        elif opt.kind == "bias":
            kwargs.update(action="append", default=None, metavar="TOKEN=BIAS", type=_bias_pair)
            kwargs["help"] += " (repeatable)"
        else:
            kwargs["default"] = default
            if opt.kind == "choice":
                kwargs["choices"] = list(opt.choices)
            else:
                kwargs["type"] = _ARG_TYPES[opt.kind]
                kwargs["metavar"] = _METAVARS.get(opt.kind, "N")
                if opt.kind in ("grammar", "schema"):
                    kwargs["help"] += " (@FILE reads it from a file)"
            if default is not None:
                kwargs["help"] += f" (default {default})"
        parser.add_argument(*flags, **kwargs)


def _bias_pair(text: str) -> tuple[int, float]:
    """``TOKEN=BIAS`` of ``--logit-bias`` (checked against the ranges by the options)."""
    token, sep, bias = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return int(token), float(bias)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected TOKEN=BIAS (a token id and a number), got {text!r}"
        ) from None


def from_arguments(options: type[Any], args: argparse.Namespace, **extra: Any) -> Any:
    """The ``options`` instance the parsed flags (see :func:`add_arguments`) describe."""
    values = {f.name: getattr(args, f.name) for f, _ in options.options() if hasattr(args, f.name)}
    return options.with_flags(**{**values, **extra})
