"""What this process may run on, and the one thread policy every part of bitnet follows.

``"auto"`` threads means one thread per physical core this process can keep busy (its affinity
mask, hyper-threads counted once, capped by a cgroup CPU quota). The ``slots`` arguments divide
them between independent engines running at once; bitnet's own concurrent generations are
sequences of one model decoded together (continuous batching), which use every thread, so the
runtime and the supervisor pass one slot.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from .options import MAX_THREADS, check_threads

__all__ = [
    "MAX_THREADS",
    "CpuTopology",
    "compiled_cpu_features",
    "cpu_flags",
    "cpu_model_name",
    "default_threads",
    "detect_cpu_topology",
    "missing_cpu_features",
    "read_text",
    "resolve_threads",
    "thread_count",
]


@dataclass(frozen=True)
class CpuTopology:
    """What this process may run on."""

    logical_cpus: int  # CPUs in the machine
    available_cpus: int  # CPUs in this process's affinity mask
    physical_cores: int  # distinct cores among the available CPUs (hyper-threads counted once)
    cgroup_cpu_limit: float | None  # CPUs' worth of time the cgroup quota allows, if limited

    @property
    def usable_cores(self) -> int:
        """Physical cores this process can actually keep busy."""
        usable = self.physical_cores
        if self.cgroup_cpu_limit is not None:
            usable = min(usable, max(1, math.floor(self.cgroup_cpu_limit)))
        return max(1, usable)

    def threads_per_slot(self, slots: int = 1) -> int:
        """The ``"auto"`` thread count of each of ``slots`` generations running at once."""
        return max(1, self.usable_cores // max(1, slots))


def read_text(path: Path) -> str | None:
    """A small system file's stripped text, or None when it cannot be read."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_cpu_limit(cgroup_root: Path) -> float | None:
    """The CPU quota of this cgroup in CPUs, or None when unlimited or unreadable."""
    try:
        v2 = read_text(cgroup_root / "cpu.max")  # "max 100000" or "<quota> <period>"
        if v2 is not None:
            quota, _, period = v2.partition(" ")
            if quota != "max" and period and int(period) > 0 and int(quota) > 0:
                return int(quota) / int(period)
            return None
        quota_v1 = read_text(cgroup_root / "cpu" / "cpu.cfs_quota_us")
        period_v1 = read_text(cgroup_root / "cpu" / "cpu.cfs_period_us")
        if quota_v1 and period_v1 and int(quota_v1) > 0 and int(period_v1) > 0:
            return int(quota_v1) / int(period_v1)
    except ValueError:  # a file that is not what the kernel writes: no limit we can trust
        return None
    return None


def detect_cpu_topology(
    *,
    affinity: set[int] | None = None,
    sysfs_cpu: str | os.PathLike[str] = "/sys/devices/system/cpu",
    cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
) -> CpuTopology:
    """Count the CPUs and physical cores this process may use (the roots are for tests)."""
    if affinity is None:
        try:
            affinity = set(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            affinity = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    for cpu in affinity:
        topo = Path(sysfs_cpu) / f"cpu{cpu}" / "topology"
        package, core = read_text(topo / "physical_package_id"), read_text(topo / "core_id")
        cores.add((package or "?", core if core is not None else f"cpu{cpu}"))
    return CpuTopology(
        logical_cpus=os.cpu_count() or len(affinity),
        available_cpus=len(affinity),
        physical_cores=max(1, len(cores)),
        cgroup_cpu_limit=_cgroup_cpu_limit(Path(cgroup_root)),
    )


def cpu_flags() -> set[str]:
    """Instruction-set flags of this CPU (from /proc/cpuinfo)."""
    text = read_text(Path("/proc/cpuinfo")) or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model_name() -> str:
    text = read_text(Path("/proc/cpuinfo")) or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return platform.processor() or platform.machine()


def default_threads(slots: int = 1) -> int:
    """``"auto"`` threads for this process: its usable physical cores divided by ``slots``."""
    return detect_cpu_topology().threads_per_slot(slots)


def thread_count(
    requested: int | str | None,
    *,
    name: str = "threads",
    slots: int = 1,
    topology: CpuTopology | None = None,
) -> int:
    """The policy: ``"auto"``/None is the usable physical cores divided by ``slots``; a number
    (1 to MAX_THREADS, or its decimal text) is taken as it is. ValueError naming ``name``."""
    value = check_threads(name, requested)
    if value is None or value == "auto":
        return (topology or detect_cpu_topology()).threads_per_slot(slots)
    return int(value)


def resolve_threads(
    requested: int | str | None,
    topology: CpuTopology,
    *,
    name: str = "threads",
    slots: int = 1,
) -> tuple[int, str | None]:
    """:func:`thread_count`, then a number is clamped to the CPUs this process may use (a
    deployment setting, not a library call's). Returns (threads, warning or None)."""
    if requested is None or requested == "auto":
        return topology.threads_per_slot(slots), None
    requested = thread_count(requested, name=name)
    limit = topology.available_cpus
    if topology.cgroup_cpu_limit is not None:
        limit = min(limit, max(1, math.ceil(topology.cgroup_cpu_limit)))
    if requested > limit:
        return limit, (
            f"{name}={requested} is more than the {limit} CPUs this process may use "
            f"(affinity {topology.available_cpus}, cgroup limit {topology.cgroup_cpu_limit}); "
            f"using {limit}"
        )
    if requested * slots > topology.physical_cores:
        total = f"{slots} slots x {requested} threads" if slots > 1 else f"{name}={requested}"
        return requested, (
            f"{total} exceeds the {topology.physical_cores} physical cores; "
            + (
                "the slots compete for them ('auto' divides the cores between slots)"
                if slots > 1
                else "hyper-threads rarely speed up inference"
            )
        )
    return requested, None


# ggml's names for the instruction sets it was compiled with -> /proc/cpuinfo flags.
_X86_FEATURE_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AVX_VNNI": "avx_vnni",
    "AMX_INT8": "amx_int8",
}
_ARM_FEATURE_FLAGS = {"NEON": "asimd", "ARM_FMA": "asimd", "DOTPROD": "asimddp", "SVE": "sve"}
_REPORTED_FLAGS = sorted({*_X86_FEATURE_FLAGS.values(), *_ARM_FEATURE_FLAGS.values()})


def compiled_cpu_features() -> list[str]:
    """Instruction sets the loaded ggml CPU backend was compiled to use."""
    from ._native import _core

    info = _core.info.build_info()["system_info"]
    features = []
    for part in info.replace("CPU :", "|").split("|"):
        name, _, value = part.partition("=")
        if value.strip() == "1":
            features.append(name.strip())
    return features


def missing_cpu_features(flags: set[str] | None = None) -> list[str]:
    """Compiled-in instruction sets this CPU does not have (running would crash)."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return []  # unknown: /proc/cpuinfo unavailable
    table = _ARM_FEATURE_FLAGS if platform.machine() in ("aarch64", "arm64") else _X86_FEATURE_FLAGS
    return [f for f in compiled_cpu_features() if f in table and table[f] not in flags]
