"""bitnet._core.info (csrc/bindings/register_info.cpp)."""

bitnet_architectures: tuple[str, ...]

def build_info() -> dict[str, str]: ...
