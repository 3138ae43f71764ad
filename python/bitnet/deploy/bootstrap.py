"""Bootstrapper: from nothing to a verified, warmed-up model, idempotently.

    python setup_env.py --model-dir /models --hf-repo microsoft/BitNet-b1.58-2B-4T \\
        --cache-dir /var/cache/bitnet [--from PATH] [--clean]

(also ``bitnet setup ...``). Five stages run in order:

1. ``environment``: Python, the native extension, the CPU's features, free disk space;
2. ``acquire``: the model from ``--from PATH`` (a GGUF file or a Hugging Face checkpoint folder,
   for offline devices) or else from the Hugging Face hub (``huggingface_hub``, resumable,
   downloads kept under the cache dir);
3. ``convert``: to the fast format (TQ2_0 ternary weights, see docs/formats.md) in the model dir;
4. ``verify``: the converted file's tables, shapes and checksum;
5. ``warmup``: load it and generate a few tokens (its speed is recorded).

Each finished stage is recorded with its inputs, outputs and checksums in
``<cache-dir>/bootstrap-state.json`` (default ``.cache/bitnet/bootstrap-state.json``): a rerun skips
a stage whose inputs are unchanged and whose outputs are still there, and redoes a stage (and
the ones after it) when its inputs changed. An interrupted stage is not recorded, so the next run
redoes it. ``--clean`` deletes the state and what the stages produced, then starts over. pip
(when it has to install ``huggingface_hub``) caches under ``<cache-dir>/pip``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BootstrapError
from ..formats.cache import sha256_of

__all__ = ["STAGES", "BootstrapError", "Bootstrapper", "main"]

STAGES = ("environment", "acquire", "convert", "verify", "warmup")
STATE_FILE = "bootstrap-state.json"
STATE_SCHEMA = "bitnet.bootstrap/1"
DEFAULT_REPO = "microsoft/BitNet-b1.58-2B-4T"
_log = logging.getLogger("bitnet.bootstrap")


def _files(path: Path) -> list[Path]:
    """A file, or every file of a folder, sorted."""
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def _checksums(path: Path) -> dict[str, str]:
    """sha256 of a file, or of every file of a folder (relative names; hub bookkeeping in .cache
    left out)."""
    if path.is_file():
        return {path.name: sha256_of(path)}
    return {
        str(p.relative_to(path)): sha256_of(p)
        for p in _files(path)
        if ".cache" not in p.relative_to(path).parts
    }


def _float_head(src: Path) -> bool:
    """Whether a model's embedding/output head is F16/F32 (a checkpoint folder's always is)."""
    if src.is_dir():
        return True
    from ..formats.convert import has_float_head
    from ..formats.gguf import read_gguf

    try:
        return has_float_head(read_gguf(src))
    except OSError:
        return False  # the conversion says what is wrong with the file


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Bootstrapper:
    """The stages for one model. ``source`` (a local file or folder) wins over ``hf_repo``."""

    model_dir: Path
    cache_dir: Path = Path(".cache/bitnet")
    hf_repo: str | None = DEFAULT_REPO
    source: Path | None = None
    ternary_type: str = "tq2_0"
    head: str = "q6_k"  # an F16/F32 embedding/output head becomes Q6_K; "keep": as it is
    warmup_tokens: int = 8
    min_free_gb: float = 1.0
    echo: Callable[[str], None] = print
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        self.cache_dir = Path(self.cache_dir)
        self.source = Path(self.source) if self.source is not None else None
        if self.source is None and not self.hf_repo:
            raise BootstrapError("give a model: --from PATH (offline) or --hf-repo REPO")
        if self.ternary_type not in ("tq2_0", "tq1_0", "i2_s"):
            raise BootstrapError(f"--type must be tq2_0, tq1_0 or i2_s, got {self.ternary_type!r}")
        if self.head not in ("q6_k", "keep"):
            raise BootstrapError(f"--head must be q6_k or keep, got {self.head!r}")

    # -- state ------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.cache_dir / STATE_FILE

    def load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, json.JSONDecodeError) as exc:
            self.echo(f"ignoring an unreadable state file {self.state_path} ({exc}); starting over")
            data = {}
        if data.get("schema") != STATE_SCHEMA:
            data = {"schema": STATE_SCHEMA, "stages": {}}
        self.state = data
        return data

    def _save_state(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_path)

    def clean(self) -> None:
        """Forget every stage and delete what they produced (downloads, converted files)."""
        self.load_state()
        for record in self.state.get("stages", {}).values():
            for produced in record.get("produced", []):
                path = Path(produced)
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists():
                    path.unlink()
        if self.state_path.exists():
            self.state_path.unlink()
        self.state = {"schema": STATE_SCHEMA, "stages": {}}
        self.echo(f"clean: removed {self.state_path} and the stages' outputs")

    # -- running ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run every stage that is not already done; returns the state."""
        self.load_state()
        previous: dict[str, Any] = {}
        for name in STAGES:
            stage = getattr(self, f"_stage_{name}")
            inputs = stage(None, previous)  # inputs only
            record = self.state["stages"].get(name)
            if record and record.get("inputs") == inputs and self._still_valid(record):
                self.echo(f"[{name}] up to date (finished {record['finished_at']})")
            else:
                why = "inputs changed" if record else "not done yet"
                self.echo(f"[{name}] running ({why})")
                t0 = time.perf_counter()
                outputs, produced = stage(inputs, previous)
                record = {
                    "inputs": inputs,
                    "outputs": outputs,
                    "produced": [str(p) for p in produced],
                    "finished_at": _now(),
                    "seconds": round(time.perf_counter() - t0, 3),
                }
                self.state["stages"][name] = record
                # Later stages depended on this one's old outputs.
                for later in STAGES[STAGES.index(name) + 1 :]:
                    self.state["stages"].pop(later, None)
                self._save_state()
            previous[name] = record["outputs"]
        return self.state

    @staticmethod
    def _still_valid(record: dict[str, Any]) -> bool:
        files = record.get("outputs", {}).get("files", {})
        return all(
            Path(path).exists() and Path(path).stat().st_size == size
            for path, size in files.items()
        )

    # Each stage is called twice: with inputs=None it returns its inputs (cheap, used to decide
    # whether to run); with inputs it does the work and returns (outputs, produced paths).

    def _stage_environment(self, inputs: dict[str, Any] | None, prev: dict[str, Any]) -> Any:
        from ..version import version

        if inputs is None:
            return {
                "python": platform.python_version(),
                "bitnet": version(),
                "machine": platform.machine(),
            }
        from ..cpu import cpu_flags, missing_cpu_features

        missing = missing_cpu_features()
        if missing:
            raise BootstrapError(
                f"this CPU lacks {', '.join(missing)}, which the installed llama.cpp libraries "
                "were compiled for; reinstall llama-cpp-python and bitnet on this machine"
            )
        self.model_dir.mkdir(parents=True, exist_ok=True)
        free_gb = shutil.disk_usage(self.model_dir).free / 2**30
        if free_gb < self.min_free_gb:
            raise BootstrapError(
                f"only {free_gb:.1f} GiB free in {self.model_dir}; the model needs about "
                f"{self.min_free_gb:.1f} GiB (free space or pick another --model-dir)"
            )
        from ..kernels import kernel_name

        flags = cpu_flags()
        return {
            "free_gb": round(free_gb, 1),
            "kernel": kernel_name(),
            "cpu_features": sorted(
                f for f in ("avx2", "avx512f", "avx512_vnni", "asimd") if f in flags
            ),
        }, []

    def _stage_acquire(self, inputs: dict[str, Any] | None, prev: dict[str, Any]) -> Any:
        if inputs is None:
            if self.source is not None:
                src = self.source
                if not src.exists():
                    raise BootstrapError(f"--from {src}: no such file or folder")
                files = _files(src)
                return {
                    "from": str(src.resolve()),
                    "files": {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in files},
                }
            return {"hf_repo": self.hf_repo}
        if self.source is not None:
            path = self.source.resolve()
            produced: list[Path] = []
        else:
            path = self._download(str(self.hf_repo))
            produced = [self.cache_dir / "hf"]
        model = _pick_model(path)
        sums = _checksums(model)
        return {"path": str(model), "sha256": sums, "files": _sizes(model)}, produced

    def _download(self, repo: str) -> Path:
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            self._pip_install("huggingface_hub>=0.24")
            from huggingface_hub import snapshot_download
        try:
            folder = snapshot_download(
                repo_id=repo,
                cache_dir=str(self.cache_dir / "hf"),
                allow_patterns=["*.gguf", "*.safetensors", "*.json", "tokenizer*"],
            )
        except Exception as exc:  # the hub's errors vary by version: offline, 404, auth, ...
            raise BootstrapError(
                f"cannot download {repo} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
                "On an offline device copy the model (a .gguf file or a checkpoint folder) to it "
                "and pass --from PATH"
            ) from exc
        return Path(folder)

    def _pip_install(self, requirement: str) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--cache-dir",
            str(self.cache_dir / "pip"),
            requirement,
        ]
        self.echo(
            "installing " + requirement + " (pip cache in " + str(self.cache_dir / "pip") + ")"
        )
        if subprocess.run(cmd, check=False).returncode != 0:
            raise BootstrapError(
                f"cannot install {requirement} with pip; install it by hand or pass --from PATH"
            )

    def _stage_convert(self, inputs: dict[str, Any] | None, prev: dict[str, Any]) -> Any:
        acquired = prev["acquire"]
        if inputs is None:
            return {"sha256": acquired["sha256"], "type": self.ternary_type, "head": self.head}
        from ..formats.convert import convert

        src = Path(acquired["path"])
        stem = src.stem if src.is_file() else src.name
        stem = stem.removesuffix("-i2_s").removesuffix(".gguf") or "model"
        dst = self.model_dir / f"{stem}-{self.ternary_type}.gguf"
        embedding = "q6_k" if self.head == "q6_k" and _float_head(src) else "keep"
        if embedding == "q6_k":
            self.echo("the F16 embedding/output head becomes Q6_K (--head keep keeps it, exact)")
        try:
            convert(src, dst, type=self.ternary_type, embedding_type=embedding)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            raise BootstrapError(f"cannot convert {src}: {exc}") from exc
        return {"path": str(dst), "sha256": sha256_of(dst), "files": _sizes(dst)}, [dst]

    def _stage_verify(self, inputs: dict[str, Any] | None, prev: dict[str, Any]) -> Any:
        converted = prev["convert"]
        if inputs is None:
            return {"sha256": converted["sha256"]}
        from ..runtime.runtime import BitNetRuntime

        path = Path(converted["path"])
        got = sha256_of(path)
        if got != converted["sha256"]:
            raise BootstrapError(
                f"{path} changed since it was converted (sha256 {got}); rerun with --clean"
            )
        try:
            metadata, tensors = BitNetRuntime(path, threads=1).validate()
        except Exception as exc:
            raise BootstrapError(f"{path} does not verify: {exc}") from exc
        return {
            "architecture": metadata.get("general.architecture"),
            "tensors": len(tensors),
            "files": _sizes(path),
        }, []

    def _stage_warmup(self, inputs: dict[str, Any] | None, prev: dict[str, Any]) -> Any:
        path = prev["convert"]["path"]
        if inputs is None:
            return {"sha256": prev["convert"]["sha256"], "tokens": self.warmup_tokens}
        from ..model import Model

        with Model(path, n_ctx=128) as model:
            result = model.generate("Hello", max_tokens=self.warmup_tokens, temperature=0, seed=0)
            return {
                "engine": model.engine,
                "kernels": model.kernels,
                "tokens": len(result.tokens),
                "tokens_per_second": round(result.timings.generation_tokens_per_second, 2),
            }, []


