"""What the machine offers: usable cores (affinity, quota, processes per machine) and the precision choices."""

import os
import subprocess
import sys

import pytest

from mura_mt.config import TrainConfig
from mura_mt.hardware import cpu_has_native_bf16, resolve_mixed_precision
from mura_mt.inference.predictor import Predictor
from tests.conftest import REPO


def test_threads_follow_the_cores_the_process_may_use():
    code = "from mura_mt.hardware import usable_cores; print(usable_cores())"
    first_core = str(min(os.sched_getaffinity(0)))
    pinned = subprocess.run(["taskset", "-c", first_core, sys.executable, "-c", code], capture_output=True, text=True)
    assert pinned.stdout.strip() == "1", pinned.stderr
    shared = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "LOCAL_WORLD_SIZE": "64"}
    )
    assert shared.stdout.strip() == "1"
    from mura_mt.hardware import usable_cores

    predictor = Predictor.from_pretrained(REPO / "checkpoints/demo", runtime="onnx")
    assert predictor.runner.session.get_session_options().intra_op_num_threads == usable_cores()


def test_training_precision_auto_follows_the_hardware_and_explicit_values_win():
    assert TrainConfig().mixed_precision == "auto"
    chosen, why = resolve_mixed_precision("auto", use_cpu=True)
    flags = open("/proc/cpuinfo").read()
    native = " avx512_bf16" in flags or " amx_bf16" in flags
    assert chosen == ("bf16" if native else "no") and chosen == ("bf16" if cpu_has_native_bf16() else "no")
    assert "auto" in why
    assert resolve_mixed_precision("fp16", use_cpu=True)[0] == "fp16"
    assert resolve_mixed_precision(None)[0] is None
    with pytest.raises(ValueError, match="mixed_precision"):
        resolve_mixed_precision("fp8")
