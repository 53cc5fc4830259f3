"""A REAL two-process Accelerate launch on the CPU (gloo), not a mock: world size 2, ranks in sync."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from mura_mt.checkpoint import load_checkpoint
from tests.conftest import REPO


@pytest.mark.slow
def test_two_process_accelerate_launch(synthetic_root, tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    # environment.md: `--cpu --num_processes 2` silently runs one process; this form really starts two.
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
               str(REPO / "scripts/train.py"), "--config", str(REPO / "configs/smoke.yaml"),
               f"data.root={synthetic_root}", f"output_dir={tmp_path / 'run'}"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["world_size"] == 2
    checksums = metrics["rank_param_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]  # DDP kept both replicas identical
    assert len(metrics["history"]) == 2
    model, config = load_checkpoint(tmp_path / "run/best")
    assert config["metrics"]["predicted_gate"]["overall"]["n_studies"] > 0
