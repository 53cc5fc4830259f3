"""The repo as a Hugging Face Space: requirements.txt alone, in a fresh virtual environment, serves the app."""

import subprocess
import sys

import pytest

from tests.conftest import REPO, running_app

pytestmark = pytest.mark.slow


def test_requirements_txt_alone_serves_the_app_as_a_space_would(tmp_path):
    venv = tmp_path / "space-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin/python")
    # A Space installs requirements.txt and has Hugging Face's `spaces` package beside it (a no-op off ZeroGPU).
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "-r", str(REPO / "requirements.txt"), "spaces==0.51.3"],
        check=True,
        timeout=1200,
    )
    # The Space runs from the repo root: mura_mt is imported from there, not installed.
    probe = "import importlib.util as u; print(u.find_spec('mura_mt') is None, u.find_spec('spaces') is not None)"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=tmp_path).stdout.split() == [
        "True",
        "True",
    ]

    from gradio_client import Client, handle_file

    with open(tmp_path / "app.log", "w") as log, running_app(log, python=python) as (url, _):
        client = Client(url, verbose=False)
        result, overlay = client.predict(
            handle_file(str(REPO / "examples/synthetic_hand_normal.png")), "auto", False, api_name="/predict"
        )
    assert result["body_part"] == "hand" and not result["is_abnormal"]
    log_text = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log_text, log_text
