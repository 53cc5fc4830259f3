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

from mura_mt.calibration import Calibration, fit_calibration
from mura_mt.checkpoint import export
from mura_mt.config import Config, config_to_dict
from mura_mt.data.prepare import SplitData
from mura_mt.labels import PART_TO_IDX
from mura_mt.metrics import compute_metrics
from mura_mt.model import MultiTaskNet
from mura_mt.ood import OodFeatures, fit_out_of_distribution
from mura_mt.preprocessing import Preprocessing

VAL_SPLIT = "val (patient-grouped from the official train set)"


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
    shipped, _ = compute_metrics(table, part_probs, anomaly_logits, calibration)
    raw, _ = compute_metrics(table, part_probs, anomaly_logits, Calibration())
    ood = fit_out_of_distribution(
        features, table["study_id"].to_numpy(), cfg.train.ood_false_alarm_rate, max_bank=cfg.train.ood_bank_size
    )
    meta = {
        "model": config_to_dict(cfg)["model"],
        "preprocessing": {"image_size": prep.image_size, "mean": list(prep.mean), "std": list(prep.std)},
        "calibration": calibration.to_dict(),
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
    return export(Path(cfg.output_dir) / "best", model, meta, extra_tensors=ood.to_tensors())


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
