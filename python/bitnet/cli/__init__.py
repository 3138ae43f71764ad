"""The ``bitnet`` command line (also ``python -m bitnet`` and ``run_inference.py``).

One module per command, each with ``add_parser(sub)`` and ``run(args)``; the flags of the
settings are derived from ``bitnet.options``; exit codes are in ``exits``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import (
    bench,
    convert,
    dashboard,
    diagnose,
    generate_model,
    inspect,
    run,
    serve,
    setup,
    snapshot,
)
from .exits import (
    COMMAND_EXIT_CODES,
    EXIT_BROKEN_PIPE,
    EXIT_CODES,
    EXIT_CPU,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    epilog,
)

__all__ = [
    "COMMAND_EXIT_CODES",
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES",
    "EXIT_CPU",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

COMMANDS = (
    run,
    diagnose,
    bench,
    setup,
    serve,
    inspect,
    convert,
    generate_model,
    snapshot,
    dashboard,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitnet",
        description="Run BitNet b1.58 ternary language models on CPU.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the version of bitnet and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


class _Version(argparse.Action):
    """``--version``: read only when asked (it may load the extension, when not installed)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from .. import build_info
        from ..version import DISTRIBUTION, version

        info = build_info()
        print(
            f"bitnet {version()} ({DISTRIBUTION}; llama.cpp {info['llama_cpp']}, ggml "
            f"{info['ggml_version']})"
        )
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return _dispatch(args)
    except KeyboardInterrupt:  # also while the extension and numpy are still importing
        print("\n[interrupted]", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _stdout_closed()


def _dispatch(args: argparse.Namespace) -> int:
    from ..errors import ModelLoadError, UnsupportedCPUError

    try:
        return int(args.func(args))
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except ModelLoadError as exc:
        return _fail(args, exc, EXIT_MODEL)
    except UnsupportedCPUError as exc:
        return _fail(args, exc, EXIT_CPU)
    except (ValueError, TypeError, OSError) as exc:  # OSError includes ListenError: a busy port
        return _fail(args, exc, EXIT_USAGE)
    except Exception as exc:
        print(f"bitnet {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _fail(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    print(f"bitnet {args.command}: error: {exc}", file=sys.stderr)
    return code


def _stdout_closed() -> int:
    """The reader of our output went away (``bitnet run ... | head``): stop quietly, as a
    program killed by SIGPIPE would, without a traceback or an error about flushing."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout to redirect (an embedding, a test)
        pass
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
