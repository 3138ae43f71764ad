"""How far a quantized embedding/output head moves the logits from the F16 head.

An official I2_S file has an F16 embedding that doubles as the output head; ``bitnet.Model``
runs it as Q6_K by default (``i2s_head="q6_k"``) and ``bitnet setup`` converts it to Q6_K
(``--head q6_k``). This measures, on the same weights, what that costs in accuracy: for each
head type, against the F16 head, over the logits of every position of random prompts:

- ``rel L2``: ||logits - logits_f16|| / ||logits_f16|| (all positions);
- ``max |d|``: the largest absolute difference of one logit;
- ``top-1``: positions whose most likely token is the same;
- ``KL``: mean KL(p_f16 || p_head) in nats, with p the softmax of the logits;
- ``greedy``: of a greedy continuation of ``--tokens`` tokens per prompt, the share of tokens
  equal to the F16 head's before the first difference;
- ``head only``: rel L2 and top-1 of the head's product alone (numpy, the file's matrices
  dequantized) on the same 512 random hidden states (unit normal times the output norm):
  what the head's quantization does by itself. Through a network of random ternary weights
  any perturbation of the embedding grows layer by layer (q8_0 too), so the columns before it
  overstate what a trained model sees; a trained model is far less chaotic.

    python benchmarks/bench_head.py [--model F16_FILE] [--heads q8_0 q6_k q4_0] [--prompts 4]

Default model: the generated 2B-4T shapes with an F16 tied head (``benchmarks/.models``).
Speed per head type: ``benchmarks/bench_e2e.py --heads f16 q6_k``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import bitnet
from bench_e2e import default_model
from bitnet.formats.convert import convert
from bitnet.runtime.bench import random_prompts


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a TQ2_0 file with an F16 head")
    parser.add_argument("--heads", nargs="+", default=["q8_0", "q6_k", "q4_0"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--length", type=int, default=64, help="tokens per prompt")
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt")
    args = parser.parse_args()
    path = args.model if args.model is not None else default_model()
    with bitnet.Model(path, n_ctx=args.length + args.tokens + 8, n_seq=1) as base:
        prompts = random_prompts(args.length, args.prompts, base.n_vocab, seed=0)
        ref_logits = [base.logits(p).astype(np.float64) for p in prompts]
        ref_text = [base.generate(p, max_tokens=args.tokens, temperature=0).tokens for p in prompts]
    print(
        f"model {path.name}; {args.prompts} prompts of {args.length} tokens; greedy "
        f"{args.tokens} tokens each; against the F16 head"
    )
    from bitnet.formats.convert import _dequantize
    from bitnet.formats.gguf import read_gguf

    def head_matrix(file: Path) -> tuple[np.ndarray, np.ndarray]:
        g = read_gguf(file)
        t = {x.name: x for x in g.tensors}
        w = _dequantize(g, t.get("output.weight") or t["token_embd.weight"])
        return w, _dequantize(g, t["output_norm.weight"]).reshape(-1)

    w16, norm = head_matrix(path)
    hidden = np.random.default_rng(1).standard_normal((512, w16.shape[1])).astype(np.float32)
    hidden *= norm
    ref_head = hidden @ w16.T
    del w16
    print(
        f"{'head':<6} {'rel L2':>8} {'max |d|':>8} {'top-1':>7} {'KL':>9} {'greedy':>7}"
        f" {'head only: rel L2':>18} {'top-1':>7}"
    )
    for head in args.heads:
        out = path.with_name(f"{path.stem}-{head}-head.gguf")
        if not out.exists():
            convert(path, out, type="tq2_0", embedding_type=head)
        with bitnet.Model(out, n_ctx=args.length + args.tokens + 8, n_seq=1) as m:
            got = [m.logits(p).astype(np.float64) for p in prompts]
            text = [m.generate(p, max_tokens=args.tokens, temperature=0).tokens for p in prompts]
        a, b = np.concatenate(ref_logits), np.concatenate(got)
        rel = np.linalg.norm(b - a) / np.linalg.norm(a)
        top1 = np.mean(a.argmax(-1) == b.argmax(-1))
        p, q = softmax(a), softmax(b)
        kl = np.mean(np.sum(p * (np.log(p + 1e-300) - np.log(q + 1e-300)), axis=-1))
        same = []
        for r, t in zip(ref_text, text, strict=True):
            n = next((i for i, (x, y) in enumerate(zip(r, t, strict=False)) if x != y), len(r))
            same.append(n / max(len(r), 1))
        w, _ = head_matrix(out)
        only = hidden @ w.T
        del w
        rel_head = np.linalg.norm(only - ref_head) / np.linalg.norm(ref_head)
        top1_head = np.mean(only.argmax(-1) == ref_head.argmax(-1))
        print(
            f"{head:<6} {rel:8.4f} {np.abs(b - a).max():8.4f} {top1:7.1%} {kl:9.2e} "
            f"{np.mean(same):7.1%} {rel_head:18.4f} {top1_head:7.1%}"
        )


if __name__ == "__main__":
    main()
