"""Is model B better than model A? A PAIRED comparison of two evaluations of the same studies.

Two ``evaluate.py`` folders of the same split hold, per study, each model's probability and verdict (by the
predicted gate). Because both models saw the same studies, their errors are correlated, and two overlapping
per-model intervals are no test. Here, per body part and overall:

- for study kappa, study AUROC, sensitivity and specificity: the difference B - A with a 95 % paired-bootstrap
  interval (each resample draws studies with replacement and scores BOTH models on them) and a two-sided
  bootstrap p-value (twice the smaller share of resampled differences on either side of zero);
- DeLong's test for the difference of two correlated AUROCs (DeLong et al. 1988; the fast midrank algorithm of
  Sun and Xu 2014);
- McNemar's exact test on the studies where exactly one model is right.

Groups smaller than ``MIN_STUDIES`` (or with fewer than ``MIN_PER_CLASS`` studies of a class) get the values and
McNemar's test but no interval, bootstrap p or DeLong p: those are large-sample methods.

Refuses, naming the offenders, two folders that do not hold the same studies with the same labels. Knows nothing
about models: it reads what ``evaluate.py`` wrote.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mura_mt.evaluation.bootstrap import resample_counts, weighted_auroc, weighted_binary
from mura_mt.labels import BODY_PARTS

METRICS = ("study_kappa", "study_auroc", "sensitivity", "specificity")
DEFAULT_RESAMPLES = 2000
# Below these a group gets no bootstrap interval and no DeLong p (both rest on large-sample approximations: with
# three studies every resample agrees and the "interval" is a point); McNemar's exact test is valid at any size.
MIN_STUDIES, MIN_PER_CLASS = 20, 5


class ComparisonError(ValueError):
    """Two evaluations that cannot be compared study by study."""


@dataclass(frozen=True)
class Evaluation:
    """One ``evaluate.py`` folder: its study predictions and where they came from (``metrics.json`` ``source``)."""

    folder: Path
    studies: pd.DataFrame  # study_id, body_part, label, prob, pred
    source: dict


def load_evaluation(folder: str | Path) -> Evaluation:
    folder = Path(folder)
    csv, metrics = folder / "study_predictions.csv", folder / "metrics.json"
    for needed in (csv, metrics):
        if not needed.is_file():
            raise ComparisonError(f"{needed} is missing: is {folder} an evaluate.py output folder?")
    studies = pd.read_csv(csv)
    missing = {"study_id", "body_part", "label", "prob", "pred"} - set(studies.columns)
    if missing:
        raise ComparisonError(f"{csv} lacks the columns {sorted(missing)}")
    if studies["study_id"].duplicated().any():
        repeated = studies["study_id"][studies["study_id"].duplicated()].unique()[:5].tolist()
        raise ComparisonError(f"{csv} lists studies more than once: {repeated}")
    return Evaluation(folder, studies, json.loads(metrics.read_text()).get("source", {}))


def pair(a: Evaluation, b: Evaluation) -> pd.DataFrame:
    """One row per study with both models' answers; the two must cover the same studies with the same labels."""
    only_a = sorted(set(a.studies["study_id"]) - set(b.studies["study_id"]))
    only_b = sorted(set(b.studies["study_id"]) - set(a.studies["study_id"]))
    problems = []
    if only_a:
        problems.append(f"{len(only_a)} studies only in {a.folder} (first: {only_a[:5]})")
    if only_b:
        problems.append(f"{len(only_b)} studies only in {b.folder} (first: {only_b[:5]})")
    merged = a.studies.merge(b.studies, on="study_id", suffixes=("_a", "_b"))
    for column in ("label", "body_part"):
        differ = merged[merged[f"{column}_a"] != merged[f"{column}_b"]]["study_id"].tolist()
        if differ:
            problems.append(f"{len(differ)} studies with a different {column} (first: {differ[:5]})")
    if problems:
        raise ComparisonError("the two evaluations are not of the same studies: " + "; ".join(problems))
    return pd.DataFrame(
        {
            "study_id": merged["study_id"],
            "body_part": merged["body_part_a"],
            "label": merged["label_a"].astype(int),
            "prob_a": merged["prob_a"].astype(float),
            "pred_a": merged["pred_a"].astype(int),
            "prob_b": merged["prob_b"].astype(float),
            "pred_b": merged["pred_b"].astype(int),
        }
    )


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def delong(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> tuple[float, float, float]:
    """(AUROC of A, AUROC of B, two-sided p of their difference) by DeLong's test; NaN p with one class only."""
    labels = np.asarray(labels).astype(bool)
    m, n = int(labels.sum()), int((~labels).sum())
    if m == 0 or n == 0:
        return math.nan, math.nan, math.nan
    aucs, v10, v01 = [], [], []
    for scores in (np.asarray(scores_a, float), np.asarray(scores_b, float)):
        pos, neg = scores[labels], scores[~labels]
        ranks_all, ranks_pos, ranks_neg = _midranks(scores), _midranks(pos), _midranks(neg)
        aucs.append((ranks_all[labels].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((ranks_all[labels] - ranks_pos) / n)  # per positive: share of negatives below it
        v01.append(1.0 - (ranks_all[~labels] - ranks_neg) / m)  # per negative: share of positives above it
    s10 = np.cov(np.stack(v10)) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.stack(v01)) if n > 1 else np.zeros((2, 2))
    covariance = s10 / m + s01 / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = aucs[1] - aucs[0]
    if variance <= 1e-15:
        return float(aucs[0]), float(aucs[1]), 1.0 if abs(difference) < 1e-12 else 0.0
    z = difference / math.sqrt(variance)
    return float(aucs[0]), float(aucs[1]), math.erfc(abs(z) / math.sqrt(2))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """(studies only A gets right, studies only B gets right, two-sided exact p): a binomial test of the
    discordant studies against an even split."""
    only_a = int(np.sum(np.asarray(correct_a, bool) & ~np.asarray(correct_b, bool)))
    only_b = int(np.sum(~np.asarray(correct_a, bool) & np.asarray(correct_b, bool)))
    discordant = only_a + only_b
    if discordant == 0:
        return only_a, only_b, 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2.0**discordant
    return only_a, only_b, min(1.0, 2.0 * tail)


def _metrics(labels, probs, preds, weights) -> dict[str, np.ndarray]:
    values = weighted_binary(labels, preds, weights)
    return {
        "study_kappa": values["study_kappa"],
        "study_auroc": weighted_auroc(probs, labels, weights),
        "sensitivity": values["sensitivity"],
        "specificity": values["specificity"],
    }


def compare_group(studies: pd.DataFrame, resamples: int, rng: np.random.Generator) -> dict:
    """The paired comparison of one group of studies (see the module docstring)."""
    labels = studies["label"].to_numpy()
    a_probs, a_preds = studies["prob_a"].to_numpy(), studies["pred_a"].to_numpy()
    b_probs, b_preds = studies["prob_b"].to_numpy(), studies["pred_b"].to_numpy()
    once = np.ones((1, len(studies)))
    a, b = _metrics(labels, a_probs, a_preds, once), _metrics(labels, b_probs, b_preds, once)
    counts = resample_counts(len(studies), resamples, rng)
    resampled_a, resampled_b = _metrics(labels, a_probs, a_preds, counts), _metrics(labels, b_probs, b_preds, counts)
    result: dict = {"studies": len(studies)}
    positives = int(labels.sum())
    large_enough = len(labels) >= MIN_STUDIES and min(positives, len(labels) - positives) >= MIN_PER_CLASS
    for metric in METRICS:
        value_a, value_b = float(a[metric][0]), float(b[metric][0])
        diffs = resampled_b[metric] - resampled_a[metric]
        diffs = diffs[np.isfinite(diffs)]
        entry = {"a": _clean(value_a), "b": _clean(value_b), "diff": _clean(value_b - value_a), "ci95": None, "p": None}
        if large_enough and len(diffs) >= resamples / 2 and math.isfinite(value_b - value_a):
            below, above = (np.sum(diffs <= 0) + 1) / (len(diffs) + 1), (np.sum(diffs >= 0) + 1) / (len(diffs) + 1)
            entry["ci95"] = [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]
            entry["p"] = float(min(1.0, 2 * min(below, above)))
        result[metric] = entry
    result["delong_p"] = _clean(delong(labels, a_probs, b_probs)[2]) if large_enough else None
    only_a, only_b, result["mcnemar_p"] = mcnemar_exact(a_preds == labels, b_preds == labels)
    result["only_a_right"], result["only_b_right"] = only_a, only_b
    return result


def compare(a: Evaluation, b: Evaluation, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """``overall`` and each body part present: ``{metric: {a, b, diff, ci95, p}}``, ``delong_p``, ``mcnemar_p``,
    ``studies``; plus the provenance of both sides and the bootstrap settings."""
    if resamples < 100:
        raise ValueError(f"a paired bootstrap needs at least 100 resamples, got {resamples}")
    studies = pair(a, b)
    rng = np.random.default_rng(seed)
    result = {"overall": compare_group(studies, resamples, rng)}
    for part in BODY_PARTS:
        mine = studies[studies["body_part"] == part]
        if len(mine):
            result[part] = compare_group(mine, resamples, rng)
    result["bootstrap"] = {"resamples": resamples, "seed": seed, "unit": "study", "paired": True}
    result["sources"] = {"a": {"folder": str(a.folder), **a.source}, "b": {"folder": str(b.folder), **b.source}}
    return result


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def groups(result: dict) -> list[str]:
    return [g for g in ("overall", *BODY_PARTS) if g in result]


def plain_reading(result: dict, metric: str = "study_kappa", level: float = 0.05) -> str:
    """One line a person can act on, e.g. "B is better on wrist: kappa +0.06 [+0.02, +0.10]; elsewhere no
    difference can be told". A group counts only where the interval excludes zero and p < ``level``."""
    name = metric.removeprefix("study_").replace("auroc", "AUROC")
    said = []
    for group in groups(result):
        entry = result[group][metric]
        if (
            entry["p"] is not None
            and entry["p"] < level
            and entry["ci95"]
            and (entry["ci95"][0] > 0 or entry["ci95"][1] < 0)
        ):
            better = "B" if entry["diff"] > 0 else "A"
            lo, hi = entry["ci95"]
            said.append(f"{better} is better on {group}: {name} {entry['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]")
    if not said:
        return f"No difference in {name} can be told, overall or on any body part."
    return "; ".join(said) + ("; elsewhere no difference can be told" if len(said) < len(groups(result)) else "")
