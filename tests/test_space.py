"""The repo as a Hugging Face Space: requirements.txt alone, in a fresh virtual environment, serves the app."""

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, running_app

pytestmark = pytest.mark.slow


def _serve_and_predict(python: str, log_path) -> dict:
    from gradio_client import Client, handle_file

    with open(log_path, "w") as log, running_app(log, python=python) as (url, _):
        result, _ = Client(url, verbose=False).predict(
            handle_file(str(REPO / "examples/synthetic_hand_normal.png")), "auto", False, api_name="/predict"
        )
    assert "Traceback" not in log_path.read_text(), log_path.read_text()
    return result


def _importable(python: str, module: str, cwd) -> bool:
    probe = f"import importlib.util as u; print(u.find_spec({module!r}) is not None)"
    return subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=cwd).stdout.strip() == "True"


# requirements.txt's torch is the CUDA build on x86_64: the fresh environment measured 6.0 GB on disk.
SPACE_VENV_BYTES = 7 * 2**30


def test_requirements_txt_alone_serves_the_app_as_a_space_would(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    if free < SPACE_VENV_BYTES:  # say so, rather than fill the disk and fail every test after this one
        pytest.fail(f"the Space's virtual environment needs about {SPACE_VENV_BYTES / 2**30:.0f} GiB and {tmp_path} "
                    f"has {free / 2**30:.1f} GiB free")
    venv = tmp_path / "space-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin/python")
    # --no-compile: byte-compiling torch's thousands of files at install is most of a minute on 2 cores, and the
    # imports compile what they use anyway.
    pip = [python, "-m", "pip", "install", "-q", "--no-compile", "--no-cache-dir", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REPO / "requirements.txt")], check=True, timeout=1200)
    # The Space runs from the repo root: mura_mt is imported from there, not installed.
    assert not _importable(python, "mura_mt", tmp_path) and not _importable(python, "spaces", tmp_path)
    result = _serve_and_predict(python, tmp_path / "app.log")
    assert result["body_part"] == "hand" and not result["is_abnormal"]

    # Spaces images carry Hugging Face's `spaces` package; off ZeroGPU its decorator must change nothing.
    subprocess.run([*pip, "spaces==0.51.3"], check=True, timeout=600)
    assert _importable(python, "spaces", tmp_path)
    assert _serve_and_predict(python, tmp_path / "app-with-spaces.log") == result
