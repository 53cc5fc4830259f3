"""Bootstrap confidence intervals for the study- and image-level metrics, resampling STUDIES.

MURA's valid split has a few hundred studies per body part, so a kappa without an interval says little.
Each resample draws the studies of a group with replacement (seeded); a study drawn k times counts k times,
with all its images. Every metric of ``metrics.binary_metrics`` is recomputed on all resamples at once, as
weighted counts (kappa, sensitivity, specificity, accuracy) and a weighted Mann-Whitney statistic (AUROC,
equal to scikit-learn's ``roc_auc_score`` with ``sample_weight``; tests check both against it). The interval
is the 2.5th to 97.5th percentile (the percentile bootstrap).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mura_mt.labels import BODY_PARTS
from mura_mt.evaluation.metrics import GATES, METRICS, gate_predictions

DEFAULT_RESAMPLES = 2000


def resample_counts(n_studies: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[R, S] how often each study is drawn in each resample (each row sums to S)."""
    draws = rng.integers(0, n_studies, size=(n_resamples, n_studies))
    flat = (np.arange(n_resamples)[:, None] * n_studies + draws).ravel()  # one bincount: np.add.at is ~10x slower
    return np.bincount(flat, minlength=n_resamples * n_studies).reshape(n_resamples, n_studies).astype(np.float64)


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of ``scores`` [N] against binary ``labels`` [N] under each row of ``weights`` [R, N] -> [R].

    P(score of a positive > score of a negative) + half the ties, with weighted counts; NaN where a row
    weighs no positive or no negative."""
    order = np.argsort(scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order] == 1
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # runs of equal scores
    pos = np.add.reduceat(w * positive, starts, axis=1)  # [R, G]
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives with a strictly lower score
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)


def weighted_binary(labels: np.ndarray, preds: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Kappa, sensitivity, specificity and accuracy of binary ``preds`` [S] under each row of ``weights``."""
    y, p = labels.astype(bool), preds.astype(bool)
    return binary_from_cells(weights @ (y & p), weights @ (y & ~p), weights @ (~y & p), weights @ (~y & ~p))


def binary_from_cells(tp: np.ndarray, fn: np.ndarray, fp: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    """Kappa, sensitivity, specificity and accuracy from the confusion cells' (weighted) counts, element-wise."""
    n = tp + fn + fp + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = (tp + tn) / n
        expected = ((tp + fn) * (tp + fp) + (fp + tn) * (fn + tn)) / n**2
        kappa = (observed - expected) / (1 - expected)
        both = ((tp + fn) > 0) & ((fp + tn) > 0)
        return {
            "study_kappa": np.where(both, kappa, np.nan),
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "accuracy": observed,
        }


def group_intervals(
    images: pd.DataFrame | None, studies: pd.DataFrame, n_resamples: int, rng: np.random.Generator
) -> dict[str, list[float] | None]:
    """``{metric: [lo, hi]}`` for one group of studies (``images['study']`` numbers them 0..S-1 in order;
    ``images`` None: study-level metrics only, as a site's answers have)."""
    counts = resample_counts(len(studies), n_resamples, rng)
    labels, probs = studies["label"].to_numpy(), studies["prob"].to_numpy()
    values = weighted_binary(labels, studies["pred"].to_numpy(), counts)
    values["study_auroc"] = weighted_auroc(probs, labels, counts)
    if images is not None:
        image_weights = counts[:, images["study"].to_numpy()]  # an image counts as often as its study
        values["image_auroc"] = weighted_auroc(images["prob"].to_numpy(), images["label"].to_numpy(), image_weights)
    else:
        values["image_auroc"] = np.full(n_resamples, np.nan)
    return _percentile_intervals(values, n_resamples)


PROBABILITY_BINS = 200  # counted_intervals' AUROC: probabilities in 0.005 bins (40 ms a group at 1,000 resamples)


def counted_intervals(studies: pd.DataFrame, n_resamples: int, rng: np.random.Generator) -> dict[str, list | None]:
    """The study bootstrap of ``group_intervals`` (study level) for a group too large to hold a resample matrix:
    drawing S studies with replacement is drawing the counts of their kinds from a multinomial, so each resample
    is drawn as counts: of the four confusion cells (kappa, sensitivity, specificity, accuracy: the same
    distribution as resampling the studies), and of (label, probability bin) for AUROC (the resampled
    AUROC of probabilities in 0.005 bins). Memory and time grow with the resamples, not with the studies."""
    labels = studies["label"].to_numpy().astype(int)
    preds, probs, n = studies["pred"].to_numpy().astype(int), studies["prob"].to_numpy(), len(studies)
    cells = np.bincount(2 * labels + preds, minlength=4)  # tn, fp, fn, tp
    tn, fp, fn, tp = rng.multinomial(n, cells / n, size=n_resamples).T.astype(np.float64)
    values = binary_from_cells(tp, fn, fp, tn)
    bins = np.minimum((probs * PROBABILITY_BINS).astype(int), PROBABILITY_BINS - 1)
    counts = np.bincount(labels * PROBABILITY_BINS + bins, minlength=2 * PROBABILITY_BINS)
    drawn = rng.multinomial(n, counts / n, size=n_resamples).astype(np.float64)  # [R, 2 x bins]
    negatives, positives = drawn[:, :PROBABILITY_BINS], drawn[:, PROBABILITY_BINS:]
    below = np.cumsum(negatives, axis=1) - negatives  # negatives in lower bins
    with np.errstate(invalid="ignore", divide="ignore"):
        values["study_auroc"] = (positives * (below + 0.5 * negatives)).sum(axis=1) / (
            positives.sum(axis=1) * negatives.sum(axis=1)
        )
    values["image_auroc"] = np.full(n_resamples, np.nan)
    return _percentile_intervals(values, n_resamples)


def _percentile_intervals(values: dict[str, np.ndarray], n_resamples: int) -> dict[str, list[float] | None]:
    intervals: dict[str, list[float] | None] = {}
    for metric in METRICS:
        finite = values[metric][np.isfinite(values[metric])]
        # Fewer than half the resamples defined: the group is too small (or one-class) for an interval.
        intervals[metric] = (
            [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
            if len(finite) >= n_resamples / 2
            else None
        )
    return intervals


def add_confidence_intervals(
    metrics: dict,
    table: pd.DataFrame,
    part_probs: np.ndarray,
    anomaly_logits: np.ndarray,
    calibration,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Add ``<metric>_ci95: [lo, hi]`` beside each metric of both gates, per part and overall (in place)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    rng = np.random.default_rng(seed)
    jobs = [(gate, part) for gate in GATES for part in ("overall", *BODY_PARTS) if part in metrics[f"{gate}_gate"]]
    bar = tqdm(jobs, desc=f"bootstrap ({n_resamples} resamples)", disable=not progress)
    decided = {gate: gate_predictions(table, part_probs, anomaly_logits, calibration, gate) for gate in GATES}
    for gate, part in bar:
        images, studies = decided[gate]
        if part != "overall":
            keep = (studies["body_part"] == part).to_numpy()
            renumber = np.full(len(studies), -1)
            renumber[keep] = np.arange(keep.sum())
            images = images[keep[images["study"].to_numpy()]].assign(study=lambda f: renumber[f["study"].to_numpy()])
            studies = studies[keep]
        for metric, interval in group_intervals(images, studies, n_resamples, rng).items():
            metrics[f"{gate}_gate"][part][f"{metric}_ci95"] = interval
    metrics["bootstrap"] = {"resamples": n_resamples, "seed": seed, "unit": "study", "interval": "percentile 95%"}
    return metrics
