"""The "unlike the training images" score, the blank-image warning and where the app shows them."""

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from mura_mt import Predictor
from mura_mt.bench.ood import public_images
from mura_mt.inference.ood import WARNING, OodFeatures, OutOfDistribution, StageStatistics, fit_out_of_distribution
from mura_mt.model import MultiTaskNet
from tests.conftest import REPO


def _clusters(n_studies: int, views: int, seed: int, shift: float = 0.0) -> tuple[OodFeatures, np.ndarray]:
    """Studies whose views are near-copies of each other, around seven directions (like seven body parts)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(7, 64, generator=torch.Generator().manual_seed(0)) * 3
    study = centres[torch.arange(n_studies) % 7] + torch.randn(n_studies, 64, generator=g)
    pooled = study.repeat_interleave(views, 0) + 0.01 * torch.randn(n_studies * views, 64, generator=g)
    style = torch.randn(n_studies * views, 16, generator=g) + shift
    return OodFeatures(pooled + shift, style), np.repeat(np.arange(n_studies), views)


def test_thresholds_flag_the_stated_share_of_val_and_unseen_studies_alike():
    val, studies = _clusters(300, 3, seed=1)
    ood = fit_out_of_distribution(val, studies, false_alarm_rate=0.05)
    # Fitting left each image's own study out of its neighbours: the views of a study are near-copies, so with
    # them in, every val distance would be ~0 and the threshold would flag nearly every new study.
    assert float(ood.thresholds[0]) > 0.1
    fresh, _ = _clusters(300, 3, seed=2)
    flagged = float((ood.score(fresh) > 1).float().mean())
    assert 0.01 <= flagged <= 0.12, flagged
    far, _ = _clusters(30, 1, seed=3, shift=6.0)
    assert bool((ood.score(far) > 1).all())
    again = OutOfDistribution.from_tensors(ood.to_tensors())
    assert again.k == ood.k and torch.allclose(again.score(fresh), ood.score(fresh), rtol=1e-3)


def test_a_style_outlier_alone_is_flagged():
    val, studies = _clusters(200, 2, seed=1)
    ood = fit_out_of_distribution(val, studies)
    fresh, _ = _clusters(50, 1, seed=4)
    odd_texture = OodFeatures(fresh.pooled, fresh.style * 4)  # familiar content, unfamiliar low-level statistics
    assert float((ood.score(fresh) > 1).float().mean()) < 0.1
    assert float((ood.score(odd_texture) > 1).float().mean()) > 0.9


def test_fit_rejects_what_it_cannot_fit():
    val, studies = _clusters(20, 2, seed=1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        fit_out_of_distribution(val, studies, false_alarm_rate=0.0)
    with pytest.raises(ValueError, match="own study"):
        fit_out_of_distribution(val, np.zeros(len(studies)))


def test_stage_statistics_see_both_forwards_and_leave_no_hooks():
    model = MultiTaskNet("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    with StageStatistics(model.backbone) as stages:
        with torch.no_grad():
            model.backbone(x)
        plain = stages.features()
        model.backbone(x.requires_grad_(True)).sum().backward()
        with_grad = stages.features()
    assert plain.shape == (2, 2 * (64 + 128)) and not with_grad.requires_grad
    assert torch.allclose(plain, with_grad, atol=1e-5)
    assert all(not module._forward_hooks for module in stages.modules)


def test_export_carries_the_score_and_explanations_do_not_change_it(trained_run):
    predictor = Predictor.from_pretrained(trained_run / "best")
    config = json.loads((trained_run / "best/config.json").read_text())
    assert predictor.ood is not None
    assert float(predictor.ood.thresholds[1]) == pytest.approx(config["ood"]["thresholds"]["style"], rel=1e-6)
    assert predictor.ood.bank.shape[1] == predictor.model.backbone.num_features
    image = np.random.default_rng(0).integers(0, 256, (200, 160), dtype=np.uint8)
    plain, explained = predictor.predict(image), predictor.predict(image, explain=True)
    assert plain.unlike_training == pytest.approx(explained.unlike_training, rel=1e-4)


def test_blank_images_are_flagged(trained_run):
    predictor = Predictor.from_pretrained(trained_run / "best")
    for value in (0, 255):
        warnings = predictor.predict(Image.new("L", (256, 256), value)).warnings
        assert any("almost uniform" in w for w in warnings)


def test_demo_warns_on_real_images_and_rarely_on_fresh_synthetic_views(tmp_path):
    """The bundled demo (trained on synthetic images): real images are unlike its training data (radiographs, a
    photo, CT, MR, ultrasound) and warned; views from a generator seed it never saw mostly are not."""
    from mura_mt.data import read_mura_index
    from mura_mt.data.synthetic import make_synthetic_mura

    predictor = Predictor.from_pretrained(REPO / "checkpoints/demo")
    # Bone scintigraphy is left out: the demo scores it 0.8 (measured; docs/reliability.md), under the line.
    must_warn = {name: path for name, path in public_images().items() if not name.startswith("bone scintigraphy")}
    missed = [name for name, path in must_warn.items() if WARNING not in predictor.predict(path).warnings]
    assert not missed
    make_synthetic_mura(tmp_path, studies_per_part=6, valid_studies_per_part=6, seed=20261129)
    paths = [p for split in ("train", "valid") for p in read_mura_index(tmp_path, split)["path"]]
    warned = np.mean([WARNING in view.warnings for view in predictor.predict_batch(paths)])
    assert warned <= 0.05, f"{warned:.1%} of fresh synthetic views warned"


def test_the_warning_stands_above_the_verdict():
    from mura_mt.web.upload_tab import verdict_markdown as _verdict

    predictor = Predictor.from_pretrained(REPO / "checkpoints/demo")
    photo = Path(matplotlib.get_data_path()) / "sample_data/grace_hopper.jpg"
    result = predictor.predict_study([photo])
    text = _verdict(result)
    assert result.warnings and result.warnings[0] in text
    assert text.index(result.warnings[0]) < text.index("abnormality probability")


def test_a_checkpoint_without_the_statistics_still_serves_and_says_so(trained_run, tmp_path, caplog):
    from mura_mt.inference.checkpoint import export, load_checkpoint

    model, config = load_checkpoint(trained_run / "best")
    meta = {k: v for k, v in config.items() if k not in ("format_version", "body_parts", "weights_sha256")}
    export(tmp_path / "old", model, meta)  # as exported before the score existed: no ood.* tensors
    with caplog.at_level("WARNING", logger="mura_mt.inference.predictor"):
        predictor = Predictor.from_pretrained(tmp_path / "old")
    assert predictor.ood is None and "no statistics" in caplog.text
    result = predictor.predict(np.full((64, 64), 128, dtype=np.uint8) + np.eye(64, dtype=np.uint8) * 50)
    assert result.unlike_training is None and WARNING not in result.warnings


def test_channel_statistics_equal_mean_and_std_in_any_layout():
    from mura_mt.inference.ood import channel_mean_std

    maps = torch.relu(torch.randn(3, 16, 20, 24, generator=torch.Generator().manual_seed(0)) * 2 + 1)
    expected = torch.cat([maps.mean(dim=(2, 3)), maps.std(dim=(2, 3))], dim=1)
    assert torch.allclose(channel_mean_std(maps), expected, atol=1e-5)
    assert torch.allclose(channel_mean_std(maps.to(memory_format=torch.channels_last)), expected, atol=1e-5)
    assert torch.allclose(channel_mean_std(maps.bfloat16()), expected, atol=0.05)
