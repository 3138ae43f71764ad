"""``bitnet bench``: median prompt and generation tokens/s of a model (or of a generated one)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from ..options import MAX_THREADS, LoadOptions, checked_int
from .exits import EXIT_OK, command_parser
from .flags import add_arguments


def add_parser(sub: Any) -> None:
    p = command_parser(
        sub,
        "bench",
        help="quick prompt/generation tokens/s measurement",
        description="Median pp/tg tokens/s of BitNetEngine on a model (or on a generated one).",
    )
    p.add_argument("-m", "--model", default=None, help="GGUF file (default: generate one)")
    p.add_argument(
        "--shape",
        choices=["tiny", "2b4t"],
        default="tiny",
        help="shape of the generated model when --model is absent",
    )
    p.add_argument(
        "-t", "--threads", type=int, nargs="+", default=[1, 2], help="thread counts to measure"
    )
    p.add_argument("-p", "--n-prompt", type=int, default=128)
    p.add_argument("-n", "--n-gen", type=int, default=64)
    p.add_argument("-r", "--repeats", type=int, default=3)
    add_arguments(p, LoadOptions, only=("engine", "kernels"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..model import Model
    from ..runtime.bench import speed_table_row
    from ..testing import generate_model

    for flag, value in (
        ("--n-prompt", args.n_prompt),
        ("--n-gen", args.n_gen),
        ("--repeats", args.repeats),
    ):
        checked_int(flag, value, 1, 1 << 20)
    for threads in args.threads:
        checked_int("--threads", threads, 1, MAX_THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            path = generate_model(Path(tmp) / f"{args.shape}.gguf", shape=args.shape)
        rows = []
        for threads in args.threads:
            with Model(
                path,
                n_ctx=args.n_prompt + args.n_gen + 8,
                n_threads=threads,
                n_threads_batch=threads,
                engine=args.engine,
                kernels=args.kernels,
            ) as model:
                pp, tg = speed_table_row(model, args.n_prompt, args.n_gen, args.repeats)
                rows.append(
                    {
                        "threads": threads,
                        "engine": model.engine,
                        "kernels": model.kernels,
                        f"pp{args.n_prompt}": round(pp, 2),
                        f"tg{args.n_gen}": round(tg, 2),
                    }
                )
        if args.json:
            print(json.dumps({"model": str(path), "repeats": args.repeats, "rows": rows}))
        else:
            print(f"model {path}; median of {args.repeats}")
            print(
                f"{'threads':>7} {'engine':>7} {'kernels':<14} "
                f"{'pp' + str(args.n_prompt) + ' t/s':>12} {'tg' + str(args.n_gen) + ' t/s':>11}"
            )
            for row in rows:
                print(
                    f"{row['threads']:>7} {row['engine']:>7} {row['kernels']:<14} "
                    f"{row[f'pp{args.n_prompt}']:>12.2f} {row[f'tg{args.n_gen}']:>11.2f}"
                )
    return EXIT_OK
