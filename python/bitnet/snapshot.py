"""Offline snapshots of a machine, and the drift between two of them.

``bitnet snapshot -o SNAP.json`` writes one JSON document (:data:`SNAPSHOT_SCHEMA`) describing
this machine as bitnet sees it: bitnet, llama.cpp and ggml versions, CPU and accelerator facts,
every model file given (size and sha256), the bootstrapper's state file, the diagnostics report,
bitnet's settings (``BITNET_*`` environment variables, and a server's settings when one is
asked), and the current metrics of a server (``--server URL``). Nothing needs a network except
that optional server.

:func:`compare_snapshots` lists what differs between two snapshots (an edge device and its
reference, or one device last week and today): checksum mismatches, version differences, models
missing or extra, changed settings, other CPUs or accelerators, and bootstrap stages that
differ. ``bitnet dashboard --offline SNAP.json --compare OTHER.json`` shows it; ``bitnet snapshot
--compare A.json B.json`` prints it (exit code 1 when anything drifted).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import events
from .formats.cache import sha256_of
from .version import version

__all__ = [
    "SNAPSHOT_SCHEMA",
    "Drift",
    "compare_snapshots",
    "load_snapshot",
    "take_snapshot",
]

SNAPSHOT_SCHEMA = "bitnet.snapshot/1"
MODEL_SUFFIXES = (".gguf",)


def take_snapshot(
    models: Sequence[str | os.PathLike[str]] = (),
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    server: str | None = None,
    api_key: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """A snapshot of this machine. ``models``: model files, or folders whose ``*.gguf`` files
    (recursively) are listed by their path inside the folder; ``cache_dir``: the bootstrapper's
    cache folder (its ``bootstrap-state.json`` is included); ``server``: a running ``bitnet
    serve`` whose ``/metrics`` and ``/telemetry/stats`` are included (``api_key`` if it has
    keys). A server that cannot be reached is recorded as an error, not raised."""
    from .runtime.diagnostics import diagnose

    t0 = time.perf_counter()
    diagnostics = diagnose(None).to_dict()
    build = diagnostics["bitnet"]
    snap: dict[str, Any] = {
        "schema": SNAPSHOT_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {
            "bitnet": version(),
            "llama_cpp": build["llama_cpp"],
            "ggml": build["ggml_version"],
            "ggml_commit": build["ggml_commit"],
        },
        "cpu": diagnostics["cpu"],
        "accelerators": diagnostics["accelerators"],  # devices, gpu_offload, backend_devices
        "models": _models(models),
        "bootstrap": _bootstrap(cache_dir),
        "diagnostics": diagnostics,
        "settings": {
            "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("BITNET_")},
        },
        "metrics": None,
    }
    if server is not None:
        snap["metrics"], server_settings = _server(server, api_key, timeout)
        if server_settings is not None:
            snap["settings"]["server"] = server_settings
    events.emit(
        "snapshot",
        outcome="ok",
        duration_ms=(time.perf_counter() - t0) * 1000,
        models=len(snap["models"]),
        server=server,
    )
    return snap


def _models(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in MODEL_SUFFIXES and p.is_file())
            pairs = [(p.relative_to(path).as_posix(), p) for p in files]
        elif path.is_file():
            pairs = [(path.name, path)]
        else:
            raise FileNotFoundError(
                f"model path '{path}' does not exist (give model files or folders of them)"
            )
        for name, file in pairs:
            info = file.stat()
            out[name] = {
                "name": name,
                "path": str(file.resolve()),
                "size_bytes": info.st_size,
                "sha256": sha256_of(file),
                "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.st_mtime)),
            }
    return [out[k] for k in sorted(out)]


def _bootstrap(cache_dir: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    from .deploy.bootstrap import STATE_FILE

    if cache_dir is None:
        return None
    path = Path(cache_dir) / STATE_FILE
    try:
        return {"path": str(path), "state": json.loads(path.read_text())}
    except FileNotFoundError:
        return {"path": str(path), "state": None, "error": "no state file (setup never ran here)"}
    except (OSError, ValueError) as exc:
        return {"path": str(path), "state": None, "error": f"unreadable: {exc}"}


def _server(
    url: str, api_key: str | None, timeout: float
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base = url.rstrip("/")
    metrics: dict[str, Any] = {"server": base}
    settings = None
    try:
        metrics["prometheus"] = _get(base + "/metrics", headers, timeout).decode()
        stats = json.loads(_get(base + "/telemetry/stats", headers, timeout))
        metrics["stats"] = stats
        s = stats.get("server", {})
        settings = {k: s.get(k) for k in ("model_id", "parallel", "queue", "timeout", "grace")}
    except (OSError, ValueError) as exc:
        metrics["error"] = f"{type(exc).__name__}: {exc}"
    return metrics, settings


def _get(url: str, headers: dict[str, str], timeout: float) -> bytes:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.read()
    except urllib.error.HTTPError as exc:
        hint = " (give --api-key)" if exc.code == 401 else ""
        raise OSError(f"{url}: HTTP {exc.code}{hint}") from None


def load_snapshot(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A snapshot file, checked: a missing file, text that is not JSON or JSON that is not a
    bitnet snapshot are errors that say so."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"snapshot '{path}' does not exist (write one with `bitnet snapshot -o {path}`)"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a snapshot (not JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SNAPSHOT_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} is not a {SNAPSHOT_SCHEMA} document (schema {found!r}); write one with "
            "`bitnet snapshot`"
        )
    return data


@dataclass(frozen=True)
class Drift:
    """One difference between two snapshots. ``kind``: ``checksum``, ``size``,
    ``missing_model``, ``extra_model``, ``version``, ``setting``, ``cpu``, ``accelerator`` or
    ``bootstrap``; ``severity``: ``error`` (the device does not run what the reference runs),
    ``warning`` or ``info``."""

    kind: str
    key: str
    before: Any
    after: Any
    severity: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.severity.upper():7} {self.kind:13} {self.key}"
        return f"{where}: {self.before!r} -> {self.after!r}"


def compare_snapshots(before: dict[str, Any], after: dict[str, Any]) -> list[Drift]:
    """What changed from ``before`` (the reference) to ``after``, most severe first."""
    out: list[Drift] = []
    a_models = {m["name"]: m for m in before.get("models", [])}
    b_models = {m["name"]: m for m in after.get("models", [])}
    for name in sorted(a_models.keys() | b_models.keys()):
        a, b = a_models.get(name), b_models.get(name)
        if b is None:
            out.append(Drift("missing_model", name, a["sha256"], None, "error"))
        elif a is None:
            out.append(Drift("extra_model", name, None, b["sha256"], "warning"))
        elif a["sha256"] != b["sha256"]:
            out.append(Drift("checksum", name, a["sha256"], b["sha256"], "error"))
            if a["size_bytes"] != b["size_bytes"]:
                out.append(Drift("size", name, a["size_bytes"], b["size_bytes"], "info"))
    out += _dict_drift("version", before.get("versions", {}), after.get("versions", {}), "warning")
    a_set, b_set = before.get("settings", {}), after.get("settings", {})
    for section in sorted(a_set.keys() ^ b_set.keys()):  # e.g. a server asked in one of them
        where = "the first" if section in a_set else "the second"
        out.append(Drift("setting", section, f"only in {where} snapshot", None, "info"))
    shared = a_set.keys() & b_set.keys()
    out += _dict_drift(
        "setting",
        _flat({k: a_set[k] for k in shared}),
        _flat({k: b_set[k] for k in shared}),
        "warning",
    )
    cpu_keys = ("model", "arch", "physical_cores", "features")
    out += _dict_drift(
        "cpu",
        {k: before.get("cpu", {}).get(k) for k in cpu_keys},
        {k: after.get("cpu", {}).get(k) for k in cpu_keys},
        "info",
    )
    out += _dict_drift(
        "accelerator",
        {
            "devices": _names(before),
            "gpu_offload": before.get("accelerators", {}).get("gpu_offload"),
        },
        {"devices": _names(after), "gpu_offload": after.get("accelerators", {}).get("gpu_offload")},
        "info",
    )
    out += _dict_drift("bootstrap", _stages(before), _stages(after), "warning")
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda d: order[d.severity])


def _dict_drift(kind: str, a: dict[str, Any], b: dict[str, Any], severity: str) -> list[Drift]:
    return [
        Drift(kind, key, a.get(key), b.get(key), severity)
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key)
    ]


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _names(snap: dict[str, Any]) -> list[str]:
    return [str(d.get("name")) for d in snap.get("accelerators", {}).get("devices", [])]


def _stages(snap: dict[str, Any]) -> dict[str, Any]:
    """Per bootstrap stage that finished: the checksums among its outputs (what it produced), or
    "done" when it records none."""
    state = (snap.get("bootstrap") or {}).get("state") or {}
    out: dict[str, Any] = {}
    for name, record in (state.get("stages") or {}).items():
        if isinstance(record, dict):
            sums = sorted(set(_checksums(record.get("outputs"))))
            out[name] = sums or "done"
    return out


def _checksums(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _checksums(v)
    elif isinstance(value, list):
        for v in value:
            yield from _checksums(v)
    elif (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    ):
        yield value


def drift_counts(drift: Iterable[Drift]) -> dict[str, int]:
    """How many differences of each severity."""
    counts = {"error": 0, "warning": 0, "info": 0}
    for d in drift:
        counts[d.severity] += 1
    return counts
