"""Speed measurements shared by ``bitnet bench`` and ``benchmarks/``.

Both use the engine's own timings, which exclude sampling and Python overhead.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

from ..model import Model

__all__ = ["generation_speed", "prompt_speed", "random_prompts", "speed_table_row"]


def random_prompts(length: int, count: int, n_vocab: int, seed: int = 0) -> list[list[int]]:
    """Random token prompts; each starts differently, which defeats prefix caching."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, min(n_vocab, 5000), size=length).tolist() for _ in range(count)]


def prompt_speed(model: Model, prompt: Sequence[int]) -> float:
    """Prompt-processing tokens/s for ``prompt`` (evaluated from an empty cache)."""
    r = model.generate(list(prompt), max_tokens=0, temperature=0)
    return r.timings.prompt_tokens_evaluated / (r.timings.prompt_ms / 1000)


def generation_speed(model: Model, prompt: Sequence[int], n_tokens: int) -> float:
    """Generated tokens/s over ``n_tokens`` single-token decodes after a 2-token prompt."""
    r = model.generate(list(prompt[:2]), max_tokens=n_tokens + 1, temperature=0)
    return r.timings.generation_decodes / (r.timings.generation_ms / 1000)


def speed_table_row(model: Model, pp: int, tg: int, repeats: int) -> tuple[float, float]:
    """(median pp tokens/s, median tg tokens/s) over ``repeats`` runs."""
    model.generate([300, 301], max_tokens=2, temperature=0)  # page the weights in
    prompts = random_prompts(max(pp, 2), repeats, model.n_vocab)
    pp_rates = [prompt_speed(model, p[:pp]) for p in prompts]
    tg_rates = [generation_speed(model, p, tg) for p in prompts]
    return statistics.median(pp_rates), statistics.median(tg_rates)
