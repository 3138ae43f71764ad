"""Every exception bitnet raises on purpose; all derive from :class:`BitNetError`.

Each also subclasses the built-in a caller would naturally catch, so ``except OSError`` around a
load, ``except TimeoutError`` around a request and ``except ValueError`` around bad arguments
keep working.
"""

from __future__ import annotations

__all__ = [
    "BitNetError",
    "BootstrapError",
    "DeadlineExceededError",
    "EngineError",
    "FetchError",
    "ListenError",
    "ModelLoadError",
    "ModelTruncatedError",
    "NativeExtensionError",
    "QueueFullError",
    "SupervisorClosedError",
    "UnsupportedCPUError",
]


class BitNetError(Exception):
    """Base class of every bitnet-specific error."""


class ModelLoadError(BitNetError, OSError):
    """A model file is missing, unreadable, truncated, not GGUF, or of an unsupported kind."""


class ModelTruncatedError(ModelLoadError):
    """A model file ends before the data its header describes (an interrupted download)."""


class EngineError(BitNetError, RuntimeError):
    """The native engine failed (or was used in a way it cannot serve, e.g. re-entrantly)."""


class NativeExtensionError(BitNetError, ImportError):
    """The compiled extension ``bitnet._core`` (or a library it needs) could not be loaded."""


class UnsupportedCPUError(BitNetError, RuntimeError):
    """This CPU lacks an instruction set the native libraries were compiled to use."""


class QueueFullError(BitNetError, RuntimeError):
    """All slots are busy and the wait queue is full; retry later."""


class DeadlineExceededError(BitNetError, TimeoutError):
    """The request's deadline passed; its generation was stopped."""


class SupervisorClosedError(BitNetError, RuntimeError):
    """The supervisor is shutting down or closed and takes no new requests."""


class ListenError(BitNetError, OSError):
    """The server cannot listen on its address (port in use, not permitted, unknown host)."""


class BootstrapError(BitNetError, RuntimeError):
    """A set-up stage cannot complete; the message names the problem and the fix."""


class FetchError(BitNetError, RuntimeError):
    """The model could not be fetched or did not match its checksum."""
