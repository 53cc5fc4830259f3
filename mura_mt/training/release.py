"""From the best epoch to a served checkpoint: fit calibration, thresholds and the out-of-distribution score on
the val split, compute the metrics of the decision the checkpoint will really make, and export.

Owns what config.json says about the model's quality. Two metric blocks, named so nobody mistakes one for the
other: ``metrics`` is the shipped decision (calibration + per-part thresholds, the Predictor's rule) on val,
the split those were fitted on, so it is optimistic; ``metrics_uncalibrated`` is the raw heads at 0.5, the
number that chose the epoch. Honest numbers come from ``scripts/evaluate.py`` on the official valid split.
Training code calls ``export_best``; nothing here trains.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from mura_mt.inference.calibration import Calibration
from mura_mt.inference.operating_points import fit_operating_points, fit_site_wide
from mura_mt.inference.checkpoint import export
from mura_mt.config import Config, config_to_dict
from mura_mt.data.prepare import SplitData
from mura_mt.inference.decision import decide
from mura_mt.labels import BODY_PARTS, PART_TO_IDX
from mura_mt.evaluation.drift import reference_from_predictor, write_reference
from mura_mt.evaluation.evaluate import split_fingerprint
from mura_mt.evaluation.metrics import compute_metrics
from mura_mt.model import MultiTaskNet
from mura_mt.inference.ood import OodFeatures, fit_out_of_distribution
from mura_mt.imaging.preprocessing import Preprocessing

VAL_SPLIT = "val (patient-grouped from the official train set)"
# Per part: below this the paper's rule stays (Platt + threshold on fewer studies overfit: measured).
MIN_CALIBRATION_STUDIES = 50


def export_best(
    cfg: Config,
    model: MultiTaskNet,
    prep: Preprocessing,
    val: SplitData,
    part_logits: np.ndarray,
    anomaly_logits: np.ndarray,
    features: OodFeatures,
) -> Path:
    """Fit calibration, thresholds and the out-of-distribution score on val; export to OUTPUT_DIR/best."""
    table = val.table
    parts = table["body_part"].map(PART_TO_IDX).to_numpy()
    calibration = (
        fit_calibration(table["study_id"].to_numpy(), parts, table["label"].to_numpy(), anomaly_logits)
        if cfg.train.calibrate
        else Calibration()
    )
    part_probs = torch.softmax(torch.from_numpy(part_logits).float(), dim=1).numpy()
    shipped, val_studies = compute_metrics(table, part_probs, anomaly_logits, calibration)  # the served gate
    raw, _ = compute_metrics(table, part_probs, anomaly_logits, Calibration())
    operating_points = {
        "method": "Learn-then-Test (mura_mt.inference.operating_points), fitted on val studies by true body part",
        "split_sha256": split_fingerprint(table),
        "parts": fit_operating_points(val_studies["body_part"], val_studies["prob"], val_studies["label"]),
        "site": fit_site_wide(val_studies["prob"], val_studies["label"]),
    }
    ood = fit_out_of_distribution(
        features, table["study_id"].to_numpy(), cfg.train.ood_false_alarm_rate, max_bank=cfg.train.ood_bank_size
    )
    meta = {
        "model": config_to_dict(cfg)["model"],
        "preprocessing": {"image_size": prep.image_size, "mean": list(prep.mean), "std": list(prep.std)},
        "calibration": calibration.to_dict(),
        "operating_points": operating_points,
        "ood": {
            "score": "max(k-NN distance of normalised pooled features, Mahalanobis distance of early-stage "
            "statistics) over their thresholds; above 1 warns",
            "k": ood.k,
            "bank_size": len(ood.bank),
            "thresholds": {"knn": float(ood.thresholds[0]), "style": float(ood.thresholds[1])},
            "val_false_alarm_rate": ood.false_alarm_rate,
            "low_part_confidence": 0.6,
        },
        "metrics": {
            "split": VAL_SPLIT,
            "decision": "shipped calibration and per-part thresholds (fitted on this split: optimistic)",
            **shipped,
        },
        "metrics_uncalibrated": {
            "split": VAL_SPLIT,
            "decision": "raw heads, threshold 0.5 (what selected the best epoch)",
            **raw,
        },
        "train_config": config_to_dict(cfg),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_sha": git_sha(),
        "intended_use": "Research and education. Not a medical device; not for diagnosis.",
    }
    out = export(Path(cfg.output_dir) / "best", model, meta, extra_tensors=ood.to_tensors())
    # The drift monitor's reference: the val studies answered by the exported checkpoint, as a node answers them.
    from mura_mt.inference.predictor import Predictor

    fp32 = Predictor.from_pretrained(out, precision="fp32", runtime="torch")
    write_reference(out, reference_from_predictor(fp32, table, progress=False))
    return out


def git_sha() -> str | None:
    """The commit of the code that made the checkpoint, when it runs from a git checkout."""
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def fit_calibration(
    study_ids: np.ndarray,
    parts: np.ndarray,
    labels: np.ndarray,
    anomaly_logits: np.ndarray,
    keep: Calibration | None = None,
) -> Calibration:
    """Fit calibration on val images, using each image's TRUE-part head logit.

    A part with at least ``MIN_CALIBRATION_STUDIES`` val studies (both classes) gets its own Platt scaling and the
    threshold that maximises its study kappa under the decision rule (``decision.decide``, gated by the true part).
    A smaller part gets the Platt scaling pooled over all parts (two parameters fit well on a few hundred images)
    and keeps the paper's 0.5 threshold: a threshold searched on a dozen studies mostly fits their noise
    (measured on the synthetic data: per-part fits lowered held-out kappa).

    Args:
        study_ids, parts, labels: per image (parts as indices into BODY_PARTS).
        anomaly_logits: [N, 7] raw logits.
        keep: a calibration whose values the parts without enough studies keep, instead of the pooled scaling and
            the paper's threshold (a site's refit keeps the checkpoint's own where the site has too few studies).
    """
    import pandas as pd

    frame = pd.DataFrame(
        {"study": study_ids, "part": parts, "label": labels, "z": anomaly_logits[np.arange(len(parts)), parts]}
    )
    pooled = _platt(frame) if _enough(frame) else (1.0, 0.0)
    scale, bias = [pooled[0]] * len(BODY_PARTS), [pooled[1]] * len(BODY_PARTS)
    if keep is not None:
        scale, bias = list(keep.scale), list(keep.bias)
    own = parts_to_fit(frame)
    for k in own:
        scale[k], bias[k] = _platt(frame[frame["part"] == k])
    platt = Calibration(tuple(scale), tuple(bias))
    study, _ = pd.factorize(frame["study"])
    first_view = frame.groupby(study).head(1).index.to_numpy()
    study_part, study_label = frame["part"].to_numpy()[first_view], frame["label"].to_numpy()[first_view]
    decided = decide(None, anomaly_logits, study, platt, part_idx=study_part)
    threshold = [0.5] * len(BODY_PARTS) if keep is None else list(keep.threshold)
    for k in own:
        threshold[k] = _best_threshold(decided.probs[study_part == k], study_label[study_part == k])
    return Calibration(tuple(scale), tuple(bias), tuple(threshold))


def parts_to_fit(frame) -> list[int]:
    """The parts (indices) with enough studies of both classes for their own calibration; ``frame`` has a row per
    image with ``study``, ``part`` and ``label``."""
    return [k for k in range(len(BODY_PARTS)) if _enough(frame[frame["part"] == k])]


def _enough(frame) -> bool:
    return frame["study"].nunique() >= MIN_CALIBRATION_STUDIES and frame["label"].nunique() == 2


def _platt(frame) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    platt = LogisticRegression(C=100.0).fit(frame[["z"]].to_numpy(), frame["label"].to_numpy())
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


def _best_threshold(study_probs: np.ndarray, study_labels: np.ndarray) -> float:
    from sklearn.metrics import cohen_kappa_score

    grid = np.round(np.arange(0.2, 0.81, 0.05), 2)
    kappas = [cohen_kappa_score(study_labels, study_probs > t) for t in grid]
    # Ties go to the threshold nearest 0.5: a flat kappa curve is no reason to move off the paper's rule.
    best = max(range(len(grid)), key=lambda i: (round(kappas[i], 6), -abs(grid[i] - 0.5)))
    return float(grid[best])
