"""A REAL two-process Accelerate launch on the CPU (gloo), not a mock: world size 2, ranks in sync."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from mura_mt.inference.checkpoint import load_checkpoint
from tests.conftest import REPO


@pytest.mark.slow
def test_two_process_accelerate_launch(synthetic_root, tmp_path):
    args = [str(REPO / "scripts/train.py"), "--config", str(REPO / "configs/smoke.yaml")]
    command, env = _launch(
        [*args, f"data.root={synthetic_root}", f"output_dir={tmp_path / 'run'}"], processes=2, port=29517
    )
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["world_size"] == 2
    checksums = metrics["rank_param_checksums"]
    # Weights AND BatchNorm buffers agree: the buffers are averaged over the ranks before evaluation and export.
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert len(metrics["history"]) == 2
    model, config = load_checkpoint(tmp_path / "run/best")
    assert config["metrics"]["predicted_gate"]["overall"]["n_studies"] > 0


def _launch(args, processes=1, port=29519):
    """`accelerate launch` on the CPU: one process, or real ones through the shipped cpu_2proc config."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}
    if processes == 1:
        head = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    else:
        # `--cpu --num_processes 2` or MULTI_CPU would silently start only one process (see the config file).
        head = ["--config_file", str(REPO / "configs/accelerate/cpu_2proc.yaml"), "--num_processes", str(processes)]
        head += ["--main_process_port", str(port)]
        env["OMP_NUM_THREADS"] = "1"
    return [accelerate, "launch", *head, *args], env


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_matches_an_uninterrupted_run(synthetic_root, trained_run, tmp_path):
    """SIGKILL once the first epoch's state is complete (mid-epoch 1 or mid-save), then --resume."""
    import signal
    import time

    import torch
    from safetensors.torch import load_file

    run = tmp_path / "run"
    args = [
        str(REPO / "scripts/train.py"),
        "--config",
        str(REPO / "configs/smoke.yaml"),
        f"data.root={synthetic_root}",
        f"output_dir={run}",
    ]
    command, env = _launch(args)
    proc = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while not (run / "state/epoch_0000/COMPLETE").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert (run / "state/epoch_0000/COMPLETE").exists()
    command, env = _launch([*args[:3], "--resume", *args[3:]])
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = load_file(run / "state/epoch_0001/model.safetensors")
    straight = load_file(trained_run / "state/epoch_0001/model.safetensors")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert not list((run / "state").glob(".*.tmp"))  # no partial state left behind
    load_checkpoint(run / "best")


@pytest.mark.slow
def test_predict_shards_over_two_processes_into_one_csv(trained_run, synthetic_root, tmp_path):
    import pandas as pd

    from mura_mt.data import read_mura_index

    valid = synthetic_root / "MURA-v1.1/valid"
    command, env = _launch(
        [
            str(REPO / "scripts/predict.py"),
            "--checkpoint",
            str(trained_run / "best"),
            str(valid),
            "--out",
            str(tmp_path / "preds.csv"),
        ],
        processes=2,
        port=29521,
    )
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    preds = pd.read_csv(tmp_path / "preds.csv")
    table = read_mura_index(synthetic_root, "valid")
    assert sorted(preds["path"]) == sorted(table["path"])  # every image once, none lost or doubled
    assert "2 processes" in done.stdout  # really sharded, not the same work done twice
    assert preds.groupby("study")["body_part"].nunique().max() == 1
    assert not list(tmp_path.glob(".preds.csv.rank*"))


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["step", "data"])
def test_one_failing_rank_stops_every_rank_quickly(synthetic_root, tmp_path, fault):
    """Rank 1 raises (in its step, or in its loader); rank 0 would wait in the next all-reduce until the
    collective timeout (10 minutes). The launcher must stop the whole job, with the error, within a minute."""
    import time

    args = [
        str(REPO / "tests/faulty_train.py"),
        fault,
        "--config",
        str(REPO / "configs/smoke.yaml"),
        f"data.root={synthetic_root}",
        f"output_dir={tmp_path / 'run'}",
    ]
    command, env = _launch(args, processes=2, port=29523 if fault == "step" else 29525)
    env["PYTHONPATH"] = str(REPO)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    assert done.returncode != 0
    assert f"injected fault in rank 1's {'training step' if fault == 'step' else 'data loading'}" in done.stderr
    print(f"{fault}: every rank stopped {elapsed:.1f} s after the launch")
    assert elapsed < 120, f"took {elapsed:.0f} s"
    assert not (tmp_path / "run/best").exists()  # nothing exported from a failed run


@pytest.mark.slow
def test_kill_during_export_leaves_the_previous_checkpoint_loadable(trained_run, tmp_path):
    """SIGKILL the exporting process halfway through writing the weights: the previous best/ still loads."""
    best = shutil.copytree(trained_run / "best", tmp_path / "best")
    before = (best / "model.safetensors").read_bytes()
    script = f"""
import os, signal
from mura_mt.inference import checkpoint

def half_then_killed(tensors, path, *args, **kwargs):
    with open(path, "wb") as f:
        f.write(b"\\0" * 1000)  # a partial file...
    os.kill(os.getpid(), signal.SIGKILL)  # ...and the machine goes away

checkpoint.save_file = half_then_killed
model, config = checkpoint.load_checkpoint({str(best)!r})
written_by_export = ("format_version", "body_parts", "weights_sha256", "weights_dtype")
meta = {{k: v for k, v in config.items() if k not in written_by_export}}
checkpoint.export({str(best)!r}, model, meta)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9  # really killed mid-write
    load_checkpoint(best)  # the previous checkpoint, intact and verified by its hash
    assert (best / "model.safetensors").read_bytes() == before
