"""GPU detection from the driver's files (fake /proc and /sys trees, as NVIDIA's and AMD's drivers
write them), the backend each plan picks and why, and n_gpu_layers on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest

import bitnet
from bitnet.accelerators import (
    Accelerator,
    backend_choice,
    backend_devices,
    detect_accelerators,
    gpu_offload,
)
from bitnet.runtime import BitNetRuntime
from bitnet.testing import generate_model


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def nvidia_tree(root: Path) -> None:
    write(
        root / "proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
    )
    for minor, bus in ((0, "0000:18:00.0"), (1, "0000:2a:00.0")):
        write(
            root / f"proc/driver/nvidia/gpus/{bus}/information",
            f"Model: \t\t NVIDIA H200\nIRQ:   \t\t 150\nGPU UUID: \t GPU-{minor}\n"
            f"Video BIOS: \t 96.00.99.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\n"
            f"Bus Location: \t {bus}\nDevice Minor: \t {minor}\n",
        )


def amd_tree(root: Path) -> None:
    nodes = root / "sys/class/kfd/kfd/topology/nodes"
    write(nodes / "0/properties", "cpu_cores_count 64\nsimd_count 0\ngfx_target_version 0\n")
    write(nodes / "0/name", "\n")
    write(
        nodes / "1/properties",
        "cpu_cores_count 0\nsimd_count 1216\nvendor_id 4098\ndevice_id 29857\n"
        "location_id 49152\ngfx_target_version 90402\n",
    )
    write(nodes / "1/name", "gfx942\n")
    write(nodes / "1/mem_banks/0/properties", "heap_type 1\nsize_in_bytes 206141652992\n")
    write(root / "sys/module/amdgpu/version", "6.7.0\n")


def test_nvidia_from_the_driver_files(tmp_path: Path):
    nvidia_tree(tmp_path)
    found = detect_accelerators(tmp_path)
    assert [(a.vendor, a.index, a.name, a.driver, a.bus, a.source) for a in found] == [
        ("nvidia", 0, "NVIDIA H200", "550.54.15", "0000:18:00.0", "nvidia-driver-files"),
        ("nvidia", 1, "NVIDIA H200", "550.54.15", "0000:2a:00.0", "nvidia-driver-files"),
    ]
    assert "NVIDIA H200" in str(found[0]) and "550.54.15" in str(found[0])


def test_amd_from_the_rocm_topology_skips_cpu_nodes(tmp_path: Path):
    amd_tree(tmp_path)
    (gpu,) = detect_accelerators(tmp_path)
    assert (gpu.vendor, gpu.name, gpu.memory_bytes, gpu.driver, gpu.source) == (
        "amd",
        "AMD gfx942",
        206141652992,
        "6.7.0",
        "kfd",
    )


def test_amd_from_drm_without_rocm(tmp_path: Path):
    write(tmp_path / "sys/class/drm/card0/device/vendor", "0x1002\n")
    write(tmp_path / "sys/class/drm/card0/device/device", "0x744c\n")
    write(tmp_path / "sys/class/drm/card0/device/mem_info_vram_total", "25753026560\n")
    write(tmp_path / "sys/class/drm/card0-DP-1/status", "connected\n")  # a connector, not a card
    write(tmp_path / "sys/class/drm/card1/device/vendor", "0x8086\n")  # an Intel iGPU
    (gpu,) = detect_accelerators(tmp_path)
    assert (gpu.vendor, gpu.name, gpu.memory_bytes, gpu.source) == (
        "amd",
        "AMD GPU 0x744c",
        25753026560,
        "drm",
    )


def test_nothing_found_on_an_empty_tree(tmp_path: Path):
    assert detect_accelerators(tmp_path) == []
    # This machine (no GPU in the tests' machines): whatever is found is well formed.
    for a in detect_accelerators():
        assert a.vendor in ("nvidia", "amd") and a.name


def test_backend_choice_says_why():
    h200 = [Accelerator("nvidia", 0, "NVIDIA H200", 141 << 30, "550", None, "nvml")]
    bitnet_choice = backend_choice("bitnet", 0, h200, offload=True)
    assert bitnet_choice.backend == "cpu" and "CPU engine" in bitnet_choice.reason
    assert "NVIDIA H200" in bitnet_choice.reason and bitnet_choice.warning is None
    ignored = backend_choice("bitnet", 10, h200, offload=True)
    assert ignored.backend == "cpu" and "does not apply" in (ignored.warning or "")
    offloaded = backend_choice("llama", 99, h200, offload=True, n_layer=32)
    assert offloaded.backend == "gpu" and "32 of 32 layers" in offloaded.reason
    no_backend = backend_choice("llama", 99, h200, offload=False)
    assert no_backend.backend == "cpu" and "GGML_CUDA" in (no_backend.warning or "")
    idle = backend_choice("llama", 0, h200, offload=True)
    assert idle.backend == "cpu" and "set it to offload" in idle.reason
    assert "no accelerator" in backend_choice("llama", 0, [], offload=False).reason


def test_linked_llama_cpp_backends():
    devices = backend_devices()
    assert any(d["type"] == "cpu" for d in devices)
    assert all({"name", "description", "type", "memory_total"} <= set(d) for d in devices)
    # The pinned CPU wheel has no GPU backend: offload is off exactly when no GPU device is listed.
    assert gpu_offload() == any(d["type"] in ("gpu", "igpu") for d in devices)


def test_plan_and_model_with_gpu_layers(tiny_relu2, tmp_path: Path, caplog):
    tiny_llama = generate_model(
        tmp_path / "llama.gguf", architecture="llama", activation="silu", seed=6
    )
    plan = BitNetRuntime(tiny_relu2, n_gpu_layers=4).plan()
    assert plan.backend == "cpu" and plan.n_gpu_layers == 4
    assert any("does not apply" in w for w in plan.warnings)
    assert "--n-gpu-layers 4" in plan.command and "backend      cpu" in str(plan)
    data = plan.to_dict()
    assert {"backend", "backend_reason", "accelerators", "n_gpu_layers"} <= set(data)
    llama_plan = BitNetRuntime(tiny_llama, n_gpu_layers=2).plan()
    assert llama_plan.engine == "llama"
    assert llama_plan.backend == ("gpu" if gpu_offload() else "cpu")
    # libllama takes the setting (a CPU-only build runs every layer on the CPU, and says so).
    with bitnet.Model(tiny_llama, n_ctx=64, n_gpu_layers=2) as model:
        assert model.generate("a", max_tokens=2, temperature=0).tokens
    if not gpu_offload():
        assert "n_gpu_layers=2 is ignored" in caplog.text
    with pytest.raises(ValueError, match="n_gpu_layers"):
        BitNetRuntime(tiny_relu2, n_gpu_layers=-1)
