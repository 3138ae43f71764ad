"""Exception classes of bitnet.

Each subclasses the built-in a caller would naturally catch, so ``except OSError`` around a load
and ``except ValueError`` around bad arguments keep working.
"""

from __future__ import annotations

__all__ = [
    "BitNetError",
    "EngineError",
    "ListenError",
    "ModelLoadError",
    "NativeExtensionError",
]


class BitNetError(Exception):
    """Base class of every bitnet-specific error."""


class ModelLoadError(BitNetError, OSError):
    """A model file is missing, unreadable, truncated, not GGUF, or of an unsupported kind."""


class EngineError(BitNetError, RuntimeError):
    """The native engine failed (or was used in a way it cannot serve, e.g. re-entrantly)."""


class NativeExtensionError(BitNetError, ImportError):
    """The compiled extension ``bitnet._core`` (or a library it needs) could not be loaded."""


class ListenError(BitNetError, OSError):
    """The server cannot listen on its address (port in use, not permitted, unknown host)."""
