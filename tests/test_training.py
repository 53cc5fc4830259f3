"""Training end to end: in-process fit, export round trip, resume, guards, a second architecture."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from PIL import Image
from safetensors.torch import load_file

from mura_mt.config import load_config
from mura_mt.data import MuraIndexError, read_mura_index
from mura_mt.inference.checkpoint import CheckpointError, load_checkpoint
from mura_mt.model import MultiTaskNet
from mura_mt.training.loop import fit
from tests.conftest import REPO, smoke_overrides


def _fit(data_root, out, *extra, resume=False):
    cfg = load_config(REPO / "configs/smoke.yaml", smoke_overrides(data_root, out, *extra))
    accelerator = Accelerator(
        cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=0)
    )
    return fit(cfg, accelerator, resume=resume)


def test_run_leaves_best_metrics_and_log(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and len(metrics["history"]) == 2
    assert len((trained_run / "log.jsonl").read_text().splitlines()) == 2
    config = json.loads((trained_run / "best/config.json").read_text())
    assert set(config["calibration"]) == {"elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist"}
    assert {"predicted_gate", "true_gate", "part_accuracy"} <= set(config["metrics"])
    assert config["command"] and config["preprocessing"]["image_size"] == 64
    # Operating points are fitted at export; a smoke run's few val studies carry no guarantee, and say so.
    points = config["operating_points"]["parts"]
    assert points and all(p["rule_out"] is None and "no rule-out" in p["why"] for p in points.values())
    assert len(config["operating_points"]["split_sha256"]) == 64
    # The drift monitor's reference: the val studies as the exported checkpoint answers them.
    reference = json.loads((trained_run / "best/drift_reference.json").read_text())
    assert reference["studies"] == sum(reference["part_mix"].values()) > 0


def test_export_loads_back_with_identical_outputs(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    model, _ = load_checkpoint(trained_run / "best")
    reference = MultiTaskNet("resnet18")
    reference.load_state_dict(load_file(trained_run / f"state/epoch_{metrics['best_epoch']:04d}/model.safetensors"))
    reference.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x).anomaly_logits, reference(x).anomaly_logits)


def test_tampered_or_pickled_weights_are_refused(trained_run, tmp_path):
    import shutil

    ckpt = shutil.copytree(trained_run / "best", tmp_path / "ckpt")
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(ckpt)
    (ckpt / "model.safetensors").unlink()
    torch.save({"weights": 1}, ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickled weights are not loaded"):
        load_checkpoint(ckpt)


def test_interrupted_run_resumes_to_the_same_weights(synthetic_root, trained_run, tmp_path):
    """Stop after epoch 0, resume: epoch 1's weights equal those of the uninterrupted run."""
    _fit(synthetic_root, tmp_path, "train.stop_after_epochs=1")
    assert not (tmp_path / "state/epoch_0001").exists()
    summary = _fit(synthetic_root, tmp_path, resume=True)
    assert len(summary["history"]) == 2
    resumed = load_file(tmp_path / "state/epoch_0001/model.safetensors")
    straight = load_file(trained_run / "state/epoch_0001/model.safetensors")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)


def test_incomplete_state_is_ignored_on_resume(synthetic_root, tmp_path):
    _fit(synthetic_root, tmp_path, "train.stop_after_epochs=1")
    (tmp_path / "state/epoch_0000/COMPLETE").unlink()  # as if killed during save_state
    summary = _fit(synthetic_root, tmp_path, "train.epochs=1", resume=True)
    assert [h["epoch"] for h in summary["history"]] == [0]  # started over rather than trusting a partial state


def test_exploding_learning_rate_stops_without_a_nan_export(synthetic_root, tmp_path):
    with pytest.raises(FloatingPointError, match="lower train.lr"):
        _fit(synthetic_root, tmp_path, "train.lr=1e30", "train.warmup_epochs=0")
    if (tmp_path / "best").exists():
        model, _ = load_checkpoint(tmp_path / "best")
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unreadable_images_abort_with_a_list(mura_copy, tmp_path):
    table = read_mura_index(mura_copy, "train")
    broken = table["path"][5]
    Path(broken).write_bytes(Path(broken).read_bytes()[:200])  # truncated PNG
    with pytest.raises(MuraIndexError, match="1 unreadable images") as err:
        _fit(mura_copy, tmp_path / "run", "data.kind=mura")
    assert "quarantine" in str(err.value)


def test_unreadable_images_under_the_limit_are_quarantined(mura_copy, tmp_path):
    table = read_mura_index(mura_copy, "train")
    broken = table["path"][5]
    Image.new("L", (4, 4)).save(broken)  # too small to be a radiograph
    _fit(mura_copy, tmp_path / "run", "data.kind=mura", "data.max_bad_images=1", "train.epochs=1")
    quarantined = (
        {**json.loads((tmp_path / "run/quarantine-train.json").read_text())}
        if (tmp_path / "run/quarantine-train.json").exists()
        else {}
    )
    quarantined.update(
        json.loads((tmp_path / "run/quarantine-val.json").read_text())
        if (tmp_path / "run/quarantine-val.json").exists()
        else {}
    )
    assert list(quarantined) == [broken]


