"""Accelerators on this machine (NVIDIA and AMD GPUs) and the backends the linked llama.cpp has.

Nothing has to be installed: NVIDIA GPUs are read through NVML when the driver's
``libnvidia-ml.so.1`` is present, else from the driver's files (``/proc/driver/nvidia``); AMD GPUs
from the kernel's ROCm topology (``/sys/class/kfd``) or, without it, the DRM devices of vendor
0x1002. The result feeds :func:`bitnet.runtime.diagnose`, ``bitnet snapshot``, the dashboard and
the runtime's plan, which says which backend a model runs on and why
(:func:`backend_choice`): BitNet ternary models run on bitnet's CPU engine; other architectures
(engine ``llama``) can offload ``n_gpu_layers`` layers when the linked llama.cpp was built with a
GPU backend (:func:`gpu_offload`).
"""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Accelerator",
    "BackendChoice",
    "backend_choice",
    "backend_devices",
    "detect_accelerators",
    "gpu_offload",
]


@dataclass(frozen=True)
class Accelerator:
    """One GPU: ``vendor`` ``nvidia`` or ``amd``; ``source`` says what it was read from
    (``nvml``, ``nvidia-driver-files``, ``kfd`` or ``drm``)."""

    vendor: str
    index: int
    name: str
    memory_bytes: int | None = None
    driver: str | None = None
    bus: str | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        memory = f", {self.memory_bytes / 2**30:.0f} GiB" if self.memory_bytes else ""
        driver = f", driver {self.driver}" if self.driver else ""
        return f"{self.vendor} #{self.index}: {self.name}{memory}{driver}"


def detect_accelerators(
    root: str | os.PathLike[str] = "/", *, nvml: bool = True
) -> list[Accelerator]:
    """Every NVIDIA and AMD GPU found. ``root``: where ``/proc`` and ``/sys`` are read from (a
    copy of them in tests); ``nvml=False`` skips the NVML library (only the files are read)."""
    base = Path(root)
    found = (_nvml() if nvml and base == Path("/") else None) or _nvidia_files(base)
    return found + _amd(base)


# -- NVIDIA ---------------------------------------------------------------------------------


class _NvmlMemory(ctypes.Structure):
    _fields_ = [
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    ]


def _nvml() -> list[Accelerator] | None:
    """The GPUs NVML reports, or None when the library is absent or fails (no driver loaded)."""
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        if lib.nvmlInit_v2() != 0:
            return None
    except AttributeError:
        return None
    try:
        count = ctypes.c_uint(0)
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        version = ctypes.create_string_buffer(96)
        driver = (
            version.value.decode(errors="replace")
            if lib.nvmlSystemGetDriverVersion(version, 96) == 0
            else None
        )
        out = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                continue
            name = ctypes.create_string_buffer(96)
            lib.nvmlDeviceGetName(handle, name, 96)
            memory = _NvmlMemory()
            total = (
                memory.total
                if lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) == 0
                else None
            )
            out.append(
                Accelerator(
                    "nvidia",
                    i,
                    name.value.decode(errors="replace") or "NVIDIA GPU",
                    total,
                    driver,
                    None,
                    "nvml",
                )
            )
        return out
    finally:
        lib.nvmlShutdown()


def _nvidia_files(root: Path) -> list[Accelerator]:
    """From the driver's /proc files: the version line and one ``information`` file per GPU."""
    proc = root / "proc/driver/nvidia"
    driver = None
    try:
        match = re.search(
            r"Kernel Module\s+(?:for\s+\S+\s+)?([0-9][0-9.]+)", (proc / "version").read_text()
        )
        driver = match.group(1) if match else None
    except OSError:
        pass
    out = []
    gpus = sorted((proc / "gpus").glob("*/information")) if (proc / "gpus").is_dir() else []
    for i, info in enumerate(gpus):
        fields = _colon_fields(info)
        out.append(
            Accelerator(
                "nvidia",
                int(fields.get("Device Minor", i))
                if fields.get("Device Minor", "").isdigit()
                else i,
                fields.get("Model", "NVIDIA GPU"),
                None,
                driver,
                fields.get("Bus Location", info.parent.name),
                "nvidia-driver-files",
            )
        )
    return out


# -- AMD ------------------------------------------------------------------------------------


def _amd(root: Path) -> list[Accelerator]:
    kfd = _amd_kfd(root)
    return kfd if kfd else _amd_drm(root)


