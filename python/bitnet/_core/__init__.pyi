"""Type stubs of the native extension bitnet._core: one stub per submodule, as
csrc/module.cpp creates them (csrc/bindings/register_<submodule>.cpp)."""

from . import bench as bench
from . import gguf as gguf
from . import info as info
from . import kernels as kernels
from . import model as model

__version__: str
