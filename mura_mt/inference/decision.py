"""THE decision rule, written once: how a study's views become one body part, one probability and a verdict.

    mean part probabilities over the views -> argmax (or the part given: a user's override, or the true part
    for the "true" gate) -> that part's anomaly logit of every view -> that part's calibration -> mean over the
    views -> compare with that part's threshold.

The Predictor (serving), ``metrics`` (evaluation) and ``release`` (threshold fitting) all call ``decide``,
so serving and the reported numbers cannot drift apart (tests/test_parity.py checks every synthetic study).
NumPy only: no torch, no pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mura_mt.inference.calibration import Calibration


@dataclass(frozen=True)
class StudyDecisions:
    """Decisions for S studies made of N views (arrays indexed by study, or by view where named)."""

    part_idx: np.ndarray  # [S] the part that gates each study
    view_probs: np.ndarray  # [N] calibrated abnormality of each view under its study's part
    probs: np.ndarray  # [S] mean of the study's view probabilities
    thresholds: np.ndarray  # [S] the gating part's threshold
    is_abnormal: np.ndarray  # [S] probs > thresholds


def decide(
    part_probs: np.ndarray | None,
    anomaly_logits: np.ndarray,
    study: np.ndarray,
    calibration: Calibration,
    part_idx: np.ndarray | None = None,
) -> StudyDecisions:
    """Apply the decision rule to every study at once.

    Args:
        part_probs: [N, 7] softmax of the part head, one row per view (unused when ``part_idx`` is given).
        anomaly_logits: [N, 7] raw anomaly logits (column k is part k's head).
        study: [N] study number of each view, 0..S-1.
        calibration: per-part Platt scaling and thresholds (the checkpoint's).
        part_idx: [S] the part to gate each study with; None decides it from the mean part probabilities.
    """
    study = np.asarray(study, dtype=np.int64)
    n_studies = int(study.max()) + 1 if len(study) else 0
    views_per_study = np.bincount(study, minlength=n_studies).astype(np.float64)
    if part_idx is None:
        if part_probs is None:
            raise ValueError("decide needs part_probs to choose the part, or part_idx")
        summed = np.zeros((n_studies, part_probs.shape[1]))
        np.add.at(summed, study, np.asarray(part_probs, dtype=np.float64))
        part_idx = summed.argmax(axis=1)  # the mean's argmax: dividing by the view count changes nothing
    part_idx = np.asarray(part_idx, dtype=np.int64)
    view_part = part_idx[study]
    view_probs = calibration.probs(anomaly_logits)[np.arange(len(study)), view_part]
    probs = np.bincount(study, weights=view_probs, minlength=n_studies) / np.maximum(views_per_study, 1)
    thresholds = np.asarray(calibration.threshold, dtype=np.float64)[part_idx]
    return StudyDecisions(part_idx, view_probs, probs, thresholds, probs > thresholds)
