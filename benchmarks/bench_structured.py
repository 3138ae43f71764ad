"""What structured output and logprobs cost per generated token.

One Model, one process; each round runs every case once, interleaved (this machine's speed
drifts), and the table gives the median over rounds of each case's milliseconds per generated
token (generation time / decode steps, the prompt excluded), its tokens/s and its ratio to the
plain sampler of the same rounds:

- ``plain``: the sampler chain alone (temperature 1, top-k/top-p/min-p);
- ``grammar free``: a GBNF grammar that lets through what the model draws most of the time
  (``[^\\x00]*``): the cost of checking the drawn token;
- ``grammar narrow``: digits only (``[0-9]*``): the drawn token almost never fits, so nearly
  every step masks the whole vocabulary (128,256 tokens for the 2B-4T shapes): the worst case;
- ``json_schema``: a nested schema (enums, integers with bounds, bounded strings, a date);
- ``logprobs=5``, ``logprobs=20``: the log-softmax and the top-k of every step.

    python benchmarks/bench_structured.py [--model F] [--tokens 48] [--rounds 5] [--threads 2]

Default model: the generated 2B-4T shapes with a Q6_K head (``benchmarks/.models``).
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import bitnet
from bench_e2e import default_model

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "when": {"type": "string", "format": "date"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
    },
    "required": ["city", "unit", "days"],
}

CASES = {
    "plain": {},
    "grammar free": {"grammar": r"root ::= [^\x00]*"},
    "grammar narrow": {"grammar": "root ::= [0-9]*"},
    "json_schema": {"json_schema": SCHEMA},
    "logprobs=5": {"logprobs": 5},
    "logprobs=20": {"logprobs": 20},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF (default: 2B-4T shapes)")
    parser.add_argument("--tokens", type=int, default=48, help="most tokens per generation")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    path = args.model if args.model is not None else default_model("q6_k")
    model = bitnet.Model(path, n_ctx=256, n_threads=args.threads, n_seq=1)
    print(
        f"model {path.name} (vocab {model.n_vocab}); {args.threads} threads; up to "
        f"{args.tokens} tokens per generation, temperature 1; {args.rounds} rounds, interleaved"
    )
    model.generate("warm up", max_tokens=8, seed=0)
    ms: dict[str, list[float]] = {name: [] for name in CASES}
    for r in range(args.rounds):
        for name, extra in CASES.items():
            # A new prompt each round and case: no cached prefix, the same work for each case.
            result = model.generate(
                f"Round {r}, case {name}: the weather", max_tokens=args.tokens, seed=r, **extra
            )
            t = result.timings
            ms[name].append(t.generation_ms / max(t.generation_decodes, 1))
    base = statistics.median(ms["plain"])
    print(f"{'case':<14} {'ms/token':>9} {'tokens/s':>9} {'vs plain':>9}")
    for name, values in ms.items():
        m = statistics.median(values)
        print(f"{name:<14} {m:9.2f} {1000 / m:9.2f} {m / base:8.2f}x")
    model.close()


if __name__ == "__main__":
    main()
