"""Shared fixtures: everything is generated here, on the CPU, offline."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# The shared image cache of the test session (inherited by the processes the tests launch), not the user's.
os.environ["MURA_MT_CACHE"] = tempfile.mkdtemp(prefix="mura-mt-test-cache-")
atexit.register(shutil.rmtree, os.environ["MURA_MT_CACHE"], True)
os.environ["MURA_MT_ONNX_CACHE"] = os.path.join(os.environ["MURA_MT_CACHE"], "onnx")  # exported graphs, likewise
# Gradio keeps every upload and served file under its temp folder (/tmp/gradio by default) and never empties it.
os.environ["GRADIO_TEMP_DIR"] = os.path.join(os.environ["MURA_MT_CACHE"], "gradio")

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
    from mura_mt.training.loop import fit

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


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sample_images(synthetic_root):
    """One valid-split view, and all views of one study."""
    from mura_mt.data import read_mura_index

    table = read_mura_index(synthetic_root, "valid")
    study = table[table["study_id"] == table["study_id"][0]]["path"].tolist()
    return {"single": table["path"][0], "study": study}


@contextlib.contextmanager
def running_app(
    log, extra_env: dict[str, str] | None = None, *args: str, python: str = sys.executable, https_ca=None
) -> Iterator[tuple[str, int]]:
    """`python app.py` as the README says (bundled demo checkpoint unless ``args`` say otherwise), on a free
    loopback port; yields (URL, pid) once the page answers, stops the process group afterwards. ``python``: the
    interpreter (another virtual environment's, say); ``https_ca``: the app serves HTTPS with a certificate this CA
    signed."""
    import httpx

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    if "MURA_MT_CHECKPOINT" not in (extra_env or {}):
        env.pop("MURA_MT_CHECKPOINT", None)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [python, "app.py", "--port", str(port), *args],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"{'https' if https_ca else 'http'}://127.0.0.1:{port}/"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}")
            try:
                httpx.get(url, timeout=2, verify=str(https_ca) if https_ca else True)
                break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - start > 120:
                pytest.fail("app.py was not ready within 120 s")
            time.sleep(0.3)
        print(f"app ready in {time.perf_counter() - start:.1f} s")
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
