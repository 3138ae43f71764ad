"""The module paths of bitnet 0.1 that moved in the restructure, kept importable.

``import bitnet.convert`` (and ``from bitnet.gguf_io import read_gguf``, ...) gives the module
at its new place, the very same module object: its names, its logger, its state. New code
should use the new paths (docs/architecture.md lists them); these stay for 0.x.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

__all__ = ["MOVED", "install"]

MOVED = {
    "bitnet.bench": "bitnet.runtime.bench",
    "bitnet.bootstrap": "bitnet.deploy.bootstrap",
    "bitnet.convert": "bitnet.formats.convert",
    "bitnet.fetch": "bitnet.deploy.fetch",
    "bitnet.gguf_io": "bitnet.formats.gguf",
    "bitnet.hf": "bitnet.formats.hf",
    "bitnet.supervisor": "bitnet.runtime.supervisor",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import system is about to overwrite it
        return module

    def exec_module(self, module: ModuleType) -> None:
        # Executed at its new path already. Its own spec goes back, or its relative imports
        # would resolve against the old path.
        module.__spec__ = module.__spec__.loader_state  # type: ignore[union-attr]


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
