"""Study- and image-level metrics for both gates, computed with scikit-learn.

Input: per-image part probabilities and calibrated anomaly probabilities for all seven heads. The
"true" gate reads each image's true-part head; the "predicted" gate decides the part once per study from
the views' mean part probabilities and reads that head for every view (as the Predictor does). A study's
probability is the mean of its views' (MURA paper); it is abnormal above its part's threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

from mura_mt.labels import BODY_PARTS, PART_TO_IDX

GATES = ("predicted", "true")


def gate_predictions(
    table: pd.DataFrame, part_probs: np.ndarray, anomaly_probs: np.ndarray, thresholds: np.ndarray, gate: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gate every image and aggregate studies.

    Returns:
        (images, studies): images with ``gate_part`` and ``prob``; studies with study_id, body_part,
        predicted_part, label, prob, pred.
    """
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    images = table[["path", "study_id", "body_part", "label"]].reset_index(drop=True).copy()
    true_idx = images["body_part"].map(PART_TO_IDX).to_numpy()
    mean_part = pd.DataFrame(part_probs).groupby(images["study_id"].to_numpy()).transform("mean").to_numpy()
    study_part_idx = mean_part.argmax(axis=1)  # the part decided once per study
    gate_idx = true_idx if gate == "true" else study_part_idx
    images["predicted_part"] = [BODY_PARTS[i] for i in study_part_idx]
    images["gate_part"] = [BODY_PARTS[i] for i in gate_idx]
    images["prob"] = anomaly_probs[np.arange(len(images)), gate_idx]
    studies = (
        images.groupby("study_id", sort=False)
        .agg(
            body_part=("body_part", "first"),
            predicted_part=("predicted_part", "first"),
            gate_part=("gate_part", "first"),
            label=("label", "first"),
            prob=("prob", "mean"),
        )
        .reset_index()
    )
    studies["pred"] = (studies["prob"] > thresholds[studies["gate_part"].map(PART_TO_IDX).to_numpy()]).astype(int)
    return images, studies.drop(columns="gate_part")


def binary_metrics(images: pd.DataFrame, studies: pd.DataFrame) -> dict[str, float | int | None]:
    """Kappa, AUROC, sensitivity, specificity and accuracy of one group of studies and their images."""
    y, pred = studies["label"].to_numpy(), studies["pred"].to_numpy()
    positives, negatives = (y == 1).sum(), (y == 0).sum()
    both = positives > 0 and negatives > 0
    return {
        "study_kappa": float(cohen_kappa_score(y, pred)) if both else None,
        "study_auroc": float(roc_auc_score(y, studies["prob"])) if both else None,
        "image_auroc": float(roc_auc_score(images["label"], images["prob"]))
        if images["label"].nunique() == 2
        else None,
        "sensitivity": float((pred[y == 1] == 1).mean()) if positives else None,
        "specificity": float((pred[y == 0] == 0).mean()) if negatives else None,
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "n_studies": int(len(y)),
        "n_images": int(len(images)),
    }


def compute_metrics(
    table: pd.DataFrame, part_probs: np.ndarray, anomaly_probs: np.ndarray, thresholds: np.ndarray
) -> tuple[dict, pd.DataFrame]:
    """All metrics for both gates, per body part and overall, plus body-part accuracy and confusion matrix.

    Returns:
        (metrics dict, study predictions of the predicted gate).
    """
    metrics: dict = {}
    predicted_studies = None
    for gate in GATES:
        images, studies = gate_predictions(table, part_probs, anomaly_probs, thresholds, gate)
        block = {"overall": binary_metrics(images, studies)}
        for part in BODY_PARTS:
            if (studies["body_part"] == part).any():
                block[part] = binary_metrics(images[images["body_part"] == part], studies[studies["body_part"] == part])
        metrics[f"{gate}_gate"] = block
        if gate == "predicted":
            predicted_studies = studies
    true_idx = table["body_part"].map(PART_TO_IDX).to_numpy()
    pred_idx = part_probs.argmax(axis=1)
    metrics["part_accuracy"] = float((pred_idx == true_idx).mean())
    metrics["part_confusion"] = {
        "labels": list(BODY_PARTS),
        "matrix": confusion_matrix(true_idx, pred_idx, labels=range(len(BODY_PARTS))).tolist(),
    }
    return metrics, predicted_studies


def format_table(metrics: dict) -> str:
    """A readable per-part table of the main numbers, both gates."""
    lines = [f"{'part':<10} {'gate':<9} {'kappa':>6} {'AUROC':>6} {'imgAUC':>6} {'sens':>5} {'spec':>5} {'studies':>7}"]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "  -  "  # noqa: E731
    for part in (*BODY_PARTS, "overall"):
        for gate in GATES:
            m = metrics[f"{gate}_gate"].get(part)
            if m:
                lines.append(
                    f"{part:<10} {gate:<9} {fmt(m['study_kappa']):>6} {fmt(m['study_auroc']):>6} "
                    f"{fmt(m['image_auroc']):>6} {fmt(m['sensitivity'])[:5]:>5} {fmt(m['specificity'])[:5]:>5} "
                    f"{m['n_studies']:>7}"
                )
    lines.append(f"body-part accuracy: {metrics['part_accuracy']:.4f}")
    return "\n".join(lines)
