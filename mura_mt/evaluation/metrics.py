"""Study- and image-level metrics for both gates, computed with scikit-learn.

Input: per-image part probabilities and raw anomaly logits of all seven heads, and the calibration to judge
them with. The studies are decided by ``decision.decide`` (THE rule the Predictor serves with): the "true"
gate reads each study's true-part head; the "predicted" gate decides the part once per study from the views'
mean part probabilities. A study's probability is the mean of its views' (MURA paper).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

from mura_mt.inference.calibration import Calibration
from mura_mt.inference.decision import decide
from mura_mt.labels import BODY_PARTS, PART_TO_IDX

GATES = ("predicted", "true")
METRICS = ("study_kappa", "study_auroc", "image_auroc", "sensitivity", "specificity", "accuracy")


def gate_predictions(
    table: pd.DataFrame, part_probs: np.ndarray, anomaly_logits: np.ndarray, calibration: Calibration, gate: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gate every image and decide every study.

    Returns:
        (images, studies): images with ``study``, ``gate_part`` and ``prob``; studies with study_id, body_part,
        predicted_part, label, prob, pred (in order of first appearance).
    """
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    images = table[["path", "study_id", "body_part", "label"]].reset_index(drop=True).copy()
    study, study_ids = pd.factorize(images["study_id"])
    first_view = pd.Series(np.arange(len(images))).groupby(study).first().to_numpy()
    true_part = images["body_part"].map(PART_TO_IDX).to_numpy()[first_view]
    predicted = decide(part_probs, anomaly_logits, study, calibration)
    decided = predicted if gate == "predicted" else decide(None, anomaly_logits, study, calibration, true_part)
    images["study"] = study
    images["gate_part"] = [BODY_PARTS[i] for i in decided.part_idx[study]]
    images["prob"] = decided.view_probs
    studies = pd.DataFrame(
        {
            "study_id": study_ids,
            "body_part": images["body_part"].to_numpy()[first_view],
            "predicted_part": [BODY_PARTS[i] for i in predicted.part_idx],
            "label": images["label"].to_numpy()[first_view],
            "prob": decided.probs,
            "pred": decided.is_abnormal.astype(int),
        }
    )
    return images, studies


def binary_metrics(images: pd.DataFrame | None, studies: pd.DataFrame) -> dict[str, float | int | None]:
    """Kappa, AUROC, sensitivity, specificity and accuracy of one group of studies and their images (``images``
    None: a site's answers, which keep study probabilities only; image_auroc is then None)."""
    y, pred = studies["label"].to_numpy(), studies["pred"].to_numpy()
    positives, negatives = (y == 1).sum(), (y == 0).sum()
    both = positives > 0 and negatives > 0
    return {
        "study_kappa": float(cohen_kappa_score(y, pred)) if both else None,
        "study_auroc": float(roc_auc_score(y, studies["prob"])) if both else None,
        "image_auroc": float(roc_auc_score(images["label"], images["prob"]))
        if images is not None and images["label"].nunique() == 2
        else None,
        "sensitivity": float((pred[y == 1] == 1).mean()) if positives else None,
        "specificity": float((pred[y == 0] == 0).mean()) if negatives else None,
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "n_studies": int(len(y)),
        "n_images": int(len(images)) if images is not None else None,
    }


def compute_metrics(
    table: pd.DataFrame, part_probs: np.ndarray, anomaly_logits: np.ndarray, calibration: Calibration
) -> tuple[dict, pd.DataFrame]:
    """All metrics for both gates, per body part and overall, plus body-part accuracy and confusion matrix.

    Returns:
        (metrics dict, study predictions of the predicted gate).
    """
    metrics: dict = {}
    predicted_studies = None
    for gate in GATES:
        images, studies = gate_predictions(table, part_probs, anomaly_logits, calibration, gate)
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
