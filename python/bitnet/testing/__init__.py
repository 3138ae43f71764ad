"""Synthetic BitNet models and a numpy reference forward pass, for tests and benchmarks."""

from __future__ import annotations

from .reference import ReferenceModel
from .synthetic import SHAPES, ModelShape, TernaryWeight, generate_model, synthetic_weights
from .vocab import build_vocabulary

__all__ = [
    "SHAPES",
    "ModelShape",
    "ReferenceModel",
    "TernaryWeight",
    "build_vocabulary",
    "generate_model",
    "synthetic_weights",
]
