"""What the commands share: the model and load flags (derived from LoadOptions), logging
flags and their set-up, and the runtime they describe."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..options import LoadOptions
from .flags import add_arguments, from_arguments

__all__ = ["add_model_arguments", "read_api_keys", "runtime_from", "setup_logging"]


def add_model_arguments(
    p: argparse.ArgumentParser, *, model_required: bool, log_format: str = "text"
) -> None:
    """-m/--model, every LoadOptions flag, --sha256, --log-format and -v/--verbose."""
    p.add_argument("-m", "--model", required=model_required, help="GGUF model file")
    add_arguments(p, LoadOptions)
    p.add_argument("--sha256", default=None, help="expected sha256 of the model file")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=log_format,
        help=f"stderr logs and events as text or as JSON lines (default {log_format})",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log events and native messages")


def read_api_keys(path: str) -> list[str]:
    """The keys of an API key file: one per line; blank lines and ``#`` comments skipped."""
    return [
        line.strip()
        for line in Path(path).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def runtime_from(args: argparse.Namespace, *, slots: int = 1) -> Any:
    """The BitNetRuntime the flags describe."""
    from ..runtime.runtime import BitNetRuntime

    return BitNetRuntime(
        args.model, from_arguments(LoadOptions, args), sha256=args.sha256, slots=slots
    )


def setup_logging(args: argparse.Namespace) -> None:
    from ..events import JsonLinesFormatter

    root = logging.getLogger("bitnet")
    for old in [h for h in root.handlers if getattr(h, "_bitnet_cli", False)]:
        root.removeHandler(old)  # main() may run more than once in a process (tests, notebooks)
    handler = logging.StreamHandler(sys.stderr)
    handler._bitnet_cli = True  # type: ignore[attr-defined]
    if args.log_format == "json":
        handler.setFormatter(JsonLinesFormatter())
        level = logging.DEBUG if args.verbose else logging.INFO
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        level = logging.DEBUG if args.verbose else logging.WARNING
    handler.setLevel(level)  # also when a telemetry hub opens bitnet.events up to INFO
    root.addHandler(handler)
    root.setLevel(level)
    # Native lines are chatty: only with --verbose.
    logging.getLogger("bitnet.native").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
