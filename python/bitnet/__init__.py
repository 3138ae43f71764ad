"""bitnet: run BitNet b1.58 ternary language models fast on CPU, in-process.

>>> import bitnet
>>> m = bitnet.Model("tiny.gguf")           # python -m bitnet generate-model tiny.gguf
>>> m.generate("Hello", max_tokens=16, seed=0).text

The native extension (and numpy) load on first use of a name that needs them, not at
``import bitnet``: the command line starts fast, and a Ctrl-C while it starts is an ordinary
interruption. A broken installation is reported then, as :class:`NativeExtensionError`.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from . import _aliases
from .errors import BitNetError, EngineError, ListenError, ModelLoadError, NativeExtensionError

if TYPE_CHECKING:
    from .chat import BUILTIN_CHAT_TEMPLATE
    from .model import GenerationResult, Model, TextPiece, TextStream, Timings, TokenLogprob, Usage
    from .options import LoadOptions, SamplingOptions

    __version__: str

_aliases.install()  # the 0.1 module paths (bitnet.convert, ...) still import

# Native log lines arrive on "bitnet.native"; stay quiet unless the application configures logging.
logging.getLogger("bitnet").addHandler(logging.NullHandler())

# Public names that live in modules which import the extension, by module.
_LAZY = {
    "BUILTIN_CHAT_TEMPLATE": ".chat",
    "GenerationResult": ".model",
    "LoadOptions": ".options",
    "Model": ".model",
    "SamplingOptions": ".options",
    "TextPiece": ".model",
    "TextStream": ".model",
    "Timings": ".model",
    "TokenLogprob": ".model",
    "Usage": ".model",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from .version import version

        return version()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bitnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups do not come here again
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def build_info() -> dict[str, str]:
    """Versions of bitnet's extension and of the llama.cpp/ggml build it links to."""
    from ._native import _core

    return dict(_core.info.build_info())


__all__ = [
    "BUILTIN_CHAT_TEMPLATE",
    "BitNetError",
    "EngineError",
    "GenerationResult",
    "ListenError",
    "LoadOptions",
    "Model",
    "ModelLoadError",
    "NativeExtensionError",
    "SamplingOptions",
    "TextPiece",
    "TextStream",
    "Timings",
    "TokenLogprob",
    "Usage",
    "__version__",
    "build_info",
]
