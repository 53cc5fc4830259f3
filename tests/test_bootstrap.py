"""Bootstrap intervals: the vectorised statistics equal scikit-learn's, and the intervals behave as intervals."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from mura_mt.evaluation.bootstrap import add_confidence_intervals, resample_counts, weighted_auroc, weighted_binary
from mura_mt.evaluation.metrics import METRICS, compute_metrics
from mura_mt.inference.calibration import Calibration
from mura_mt.labels import BODY_PARTS


def test_weighted_statistics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    n = 200
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(labels, 1.0), 1)  # rounded: ties must be handled as scikit-learn does
    preds = (scores > 0.5).astype(int)
    weights = resample_counts(n, 5, rng)
    aurocs = weighted_auroc(scores, labels, weights)
    binary = weighted_binary(labels, preds, weights)
    for r in range(5):
        w = weights[r]
        assert aurocs[r] == pytest.approx(roc_auc_score(labels, scores, sample_weight=w))
        assert binary["study_kappa"][r] == pytest.approx(cohen_kappa_score(labels, preds, sample_weight=w))
        positives = labels == 1
        assert binary["sensitivity"][r] == pytest.approx((w * (preds == 1))[positives].sum() / w[positives].sum())
    assert (resample_counts(n, 5, rng).sum(axis=1) == n).all()


def _synthetic_evaluation(n_studies: int, seed: int):
    """Studies of 1-3 views, a signal of fixed strength: the true metrics do not depend on n."""
    rng = np.random.default_rng(seed)
    views = rng.integers(1, 4, n_studies)
    study = np.repeat(np.arange(n_studies), views)
    labels = rng.integers(0, 2, n_studies)[study]
    parts = rng.integers(0, 7, n_studies)[study]
    table = pd.DataFrame(
        {
            "path": [f"img{i}" for i in range(len(study))],
            "study_id": [f"s{s}" for s in study],
            "body_part": [BODY_PARTS[p] for p in parts],
            "label": labels,
        }
    )
    part_probs = np.full((len(study), 7), 0.01)
    part_probs[np.arange(len(study)), parts] = 0.94
    anomaly_logits = rng.normal(0, 1.5, (len(study), 7)) + (2.0 * labels - 1.0)[:, None]
    return table, part_probs, anomaly_logits


def test_intervals_bracket_the_estimate_and_shrink_as_n_grows():
    widths = {}
    for n in (150, 1200):
        table, part_probs, logits = _synthetic_evaluation(n, seed=n)
        metrics, _ = compute_metrics(table, part_probs, logits, Calibration())
        add_confidence_intervals(metrics, table, part_probs, logits, Calibration(), n_resamples=1000, progress=False)
        for gate in ("predicted_gate", "true_gate"):
            for part, block in metrics[gate].items():
                for metric in METRICS:
                    interval = block[f"{metric}_ci95"]
                    if interval is None:
                        continue
                    assert interval[0] <= block[metric] <= interval[1], (n, gate, part, metric)
        overall = metrics["predicted_gate"]["overall"]
        widths[n] = {m: overall[f"{m}_ci95"][1] - overall[f"{m}_ci95"][0] for m in METRICS}
    for metric in METRICS:
        # 8x the studies: about sqrt(8) = 2.8x narrower; demand at least 2x.
        assert widths[1200][metric] < widths[150][metric] / 2, metric


def test_intervals_are_seeded():
    table, part_probs, logits = _synthetic_evaluation(100, seed=3)
    first, _ = compute_metrics(table, part_probs, logits, Calibration())
    second, _ = compute_metrics(table, part_probs, logits, Calibration())
    for metrics in (first, second):
        add_confidence_intervals(metrics, table, part_probs, logits, Calibration(), n_resamples=200, progress=False)
    assert first == second
    assert first["bootstrap"] == {"resamples": 200, "seed": 0, "unit": "study", "interval": "percentile 95%"}