def test_second_architecture_trains_end_to_end(synthetic_root, tmp_path):
    _fit(synthetic_root, tmp_path, "model.backbone=mobilenetv3_small_050", "train.epochs=1")
    model, config = load_checkpoint(tmp_path / "best")
    assert config["model"]["backbone"] == "mobilenetv3_small_050"
    with torch.no_grad():
        assert np.isfinite(model(torch.randn(1, 3, 64, 64)).anomaly_logits.numpy()).all()


def test_checkpoint_made_for_other_code_is_a_clear_error(trained_run, tmp_path):
    import shutil

    ckpt = shutil.copytree(trained_run / "best", tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    config["body_parts"] = list(reversed(config["body_parts"]))
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="body-part order"):
        load_checkpoint(ckpt)
    config["body_parts"].reverse()
    config["model"]["backbone"] = "resnet34"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="weights do not fit the resnet34 architecture"):
        load_checkpoint(ckpt)


def test_hub_ids_fail_fast_offline():
    import time

    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="Hugging Face Hub"):
        load_checkpoint("someone/no-such-model")
    assert time.perf_counter() - start < 10
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        load_checkpoint("/definitely/not/here")


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact_with_any_number_of_workers(synthetic_root, trained_run, tmp_path, workers):
    """Augmentation is drawn from (seed, epoch, sample), not from worker RNG streams: stopping after epoch 0
    and resuming with 0 or 2 workers gives the weights of the uninterrupted 2-worker run, bit for bit."""
    _fit(synthetic_root, tmp_path, f"train.num_workers={workers}", "train.stop_after_epochs=1")
    _fit(synthetic_root, tmp_path, f"train.num_workers={workers}", resume=True)
    resumed = load_file(tmp_path / "state/epoch_0001/model.safetensors")
    straight = load_file(trained_run / "state/epoch_0001/model.safetensors")
    assert load_config(REPO / "configs/smoke.yaml").train.num_workers == 2  # what trained_run used
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_fp16_survives_overflows_with_a_real_grad_scaler(synthetic_root, tmp_path, fresh_accelerator_state):
    """fp16 as Accelerate drives it on a GPU: a real torch.amp.GradScaler in the AcceleratedOptimizer,
    ``accelerator.backward`` scaling the loss and ``clip_grad_norm_`` unscaling. The scale starts at 2**24 (256x
    the usual 2**16), so the first steps overflow fp16; the scaler must see every step (its update lowers the
    scale) and training goes on."""
    cfg = load_config(
        REPO / "configs/smoke.yaml",
        smoke_overrides(synthetic_root, tmp_path, "train.mixed_precision=fp16", "train.epochs=3"),
    )
    accelerator = Accelerator(
        cpu=True,
        mixed_precision="fp16",
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=0),
    )
    assert accelerator.scaler is None  # Accelerate makes no scaler on a CPU, which is why the bug hid here
    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
    summary = fit(cfg, accelerator)
    skipped = [h["train/skipped_steps"] for h in summary["history"]]
    assert skipped[0] >= 2  # the injected overflows happened and were skipped, not raised
    assert skipped[-1] == 0  # and then it trained
    assert accelerator.scaler.get_scale() < 2.0**24
    model, _ = load_checkpoint(tmp_path / "best")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    initial = MultiTaskNet("resnet18")
    assert not torch.equal(model.part_head.weight, initial.part_head.weight)


def test_eval_every_evaluates_and_saves_state_only_when_due(synthetic_root, tmp_path):
    summary = _fit(synthetic_root, tmp_path, "train.epochs=3", "train.eval_every=2")
    evaluated = [h["epoch"] for h in summary["history"] if "val/study_kappa" in h]
    assert evaluated == [1, 2]  # every second epoch, and always the last
    assert sorted(p.name for p in (tmp_path / "state").glob("epoch_*")) == ["epoch_0001", "epoch_0002"]
    assert (tmp_path / "best/config.json").exists()


def test_learning_rate_scales_with_the_global_batch():
    from mura_mt.training.loop import scaled_lr

    cfg = load_config(None, ["train.lr=1e-3", "train.batch_size=32", "train.lr_base_batch=32"])
    assert scaled_lr(cfg, 8) == pytest.approx(1e-3)  # "none" is the default
    linear = load_config(None, ["train.lr=1e-3", "train.lr_scaling=linear", "train.batch_size=64"])
    assert scaled_lr(linear, 4) == pytest.approx(8e-3)
    root = load_config(None, ["train.lr=1e-3", "train.lr_scaling=sqrt"])
    assert scaled_lr(root, 4) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_lr(load_config(None, ["train.lr_scaling=cubic"]), 1)


def test_compiled_model_trains_and_exports_plain_weights(synthetic_root, tmp_path):
    """train.compile=true (torch.compile, here with the CPU's inductor): the export has the plain model's keys."""
    _fit(synthetic_root, tmp_path, "train.compile=true", "train.epochs=1")
    weights = load_file(tmp_path / "best/model.safetensors")
    assert not any("_orig_mod" in key for key in weights)
    model, _ = load_checkpoint(tmp_path / "best")
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 64)).anomaly_logits).all()
