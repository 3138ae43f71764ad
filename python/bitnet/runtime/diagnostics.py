"""Diagnostics: a report on the extension, the CPU, memory and a model file that names every
problem it finds instead of raising (``bitnet diagnose``, ``BitNetRuntime.diagnostics()``)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import cpu, events
from .._native import _core
from ..accelerators import backend_choice, backend_devices, detect_accelerators
from ..cpu import (
    _ARM_FEATURE_FLAGS,
    _REPORTED_FLAGS,
    _X86_FEATURE_FLAGS,
    compiled_cpu_features,
    cpu_model_name,
    detect_cpu_topology,
    missing_cpu_features,
    read_text,
)
from ..errors import ModelLoadError, ModelTruncatedError
from ..formats.cache import sha256_of
from ..formats.gguf import BITNET_ARCHITECTURES

if TYPE_CHECKING:
    from .runtime import BitNetRuntime

__all__ = ["DIAGNOSTICS_SCHEMA", "Diagnostics", "Problem", "diagnose"]

DIAGNOSTICS_SCHEMA = "bitnet.diagnostics/1"


@dataclass(frozen=True)
class Problem:
    severity: Literal["error", "warning", "info"]
    code: str
    message: str


@dataclass(frozen=True)
class Diagnostics:
    """A machine- and model-readiness report; ``to_dict()`` has the documented stable keys."""

    bitnet: dict[str, Any]
    cpu: dict[str, Any]
    memory: dict[str, Any]
    model: dict[str, Any] | None
    threads: dict[str, Any]
    kernels: dict[str, Any]
    problems: list[Problem]
    # GPUs found (bitnet.accelerators), the linked llama.cpp's backend devices and whether it
    # can offload layers, and where this runtime's model runs (backend, backend_reason).
    accelerators: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": DIAGNOSTICS_SCHEMA,
            "ok": self.ok,
            "bitnet": self.bitnet,
            "cpu": self.cpu,
            "memory": self.memory,
            "model": self.model,
            "threads": self.threads,
            "kernels": self.kernels,
            "accelerators": self.accelerators,
            "problems": [asdict(p) for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        b, c = self.bitnet, self.cpu
        lines = [
            f"bitnet {b['version']} ({b['llama_cpp']}, ggml {b['ggml_version']}, {b['compiler']})",
            f"compiled for {' '.join(b['compiled_cpu_features'])}",
            f"CPU {c['model']} ({c['arch']}): {c['physical_cores']} cores / "
            f"{c['available_cpus']} CPUs usable of {c['logical_cpus']}"
            + (f", cgroup limit {c['cgroup_cpu_limit']}" if c["cgroup_cpu_limit"] else ""),
            f"threads {self.threads['generation']} generation, {self.threads['prompt']} prompt",
            f"kernels {self.kernels['ternary']}",
        ]
        a = self.accelerators
        if a:
            devices = ", ".join(str(d["name"]) for d in a["devices"]) or "none"
            lines.append(
                f"accelerators {devices}; llama.cpp GPU offload "
                f"{'available' if a['gpu_offload'] else 'not built in'}"
            )
            if a.get("backend"):
                lines.append(f"backend {a['backend']}: {a['backend_reason']}")
        if self.memory["total_bytes"]:
            lines.append(
                f"memory {self.memory['available_bytes'] / 2**30:.1f} GiB available of "
                f"{self.memory['total_bytes'] / 2**30:.1f} GiB"
            )
        if self.model is not None:
            m = self.model
            lines.append(
                f"model {m['path']}: "
                + (
                    f"{m['size_bytes']} bytes, {m['architecture']}, engine {m['engine']}, "
                    f"tensor types {m['tensor_types']}"
                    if m.get("gguf")
                    else "not readable as GGUF"
                )
            )
        lines += [f"{p.severity.upper()}: {p.message} [{p.code}]" for p in self.problems]
        lines.append("status: ok" if self.ok else "status: problems found")
        return "\n".join(lines)


def _memory() -> dict[str, int | None]:
    info = {}
    for line in (read_text(Path("/proc/meminfo")) or "").splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            info[key] = int(value.split()[0]) * 1024
    return {"total_bytes": info.get("MemTotal"), "available_bytes": info.get("MemAvailable")}


def diagnose(runtime: BitNetRuntime | None, *, check_sha256: bool | None = None) -> Diagnostics:
    """Diagnostics of the machine, and of ``runtime``'s model and settings when given."""
    build = dict(_core.info.build_info())
    compiled = compiled_cpu_features()
    flags = cpu.cpu_flags()  # through the module: tests stand in for the CPU
    topology = runtime.topology if runtime else detect_cpu_topology()
    problems: list[Problem] = []
    missing = missing_cpu_features(flags)
    if missing:
        problems.append(
            Problem(
                "error",
                "cpu_missing_features",
                f"this CPU lacks {', '.join(missing)}, which the native libraries "
                "use; reinstall bitnet and llama-cpp-python on this machine",
            )
        )
    memory = _memory()
    model_info: dict[str, Any] | None = None
    engine = "bitnet"
    ternary: list[str] = []
    if runtime is not None:
        for w in runtime.warnings:
            problems.append(Problem("warning", "threads_clamped", w))
        model_info, engine, ternary = _model_diagnostics(runtime, problems, check_sha256)
        if model_info and model_info.get("gguf") and memory["available_bytes"]:
            needed = model_info["size_bytes"]
            if needed > memory["available_bytes"]:
                problems.append(
                    Problem(
                        "warning",
                        "low_memory",
                        f"the model ({needed / 2**30:.2f} GiB) is larger than the memory available "
                        f"({memory['available_bytes'] / 2**30:.2f} GiB); expect paging",
                    )
                )
    found = detect_accelerators()
    accelerators: dict[str, Any] = {
        "devices": [d.to_dict() for d in found],
        "gpu_offload": build.get("gpu_offload") == "yes",
        "backend_devices": backend_devices(),
    }
    if runtime is not None:
        choice = backend_choice(
            engine,
            runtime.options.n_gpu_layers,
            found,
            offload=accelerators["gpu_offload"],
        )
        accelerators["backend"] = choice.backend
        accelerators["backend_reason"] = choice.reason
        if choice.warning:
            problems.append(Problem("warning", "gpu_layers_ignored", choice.warning))
    return Diagnostics(
        bitnet={
            "version": build["version"],
            "llama_cpp": build["llama_cpp"],
            "ggml_version": build["ggml_version"],
            "ggml_commit": build["ggml_commit"],
            "compiler": build["compiler"],
            "compiled_cpu_features": compiled,
            "python": platform.python_version(),
        },
        cpu={
            "model": cpu_model_name(),
            "arch": platform.machine(),
            "logical_cpus": topology.logical_cpus,
            "available_cpus": topology.available_cpus,
            "physical_cores": topology.physical_cores,
            "cgroup_cpu_limit": topology.cgroup_cpu_limit,
            "features": [f for f in _REPORTED_FLAGS if f in flags],
        },
        memory=memory,
        model=model_info,
        threads={
            "generation": runtime.threads if runtime else topology.usable_cores,
            "prompt": runtime.threads_batch if runtime else topology.usable_cores,
            "auto": topology.usable_cores,
        },
        kernels={
            "ternary": _kernel_description(engine, ternary, runtime.kernels if runtime else "auto"),
            "engine": engine,
            "bitnet_kernel": _core.kernels.kernel_name(),
            "bitnet_kernels_available": list(_core.kernels.available_kernels()),
        },
        problems=problems,
        accelerators=accelerators,
    )


