"""The command line's exit codes, per command, and the parser of one command (its help ends
with the exit codes it can end with)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["COMMAND_EXIT_CODES", "EXIT_CODES", "command_parser", "epilog"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MODEL, EXIT_CPU, EXIT_PROBLEMS = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE, as a shell says
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "engine or runtime failure",
    EXIT_USAGE: "bad arguments or values (serve: also an address it cannot listen on)",
    EXIT_MODEL: "model file missing, unreadable, truncated, damaged or unsupported",
    EXIT_CPU: "this CPU lacks an instruction set the native libraries need",
    EXIT_PROBLEMS: "a dry run or diagnostics found problems, or two snapshots differ",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_BROKEN_PIPE: "standard output was closed early (e.g. piped into head)",
}
# The exit codes each command can end with (tools/check_docs_sync.py holds the docs to them).
_COMMON_EXITS = (EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED)
COMMAND_EXIT_CODES: dict[str, tuple[int, ...]] = {
    "run": (*_COMMON_EXITS, EXIT_MODEL, EXIT_CPU, EXIT_PROBLEMS, EXIT_BROKEN_PIPE),
    # diagnose reports a CPU or model problem as a problem (5); it does not fail on it.
    "diagnose": (*_COMMON_EXITS, EXIT_PROBLEMS),
    "bench": (*_COMMON_EXITS, EXIT_MODEL),
    "setup": (*_COMMON_EXITS, EXIT_MODEL),
    "serve": (*_COMMON_EXITS, EXIT_MODEL, EXIT_CPU),
    "inspect": (*_COMMON_EXITS, EXIT_MODEL),
    "convert": (*_COMMON_EXITS, EXIT_MODEL),
    "generate-model": _COMMON_EXITS,
    # snapshot --compare: 5 when anything but info-level facts drifted.
    "snapshot": (*_COMMON_EXITS, EXIT_PROBLEMS),
    "dashboard": _COMMON_EXITS,
}


def epilog(command: str | None = None) -> str:
    """The exit codes of ``command`` (all of them for the top-level help), one per line."""
    codes = COMMAND_EXIT_CODES[command] if command else EXIT_CODES
    return "exit codes:\n" + "\n".join(f"  {code:<4} {EXIT_CODES[code]}" for code in sorted(codes))


def command_parser(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The subparser of command ``name``, its exit codes in the epilog."""
    return sub.add_parser(
        name, epilog=epilog(name), formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
    )
