"""``bitnet setup``: the resumable set-up stages of ``setup_env.py`` (``bitnet.deploy``)."""

from __future__ import annotations

import argparse
from typing import Any

from .exits import command_parser


def add_parser(sub: Any) -> None:
    p = command_parser(
        sub,
        "setup",
        help="set up a model: check, acquire, convert, verify, warm up (resumable)",
        description="The bootstrapper (same as setup_env.py): environment check, model "
        "acquisition (--from PATH or the Hugging Face hub), conversion to the fast format, "
        "verification and warm-up, each recorded in <cache-dir>/bootstrap-state.json so a "
        "rerun skips finished stages.",
    )
    from ..deploy.bootstrap import add_arguments

    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.bootstrap import run_from_args

    return run_from_args(args)
