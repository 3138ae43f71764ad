"""``bitnet diagnose``: report on the build, the CPU, memory and a model file."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_model_arguments, runtime_from, setup_logging
from .exits import EXIT_OK, EXIT_PROBLEMS, command_parser


def add_parser(sub: Any) -> None:
    p = command_parser(
        sub,
        "diagnose",
        help="check this machine and a model file",
        description="Report the build, CPU, memory, model file and problems.",
    )
    add_model_arguments(p, model_required=False)
    p.add_argument("--json", action="store_true", help="JSON output (schema bitnet.diagnostics/1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..runtime.diagnostics import diagnose

    setup_logging(args)
    diag = diagnose(runtime_from(args) if args.model else None)
    print(diag.to_json() if args.json else diag)
    return EXIT_OK if diag.ok else EXIT_PROBLEMS
