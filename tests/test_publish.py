"""Publishing weights: the dry run writes the folder and a model card without any network, and a published
checkpoint loads by its Hub id from a pre-populated Hub cache, offline."""

import json
import os
import shutil
import subprocess
import sys

from huggingface_hub import ModelCard

from scripts import push_to_hub
from tests.conftest import REPO


def test_dry_run_writes_weights_config_and_model_card(trained_run, tmp_path):
    evaluation = {
        "source": {"data": "MURA-v1.1:valid"},
        "predicted_gate": {"overall": {"study_kappa": 0.7, "study_kappa_ci95": [0.65, 0.75], "n_studies": 1199}},
        "part_accuracy": 0.99,
    }
    (tmp_path / "metrics.json").write_text(json.dumps(evaluation))
    out = push_to_hub.main(
        [
            "--checkpoint",
            str(trained_run / "best"),
            "--repo-id",
            "someone/mura-mt-test",
            "--dry-run",
            "--evaluation",
            str(tmp_path / "metrics.json"),
            "--out",
            str(tmp_path / "hub"),
        ]
    )
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == (trained_run / "best/model.safetensors").read_bytes()
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-classification" and "radiology" in card.data.tags
    text = card.text
    assert "Not a medical device" in text and "not for diagnosis" in text
    assert "0.700 [0.650, 0.750]" in text  # metrics with their interval
    assert "elbow, finger, forearm, hand, humerus, shoulder, wrist" in text  # body-part order
    assert "Synthetic radiographs" in text  # the smoke run trained on synthetic data, and says so
    assert "Shortcut learning" in text and "Platt" in text


def test_from_pretrained_by_hub_id_from_the_cache_offline(trained_run, tmp_path):
    snapshot = tmp_path / "hub/models--someone--mura-mt/snapshots/0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        shutil.copy2(trained_run / "best" / name, snapshot / name)
    (tmp_path / "hub/models--someone--mura-mt/refs").mkdir()
    (tmp_path / "hub/models--someone--mura-mt/refs/main").write_text(snapshot.name)
    probe = (
        "from mura_mt import Predictor; p = Predictor.from_pretrained('someone/mura-mt'); "
        "print(p.prep.image_size, p.model.cam_layer.__class__.__name__)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [
        str(json.loads((trained_run / "best/config.json").read_text())["preprocessing"]["image_size"]),
        "Sequential",
    ]
