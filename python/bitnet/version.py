"""The distribution bitnet is published as, and its version (from the installed package's
metadata, so nothing needs to import the package to know it)."""

from __future__ import annotations

from importlib import metadata

__all__ = ["DISTRIBUTION", "version"]

# PyPI's "bitnet" belongs to an unrelated project; the import name stays ``bitnet``.
DISTRIBUTION = "bitnet-cpu"


def version() -> str:
    """The installed version of bitnet-cpu (from git tags through setuptools-scm)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        from ._native import _core

        return str(_core.__version__)
