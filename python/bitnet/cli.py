"""The ``bitnet`` command line (also ``python -m bitnet``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]


def _generate_model(args: argparse.Namespace) -> int:
    from .testing import generate_model

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
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitnet", description="Run BitNet b1.58 ternary language models on CPU."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser(
        "generate-model",
        help="write a BitNet GGUF with random ternary weights (for tests and benchmarks)",
        description="Write a real-format BitNet GGUF (arch 'bitnet') with random ternary "
        "weights and a small byte-level BPE vocabulary. The text it generates is nonsense; "
        "shapes, formats and speed are real.",
    )
    gen.add_argument("path", help="output .gguf file")
    gen.add_argument(
        "--shape",
        choices=["tiny", "2b4t"],
        default="tiny",
        help="tiny: hidden 256, 2 layers (default); 2b4t: BitNet b1.58 2B-4T shapes",
    )
    gen.add_argument(
        "--activation",
        choices=["relu2", "silu"],
        default="relu2",
        help="FFN activation written to bitnet.hidden_activation (default relu2)",
    )
    gen.add_argument(
        "--type",
        choices=["tq2_0", "tq1_0"],
        default="tq2_0",
        help="ggml type of the ternary matrices (default tq2_0)",
    )
    gen.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    gen.add_argument(
        "--untied",
        action="store_true",
        help="write a separate output.weight instead of tying it to the embedding",
    )
    gen.add_argument("--layers", type=int, default=None, help="override the number of layers")
    gen.set_defaults(func=_generate_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (OSError, ValueError) as exc:
        parser.exit(2, f"bitnet {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
