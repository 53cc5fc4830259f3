"""Shared fixtures: everything is generated here, on the CPU, offline."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# The shared image cache of the test session (inherited by the processes the tests launch), not the user's.
os.environ["MURA_MT_CACHE"] = tempfile.mkdtemp(prefix="mura-mt-test-cache-")
atexit.register(shutil.rmtree, os.environ["MURA_MT_CACHE"], True)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic MURA tree (read-only for tests: copy it before changing anything)."""
    from mura_mt.data.synthetic import make_synthetic_mura

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_mura(root, studies_per_part=6, valid_studies_per_part=3, seed=0)
    return root


@pytest.fixture
def mura_copy(synthetic_root, tmp_path) -> Path:
    """A private copy of the synthetic tree that a test may damage."""
    shutil.copytree(synthetic_root / "MURA-v1.1", tmp_path / "MURA-v1.1")
    return tmp_path


def smoke_overrides(data_root: Path, output_dir: Path, *extra: str) -> list[str]:
    return [f"data.root={data_root}", f"output_dir={output_dir}", *extra]


@pytest.fixture(scope="session")
def trained_run(synthetic_root, tmp_path_factory) -> Path:
    """One in-process smoke training run (2 epochs, 64 px); returns its output folder."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    from mura_mt.config import load_config
    from mura_mt.training import fit

    out = tmp_path_factory.mktemp("smoke_run")
    cfg = load_config(REPO / "configs/smoke.yaml", smoke_overrides(synthetic_root, out))
    accelerator = Accelerator(
        cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=0)
    )
    fit(cfg, accelerator)
    return out


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state; a test that needs another precision starts and ends clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
