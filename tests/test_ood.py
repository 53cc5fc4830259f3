"""The 'not an upper-extremity radiograph' score and the blank-image warning."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mura_mt import Predictor
from mura_mt.ood import FeatureDistance, fit_feature_distance
from tests.conftest import REPO


def test_feature_distance_flags_far_points_and_keeps_the_quantile():
    torch.manual_seed(0)
    parts = torch.arange(700) % 7
    centres = torch.randn(7, 32) * 5
    features = centres[parts] + torch.randn(700, 32)
    ood = fit_feature_distance(features, parts, quantile=0.95)
    inside = (ood.score(features) <= ood.threshold).float().mean()
    assert 0.94 <= float(inside) <= 0.96
    near = centres[3] + torch.randn(50, 32)
    far = torch.randn(50, 32) * 5 + 40
    assert (ood.score(near) <= ood.threshold).float().mean() > 0.85
    assert (ood.score(far) > ood.threshold).all()
    again = FeatureDistance.from_tensors(ood.to_tensors())
    assert torch.equal(again.means, ood.means) and again.threshold == pytest.approx(ood.threshold)


def test_export_carries_the_score(trained_run):
    predictor = Predictor.from_pretrained(trained_run / "best")
    config = json.loads((trained_run / "best/config.json").read_text())
    assert predictor.ood is not None
    assert predictor.ood.threshold == pytest.approx(config["ood"]["threshold"], rel=1e-6)
    assert predictor.ood.means.shape == (7, predictor.model.backbone.num_features)


def test_blank_images_are_flagged(trained_run):
    predictor = Predictor.from_pretrained(trained_run / "best")
    for value in (0, 255):
        warnings = predictor.predict(Image.new("L", (256, 256), value)).warnings
        assert any("almost uniform" in w for w in warnings)


def test_demo_model_flags_images_unlike_its_training_data(synthetic_root):
    """The bundled demo checkpoint: a lower-leg CR and noise are flagged; synthetic upper extremities mostly not."""
    from pydicom.data import get_testdata_file

    from mura_mt.data import read_mura_index

    predictor = Predictor.from_pretrained(REPO / "checkpoints/demo")
    flagged = lambda source: any("not be an upper-extremity" in w for w in predictor.predict(source).warnings)  # noqa: E731
    assert flagged(get_testdata_file("RG3_UNCR.dcm"))
    assert flagged(np.random.default_rng(0).integers(0, 256, (300, 400), dtype=np.uint8))
    paths = read_mura_index(synthetic_root, "valid")["path"]
    assert np.mean([flagged(p) for p in paths]) <= 0.1
