"""Running a model in production: resolve and check a run before loading (``runtime``),
report on the machine and a model (``diagnostics``), serve many requests from asyncio
(``supervisor``) and measure speed (``bench``). The thread policy they follow is
``bitnet.cpu``'s (re-exported here: ``CpuTopology``, ``detect_cpu_topology``, ``resolve_threads``).

>>> from bitnet.runtime import BitNetRuntime, RuntimeSupervisor
"""

from __future__ import annotations

from ..cpu import CpuTopology, detect_cpu_topology, resolve_threads
from ..errors import (
    DeadlineExceededError,
    QueueFullError,
    SupervisorClosedError,
    UnsupportedCPUError,
)
from .diagnostics import Diagnostics, Problem, diagnose
from .runtime import BitNetRuntime, RuntimePlan, run_generation
from .supervisor import RuntimeSupervisor

__all__ = [
    "BitNetRuntime",
    "CpuTopology",
    "DeadlineExceededError",
    "Diagnostics",
    "Problem",
    "QueueFullError",
    "RuntimePlan",
    "RuntimeSupervisor",
    "SupervisorClosedError",
    "UnsupportedCPUError",
    "detect_cpu_topology",
    "diagnose",
    "resolve_threads",
    "run_generation",
]