def _amd_kfd(root: Path) -> list[Accelerator]:
    """ROCm's view: KFD topology nodes with a GPU (CPU nodes have gfx_target_version 0)."""
    nodes = root / "sys/class/kfd/kfd/topology/nodes"
    if not nodes.is_dir():
        return []
    driver = _read(root / "sys/module/amdgpu/version")
    out = []
    for node in sorted(nodes.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0):
        props = _space_fields(node / "properties")
        if (
            int(props.get("gfx_target_version", "0") or 0) == 0
            or props.get("vendor_id", "4098") != "4098"
        ):
            continue
        memory = 0
        for bank in sorted((node / "mem_banks").glob("*/properties")):
            memory += int(_space_fields(bank).get("size_in_bytes", "0") or 0)
        gfx = int(props["gfx_target_version"])
        name = _read(node / "name") or f"gfx{gfx // 10000}{(gfx // 100) % 100:x}{gfx % 100:x}"
        out.append(
            Accelerator(
                "amd",
                len(out),
                f"AMD {name}",
                memory or None,
                driver,
                props.get("location_id"),
                "kfd",
            )
        )
    return out


def _amd_drm(root: Path) -> list[Accelerator]:
    """Without ROCm's topology: DRM cards whose PCI vendor is AMD (0x1002)."""
    out = []
    for card in sorted((root / "sys/class/drm").glob("card[0-9]*")):
        if "-" in card.name or _read(card / "device/vendor") != "0x1002":
            continue
        vram = _read(card / "device/mem_info_vram_total")
        name = (
            _read(card / "device/product_name")
            or f"AMD GPU {_read(card / 'device/device') or ''}".strip()
        )
        out.append(
            Accelerator(
                "amd",
                len(out),
                name,
                int(vram) if vram and vram.isdigit() else None,
                None,
                card.name,
                "drm",
            )
        )
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _colon_fields(path: Path) -> dict[str, str]:
    out = {}
    for line in (_read(path) or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _space_fields(path: Path) -> dict[str, str]:
    out = {}
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


# -- the linked llama.cpp -------------------------------------------------------------------


def backend_devices() -> list[dict[str, Any]]:
    """The devices of the linked ggml build's backends: the CPU, plus each GPU it has a backend
    for (``type`` ``gpu``, ``igpu`` or ``accel``)."""
    from ._native import _core

    return [dict(d) for d in _core.info.backend_devices()]


def gpu_offload() -> bool:
    """Whether the linked llama.cpp can offload layers to a GPU (it was built with a GPU
    backend and one is usable): what ``n_gpu_layers`` needs."""
    from ._native import _core

    return _core.info.build_info().get("gpu_offload") == "yes"


@dataclass(frozen=True)
class BackendChoice:
    """Where a model runs (``cpu`` or ``gpu``), why, and the warning a user should see."""

    backend: str
    reason: str
    warning: str | None = None


def backend_choice(
    engine: str,
    n_gpu_layers: int,
    accelerators: list[Accelerator],
    *,
    offload: bool | None = None,
    n_layer: int | None = None,
) -> BackendChoice:
    """The plan's backend for a model on ``engine`` (``bitnet`` or ``llama``), given the
    ``n_gpu_layers`` asked for, the accelerators found and whether the linked llama.cpp can
    offload (``offload``; default: ask it)."""
    gpus = ", ".join(a.name for a in accelerators) or "none"
    if engine == "bitnet":
        reason = (
            "BitNet ternary models run on bitnet's CPU engine (its own ternary kernels); "
            f"accelerators found: {gpus}"
        )
        warning = (
            f"n_gpu_layers={n_gpu_layers} does not apply: BitNet models run on the CPU engine"
            if n_gpu_layers > 0
            else None
        )
        return BackendChoice("cpu", reason, warning)
    can = gpu_offload() if offload is None else offload
    if n_gpu_layers > 0:
        if can:
            layers = f"{min(n_gpu_layers, n_layer)} of {n_layer}" if n_layer else str(n_gpu_layers)
            return BackendChoice(
                "gpu",
                f"libllama offloads {layers} layers (n_gpu_layers) to its GPU backend; "
                f"accelerators found: {gpus}",
            )
        return BackendChoice(
            "cpu",
            "the linked llama.cpp has no GPU backend, so every layer runs on the CPU; "
            f"accelerators found: {gpus}",
            f"n_gpu_layers={n_gpu_layers} is ignored: the linked llama.cpp (llama-cpp-python) was "
            "built without a GPU backend; reinstall it with one (e.g. CMAKE_ARGS=-DGGML_CUDA=on) "
            "to offload",
        )
    if accelerators and can:
        return BackendChoice(
            "cpu", f"n_gpu_layers is 0; set it to offload layers to the GPU backend ({gpus})"
        )
    if accelerators:
        return BackendChoice(
            "cpu",
            f"the linked llama.cpp has no GPU backend for the accelerators found ({gpus}); "
            "every layer runs on the CPU",
        )
    return BackendChoice("cpu", "no accelerator found; libllama runs every layer on the CPU")
