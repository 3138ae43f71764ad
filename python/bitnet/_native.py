"""Imports the compiled extension with an explanation when that fails."""

from __future__ import annotations

from .errors import NativeExtensionError

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise NativeExtensionError(
        f"bitnet's native extension could not be loaded: {exc}. "
        "It is built when the package is installed: run `pip install .` from a checkout (this "
        "also installs llama-cpp-python==0.3.36, whose libllama/libggml the extension links "
        "to). If llama-cpp-python was reinstalled or removed since, reinstall bitnet."
    ) from exc

__all__ = ["_core"]
