"""Files on disk: their sha256, and the cache of TQ2_0 conversions of I2_S files that
``bitnet.Model`` loads official bitnet.cpp files through (ggml cannot read I2_S)."""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path

from ..errors import ModelLoadError

__all__ = ["cache_dir", "loadable_path", "sha256_of"]

log = logging.getLogger("bitnet.convert")
CHUNK = 1 << 20


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("BITNET_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bitnet"
    )
    return Path(base) / "converted"


def loadable_path(path: str | os.PathLike[str], head: str = "q6_k") -> Path:
    """``path`` itself, or for an I2_S file a TQ2_0 conversion of it in the cache folder, keyed
    by the file's identity (absolute path, size, modification time) and ``head``, made on first
    use. ``head``: ``q6_k`` turns an F16/F32 embedding/output head into Q6_K (near-lossless,
    2.6x fewer bytes read per generated token), ``keep`` leaves it as the file has it (exact)."""
    if head not in ("q6_k", "keep"):
        raise ValueError(f"head must be 'q6_k' or 'keep', got {head!r}")
    path = Path(path)
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[
        :16
    ]
    cached = cache_dir() / f"{path.stem}-{key}-tq2_0-{head}.gguf"
    if cached.exists():  # only I2_S files are ever converted here
        log.info("I2_S file %s: using the converted copy %s", path, cached)
        return cached
    from .convert import convert, has_float_head  # here: sha256_of needs only the stdlib
    from .gguf import I2_S, read_gguf

    try:
        source = read_gguf(path)
    except ModelLoadError:
        return path
    if not any(t.type == I2_S for t in source.tensors):
        return path
    embedding = "q6_k" if head == "q6_k" and has_float_head(source) else "keep"
    cached.parent.mkdir(parents=True, exist_ok=True)
    log.warning(
        "I2_S file %s: converting it once to TQ2_0%s in %s (the original is not changed)",
        path,
        " with a Q6_K embedding/output head (i2s_head='keep' keeps it F16, exact)"
        if embedding == "q6_k"
        else "",
        cached,
    )
    try:
        return convert(path, cached, type="tq2_0", embedding_type=embedding)  # type: ignore[arg-type]
    except (ValueError, ArithmeticError, TypeError, IndexError, struct.error) as exc:
        # Damage the header checks could not see (codes that are not ternary, shapes that do
        # not fit): the file is unusable, and the error says why.
        raise ModelLoadError(f"'{path}' is a damaged I2_S file: {exc}") from exc
    except MemoryError as exc:
        raise ModelLoadError(f"not enough memory to convert the I2_S file '{path}'") from exc
