import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from mura_mt.evaluation.metrics import compute_metrics, gate_predictions
from mura_mt.inference.calibration import Calibration
from mura_mt.labels import PART_TO_IDX
from mura_mt.training.release import fit_calibration


@pytest.fixture
def hand_made():
    """Four studies, seven images; image probabilities chosen by hand."""
    table = pd.DataFrame(
        {
            "path": [f"img{i}" for i in range(7)],
            "study_id": ["s1", "s1", "s2", "s3", "s3", "s3", "s4"],
            "body_part": ["wrist", "wrist", "wrist", "hand", "hand", "hand", "hand"],
            "label": [1, 1, 0, 1, 1, 1, 0],
        }
    )
    part_probs = np.full((7, 7), 0.01)
    truth = table["body_part"].map(PART_TO_IDX).to_numpy()
    part_probs[np.arange(7), truth] = 0.94
    part_probs[6] = 0.01
    part_probs[6, PART_TO_IDX["finger"]] = 0.94  # s4 is taken for a finger by the part head
    anomaly = np.zeros((7, 7))
    anomaly[:, PART_TO_IDX["wrist"]] = [0.9, 0.5, 0.6, 0, 0, 0, 0]
    anomaly[:, PART_TO_IDX["hand"]] = [0, 0, 0, 0.2, 0.7, 0.6, 0.3]
    anomaly[6, PART_TO_IDX["finger"]] = 0.8
    clipped = np.clip(anomaly, 1e-6, 1 - 1e-6)
    logits = np.log(clipped / (1 - clipped))  # identity calibration turns these back into the probabilities above
    return table, part_probs, logits


def test_study_aggregation_and_gates(hand_made):
    table, part_probs, anomaly = hand_made
    _, true_studies = gate_predictions(table, part_probs, anomaly, Calibration(), "true")
    assert true_studies.set_index("study_id")["prob"].to_dict() == pytest.approx(
        {"s1": 0.7, "s2": 0.6, "s3": 0.5, "s4": 0.3}
    )
    _, predicted = gate_predictions(table, part_probs, anomaly, Calibration(), "predicted")
    s4 = predicted.set_index("study_id").loc["s4"]
    assert s4["predicted_part"] == "finger" and s4["prob"] == pytest.approx(0.8) and s4["pred"] == 1


def test_metrics_equal_scikit_learn(hand_made):
    table, part_probs, anomaly = hand_made
    metrics, studies = compute_metrics(table, part_probs, anomaly, Calibration())
    y = [1, 0, 1, 0]
    true_probs = [0.7, 0.6, 0.5, 0.3]
    overall = metrics["true_gate"]["overall"]
    assert overall["study_kappa"] == pytest.approx(cohen_kappa_score(y, [p > 0.5 for p in true_probs]))
    assert overall["study_auroc"] == pytest.approx(roc_auc_score(y, true_probs))
    image_probs = [0.9, 0.5, 0.6, 0.2, 0.7, 0.6, 0.3]
    assert overall["image_auroc"] == pytest.approx(roc_auc_score(table["label"], image_probs))
    assert overall["sensitivity"] == pytest.approx(0.5) and overall["specificity"] == pytest.approx(0.5)
    predicted = metrics["predicted_gate"]["overall"]
    assert predicted["study_kappa"] == pytest.approx(cohen_kappa_score(y, [1, 1, 0, 1]))
    assert metrics["part_accuracy"] == pytest.approx(6 / 7)
    assert metrics["true_gate"]["wrist"]["n_studies"] == 2 and metrics["true_gate"]["hand"][
        "study_kappa"
    ] == pytest.approx(0.0)
    assert list(studies.columns) == ["study_id", "body_part", "predicted_part", "label", "prob", "pred"]


def test_calibration_round_trip_and_fit():
    rng = np.random.default_rng(0)
    n = 800
    parts = rng.integers(0, 7, n)
    labels = rng.integers(0, 2, n)
    logits = rng.normal(0, 1, (n, 7)) + (labels * 3.0 - 1.5)[:, None] + 2.0  # separable but shifted
    cal = fit_calibration(np.array([f"s{i}" for i in range(n)]), parts, labels, logits)
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert all(b < 0 for b in cal.bias)  # the +2 shift is undone
    probs = cal.probs(logits)[np.arange(n), parts]
    assert roc_auc_score(labels, probs) > 0.9


def test_small_parts_get_pooled_calibration_and_the_paper_threshold():
    rng = np.random.default_rng(1)
    n = 420  # 60 images per part, 1 image per study: more than 50 studies overall, fewer than 50 per part
    parts = np.repeat(np.arange(7), 60)[:n]
    labels = rng.integers(0, 2, n)
    logits = rng.normal(0, 1, (n, 7)) + (labels * 3.0 - 1.5)[:, None] - 1.0
    keep = np.concatenate([np.flatnonzero(parts == k)[:40] for k in range(7)])  # 40 studies per part
    cal = fit_calibration(np.array([f"s{i}" for i in keep]), parts[keep], labels[keep], logits[keep])
    assert len(set(cal.scale)) == 1 and len(set(cal.bias)) == 1 and cal.bias[0] > 0  # pooled; the -1 shift undone
    assert cal.threshold == (0.5,) * 7
