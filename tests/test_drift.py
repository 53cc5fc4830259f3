"""Drift without labels: a stream like the validation reference does not alarm (the false alarm rate is measured
over repeated windows), a stream unlike it does, by the test that names what changed; the monitor reads the
store's answers, and a checkpoint without a reference says so."""

import json
import logging

import numpy as np
import pytest

from mura_mt.site.monitoring import DriftMonitor
from mura_mt.dicom_node.store import WorklistStore
from mura_mt.evaluation.drift import ALPHA, REFERENCE_FILE, build_reference, check_drift, load_reference
from mura_mt.inference.ood import WARNING
from mura_mt.labels import BODY_PARTS
from tests.conftest import REPO
from tests.test_worklist_store import view

MIX = np.array([0.10, 0.10, 0.10, 0.15, 0.10, 0.20, 0.25])  # elbow .. wrist


def stream(rng, n, mix=MIX, shape=(2.0, 5.0), wrist_shape=None, warning_rate=0.02):
    """n studies of a 'site': parts by ``mix``, probabilities Beta(``shape``) (the wrist's ``wrist_shape``)."""
    parts = rng.choice(BODY_PARTS, size=n, p=mix)
    probs = rng.beta(*shape, size=n)
    if wrist_shape is not None:
        wrist = parts == "wrist"
        probs[wrist] = rng.beta(*wrist_shape, size=wrist.sum())
    return list(parts), list(probs), list(rng.random(n) < warning_rate)


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)
    return build_reference(*stream(rng, 1500), source="simulated validation")


def test_a_stream_like_the_reference_rarely_alarms_and_the_rate_is_measured(reference):
    rng = np.random.default_rng(1)
    windows = 300
    alarms = sum(check_drift(reference, *stream(rng, 500))["alarm"] for _ in range(windows))
    rate = alarms / windows
    print(f"false alarm rate over {windows} windows of 500 like studies: {rate:.3f} (design: at most {ALPHA})")
    assert rate <= 0.03  # Bonferroni at ALPHA = 0.01, with room for the sampling error of 300 windows


@pytest.mark.parametrize(
    "change, alarming",
    [
        ({"wrist_shape": (5.0, 2.0)}, "probabilities wrist"),
        ({"warning_rate": 0.10}, "unlike-the-training-images rate"),
        ({"mix": np.array([0.02, 0.02, 0.02, 0.04, 0.02, 0.08, 0.80])}, "body-part mix"),
    ],
)
def test_a_stream_unlike_the_reference_alarms_by_the_test_that_changed(reference, change, alarming):
    rng = np.random.default_rng(2)
    result = check_drift(reference, *stream(rng, 500, **change))
    assert result["status"] == "checked" and result["alarm"]
    assert alarming in [t["name"] for t in result["tests"] if t["alarm"]]
    for test in result["tests"]:
        assert 0 <= test["p_value"] <= 1 and test["threshold"] == pytest.approx(ALPHA / len(result["tests"]))


def test_without_a_reference_or_enough_studies_it_says_so():
    assert check_drift(None, ["wrist"], [0.5], [False])["status"] == "no reference"
    ref = build_reference(["wrist"] * 40, [0.3] * 40, [False] * 40, "tiny")
    assert check_drift(ref, ["wrist"] * 10, [0.3] * 10, [False] * 10)["status"] == "too few studies"
    assert load_reference(REPO / "tests") is None


def test_the_demo_checkpoint_carries_its_validation_reference():
    reference = load_reference(REPO / "checkpoints/demo")
    assert reference is not None and reference["studies"] == 175
    assert sum(reference["part_mix"].values()) == 175 and 0 <= reference["warning_rate"] <= 1
    assert json.loads((REPO / "checkpoints/demo" / REFERENCE_FILE).read_text())["version"] == 1


def test_the_monitor_reads_the_stores_answers_and_logs_an_alarm(tmp_path, reference, caplog):
    store = WorklistStore(tmp_path / "worklist.sqlite", node="NODEA")
    rng = np.random.default_rng(4)
    monitor = DriftMonitor(store, reference)

    def answer(parts, probs, warned, start):
        for i, (part, prob, warn) in enumerate(zip(parts, probs, warned)):
            uid = f"1.2.826.0.7.{start + i}"
            at = 1_000_000.0 + start + i
            store.add_instance(view(uid), now=at)
            assert store.claim(uid, at, now=at + 1)
            store.record_answer(uid, at, {"body_part": part, "abnormal_prob": float(prob), "is_abnormal": prob > 0.5,
                                          "warnings": [WARNING] if warn else []}, [], [])  # fmt: skip

    answer(*stream(rng, 200), start=0)
    now = 1_000_000.0 + 3600
    assert monitor.check(now=now)["status"] == "checked" and not monitor.check(now=now)["alarm"]
    answer(*stream(rng, 300, warning_rate=0.2), start=200)
    assert monitor.check(now=now + 1) is monitor.check(now=now)  # within the period: the last check, not a new one
    with caplog.at_level(logging.WARNING, logger="mura_mt.site.monitoring"):
        result = monitor.check(now=now + monitor.period_s)
    assert result["alarm"] and result["window"]["studies"] == 500
    assert "drift alarm" in caplog.text and "unlike-the-training-images rate" in caplog.text
