"""``bitnet dashboard``: the terminal UI, live from a server, replaying a telemetry file, or
offline from snapshots (the ``dashboard`` extra)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import read_api_keys
from .exits import EXIT_OK, command_parser

THEME_NAMES = ("bitnet", "bitnet-light", "release")


def add_parser(sub: Any) -> None:
    p = command_parser(
        sub,
        "dashboard",
        help="terminal dashboard: a live server, a telemetry file, or offline snapshots",
        description="Show a running server (URL), replay a telemetry file (--replay), or show "
        "snapshots and their drift without any network (--offline, --compare). Keys: q quit, "
        "r refresh, t next theme, s save a screenshot (SVG).",
    )
    p.add_argument(
        "url", nargs="?", default=None, help="a running bitnet serve, e.g. http://127.0.0.1:8080"
    )
    p.add_argument("--api-key", default=None, help="the server's API key, if it has keys")
    p.add_argument(
        "--api-key-file",
        default=None,
        help="file whose first line that is not a # comment is the API key",
    )
    p.add_argument(
        "--replay",
        default=None,
        metavar="FILE",
        help="a telemetry JSON-lines file (--telemetry-file)",
    )
    p.add_argument(
        "--offline", default=None, metavar="SNAP.json", help="a snapshot (bitnet snapshot)"
    )
    p.add_argument(
        "--compare",
        default=None,
        metavar="OTHER.json",
        help="with --offline: the snapshot to diff against",
    )
    p.add_argument(
        "--theme",
        choices=THEME_NAMES,
        default="bitnet",
        help="release: also the deltas between two periods or snapshots",
    )
    p.add_argument(
        "--refresh", type=float, default=2.0, help="seconds between refreshes (default 2)"
    )
    p.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="with --replay: recorded seconds played per second (default 0: show the end at once)",
    )
    p.add_argument(
        "--period",
        type=float,
        default=None,
        help="release theme: period length in seconds (default: 60 live, the file's two halves "
        "on replay)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    modes = [m for m in (args.url, args.replay, args.offline) if m]
    if len(modes) != 1:
        raise ValueError("give exactly one of: a server URL, --replay FILE, --offline SNAP.json")
    if args.compare and not args.offline:
        raise ValueError("--compare needs --offline SNAP.json")
    if not args.refresh > 0:
        raise ValueError(f"--refresh must be > 0 seconds, got {args.refresh}")
    if args.speed < 0 or (args.period is not None and not args.period > 0):
        raise ValueError("--speed must be >= 0 and --period > 0")
    from ..dashboard import DashboardApp, LiveSource, ReplaySource
    from ..snapshot import load_snapshot

    if args.offline:
        app = DashboardApp(
            "offline",
            snapshot=load_snapshot(args.offline),
            compare=load_snapshot(args.compare) if args.compare else None,
            theme=args.theme,
        )
    elif args.replay:
        app = DashboardApp(
            "replay",
            source=ReplaySource(args.replay),
            theme=args.theme,
            refresh_seconds=args.refresh,
            speed=args.speed,
            period=args.period,
        )
    else:
        if not args.url.startswith(("http://", "https://")):
            raise ValueError(
                f"the server URL must start with http:// or https://, got {args.url!r}"
            )
        key = args.api_key
        if args.api_key_file:
            keys = read_api_keys(args.api_key_file)
            if not keys:
                raise ValueError(f"--api-key-file {args.api_key_file} has no key in it")
            key = keys[0]
        source = LiveSource(args.url, key)
        app = DashboardApp(
            "live",
            source=source,
            theme=args.theme,
            refresh_seconds=args.refresh,
            period=args.period or 60.0,
        )
    app.run()
    return EXIT_OK
