"""``bitnet inspect``: a GGUF file's metadata and tensor table (I2_S files included)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .exits import EXIT_OK, command_parser


def add_parser(sub: Any) -> None:
    p = command_parser(
        sub,
        "inspect",
        help="show a GGUF file's metadata and tensor table",
        description="Architecture, shapes, tensor types, tokenizer and chat "
        "template of a GGUF file (official I2_S files included).",
    )
    p.add_argument("path", help="GGUF file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..formats.gguf import describe_tensor_type, read_gguf

    g = read_gguf(args.path)
    tensors = [
        {
            "name": t.name,
            "type": describe_tensor_type(t.type),
            "shape": list(t.shape),
            "nbytes": t.nbytes,
        }
        for t in g.tensors
    ]
    if args.json:
        metadata = {
            k: (
                v.value
                if not isinstance(v.value, list) or len(v.value) <= 64
                else {"array_length": len(v.value), "first": v.value[:8]}
            )
            for k, v in g.kv.items()
        }
        print(
            json.dumps(
                {
                    "path": str(g.path),
                    "gguf_version": g.version,
                    "metadata": metadata,
                    "tensors": tensors,
                },
                indent=2,
                default=str,
            )
        )
        return EXIT_OK
    arch = g.value("general.architecture", "?")
    print(f"{g.path}: GGUF v{g.version}, architecture {arch}, {len(g.tensors)} tensors")
    for key, kv in g.kv.items():
        value = kv.value
        if isinstance(value, list):
            value = f"[{len(value)} items]"
        elif isinstance(value, str) and (len(value) > 80 or "\n" in value):
            value = repr(value[:77]) + "..."
        print(f"  {key} = {value}")
    types: dict[str, int] = {}
    for t in tensors:
        types[t["type"]] = types.get(t["type"], 0) + 1
    print(f"tensor types: {types}")
    print(f"  {'name':<32} {'type':<7} {'shape':<18} {'bytes':>12}")
    for t in tensors:
        shape = "x".join(map(str, t["shape"]))
        print(f"  {t['name']:<32} {t['type']:<7} {shape:<18} {t['nbytes']:>12}")
    return EXIT_OK
