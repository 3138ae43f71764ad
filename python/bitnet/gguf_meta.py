"""GGUF metadata as a plain dict, read with the gguf package (no tensor data is loaded)."""

from __future__ import annotations

from typing import Any

from .errors import ModelLoadError

__all__ = ["read_metadata"]


def read_metadata(path: str) -> dict[str, Any]:
    """All key/value pairs of the GGUF file at ``path``; arrays become lists."""
    import gguf

    try:
        reader = gguf.GGUFReader(path, "r")
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read the metadata of '{path}': {exc}") from exc
    out: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue  # the header's own counters, not metadata
        value = field.contents()
        out[name] = value
    return out
