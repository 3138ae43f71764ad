"""BitNetRuntime: thread detection, validation, dry runs, diagnostics and structured events.

The runtime resolves everything a run needs (model facts, threads, context, batch, kernels,
memory) without loading weights, says precisely what is wrong when something is, and then
loads and runs the model in-process.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import events
from ._native import _core
from .cpu import (
    MAX_THREADS,
    CpuTopology,
    cpu_flags,
    cpu_model_name,
    detect_cpu_topology,
    read_text,
    resolve_threads,
)
from .errors import BitNetError, ModelLoadError
from .fetch import sha256_of
from .model import MAX_CONTEXT, GenerationResult, Model

__all__ = [
    "BitNetRuntime",
    "CpuTopology",
    "Diagnostics",
    "Problem",
    "RuntimePlan",
    "UnsupportedCPUError",
    "detect_cpu_topology",
    "resolve_threads",
]

BITNET_ARCHITECTURES = ("bitnet", "bitnet-b1.58", "bitnet-25")
DIAGNOSTICS_SCHEMA = "bitnet.diagnostics/1"
PLAN_SCHEMA = "bitnet.plan/1"

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


class UnsupportedCPUError(BitNetError, RuntimeError):
    """This CPU lacks an instruction set the native libraries were compiled to use."""


# --------------------------------------------------------------------------------------------
# CPU features


def compiled_cpu_features() -> list[str]:
    """Instruction sets the loaded ggml CPU backend was compiled to use."""
    info = _core.build_info()["system_info"]
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


def _memory() -> dict[str, int | None]:
    info = {}
    for line in (read_text(Path("/proc/meminfo")) or "").splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            info[key] = int(value.split()[0]) * 1024
    return {"total_bytes": info.get("MemTotal"), "available_bytes": info.get("MemAvailable")}


# --------------------------------------------------------------------------------------------
# Plan and diagnostics


@dataclass(frozen=True)
class Problem:
    severity: Literal["error", "warning", "info"]
    code: str
    message: str


@dataclass(frozen=True)
class RuntimePlan:
    """Everything a run resolves to, before any weight is loaded."""

    model: str
    architecture: str
    engine: str
    n_ctx: int
    n_ctx_train: int | None
    n_batch: int
    threads: int
    threads_batch: int
    kernels: str
    ternary_types: list[str]
    weights_bytes: int
    kv_cache_bytes: int
    command: str
    warnings: list[str] = field(default_factory=list)

    @property
    def memory_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes

    def to_dict(self) -> dict[str, Any]:
        out = {"schema": PLAN_SCHEMA, **asdict(self)}
        out["memory_bytes"] = self.memory_bytes
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        lines = [
            f"model        {self.model}",
            f"architecture {self.architecture} (engine {self.engine})",
            f"context      {self.n_ctx} tokens (trained {self.n_ctx_train}), batch {self.n_batch}",
            f"threads      {self.threads} generation, {self.threads_batch} prompt",
            f"kernels      {self.kernels}",
            f"memory       {_size(self.memory_bytes)} = weights {_size(self.weights_bytes)} "
            f"(memory-mapped; our kernels repack the ternary ones) + KV cache "
            f"{_size(self.kv_cache_bytes)}",
            f"command      {self.command}",
        ]
        lines += [f"warning      {w}" for w in self.warnings]
        return "\n".join(lines)


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


# --------------------------------------------------------------------------------------------
# The runtime


class BitNetRuntime:
    """Resolve, check and run one model in-process.

    Arguments:
        model: path of the GGUF file.
        threads: generation threads, ``"auto"`` (one per usable physical core) or a number
            (clamped to the CPUs this process may use, with a warning).
        threads_batch: prompt-processing threads (default: like ``threads``).
        n_ctx, n_batch, engine, kernels, use_mmap: as for :class:`bitnet.Model`.
        sha256: expected checksum of the model file, checked by :meth:`validate` (so by
            :meth:`load` and :meth:`dry_run` too) and by :meth:`diagnostics`.
        slots: generations that will run at once, each with its own model (the supervisor's
            ``max_concurrency``, the server's ``--parallel``): ``"auto"`` threads divide the
            usable physical cores between them; a number is per slot.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        threads: int | str = "auto",
        threads_batch: int | str | None = None,
        n_ctx: int = 4096,
        n_batch: int = 512,
        engine: Literal["auto", "bitnet", "llama"] = "auto",
        kernels: Literal["auto", "bitnet", "ggml"] = "auto",
        use_mmap: bool = True,
        sha256: str | None = None,
        topology: CpuTopology | None = None,
        slots: int = 1,
    ) -> None:
        self.model_path = os.fspath(model)
        self.topology = topology or detect_cpu_topology()
        self.slots = checked_int("slots", slots, 1, MAX_THREADS)
        self._requested = {
            "threads": threads,
            "threads_batch": threads_batch,
            "n_ctx": n_ctx,
            "n_batch": n_batch,
            "engine": engine,
            "kernels": kernels,
            "use_mmap": use_mmap,
            "sha256": sha256,
            "topology": self.topology,
        }
        self.warnings: list[str] = []
        self.threads, warning = resolve_threads(
            threads, self.topology, name="threads", slots=self.slots
        )
        self._warn(warning)
        self.threads_batch, warning = resolve_threads(
            self.threads if threads_batch is None else threads_batch,
            self.topology,
            name="threads_batch",
            slots=self.slots,
        )
        self._warn(warning)
        self.n_ctx = checked_int("n_ctx (--ctx-size)", n_ctx, 16, MAX_CONTEXT)
        self.n_batch = checked_int("n_batch (--batch-size)", n_batch, 1, MAX_CONTEXT)
        if engine not in ("auto", "bitnet", "llama"):
            raise ValueError(f"engine must be 'auto', 'bitnet' or 'llama', got {engine!r}")
        self.engine = engine
        if kernels not in ("auto", "bitnet", "ggml"):
            raise ValueError(f"kernels must be 'auto', 'bitnet' or 'ggml', got {kernels!r}")
        self.kernels = kernels
        self.use_mmap = use_mmap
        if sha256 is not None and not (
            isinstance(sha256, str) and len(sha256) == 64 and _is_hex(sha256)
        ):
            raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
        self.sha256 = sha256.lower() if sha256 else None
        self._verified: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) checked

    def for_slots(self, slots: int) -> BitNetRuntime:
        """The same settings for ``slots`` generations at once ("auto" threads re-divided)."""
        if slots == self.slots:
            return self
        return BitNetRuntime(self.model_path, **self._requested, slots=slots)

    def _warn(self, warning: str | None) -> None:
        if warning:
            self.warnings.append(warning)
            events.EVENT_LOGGER.warning("%s", warning)

    # -- checks ---------------------------------------------------------------------------

    def check_model_file(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(metadata, tensor table) of the model file; raises ModelLoadError naming the problem."""
        path = self.model_path
        if not os.path.exists(path):
            events.emit(
                "missing_artifact",
                outcome="error",
                params={"model": path},
                error=FileNotFoundError(path),
            )
            raise ModelLoadError(
                f"model file '{path}' does not exist; check --model, or make a test model with "
                "`bitnet generate-model PATH`"
            )
        if os.path.isdir(path):
            raise ModelLoadError(
                f"model path '{path}' is a directory; give the .gguf file inside it"
            )
        if not os.access(path, os.R_OK):
            raise ModelLoadError(
                f"model file '{path}' is not readable by this user; fix its permissions"
            )
        from .convert import read_tables

        return read_tables(path)

    def validate(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Everything that can be checked without loading weights; raises on the first error."""
        missing = missing_cpu_features()
        if missing:
            raise UnsupportedCPUError(
                f"this CPU lacks {', '.join(missing)}, which the installed llama.cpp libraries "
                "were compiled to use; reinstall llama-cpp-python and bitnet on this machine "
                "(pip builds them for the CPU it runs on)"
            )
        metadata, tensors = self.check_model_file()
        size = os.path.getsize(self.model_path)
        end = _data_end(tensors)
        if end > size:
            raise ModelLoadError(_truncated_message(self.model_path, end, size))
        if self.sha256:
            self._verify_sha256()
        arch = str(metadata.get("general.architecture", ""))
        if self.kernels == "bitnet" and arch not in BITNET_ARCHITECTURES:
            raise ModelLoadError(
                f"kernels 'bitnet' need BitNetEngine, but '{self.model_path}' has architecture "
                f"'{arch}', which runs on libllama; use kernels 'auto' or 'ggml'"
            )
        if self.engine == "bitnet" and arch not in BITNET_ARCHITECTURES:
            raise ModelLoadError(
                f"'{self.model_path}' has architecture '{arch}', which engine 'bitnet' does not "
                f"run (it runs {', '.join(BITNET_ARCHITECTURES)}); use engine 'auto'"
            )
        return metadata, tensors

    def _verify_sha256(self) -> None:
        """Compare the file's sha256 with the expected one, once per version of the file."""
        st = os.stat(self.model_path)
        identity = (st.st_size, st.st_mtime_ns, st.st_ino)
        if self._verified == identity:
            return
        digest = sha256_of(self.model_path)
        if digest != self.sha256:
            raise ModelLoadError(
                f"sha256 of '{self.model_path}' is {digest}, expected {self.sha256} (--sha256); "
                "the file is damaged or not the one expected: download it again"
            )
        self._verified = identity

    # -- plan -----------------------------------------------------------------------------

    def plan(self, **run_args: Any) -> RuntimePlan:
        """Validate and resolve the run (no weights are loaded); ``run_args`` (prompt,
        n_predict, temperature, seed, ...) complete the equivalent command line."""
        metadata, tensors = self.validate()
        arch = str(metadata.get("general.architecture", ""))
        engine = (
            self.engine
            if self.engine != "auto"
            else ("bitnet" if arch in BITNET_ARCHITECTURES else "llama")
        )
        n_layer = int(metadata.get(f"{arch}.block_count", 0))
        n_embd = int(metadata.get(f"{arch}.embedding_length", 0))
        n_head = int(metadata.get(f"{arch}.attention.head_count", 1)) or 1
        n_head_kv = int(metadata.get(f"{arch}.attention.head_count_kv", n_head))
        n_ctx_train = metadata.get(f"{arch}.context_length")
        kv_bytes = 2 * n_layer * self.n_ctx * (n_embd // n_head) * n_head_kv * 2  # K and V, f16
        types = sorted({t["type"] for t in tensors})
        ternary = [t for t in types if t in ("tq1_0", "tq2_0", "i2_s")]
        warnings = list(self.warnings)
        if n_ctx_train and self.n_ctx > int(n_ctx_train):
            warnings.append(
                f"n_ctx={self.n_ctx} is beyond the {n_ctx_train} tokens the model was trained on"
            )
        return RuntimePlan(
            model=self.model_path,
            architecture=arch,
            engine=engine,
            n_ctx=self.n_ctx,
            n_ctx_train=None if n_ctx_train is None else int(n_ctx_train),
            n_batch=self.n_batch,
            threads=self.threads,
            threads_batch=self.threads_batch,
            kernels=_kernel_description(engine, ternary, self.kernels),
            ternary_types=ternary,
            weights_bytes=sum(int(t["nbytes"]) for t in tensors),
            kv_cache_bytes=kv_bytes,
            command=self.command_line(**run_args),
            warnings=warnings,
        )

    def command_line(self, **run_args: Any) -> str:
        """The `bitnet run` command equivalent to this runtime (plus run_args such as prompt)."""
        parts = [
            "bitnet",
            "run",
            "--model",
            self.model_path,
            "--threads",
            str(self.threads),
            "--threads-batch",
            str(self.threads_batch),
            "--ctx-size",
            str(self.n_ctx),
            "--batch-size",
            str(self.n_batch),
        ]
        if self.engine != "auto":
            parts += ["--engine", self.engine]
        if self.kernels != "auto":
            parts += ["--kernels", self.kernels]
        for key, value in run_args.items():
            if value is not None:
                parts += [f"--{key.replace('_', '-')}", str(value)]
        return shlex.join(parts)

    def dry_run(self, **run_args: Any) -> RuntimePlan:
        """The plan, with a ``dry_run`` event; nothing is loaded."""
        t0 = time.perf_counter()
        try:
            plan = self.plan(**run_args)
        except Exception as exc:
            events.emit(
                "dry_run", outcome="error", duration_ms=_ms(t0), params=self._params(), error=exc
            )
            raise
        events.emit(
            "dry_run", outcome="ok", duration_ms=_ms(t0), params=self._params(), plan=plan.to_dict()
        )
        return plan

    # -- diagnostics ----------------------------------------------------------------------

    def diagnostics(self, *, check_sha256: bool | None = None) -> Diagnostics:
        """Report on the extension, the CPU, memory and the model file; never raises for a
        problem it can describe (see ``problems``). The file's sha256 is computed when an
        expected one was given, or when ``check_sha256`` is true."""
        return diagnose(self, check_sha256=check_sha256)

    # -- running --------------------------------------------------------------------------

    def load(self, *, seed: int | None = None) -> Model:
        """Validate, then load the model (one ``model_load`` event)."""
        t0 = time.perf_counter()
        try:
            self.validate()
            model = Model(
                self.model_path,
                n_ctx=self.n_ctx,
                n_threads=self.threads,
                n_threads_batch=self.threads_batch,
                n_batch=self.n_batch,
                seed=seed,
                use_mmap=self.use_mmap,
                engine=self.engine,
                kernels=self.kernels,
            )
        except Exception as exc:
            events.emit(
                "model_load", outcome="error", duration_ms=_ms(t0), params=self._params(), error=exc
            )
            raise
        events.emit(
            "model_load",
            outcome="ok",
            duration_ms=_ms(t0),
            params=self._params(),
            engine=model.engine,
            kernels=model.kernels,
            architecture=model.architecture,
        )
        return model

    def generate(
        self, model: Model, prompt: str | Sequence[int], **sampling: Any
    ) -> GenerationResult:
        """model.generate with one ``generation`` event (outcome, tokens, speeds)."""
        return run_generation(model, lambda: model.generate(prompt, **sampling), sampling)

    def _params(self) -> dict[str, Any]:
        return {
            "model": self.model_path,
            "threads": self.threads,
            "threads_batch": self.threads_batch,
            "n_ctx": self.n_ctx,
            "n_batch": self.n_batch,
            "engine": self.engine,
            "kernels": self.kernels,
        }


def run_generation(model: Model, call: Any, sampling: Mapping[str, Any]) -> GenerationResult:
    """Run `call` (which returns a GenerationResult) and emit its ``generation`` event."""
    t0 = time.perf_counter()
    params = {"model": model.path, **{k: v for k, v in sampling.items() if k != "stop"}}
    try:
        result = call()  # the model validates the sampling arguments itself
    except (KeyboardInterrupt, BrokenPipeError) as exc:  # the user or the reader stopped it
        events.emit(
            "generation", outcome="cancelled", duration_ms=_ms(t0), params=params, error=exc
        )
        raise
    except Exception as exc:
        events.emit("generation", outcome="error", duration_ms=_ms(t0), params=params, error=exc)
        raise
    events.emit(
        "generation",
        outcome="ok" if result.finish_reason != "abort" else "abort",
        duration_ms=_ms(t0),
        params=params,
        finish_reason=result.finish_reason,
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        prompt_tokens_per_second=round(result.timings.prompt_tokens_per_second, 2),
        generation_tokens_per_second=round(result.timings.generation_tokens_per_second, 2),
    )
    return result


def diagnose(runtime: BitNetRuntime | None, *, check_sha256: bool | None = None) -> Diagnostics:
    """Diagnostics of the machine, and of ``runtime``'s model and settings when given."""
    build = dict(_core.build_info())
    compiled = compiled_cpu_features()
    flags = cpu_flags()
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
            "bitnet_kernel": _core.kernel_name(),
            "bitnet_kernels_available": list(_core.available_kernels()),
        },
        problems=problems,
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
    end = _data_end(tensors)
    info.update(
        gguf=True,
        architecture=arch,
        engine=engine,
        n_tensors=len(tensors),
        tensor_types=types,
        data_end_bytes=end,
    )
    if end > info["size_bytes"]:
        problems.append(
            Problem(
                "error",
                "model_truncated",
                _truncated_message(path, end, info["size_bytes"]),
            )
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
    ours = _core.kernel_name()
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


def checked_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an integer in [low, high], else ValueError naming ``name`` and the
    range (also used for the server's and the CLI's settings)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _data_end(tensors: list[dict[str, Any]]) -> int:
    """The byte where the last tensor's data ends."""
    return max((int(t["offset"]) + int(t["nbytes"]) for t in tensors), default=0)


def _truncated_message(path: str, end: int, size: int) -> str:
    return (
        f"'{path}' is truncated: its tensors end at byte {end} but the file has {size}; "
        "re-download or re-generate it"
    )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
