"""The C++ kernel self-tests: every SIMD implementation the CPU runs equals the scalar reference
for every tile size (tests/native/kernel_selftest.cpp); the AVX-512 VNNI kernel's logic on any
CPU, compiled against software intrinsics (tests/native/vnni_emulated.cpp), and the AMX-INT8
kernel's against software tiles (tests/native/amx_emulated.cpp); and the NEON paths
(with and without the dot-product extension), cross-compiled for AArch64 and run under
qemu-user where both are installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The self-test and every kernel source: one file per instruction set, the registry, the driver.
SOURCES = [
    ROOT / "tests/native/kernel_selftest.cpp",
    *sorted((ROOT / "csrc/kernels").glob("*.cpp")),
]


def build_and_run(
    compiler: str, out: Path, runner: list[str], sources: list[Path] = SOURCES
) -> str:
    cmd = [compiler, "-O2", "-std=c++17", f"-I{ROOT / 'csrc'}", *map(str, sources), "-o", str(out)]
    subprocess.run([*cmd, "-lpthread"], check=True, capture_output=True, text=True)
    proc = subprocess.run([*runner, str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_native_selftest(tmp_path: Path):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    out = build_and_run(compiler, tmp_path / "selftest", [])
    assert "failures=0" in out


@pytest.mark.slow
def test_vnni_kernel_logic_emulated(tmp_path: Path):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    sources = [ROOT / "tests/native/vnni_emulated.cpp", *SOURCES[1:]]
    out = build_and_run(compiler, tmp_path / "vnni", [], sources)
    assert "failures=0" in out and "checked=816" in out  # 480 packed + 336 unpacked tiles


@pytest.mark.slow
def test_amx_kernel_logic_emulated(tmp_path: Path):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    sources = [ROOT / "tests/native/amx_emulated.cpp", *SOURCES[1:]]
    out = build_and_run(compiler, tmp_path / "amx", [], sources)
    assert "failures=0" in out and "checked=180" in out


@pytest.mark.slow
def test_neon_under_qemu(tmp_path: Path):
    """The NEON kernels, and both batch kernels: with the dot-product extension (qemu's `max`
    CPU, like Neoverse N1 / Graviton 2 and later) and without it (Cortex-A53, Armv8.0)."""
    compiler = shutil.which("aarch64-linux-gnu-g++")
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if compiler is None or qemu is None:
        pytest.skip(
            "needs aarch64-linux-gnu-g++ and qemu-aarch64 (Debian: g++-aarch64-linux-gnu qemu-user)"
        )
    binary = tmp_path / "selftest-arm64"
    for cpu, dotprod in (("max", 1), ("cortex-a53", 0)):
        out = build_and_run(compiler, binary, [qemu, "-cpu", cpu, "-L", "/usr/aarch64-linux-gnu"])
        assert "best=neon" in out and f"neon_dotprod={dotprod}" in out, out
        assert "failures=0" in out, out
