"""``bitnet generate-model``: a real-format BitNet GGUF with random ternary weights."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .exits import EXIT_OK, command_parser


def add_parser(sub: Any) -> None:
    p = command_parser(
        sub,
        "generate-model",
        help="write a BitNet GGUF with random ternary weights (for tests and benchmarks)",
        description="Write a real-format BitNet GGUF (arch 'bitnet') with random ternary "
        "weights and a small byte-level BPE vocabulary. The text it generates is nonsense; "
        "shapes, formats and speed are real.",
    )
    p.add_argument("path", help="output .gguf file")
    p.add_argument(
        "--shape",
        choices=["tiny", "2b4t"],
        default="tiny",
        help="tiny: hidden 256, 2 layers (default); 2b4t: BitNet b1.58 2B-4T shapes",
    )
    p.add_argument(
        "--activation",
        choices=["relu2", "silu"],
        default="relu2",
        help="FFN activation written to bitnet.hidden_activation (default relu2)",
    )
    p.add_argument(
        "--type",
        choices=["tq2_0", "tq1_0"],
        default="tq2_0",
        help="ggml type of the ternary matrices (default tq2_0)",
    )
    p.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    p.add_argument(
        "--untied",
        action="store_true",
        help="write a separate output.weight instead of tying it to the embedding",
    )
    p.add_argument("--layers", type=int, default=None, help="override the number of layers")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..testing import generate_model

    if Path(args.path).exists() and not args.force:
        raise ValueError(f"'{args.path}' exists; pass --force to overwrite it")
    if args.layers is not None and not 1 <= args.layers <= 1024:
        raise ValueError(f"--layers must be from 1 to 1024, got {args.layers}")
    t0 = time.perf_counter()
    path = generate_model(
        args.path,
        shape=args.shape,
        activation=args.activation,
        ternary_type=args.type,
        seed=args.seed,
        tied=not args.untied,
        n_layer=args.layers,
    )
    size = path.stat().st_size
    print(
        f"wrote {path} ({size / 2**20:.1f} MiB, {args.shape}, {args.activation}, {args.type}) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return EXIT_OK
