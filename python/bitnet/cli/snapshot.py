"""``bitnet snapshot``: one JSON file describing this machine (offline drift checks), or the
drift between two such files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .exits import EXIT_OK, EXIT_PROBLEMS, command_parser


def add_parser(sub: Any) -> None:
    p = command_parser(
        sub,
        "snapshot",
        help="write a snapshot of this machine (versions, CPU, GPUs, models' checksums, "
        "settings, metrics), or compare two",
        description="Write one JSON document (schema bitnet.snapshot/1) describing this machine "
        "as bitnet sees it, for `bitnet dashboard --offline`; with --compare, print what "
        "differs between two snapshots (exit code 5 when anything drifted).",
    )
    p.add_argument(
        "-o", "--output", default="-", help="file to write (default '-': standard output)"
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="PATH",
        help="a model file, or a folder whose *.gguf files are listed (repeatable)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="the bootstrapper's cache folder: its bootstrap-state.json is included",
    )
    p.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="a running bitnet serve: its metrics and settings",
    )
    p.add_argument("--api-key", default=None, help="the server's API key, if it has keys")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        default=None,
        help="compare two snapshots instead of writing one",
    )
    p.add_argument("--json", action="store_true", help="with --compare: the drift as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..snapshot import compare_snapshots, drift_counts, load_snapshot, take_snapshot

    if args.compare:
        before, after = (load_snapshot(p) for p in args.compare)
        drift = compare_snapshots(before, after)
        if args.json:
            print(json.dumps([d.to_dict() for d in drift], indent=2))
        else:
            for d in drift:
                print(d)
            counts = drift_counts(drift)
            print(
                f"{len(drift)} difference(s): {counts['error']} error, {counts['warning']} "
                f"warning, {counts['info']} info"
            )
        return EXIT_PROBLEMS if any(d.severity != "info" for d in drift) else EXIT_OK
    snap = take_snapshot(
        args.model, cache_dir=args.cache_dir, server=args.server, api_key=args.api_key
    )
    text = json.dumps(snap, indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.output)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)  # a reader never sees half a snapshot
        print(
            f"wrote {out} ({len(snap['models'])} model(s); view it with "
            f"`bitnet dashboard --offline {out}`)",
            file=sys.stderr,
        )
    return EXIT_OK
