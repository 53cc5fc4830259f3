"""The Predictor: contract fields, parity with validation, gating, studies, determinism, threads."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from mura_mt import BODY_PARTS, Predictor
from mura_mt.data import read_mura_index
from mura_mt.data.cache import build_image_cache
from mura_mt.evaluation.evaluate import predict_table
from mura_mt.imaging.preprocessing import Preprocessing, normalize
from mura_mt.inference.serving import ServingConfig
from mura_mt.model import MultiTaskNet


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor.from_pretrained(trained_run / "best")


@pytest.fixture(scope="module")
def valid_table(synthetic_root):
    return read_mura_index(synthetic_root, "valid")


def test_prediction_contract(predictor, valid_table):
    path = valid_table["path"][0]
    result = predictor.predict(path, explain=True)
    assert result.body_part in BODY_PARTS and result.gated_by == "predicted"
    assert sum(result.part_probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= result.abnormal_prob <= 1.0 and result.is_abnormal == (result.abnormal_prob > result.threshold)
    width, height = Image.open(path).size
    assert result.heatmap.shape == (height, width)
    assert np.isfinite(result.heatmap).all() and result.heatmap.min() >= 0 and result.heatmap.max() <= 1
    again = predictor.predict(path, explain=True)
    assert again.abnormal_prob == result.abnormal_prob and np.array_equal(again.heatmap, result.heatmap)
    assert predictor.predict(path).heatmap is None


def test_preprocess_is_the_validation_transform(predictor, valid_table, tmp_path):
    paths = valid_table["path"][:6].tolist()
    cached, failures = build_image_cache(paths, predictor.prep.image_size, tmp_path, progress=False)
    assert not failures
    for i, path in enumerate(paths):
        from_loader = normalize(torch.from_numpy(np.array(cached[i : i + 1])), predictor.prep)
        assert torch.equal(predictor.preprocess(path), from_loader)


def test_given_part_gates_like_evaluation_true_gate(predictor, valid_table):
    part_logits, anomaly_logits = predict_table(predictor, valid_table.head(8), progress=False)
    expected = predictor.calibration.probs(anomaly_logits)
    for i, row in valid_table.head(8).iterrows():
        result = predictor.predict(row["path"], body_part=row["body_part"])
        assert result.gated_by == "given" and result.body_part == row["body_part"]
        assert result.abnormal_prob == pytest.approx(expected[i, BODY_PARTS.index(row["body_part"])], abs=1e-5)


def test_override_changes_only_the_head(predictor, valid_table):
    path = valid_table["path"][0]
    probs = {part: predictor.predict(path, body_part=part).abnormal_prob for part in BODY_PARTS}
    assert len(set(round(p, 6) for p in probs.values())) > 1  # different heads answer differently
    assert predictor.predict(path, body_part="XR_WRIST").body_part == "wrist"
    with pytest.raises(ValueError, match="unknown body part"):
        predictor.predict(path, body_part="knee")


def test_study_decides_the_part_once_and_averages(predictor, valid_table):
    study = valid_table[valid_table["study_id"] == valid_table["study_id"][0]]["path"].tolist()
    views = study + valid_table["path"][-2:].tolist()  # mixed on purpose: still ONE part for all views
    result = predictor.predict_study(views)
    assert len(result.views) == len(views) and {v.body_part for v in result.views} == {result.body_part}
    assert result.abnormal_prob == pytest.approx(np.mean([v.abnormal_prob for v in result.views]))
    mean_probs = np.mean([[v.part_probs[p] for p in BODY_PARTS] for v in result.views], axis=0)
    assert result.body_part == BODY_PARTS[int(mean_probs.argmax())]
    assert result.to_dict()["views"][0].keys() == result.views[0].to_dict().keys()


def test_constant_and_odd_images_give_finite_answers(predictor):
    for value in (0, 255, 128):
        result = predictor.predict(Image.new("L", (200, 300), value), explain=True)
        assert np.isfinite(result.abnormal_prob) and np.isfinite(result.heatmap).all()


def test_concurrent_calls_equal_sequential_ones(predictor, valid_table):
    paths = valid_table["path"][:6].tolist()
    sequential = [predictor.predict(p, explain=True) for p in paths]
    results: dict[int, object] = {}

    def work(i: int) -> None:
        results[i] = predictor.predict(paths[i % len(paths)], explain=True)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, result in results.items():
        reference = sequential[i % len(paths)]
        assert result.abnormal_prob == reference.abnormal_prob
        assert np.array_equal(result.heatmap, reference.heatmap)
    assert len(results) == 12


def _config(image_size=96) -> ServingConfig:
    return ServingConfig(Preprocessing(image_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))


def test_heatmap_lands_on_the_evidence_in_original_coordinates():
    """A wide image with a bright patch near its top-left corner: the map must peak at that corner."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    base = rng.integers(20, 40, (150, 300)).astype(np.uint8)
    spot = base.copy()
    spot[12:40, 15:50] = 250
    model = MultiTaskNet("resnet18").eval()
    predictor = Predictor(model, _config(224))  # 7x7 CAM grid: fine enough to tell corners apart
    with torch.no_grad():  # a head that reads "how much more is there than in the image without the patch"
        delta = model.backbone(predictor.preprocess(Image.fromarray(spot))) - model.backbone(
            predictor.preprocess(Image.fromarray(base))
        )
        model.anomaly_head.weight[BODY_PARTS.index("hand")] = delta[0]
    result = predictor.predict(Image.fromarray(spot), body_part="hand", explain=True)
    y, x = np.unravel_index(int(result.heatmap.argmax()), result.heatmap.shape)
    assert result.heatmap.shape == (150, 300)
    assert x < 90 and y < 70, (x, y)
