"""Per-part calibration and decision thresholds: what turns a gated anomaly logit into a verdict.

``Calibration`` travels with the weights (in config.json). Probability of part k's head:
``sigmoid(scale[k] * logit + bias[k])`` (Platt scaling); verdict: probability > ``threshold[k]``.
The identity (scale 1, bias 0, threshold 0.5) is the MURA paper's rule. Fitting uses the val split only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score

from mura_mt.labels import BODY_PARTS

_MIN_STUDIES = 50  # per part: below this the paper's rule stays (Platt + threshold on fewer studies overfit: measured)


@dataclass(frozen=True)
class Calibration:
    scale: tuple[float, ...] = field(default_factory=lambda: (1.0,) * len(BODY_PARTS))
    bias: tuple[float, ...] = field(default_factory=lambda: (0.0,) * len(BODY_PARTS))
    threshold: tuple[float, ...] = field(default_factory=lambda: (0.5,) * len(BODY_PARTS))

    def probs(self, anomaly_logits: np.ndarray) -> np.ndarray:
        """[N, 7] logits -> [N, 7] calibrated probabilities (column k by part k's calibration)."""
        z = np.asarray(anomaly_logits, dtype=np.float64) * np.asarray(self.scale) + np.asarray(self.bias)
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {p: {"scale": s, "bias": b, "threshold": t} for p, s, b, t in zip(BODY_PARTS, self.scale, self.bias, self.threshold)}

    @classmethod
    def from_dict(cls, values: dict[str, dict[str, float]]) -> Calibration:
        missing = [p for p in BODY_PARTS if p not in values]
        if missing:
            raise ValueError(f"calibration lacks body part(s) {missing}")
        return cls(*(tuple(float(values[p][k]) for p in BODY_PARTS) for k in ("scale", "bias", "threshold")))


def fit_calibration(study_ids: np.ndarray, parts: np.ndarray, labels: np.ndarray, anomaly_logits: np.ndarray) -> Calibration:
    """Fit Platt scaling on each part's TRUE-part image logits, then the threshold maximising study kappa.

    Args:
        study_ids, parts, labels: per image (parts as indices into BODY_PARTS).
        anomaly_logits: [N, 7] raw logits.
    """
    scale, bias, threshold = [1.0] * 7, [0.0] * 7, [0.5] * 7
    for k in range(len(BODY_PARTS)):
        mask = parts == k
        frame = pd.DataFrame({"study": study_ids[mask], "label": labels[mask], "z": anomaly_logits[mask, k]})
        n_studies = frame["study"].nunique()
        if n_studies < _MIN_STUDIES or frame["label"].nunique() < 2:
            continue
        platt = LogisticRegression(C=100.0).fit(frame[["z"]].to_numpy(), frame["label"].to_numpy())
        scale[k], bias[k] = float(platt.coef_[0, 0]), float(platt.intercept_[0])
        frame["p"] = 1.0 / (1.0 + np.exp(-(scale[k] * frame["z"] + bias[k])))
        studies = frame.groupby("study").agg(label=("label", "first"), p=("p", "mean"))
        grid = np.round(np.arange(0.2, 0.81, 0.05), 2)
        kappas = [cohen_kappa_score(studies["label"], studies["p"] > t) for t in grid]
        # Ties go to the threshold nearest 0.5: a flat kappa curve is no reason to move off the paper's rule.
        best = max(range(len(grid)), key=lambda i: (round(kappas[i], 6), -abs(grid[i] - 0.5)))
        threshold[k] = float(grid[best])
    return Calibration(tuple(scale), tuple(bias), tuple(threshold))
