"""bitnet: run BitNet b1.58 ternary language models fast on CPU, in-process.

>>> import bitnet
>>> m = bitnet.Model("tiny.gguf")           # python -m bitnet generate-model tiny.gguf
>>> m.generate("Hello", max_tokens=16, seed=0).text
"""

from __future__ import annotations

import logging

from ._native import _core
from .chat import BUILTIN_CHAT_TEMPLATE
from .errors import BitNetError, EngineError, ModelLoadError, NativeExtensionError
from .model import GenerationResult, Model, TextStream, Timings, Usage

__version__: str = _core.__version__

# Native log lines arrive on "bitnet.native"; stay quiet unless the application configures logging.
logging.getLogger("bitnet").addHandler(logging.NullHandler())


def build_info() -> dict[str, str]:
    """Versions of bitnet's extension and of the llama.cpp/ggml build it links to."""
    return dict(_core.build_info())


__all__ = [
    "BUILTIN_CHAT_TEMPLATE",
    "BitNetError",
    "EngineError",
    "GenerationResult",
    "Model",
    "ModelLoadError",
    "NativeExtensionError",
    "TextStream",
    "Timings",
    "Usage",
    "__version__",
    "build_info",
]
