"""Inference in bulk: the batch API, bf16 that stays within 0.01 of fp32, the typed serving config, and
bulk prediction that keeps every file and every study together."""

import json

import numpy as np
import pytest
import torch

from mura_mt.data import read_mura_index
from mura_mt.inference.bulk import pack_studies, predict_files
from mura_mt.inference.calibration import Calibration
from mura_mt.inference.predictor import Predictor
from mura_mt.inference.serving import ServingConfig, resolve_precision
from tests.conftest import REPO

DEMO = REPO / "checkpoints/demo"


@pytest.fixture(scope="module")
def valid_paths(synthetic_root) -> list[str]:
    return read_mura_index(synthetic_root, "valid")["path"].tolist()


def test_predict_batch_gates_each_image_by_its_own_part(valid_paths):
    predictor = Predictor.from_pretrained(DEMO)
    paths = valid_paths[::4]  # several body parts
    batch = predictor.predict_batch(paths)
    alone = [predictor.predict(path) for path in paths]
    assert len({p.body_part for p in batch}) >= 3
    for together, single in zip(batch, alone):
        assert together.body_part == single.body_part and together.gated_by == "predicted"
        assert together.abnormal_prob == pytest.approx(single.abnormal_prob, abs=1e-5)
        assert together.threshold == single.threshold
    given = predictor.predict_batch(paths[:3], body_part="hand")
    assert {p.body_part for p in given} == {"hand"} and {p.gated_by for p in given} == {"given"}


def test_predict_studies_equals_predict_study_one_by_one(valid_paths, synthetic_root):
    predictor = Predictor.from_pretrained(DEMO)
    table = read_mura_index(synthetic_root, "valid")
    studies = [group["path"].tolist() for _, group in list(table.groupby("study_id", sort=False))[:6]]
    together = predictor.predict_studies(studies, explain=True)
    for views, result in zip(studies, together):
        single = predictor.predict_study(views, explain=True)
        assert result.body_part == single.body_part and len(result.views) == len(views)
        assert result.abnormal_prob == pytest.approx(single.abnormal_prob, abs=1e-5)
        for a, b in zip(result.views, single.views):
            assert np.abs(a.heatmap - b.heatmap).max() < 1e-3  # Grad-CAM of the same decision
    with pytest.raises(ValueError, match="at least one image"):
        predictor.predict_studies([valid_paths[:1], []])


def test_bf16_stays_within_a_hundredth_of_fp32_on_the_synthetic_valid_split(valid_paths):
    fp32 = Predictor.from_pretrained(DEMO, precision="fp32")
    bf16 = Predictor.from_pretrained(DEMO, precision="bf16")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    a, b = fp32.predict_batch(valid_paths), bf16.predict_batch(valid_paths)
    deltas = np.array([x.abnormal_prob - y.abnormal_prob for x, y in zip(a, b)])
    assert np.abs(deltas).max() <= 0.01, f"max |delta p| {np.abs(deltas).max():.4f}"
    assert [x.body_part for x in a] == [y.body_part for y in b]


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    flags = open("/proc/cpuinfo").read()
    native = " avx512_bf16" in flags or " amx_bf16" in flags
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", cpu)


def test_serving_config_is_read_from_the_checkpoint():
    config = json.loads((DEMO / "config.json").read_text())
    serving = ServingConfig.from_checkpoint(config)
    assert serving.preprocessing.image_size == config["preprocessing"]["image_size"]
    assert serving.calibration == Calibration.from_dict(config["calibration"])
    assert Predictor.from_pretrained(DEMO).serving == serving


@pytest.mark.parametrize("workers", [1, 2])  # 2: each worker on a single-threaded session of its own (ONNX Runtime)
def test_bulk_prediction_keeps_every_file_and_study(synthetic_root, tmp_path, workers):
    table = read_mura_index(synthetic_root, "valid")
    studies = {sid: group["path"].tolist() for sid, group in table.groupby("study_id", sort=False)}
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    first = next(iter(studies))
    studies[first] = [*studies[first], str(broken)]
    predictor = Predictor.from_pretrained(DEMO)
    rows = predict_files(predictor, studies, cam_dir=tmp_path, batch_size=5, workers=workers, progress=False)
    assert sorted(r["path"] for r in rows) == sorted(p for views in studies.values() for p in views)
    assert len(list(tmp_path.glob("*_cam.png"))) == len(rows) - 1  # an overlay for every readable view
    if workers > 1:  # the same rows, in the same order, as one model on every core
        one = predict_files(predictor, studies, batch_size=5, workers=1, progress=False)
        assert [r["path"] for r in rows] == [r["path"] for r in one]
        probs = lambda table: [r.get("abnormal_prob", -1.0) for r in table]  # noqa: E731 (-1: the unreadable file)
        assert probs(rows) == pytest.approx(probs(one), abs=1e-5)
    errors = [r for r in rows if r["error"]]
    assert [r["path"] for r in errors] == [str(broken)]
    for study, views in studies.items():
        readable = [p for p in views if p != str(broken)]
        expected = predictor.predict_study(readable)
        mine = [r for r in rows if r["study"] == study and not r["error"]]
        assert {r["body_part"] for r in mine} == {expected.body_part}
        assert mine[0]["study_abnormal_prob"] == pytest.approx(expected.abnormal_prob, abs=1e-5)


def test_packing_never_splits_a_study():
    sizes = {"a": 3, "b": 4, "c": 1, "d": 9, "e": 2}
    chunks = pack_studies(list(sizes), sizes, batch_size=5)
    assert chunks == [["a"], ["b", "c"], ["d"], ["e"]]


def test_largest_legitimate_image_is_answered_within_budget(tmp_path):
    """20 megapixels (4000 x 5000, half the decoder's limit) with Grad-CAM: answered, heatmap on the full
    image, in bounded time and memory."""
    import time

    import psutil
    from PIL import Image

    from mura_mt.inference.explain import overlay

    y, x = np.mgrid[0:5000, 0:4000]
    Image.fromarray(((x + y) % 256).astype(np.uint8)).save(tmp_path / "large.png")
    predictor = Predictor.from_pretrained(DEMO)
    process = psutil.Process()
    before, start = process.memory_info().rss, time.perf_counter()
    result = predictor.predict(tmp_path / "large.png", explain=True)
    shown = overlay(Image.open(tmp_path / "large.png"), result.heatmap)
    assert result.heatmap.shape == (5000, 4000) and shown.size == (4000, 5000)
    assert time.perf_counter() - start < 60
    assert (process.memory_info().rss - before) / 2**20 < 2048