def _sizes(path: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in _files(path)}


def _pick_model(path: Path) -> Path:
    """The model inside what was acquired: a GGUF file or a checkpoint folder."""
    from ..formats.hf import is_checkpoint_folder

    if path.is_file():
        if path.suffix != ".gguf":
            raise BootstrapError(
                f"{path} is not a .gguf file; pass a GGUF file or a checkpoint folder"
            )
        return path
    if is_checkpoint_folder(path):
        return path
    ggufs = sorted(path.rglob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    if len(ggufs) > 1:
        i2s = [p for p in ggufs if "i2_s" in p.name.lower()]
        if len(i2s) == 1:
            return i2s[0]
        raise BootstrapError(
            f"{path} holds several GGUF files ({', '.join(p.name for p in ggufs)}); pass one"
        )
    raise BootstrapError(
        f"{path} holds neither a GGUF file nor a Hugging Face checkpoint "
        "(config.json + *.safetensors)"
    )


def build_parser(prog: str = "setup_env.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Set up a BitNet model: environment check, acquisition, conversion to the "
        "fast format, verification, warm-up; finished stages are skipped on a rerun.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir", required=True, type=Path, help="where the converted model goes"
    )
    parser.add_argument(
        "--hf-repo", default=DEFAULT_REPO, help=f"Hugging Face repository (default {DEFAULT_REPO})"
    )
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=None,
        help="local GGUF file or checkpoint folder instead of the hub (offline devices)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(".cache/bitnet"),
        help="state file, hub downloads and pip cache (default .cache/bitnet)",
    )
    parser.add_argument(
        "--type", dest="ternary_type", default="tq2_0", choices=["tq2_0", "tq1_0", "i2_s"]
    )
    parser.add_argument(
        "--head",
        default="q6_k",
        choices=["q6_k", "keep"],
        help="an F16 embedding/output head becomes Q6_K (default: near-lossless, 2.6x fewer "
        "bytes read per token) or stays as it is (keep: exact)",
    )
    parser.add_argument(
        "--clean", action="store_true", help="delete the state and outputs, start over"
    )


def run_from_args(args: argparse.Namespace) -> int:
    try:
        boot = Bootstrapper(
            model_dir=args.model_dir,
            cache_dir=args.cache_dir,
            hf_repo=args.hf_repo,
            source=args.source,
            ternary_type=args.ternary_type,
            head=args.head,
        )
        if args.clean:
            boot.clean()
        state = boot.run()
    except BootstrapError as exc:
        print(f"setup: error: {exc}", file=sys.stderr)
        return 1
    model = state["stages"]["convert"]["outputs"]["path"]
    print(f"setup: done; model ready at {model}")
    print(f"  try: bitnet run --model {model} -p 'Hello'")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))