def _model_diagnostics(
    runtime: BitNetRuntime, problems: list[Problem], check_sha256: bool | None
) -> tuple[dict[str, Any], str, list[str]]:
    path = runtime.model_path
    info: dict[str, Any] = {"path": path, "exists": os.path.isfile(path), "gguf": False}
    engine = "bitnet"
    if not info["exists"]:
        problems.append(
            Problem("error", "model_missing", f"model file '{path}' does not exist; check --model")
        )
        events.emit(
            "missing_artifact",
            outcome="error",
            params={"model": path},
            error=FileNotFoundError(path),
        )
        return info, engine, []
    info["size_bytes"] = os.path.getsize(path)
    try:
        metadata, tensors = runtime.check_model_file()
    except ModelTruncatedError as exc:
        problems.append(Problem("error", "model_truncated", str(exc)))
        return info, engine, []
    except (ModelLoadError, OSError) as exc:
        problems.append(Problem("error", "model_unreadable", str(exc)))
        return info, engine, []
    arch = str(metadata.get("general.architecture", ""))
    types: dict[str, int] = {}
    for t in tensors:
        types[t["type"]] = types.get(t["type"], 0) + 1
    engine = (
        runtime.engine
        if runtime.engine != "auto"
        else ("bitnet" if arch in BITNET_ARCHITECTURES else "llama")
    )
    info.update(
        gguf=True,
        architecture=arch,
        engine=engine,
        n_tensors=len(tensors),
        tensor_types=types,
        data_end_bytes=max((int(t["offset"]) + int(t["nbytes"]) for t in tensors), default=0),
    )
    if runtime.engine == "bitnet" and arch not in BITNET_ARCHITECTURES:
        problems.append(
            Problem(
                "error",
                "unsupported_architecture",
                f"architecture '{arch}' does not run on engine 'bitnet'; use 'auto'",
            )
        )
    if arch == "bitnet" and engine == "llama":
        problems.append(
            Problem(
                "warning",
                "silu_graph",
                "libllama runs arch 'bitnet' with a SiLU FFN whatever the file says",
            )
        )
    if check_sha256 or (check_sha256 is None and runtime.sha256):
        digest = sha256_of(path)
        info["sha256"] = digest
        if runtime.sha256:
            info["sha256_expected"] = runtime.sha256
            info["sha256_ok"] = digest == runtime.sha256
            if digest != runtime.sha256:
                problems.append(
                    Problem(
                        "error",
                        "model_checksum",
                        f"sha256 of '{path}' is {digest}, expected {runtime.sha256}",
                    )
                )
    ternary = sorted(t for t in types if t in ("tq1_0", "tq2_0", "i2_s"))
    return info, engine, ternary


def _kernel_description(engine: str, ternary: list[str], kernels: str = "auto") -> str:
    ours = _core.kernels.kernel_name()
    if engine == "bitnet" and kernels != "ggml" and (kernels == "bitnet" or ours != "scalar"):
        if ternary == ["tq1_0"]:
            return "ggml TQ1_0 matmuls (our kernels take TQ2_0 only; BitNetEngine graph)"
        source = "TQ2_0, a cached conversion of I2_S" if "i2_s" in ternary else "TQ2_0 as mapped"
        return f"bitnet {ours} kernels ({source}; BitNetEngine graph with ggml custom ops)"
    simd = [
        f for f in compiled_cpu_features() if f in _X86_FEATURE_FLAGS or f in _ARM_FEATURE_FLAGS
    ]
    kinds = "/".join(t.upper() for t in ternary) or "no ternary tensors"
    if "i2_s" in ternary:  # ggml has no I2_S kernels: the file runs as a cached conversion
        kinds = "TQ2_0 (cached conversion of I2_S)"
    graph = "BitNetEngine graph" if engine == "bitnet" else "libllama graph"
    return f"ggml {kinds} matmuls ({graph}; CPU backend built for {' '.join(simd) or 'baseline'})"
