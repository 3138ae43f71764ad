"""BitNetRuntime: threads, validation, dry run, diagnostics, events (real engine, no mocks)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

import bitnet
from bitnet.events import JsonLinesFormatter
from bitnet.runtime import (
    BitNetRuntime,
    CpuTopology,
    detect_cpu_topology,
    resolve_threads,
)


def fake_sysfs(root: Path, cores: dict[int, tuple[int, int]]) -> Path:
    """cpu -> (package, core) topology files, as Linux lays them out."""
    for cpu, (package, core) in cores.items():
        topo = root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    return root


def test_hyperthreads_are_counted_once(tmp_path: Path):
    # 4 CPUs = 2 cores x 2 hyper-threads; this process may use all of them.
    sysfs = fake_sysfs(tmp_path / "cpu", {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})
    topo = detect_cpu_topology(
        affinity={0, 1, 2, 3}, sysfs_cpu=sysfs, cgroup_root=tmp_path / "none"
    )
    assert (topo.available_cpus, topo.physical_cores, topo.usable_cores) == (4, 2, 2)
    assert resolve_threads("auto", topo) == (2, None)


def test_affinity_is_respected(tmp_path: Path):
    sysfs = fake_sysfs(tmp_path / "cpu", {i: (0, i) for i in range(8)})
    topo = detect_cpu_topology(affinity={2, 5}, sysfs_cpu=sysfs, cgroup_root=tmp_path / "none")
    assert (topo.available_cpus, topo.physical_cores) == (2, 2)
    threads, warning = resolve_threads(6, topo)
    assert threads == 2 and "more than the 2 CPUs" in warning


@pytest.mark.parametrize(
    ("cpu_max", "usable"), [("150000 100000", 1), ("250000 100000", 2), ("max 100000", 4)]
)
def test_cgroup_v2_quota(tmp_path: Path, cpu_max: str, usable: int):
    sysfs = fake_sysfs(tmp_path / "cpu", {i: (0, i) for i in range(4)})
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text(cpu_max + "\n")
    topo = detect_cpu_topology(affinity={0, 1, 2, 3}, sysfs_cpu=sysfs, cgroup_root=cgroup)
    assert topo.usable_cores == usable


def test_cgroup_v1_quota(tmp_path: Path):
    sysfs = fake_sysfs(tmp_path / "cpu", {i: (0, i) for i in range(4)})
    (tmp_path / "cg" / "cpu").mkdir(parents=True)
    (tmp_path / "cg" / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cg" / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    topo = detect_cpu_topology(affinity={0, 1, 2, 3}, sysfs_cpu=sysfs, cgroup_root=tmp_path / "cg")
    assert topo.cgroup_cpu_limit == 1.0 and topo.usable_cores == 1
    threads, warning = resolve_threads(4, topo)
    assert threads == 1 and "cgroup limit 1.0" in warning


@pytest.mark.parametrize("bad", [0, -2, "zero", 2.5, True])
def test_bad_thread_values(bad):
    topo = CpuTopology(4, 4, 4, None)
    with pytest.raises(ValueError, match="threads must be 'auto'"):
        resolve_threads(bad, topo)


def test_more_threads_than_cores_warns():
    topo = CpuTopology(logical_cpus=8, available_cpus=8, physical_cores=4, cgroup_cpu_limit=None)
    threads, warning = resolve_threads(8, topo)
    assert threads == 8 and "hyper-threads" in warning


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_ctx": 8}, r"n_ctx \(--ctx-size\) must be an integer from 16"),
        ({"n_batch": 0}, r"n_batch \(--batch-size\) must be an integer from 1"),
        ({"engine": "cuda"}, r"engine \(--engine\) must be"),
        ({"threads": 0}, r"n_threads \(--threads\) must be 'auto' or an integer from 1"),
    ],
)
def test_runtime_argument_errors(tiny_relu2, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BitNetRuntime(tiny_relu2, **kwargs)


def test_validation_of_model_files(tmp_path: Path, tiny_relu2, caplog):
    with (
        caplog.at_level(logging.WARNING, logger="bitnet.events"),
        pytest.raises(bitnet.ModelLoadError, match="does not exist; check --model"),
    ):
        BitNetRuntime(tmp_path / "missing.gguf").validate()
    events = [r.bitnet_event for r in caplog.records if hasattr(r, "bitnet_event")]
    assert events[-1]["event"] == "missing_artifact" and events[-1]["outcome"] == "error"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(bitnet.ModelLoadError, match="not a GGUF file"):
        BitNetRuntime(bad).validate()
    with pytest.raises(bitnet.ModelLoadError, match="is a directory"):
        BitNetRuntime(tmp_path).validate()


def test_dry_run_plan(tiny_relu2):
    runtime = BitNetRuntime(tiny_relu2, threads=1, n_ctx=1024, n_batch=64)
    plan = runtime.dry_run(prompt="ping", n_predict=8)
    assert (plan.architecture, plan.engine, plan.threads, plan.n_ctx, plan.n_batch) == (
        "bitnet",
        "bitnet",
        1,
        1024,
        64,
    )
    assert plan.ternary_types == ["tq2_0"] and "TQ2_0" in plan.kernels
    # K and V, f16: 2 layers x 1024 positions x 128 (2 kv heads x 64) x 2 bytes x 2, for each
    # of BitNetEngine's default 4 sequences.
    assert plan.n_seq == 4
    assert plan.kv_cache_bytes == 4 * 2 * 2 * 1024 * 128 * 2
    assert BitNetRuntime(tiny_relu2, n_ctx=1024, slots=3).plan().n_seq == 3
    assert 0 < plan.weights_bytes < tiny_relu2.stat().st_size
    assert plan.command.startswith("bitnet run --model ") and "--prompt ping" in plan.command
    data = plan.to_dict()
    assert data["schema"] == "bitnet.plan/1" and data["memory_bytes"] == plan.memory_bytes
    json.dumps(data)


def test_diagnostics_contents(tiny_relu2):
    digest = hashlib.sha256(tiny_relu2.read_bytes()).hexdigest()
    diag = BitNetRuntime(tiny_relu2, threads=1, sha256=digest).diagnostics()
    data = json.loads(diag.to_json())
    assert set(data) == {
        "schema",
        "ok",
        "bitnet",
        "cpu",
        "memory",
        "model",
        "threads",
        "kernels",
        "accelerators",
        "problems",
    }
    assert data["schema"] == "bitnet.diagnostics/1" and data["ok"] is True
    acc = data["accelerators"]
    assert acc["backend"] == "cpu" and "CPU engine" in acc["backend_reason"]
    assert isinstance(acc["gpu_offload"], bool) and isinstance(acc["devices"], list)
    assert any(d["type"] == "cpu" for d in acc["backend_devices"])
    assert (
        data["bitnet"]["version"] == bitnet.__version__ and data["bitnet"]["compiled_cpu_features"]
    )
    assert data["cpu"]["physical_cores"] >= 1 and data["cpu"]["arch"]
    model = data["model"]
    assert model["gguf"] and model["architecture"] == "bitnet" and model["engine"] == "bitnet"
    assert model["tensor_types"]["tq2_0"] == 14 and model["sha256_ok"] is True
    assert {p["severity"] for p in data["problems"]} <= {"warning", "info"}


def test_diagnostics_report_problems(tmp_path: Path, tiny_relu2):
    diag = BitNetRuntime(tiny_relu2, sha256="0" * 64).diagnostics()
    assert not diag.ok
    assert [p.code for p in diag.problems if p.severity == "error"] == ["model_checksum"]
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(tiny_relu2.read_bytes()[:-1000])
    diag = BitNetRuntime(truncated).diagnostics()
    assert "model_truncated" in [p.code for p in diag.problems]
    diag = BitNetRuntime(tmp_path / "nope.gguf").diagnostics()
    assert [p.code for p in diag.problems] == ["model_missing"]
    assert "status: problems found" in str(diag)


def test_events_for_load_and_generation(tiny_relu2, caplog):
    runtime = BitNetRuntime(tiny_relu2, threads=1, n_ctx=128)
    with caplog.at_level(logging.INFO, logger="bitnet.events"):
        model = runtime.load()
        runtime.generate(model, "Hello", max_tokens=4, temperature=0)
        with pytest.raises(ValueError, match="temperature"):
            runtime.generate(model, "Hello", temperature=-1)
        model.close()
    events = [r.bitnet_event for r in caplog.records if hasattr(r, "bitnet_event")]
    names = [(e["event"], e["outcome"]) for e in events]
    assert names == [("model_load", "ok"), ("generation", "ok"), ("generation", "error")]
    ok = events[1]
    assert (
        ok["completion_tokens"] >= 1 and ok["duration_ms"] > 0 and ok["params"]["max_tokens"] == 4
    )
    assert events[2]["error_kind"] == "ValueError"
    for record in caplog.records:
        if hasattr(record, "bitnet_event"):
            line = JsonLinesFormatter().format(record)
            assert json.loads(line)["event"] == record.bitnet_event["event"]


def test_cpu_without_a_compiled_instruction_set(monkeypatch, tiny_relu2):
    import bitnet.cpu as cpu

    compiled = cpu.compiled_cpu_features()
    if "AVX2" not in compiled:
        pytest.skip("this build does not use AVX2")
    old_cpu = {"pni", "ssse3"}  # an x86-64 CPU from before AVX
    assert "AVX2" in cpu.missing_cpu_features(old_cpu)
    assert cpu.missing_cpu_features(set()) == []  # unknown CPU: no false alarm
    monkeypatch.setattr(cpu, "cpu_flags", lambda: old_cpu)
    with pytest.raises(
        bitnet.errors.UnsupportedCPUError, match=r"this CPU lacks .*AVX2.*reinstall"
    ):
        BitNetRuntime(tiny_relu2).validate()
    diag = BitNetRuntime(tiny_relu2).diagnostics()
    assert "cpu_missing_features" in [p.code for p in diag.problems] and not diag.ok


@pytest.mark.parametrize("cpu_max", ["garbage", "100000", "-1 100000", "100000 0", ""])
def test_a_malformed_cgroup_file_means_no_limit(tmp_path: Path, cpu_max: str):
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text(cpu_max)
    sysfs = fake_sysfs(tmp_path / "cpu", {i: (0, i) for i in range(2)})
    topo = detect_cpu_topology(affinity={0, 1}, sysfs_cpu=sysfs, cgroup_root=cgroup)
    assert topo.cgroup_cpu_limit is None and topo.usable_cores == 2


def test_model_default_threads_follow_the_runtime_policy(tiny_relu2):
    from bitnet.cpu import default_threads

    auto = BitNetRuntime(tiny_relu2).threads
    assert default_threads() == auto == detect_cpu_topology().usable_cores
    with bitnet.Model(tiny_relu2, n_ctx=64) as model:
        assert (model.n_threads, model.n_threads_batch) == (auto, auto)


def test_validate_refuses_a_truncated_file(tmp_path: Path, tiny_relu2):
    cut = tmp_path / "cut.gguf"
    data = tiny_relu2.read_bytes()
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(bitnet.ModelLoadError, match="is truncated: its tensors end at byte"):
        BitNetRuntime(cut).validate()
    with pytest.raises(bitnet.ModelLoadError, match="is truncated"):
        BitNetRuntime(cut).dry_run(prompt="x")


def test_expected_sha256_is_checked_before_loading(tmp_path: Path, tiny_relu2):
    import hashlib

    digest = hashlib.sha256(tiny_relu2.read_bytes()).hexdigest()
    runtime = BitNetRuntime(tiny_relu2, sha256=digest.upper(), threads=1, n_ctx=64)
    runtime.load().close()
    wrong = BitNetRuntime(tiny_relu2, sha256="0" * 64, threads=1, n_ctx=64)
    with pytest.raises(bitnet.ModelLoadError, match=f"sha256 of .* is {digest}, expected 0+"):
        wrong.load()
    with pytest.raises(ValueError, match="sha256 must be 64 hexadecimal digits"):
        BitNetRuntime(tiny_relu2, sha256="abc")
