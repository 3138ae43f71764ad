"""``bitnet convert``: between BitNet GGUF layouts (I2_S, TQ2_0, TQ1_0) and from checkpoints."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .exits import EXIT_OK, command_parser


def add_parser(sub: Any) -> None:
    p = command_parser(
        sub,
        "convert",
        help="convert between BitNet GGUF layouts",
        description="Official I2_S GGUF <-> the project's format (arch bitnet, "
        "TQ2_0/TQ1_0). The output is written to DST.tmp and renamed at the end; "
        "the input is never modified.",
    )
    p.add_argument("src", help="input GGUF file, or a Hugging Face checkpoint folder")
    p.add_argument("dst", help="output GGUF file")
    p.add_argument(
        "--type",
        choices=["tq2_0", "tq1_0", "i2_s"],
        default="tq2_0",
        help="ternary tensor type of the output (default tq2_0)",
    )
    p.add_argument(
        "--embedding-type",
        choices=["keep", "f16", "q8_0", "q6_k", "q4_0"],
        default="keep",
        help="type of token_embd/output, the output head (default keep: as the input has it); "
        "q6_k is near-lossless and reads 2.6x fewer bytes per token than f16",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing DST")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..formats.convert import convert

    if Path(args.dst).exists() and not args.force:
        raise ValueError(f"'{args.dst}' exists; pass --force to overwrite it")
    t0 = time.perf_counter()
    out = convert(
        args.src,
        args.dst,
        type=args.type,
        embedding_type=args.embedding_type,
        progress=sys.stderr.isatty(),
    )
    print(
        f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.type}, embedding "
        f"{args.embedding_type}) in {time.perf_counter() - t0:.1f} s"
    )
    return EXIT_OK
