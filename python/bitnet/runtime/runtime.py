"""BitNetRuntime: resolve, check and run one model in-process.

The runtime resolves everything a run needs (model facts, threads, context, batch, kernels,
memory) without loading weights, says precisely what is wrong when something is, and then
loads and runs the model, with one structured event per load and generation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import events
from ..accelerators import backend_choice, detect_accelerators
from ..cpu import CpuTopology, detect_cpu_topology, missing_cpu_features, resolve_threads
from ..errors import ModelLoadError, UnsupportedCPUError
from ..formats.cache import sha256_of
from ..formats.gguf import BITNET_ARCHITECTURES
from ..model import GenerationResult, Model
from ..options import MAX_SEQUENCES, LoadOptions, SamplingOptions, checked_int
from .diagnostics import Diagnostics, _kernel_description, diagnose

__all__ = ["PLAN_SCHEMA", "BitNetRuntime", "RuntimePlan", "run_generation"]

PLAN_SCHEMA = "bitnet.plan/1"


@dataclass(frozen=True)
class RuntimePlan:
    """Everything a run resolves to, before any weight is loaded."""

    model: str
    architecture: str
    engine: str
    n_ctx: int
    n_ctx_train: int | None
    n_batch: int
    n_seq: int
    threads: int
    threads_batch: int
    kernels: str
    ternary_types: list[str]
    weights_bytes: int
    kv_cache_bytes: int  # every sequence at n_ctx (BitNetEngine's grows with use up to this)
    command: str
    warnings: list[str] = field(default_factory=list)
    # Where it runs: "cpu" or "gpu" (libllama's offload of n_gpu_layers), why, and the
    # accelerators this machine has (bitnet.accelerators).
    backend: str = "cpu"
    backend_reason: str = ""
    n_gpu_layers: int = 0
    accelerators: list[str] = field(default_factory=list)

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
            f"sequences    {self.n_seq} generated together (continuous batching), each up to "
            f"{self.n_ctx} tokens",
            f"threads      {self.threads} generation, {self.threads_batch} prompt",
            f"kernels      {self.kernels}",
            f"backend      {self.backend}: {self.backend_reason}",
            f"memory       {_size(self.memory_bytes)} = weights {_size(self.weights_bytes)} "
            f"(memory-mapped; our kernels repack the ternary ones) + KV cache "
            f"{_size(self.kv_cache_bytes)} "
            f"({self.n_seq} x {_size(self.kv_cache_bytes // self.n_seq)})",
            f"command      {self.command}",
        ]
        lines += [f"warning      {w}" for w in self.warnings]
        return "\n".join(lines)


class BitNetRuntime:
    """Resolve, check and run one model in-process.

    Arguments:
        model: path of the GGUF file.
        options: a :class:`bitnet.options.LoadOptions`; its fields may also be given as
            keywords (``n_ctx``, ``n_batch``, ``n_threads``, ``n_threads_batch``, ``engine``,
            ``kernels``, ``use_mmap``, ``n_seq``, ``seed``). Thread counts are ``"auto"`` (one
            per usable physical core) or a number, clamped to the CPUs this process may use,
            with a warning. ``threads``/``threads_batch`` are the older
            names of ``n_threads``/``n_threads_batch`` and still accepted.
        sha256: expected checksum of the model file, checked by :meth:`validate` (so by
            :meth:`load` and :meth:`dry_run` too) and by :meth:`diagnostics`.
        slots: generations that will run at once (the supervisor's ``max_concurrency``, the
            server's ``--parallel``): sequences of the one model, which decodes them together
            on every core. It sets ``n_seq`` unless that is given.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        options: LoadOptions | None = None,
        *,
        sha256: str | None = None,
        topology: CpuTopology | None = None,
        slots: int = 1,
        **load: Any,
    ) -> None:
        for old, new in (("threads", "n_threads"), ("threads_batch", "n_threads_batch")):
            if old in load:
                load[new] = load.pop(old)
        self.model_path = os.fspath(model)
        self.topology = topology or detect_cpu_topology()
        self.slots = checked_int("slots", slots, 1, MAX_SEQUENCES)
        requested = LoadOptions.with_flags(**(options or LoadOptions()).to_dict() | load)
        self._requested = requested
        self.warnings: list[str] = []
        # One model decodes every slot's sequence in the same batches: it gets every core.
        self.threads, warning = resolve_threads(requested.n_threads, self.topology, name="threads")
        self._warn(warning)
        self.threads_batch, warning = resolve_threads(
            self.threads if requested.n_threads_batch is None else requested.n_threads_batch,
            self.topology,
            name="threads_batch",
        )
        self._warn(warning)
        # What the model is loaded with: the requested settings, thread counts resolved.
        self.options = dataclasses.replace(
            requested,
            n_threads=self.threads,
            n_threads_batch=self.threads_batch,
            n_seq=requested.n_seq or (self.slots if self.slots > 1 else 0),
        )
        if self.options.n_seq and self.options.n_seq < self.slots:
            raise ValueError(
                f"n_seq={self.options.n_seq} is fewer than the {self.slots} generations that "
                "run at once (slots / max_concurrency / --parallel); raise n_seq or leave it 0"
            )
        if sha256 is not None and not (
            isinstance(sha256, str) and len(sha256) == 64 and _is_hex(sha256)
        ):
            raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
        self.sha256 = sha256.lower() if sha256 else None
        self._verified: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) checked

    @property
    def n_ctx(self) -> int:
        return self.options.n_ctx

    @property
    def n_batch(self) -> int:
        return self.options.n_batch

    @property
    def engine(self) -> str:
        return self.options.engine

    @property
    def kernels(self) -> str:
        return self.options.kernels

    @property
    def use_mmap(self) -> bool:
        return self.options.use_mmap

    @property
    def n_seq(self) -> int:
        """Sequences the model will hold (0: the engine's default, see :func:`default_n_seq`)."""
        return self.options.n_seq

    def for_slots(self, slots: int) -> BitNetRuntime:
        """The same settings for ``slots`` generations at once (sequences of one model)."""
        if slots == self.slots:
            return self
        return BitNetRuntime(
            self.model_path,
            self._requested,
            sha256=self.sha256,
            topology=self.topology,
            slots=slots,
        )

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
        from ..formats.gguf import read_tables

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
        metadata, tensors = self.check_model_file()  # ModelTruncatedError for a cut file
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
        n_seq = self.n_seq or default_n_seq(engine)
        # K and V, f16, per sequence
        kv_bytes = n_seq * 2 * n_layer * self.n_ctx * (n_embd // n_head) * n_head_kv * 2
        types = sorted({t["type"] for t in tensors})
        ternary = [t for t in types if t in ("tq1_0", "tq2_0", "i2_s")]
        warnings = list(self.warnings)
        accelerators = detect_accelerators()
        choice = backend_choice(
            engine, self.options.n_gpu_layers, accelerators, n_layer=n_layer or None
        )
        if choice.warning:
            warnings.append(choice.warning)
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
            n_seq=n_seq,
            threads=self.threads,
            threads_batch=self.threads_batch,
            kernels=_kernel_description(engine, ternary, self.kernels),
            ternary_types=ternary,
            weights_bytes=sum(int(t["nbytes"]) for t in tensors),
            kv_cache_bytes=kv_bytes,
            command=self.command_line(**run_args),
            warnings=warnings,
            backend=choice.backend,
            backend_reason=choice.reason,
            n_gpu_layers=self.options.n_gpu_layers,
            accelerators=[str(a) for a in accelerators],
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
        if self.options.n_gpu_layers:
            parts += ["--n-gpu-layers", str(self.options.n_gpu_layers)]
        for key, value in run_args.items():
            if isinstance(value, SamplingOptions):  # its flags, where they differ from defaults
                parts += value.cli_args()
            elif value is not None:
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
            model = Model(self.model_path, self.options, seed=seed)
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
        self,
        model: Model,
        prompt: str | Sequence[int],
        options: SamplingOptions | None = None,
        **sampling: Any,
    ) -> GenerationResult:
        """model.generate with one ``generation`` event (outcome, tokens, speeds)."""
        requested = {**(options.to_dict() if options else {}), **sampling}
        return run_generation(model, lambda: model.generate(prompt, options, **sampling), requested)

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


def run_generation(
    model: Model, call: Any, sampling: SamplingOptions | Mapping[str, Any]
) -> GenerationResult:
    """Run `call` (which returns a GenerationResult) and emit its ``generation`` event."""
    t0 = time.perf_counter()
    values = sampling.to_dict() if isinstance(sampling, SamplingOptions) else dict(sampling)
    params = {"model": model.path, **{k: v for k, v in values.items() if k != "stop"}}
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


def default_n_seq(engine: str) -> int:
    """The sequences a model holds when n_seq is 0: 4 on BitNetEngine (its cache pages are
    touched only as sequences grow), 1 on libllama (which commits its whole cache at load).
    Mirrors csrc/model/model.cpp; tests/test_batching.py checks that they agree."""
    return 4 if engine == "bitnet" else 1


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
