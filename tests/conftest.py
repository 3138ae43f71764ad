"""Shared fixtures: synthetic models made by bitnet.testing, once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitnet.testing import generate_model


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_relu2(models_dir: Path) -> Path:
    return generate_model(models_dir / "tiny-relu2.gguf", activation="relu2", seed=3)


@pytest.fixture(scope="session")
def tiny_silu(models_dir: Path) -> Path:
    return generate_model(models_dir / "tiny-silu.gguf", activation="silu", seed=4)


@pytest.fixture(scope="session")
def tiny_model(tiny_relu2: Path):
    import bitnet

    with bitnet.Model(tiny_relu2, n_ctx=512, n_threads=2) as model:
        yield model
