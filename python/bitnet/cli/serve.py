"""``bitnet serve``: the OpenAI-compatible HTTP server (the ``server`` extra)."""

from __future__ import annotations

import argparse
from typing import Any

from ..options import LoadOptions
from .common import add_model_arguments, read_api_keys
from .exits import command_parser
from .flags import from_arguments


def add_parser(sub: Any) -> None:
    p = command_parser(
        sub,
        "serve",
        help="OpenAI-compatible HTTP server",
        description="Serve /v1/completions, /v1/chat/completions, /v1/models, "
        "/tokenize, /detokenize, /health, /ready, /metrics, /telemetry/events and "
        "/telemetry/stats.",
    )
    add_model_arguments(p, model_required=True, log_format="json")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--parallel",
        "-np",
        type=int,
        default=1,
        help="generations at once: sequences of the one model, decoded together in each pass "
        "over the weights (continuous batching), each with its own KV cache of --ctx-size tokens",
    )
    p.add_argument(
        "--queue",
        type=int,
        default=16,
        help="requests that may wait for a slot; beyond it: 503 with Retry-After",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="per-request deadline in seconds (504 if nothing was sent yet)",
    )
    p.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="accepted Bearer key (repeatable); /health and /ready stay open",
    )
    p.add_argument("--api-key-file", default=None, help="file with one API key per line")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="larger request bodies get 413 (default 1 MiB)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allowed CORS origin (repeatable; CORS is off without it)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds running requests get to finish after SIGTERM",
    )
    p.add_argument("--alias", default=None, help="model id reported by /v1/models")
    p.add_argument(
        "--telemetry-file",
        default=None,
        metavar="PATH",
        help="also write the telemetry stream (bitnet.telemetry/1 JSON lines: every event, "
        "lifecycle and supervisor failure summaries) to PATH, appended; '-' for stderr",
    )
    p.add_argument(
        "--telemetry-interval",
        type=float,
        default=10.0,
        help="seconds between supervisor failure summaries (sent only when requests failed)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..server import ServerConfig, listen_socket, serve

    keys = list(args.api_key)
    if args.api_key_file:
        keys += read_api_keys(args.api_key_file)
    config = ServerConfig(
        model=args.model,
        load=from_arguments(LoadOptions, args),
        sha256=args.sha256,
        host=args.host,
        port=args.port,
        parallel=args.parallel,
        queue=args.queue,
        timeout=args.timeout,
        api_keys=keys,
        max_body_bytes=args.max_body_bytes,
        cors_origins=args.cors_origin,
        grace=args.grace,
        model_alias=args.alias,
        telemetry_file=args.telemetry_file,
        telemetry_interval=args.telemetry_interval,
    )
    # Fail fast, before the model loads: a bad model or a busy port is known at once.
    config.runtime().validate()
    sock = listen_socket(config.host, config.port)
    return serve(config, log_format=args.log_format, sock=sock)
